"""bridge.publish.record.classify, the one classifier: every kind of failure and a gateway call's
result come to the Outcome the ACK is built from; ``temporary`` says which may pass by itself."""

from __future__ import annotations

from bridge.errors import GatewayRejected, GatewayUnavailable, InternalError, MissingField, ValidationFailed
from bridge.gateway.client import Attempt, GatewayResult, OutcomeClass
from bridge.model import AckCode
from bridge.publish.record import classify, temporary
from bridge.service.workers import WorkerLost

DOC = "2.16.840.1.113883.2.9.2.90.4.4^01386030488.LAB.999.A1_1"


def result(outcome: OutcomeClass, status: int, **attempt) -> GatewayResult:
    return GatewayResult(operation="create", document_id=DOC, path_id=None, outcome_class=outcome,
                         attempts=(Attempt(number=1, jti=("a", "b"), status=status, x_cart_id="cart-1",
                                           **attempt),))


def test_a_message_error_is_its_own_ack():
    outcome = classify(MissingField("no patient id", location="PID^1^3"))
    assert (outcome.code, outcome.text) == (AckCode.AE, "no patient id")
    assert [(e.code, e.location) for e in outcome.errors] == [("101", "PID^1^3")]
    assert not temporary(MissingField("x"), outcome)


def test_a_bug_is_ar_207_without_its_text():
    outcome = classify(KeyError("RSSMRA80A01H501U"))
    assert outcome.code is AckCode.AR and outcome.errors[0].code == "207"
    assert "RSSMRA" not in outcome.text and outcome.text == InternalError().message


def test_a_failed_validation_is_one_err_per_finding():
    error = ValidationFailed("local validation failed: R1", summary="2 errors",
                             findings=("R1: no author", "R2: no title"))
    outcome = classify(error, operation="create")
    assert outcome.code is AckCode.AE and outcome.details == {"validation": "2 errors"}
    assert [e.text for e in outcome.errors] == ["R1: no author", "R2: no title"]
    assert outcome.operation == "create"


def test_the_gateway_unreachable_and_a_lost_worker_are_temporary():
    for error in (GatewayUnavailable("down"), WorkerLost("gone")):
        assert temporary(error, classify(error))


def test_a_gateway_result_names_its_cart_id_and_its_not_now_is_temporary():
    published = classify(result(OutcomeClass.PUBLISHED, 201), document_id=DOC, operation="create")
    assert published.code is AckCode.AA and published.text == "X-Cart-id cart-1"
    refused = classify(result(OutcomeClass.REFUSED, 400, problem={"title": "bad"}), document_id=DOC,
                       operation="create")
    assert refused.code is AckCode.AE and refused.details == {"problem": {"title": "bad"}}
    assert not temporary(None, refused)
    not_now = classify(result(OutcomeClass.NOT_NOW, 503), document_id=DOC, operation="create")
    assert not_now.code is AckCode.AR and temporary(None, not_now)
    assert isinstance(result(OutcomeClass.REFUSED, 400).to_error(), GatewayRejected)
