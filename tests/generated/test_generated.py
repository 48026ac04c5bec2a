"""The oracle of issue 13: realistic Italian ORU^R01 (tests/generated/strategies.py) of the five
types, HL7 v2.3-v2.8, each published: a CDA with 0 XSD and 0 schematron errors by the product's
validator AND by the reference ../shared/tools/validate_cda.py, its narrative readable in the
CDA, and a signed PDF whose embedded cda.xml is the CDA byte for byte.

The same generator breaks one field the CDA needs in a message (corruptions.py): the product must
answer AE naming it. CI runs the "ci" profile (6 examples per type and test, 60 in all);
FSE_GENERATED_PROFILE=generated-many runs more, and bench/bench_generated.py reports many by
stage and by dimension.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from stdnum.it import codicefiscale

from bridge.hl7.message import parse_message

from .conftest import PROFILE
from .corruptions import misjudged, refused_messages
from .pipeline import run, validate_independently
from .strategies import CHARSETS, TYPES, WIDE_NAMES, Dimensions, escape, messages, people



@pytest.mark.parametrize("doc_type", TYPES)
def test_generated_reports_are_published(doc_type, stages):
    published = []

    @settings(settings.get_profile(PROFILE))
    @given(messages(types=(doc_type,)))
    def publish(generated):
        outcome = run(stages, generated)
        assert outcome.ok, (f"{generated.describe()}\n{outcome.stage}: {outcome.detail}\n"
                            + generated.raw.decode(CHARSETS[generated.charset]).replace("\r", "\n"))
        published.append((generated, outcome.cda))

    publish()
    # The reference validator, once over every CDA of this type.
    verdicts = validate_independently([cda for _, cda in published])
    refused = [(g.describe(), v) for (g, _), v in zip(published, verdicts) if v]
    assert not refused, refused


@given(people(patient=True))
def test_fiscal_codes_pass_stdnum(person):
    patient, birth, female = person
    assert codicefiscale.is_valid(patient.fiscal_code)
    assert codicefiscale.get_birth_date(patient.fiscal_code) == birth
    assert codicefiscale.get_gender(patient.fiscal_code) == ("F" if female else "M")


@settings(max_examples=50, deadline=None)
@given(messages(types=("LAB", "RSA"), versions=("2.6", "2.7", "2.8")))
def test_messages_are_what_they_say(generated):
    """Charset, version and the interpreter's place (PRT only from v2.7) as declared."""
    text = generated.raw.decode(CHARSETS[generated.charset])
    parsed = parse_message(generated.raw)
    assert (parsed.message_type, parsed.trigger_event) == ("ORU", "R01")
    assert text.split("\r")[0].split("|")[11] == generated.version
    assert ("\rPRT|" in text) == ("prt" in generated.features)
    assert "prt" not in generated.features or generated.version != "2.6"


@pytest.mark.parametrize("doc_type", TYPES)
def test_a_broken_field_is_refused_naming_it(doc_type, stages):
    @settings(settings.get_profile(PROFILE))
    @given(refused_messages(types=(doc_type,)))
    def refuse(case):
        generated, refusal = case
        wrong = misjudged(stages, refusal)
        assert not wrong, f"{wrong} ({generated.describe()})"

    refuse()


@pytest.mark.parametrize("family, given_name", [pytest.param(f, g, id=f) for f, g in WIDE_NAMES])
def test_wide_names_are_readable_in_the_pdf(family, given_name, stages):
    """A patient born abroad: the name in the CDA and on page 1 of the PDF as written (dimension wide_names)."""
    @settings(settings.get_profile(PROFILE), max_examples=1, database=None)
    @given(messages(types=("LAB",), dims=Dimensions(**{n: False for n in Dimensions.names()})))
    def publish(generated):
        segments = generated.raw.decode("utf-8").split("\r")
        segments = [s.replace(f"|{escape(generated.family)}^{escape(generated.given)}^", f"|{family}^{given_name}^", 1)
                    if s.startswith("PID|") else s for s in segments]
        named = dataclasses.replace(generated, raw="\r".join(segments).encode("utf-8"), family=family,
                                    given=given_name)
        outcome = run(stages, named)
        assert outcome.ok, f"{outcome.stage}: {outcome.detail}"

    publish()
