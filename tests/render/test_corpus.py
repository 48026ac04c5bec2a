"""Real-world ORU shapes (../shared/corpus/hl7-public) mapped as each type: no crash, ever.

Every message either maps and renders to a CDA that passes the XSD and the
schematron, or fails with a BridgeError that names an HL7 location (an AE/AR
the sender can act on). The patient, facility and interpreter are replaced by
known ones so that the mapping gets past the header.
"""

from __future__ import annotations

import dataclasses

import pytest

from bridge.errors import BridgeError
from bridge.hl7.message import parse_message
from bridge.gateway.identifiers import document_ids
from bridge.mapping.mapper import map_report
from bridge.model import DocumentType
from bridge.mapping.route import SenderDefault, route

from .conftest import CHECKOUT, STRUCTURE

CORPUS = CHECKOUT / ".." / "shared" / "corpus" / "hl7-public"


def corpus_messages():
    found = []
    for path in sorted(CORPUS.glob("*.hl7")):
        for n, chunk in enumerate(path.read_bytes().split(b"MSH")[1:]):
            raw = b"MSH" + chunk
            try:
                if parse_message(raw).message_type != "ORU":
                    continue
            except BridgeError:
                pass            # kept: the test checks the error's location
            found.append(pytest.param(raw, id=f"{path.name}#{n}"))
    return found


def known_header(text: str) -> str:
    lines = []
    for line in text.split("\r"):
        fields = line.split("|")
        wanted = {"MSH": {3: "LABPRIV"}, "PID": {3: "RMSLSO31M04Z404R^^^^NNITA"}, "OBR": {32: "M001"}}
        for index, value in wanted.get(fields[0], {}).items():
            fields += [""] * (index + 1 - len(fields))
            fields[index] = value
        lines.append("|".join(fields))
    return "\r".join(lines)


@pytest.fixture(scope="module")
def forced_rules():
    from bridge.mapping.route import load_routing

    rules = load_routing(CHECKOUT / "mappings")
    return {t: dataclasses.replace(rules, rules=(), defaults=(SenderDefault(application="", facility="", doc_type=t),))
            for t in DocumentType}


@pytest.fixture(scope="module")
def parts():
    from bridge.mapping.mapper import load_mappings
    from bridge.cda.render import make_environment

    return (load_mappings(CHECKOUT / "mappings", CHECKOUT / "mappings" / "practitioners.csv"),
            make_environment(CHECKOUT / "templates"))


@pytest.mark.skipif(not CORPUS.is_dir(), reason="no public HL7 corpus in ../shared")
@pytest.mark.parametrize("raw", corpus_messages())
def test_corpus_message_maps_or_fails_cleanly(raw, forced_rules, parts, rules):
    from bridge.cda.render import render_cda
    from bridge.cda.validate import validate_cda

    mappings, env = parts
    try:
        original = parse_message(raw)
    except BridgeError as exc:
        assert exc.location.startswith("MSH")
        return
    parsed = parse_message(known_header(original.text).encode("utf-8"), "utf-8")
    for doc_type, rules_for_type in forced_rules.items():
        try:
            routed = route(parsed, rules_for_type)
            report = map_report(parsed, routed, mappings, STRUCTURE)
        except BridgeError as exc:
            assert exc.location, f"{doc_type.name}: {exc!r} has no HL7 location"
            assert exc.err_code in {"101", "102", "103", "207"}
            continue
        ids = document_ids(STRUCTURE.fiscal_code, doc_type.name, "999", routed.accession)
        result = validate_cda(render_cda(report, env, ids), rules)
        assert result.ok, (doc_type.name, [str(i) for i in result.errors])
