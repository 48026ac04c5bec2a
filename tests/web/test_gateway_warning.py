"""The gateway's warning text may name the patient: /messages/<id> shows it only to the operator
(this host, with the operator token), and withholds it from everyone else."""

import json
import urllib.error
import urllib.request

import pytest_twisted
from twisted.internet.threads import deferToThread

from bridge.journal import Received
from bridge.web.messages import WARNING_WITHHELD
from bridge.web.operator import TOKEN_FILE
from fse_helpers import make_oru
from .web_kit import answer_at_once, start

#: A warning as the gateway may word it, naming the patient.
WARNING = "Attenzione: il documento di ROSSI MARIO (RSSMRA80A01H501U) risulta già oscurato"


def get_message(url: str, token: str | None):
    def blocking():
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
    return deferToThread(blocking)


@pytest_twisted.inlineCallbacks
def test_the_warning_is_shown_to_the_operator_only(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        journal = top.context.journal
        admission = yield journal.admit(Received(raw=make_oru("WARN1").encode(), msh4="OSP", msh10="WARN1",
                                                 message_type="ORU^R01"))
        call_id = yield journal.gateway_call_sent(admission.entry.id, "metadata", "DOC1")
        yield journal.gateway_call_answered(call_id, http_status=202, x_cart_id="cart-1", warning=WARNING)
        url = web.url + f"messages/{admission.entry.id}"
        token = (tmp_path / TOKEN_FILE).read_text().strip()

        for anyone in (None, "not-the-token"):
            status, body = yield get_message(url, anyone)
            [call] = json.loads(body)["gateway_calls"]
            assert status == 200 and call["warning"] == WARNING_WITHHELD and call["x_cart_id"] == "cart-1"
            assert b"ROSSI" not in body and b"RSSMRA80A01H501U" not in body

        status, body = yield get_message(url, token)
        [call] = json.loads(body)["gateway_calls"]
        assert status == 200 and call["warning"] == WARNING
    finally:
        yield top.stopService()
