"""A second engine looks at every CDA the validation and render tests look at, and must agree with ours.

../shared/tools/validate_cda.py (an independent XSD + schematron validator with
its own schematron compiler; tests/oracles/second_engine.py) runs as an
external program, in batches, on:

- the official samples;
- every CDA the render tests produce (the same fixtures and examples, rendered again here);
- mutations: the 15 of test_validate_cda, a further set applied to every type, and every child of
  ClinicalDocument and of the patient's role dropped in turn.

Any difference from bridge.cda.schematron + bridge.cda.validate on the XSD
verdict or on a rule's outcome (which asserts fail, which reports fire,
where) fails. The last tests show a wrong rule translation would be caught.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from bridge.cda import schematron
from bridge.cda.validate import load_rules, validate_cda
from bridge.model import DocumentType

from oracles import collector, second_engine
from oracles.second_engine import Outcome, disagreements, ours, run_second_engine
from render.conftest import pipeline  # noqa: F401  (the render tests' route -> map -> render fixture)
from render.test_documents import EXAMPLE_FILES, FIXTURE_FILES

from .test_validate_cda import BROKEN, lower_case_cf
from .validate_support import NS, REFERENCE, SAMPLES, TYPES, mutate, sample

H = "{urn:hl7-org:v3}"


# --------------------------------------------------------------------------- more mutations

def _remove(path):
    def change(root):
        found = root.find(path, NS)
        found.getparent().remove(found)
    change.__name__ = "drop_" + path.split(":")[-1].split("[")[0].split("/")[-1]
    return change


def _set(path, attribute, value, name):
    def change(root):
        root.find(path, NS).set(attribute, value)
    change.__name__ = name
    return change


def unexpected_element(root):
    root.insert(0, etree.Element(H + "unexpected"))


def second_patient_id_other_root(root):
    patient_id = root.find("h:recordTarget/h:patientRole/h:id", NS)
    patient_id.set("root", "1.2.3.4.5")


def empty_title(root):
    root.find("h:title", NS).text = ""


def first_section_without_code(root):
    code = root.find(".//h:section/h:code", NS)
    code.getparent().remove(code)


def author_time_date_only(root):
    root.find("h:author/h:time", NS).set("value", "2026")


def null_flavored_patient_name(root):
    name = root.find("h:recordTarget/h:patientRole/h:patient/h:name", NS)
    for child in list(name):
        name.remove(child)
    name.set("nullFlavor", "UNK")


MORE = [
    _remove("h:realmCode"),
    _remove("h:setId"),
    _remove("h:versionNumber"),
    _remove("h:custodian"),                       # required by the XSD
    _remove("h:componentOf"),
    _set("h:languageCode", "code", "en-US", "language_en_us"),
    _set("h:confidentialityCode", "code", "Z", "confidentiality_z"),
    _set("h:effectiveTime", "value", "2026", "effective_time_year_only"),
    _set("h:code", "code", "00000-0", "document_code_unknown"),
    _set("h:code", "displayName", "Altro", "document_display_name_other"),   # fires the W001 report
    _set("h:id", "root", "1.2.3", "document_id_other_root"),
    unexpected_element,                          # an XSD error
    second_patient_id_other_root,
    empty_title,
    first_section_without_code,
    author_time_date_only,
    null_flavored_patient_name,
]


def systematic(xml: bytes) -> dict[str, bytes]:
    """Each child of ClinicalDocument and of the patient's role, dropped in turn (many rules, one each)."""
    root = etree.fromstring(xml)
    found = {}
    for parent_path in (".", "h:recordTarget/h:patientRole"):
        parent = root.find(parent_path, NS)
        for index, child in enumerate(c for c in parent if isinstance(c.tag, str)):
            def change(copy, parent_path=parent_path, index=index):
                holder = copy.find(parent_path, NS)
                holder.remove([c for c in holder if isinstance(c.tag, str)][index])
            where = "top" if parent_path == "." else "patient"
            found[f"{where}{index}-{etree.QName(child).localname}"] = mutate(xml, change)
    return found


def _try_mutate(xml: bytes, change) -> bytes | None:
    try:
        return mutate(xml, change)
    except (AttributeError, TypeError):
        return None  # this type has no such element: nothing to break


# --------------------------------------------------------------------------- the documents

def _documents(render) -> dict[str, tuple[bytes, str]]:
    """name -> (CDA, type) for every document both engines judge."""
    docs = {f"sample-{t}": (sample(t), t) for t in TYPES}
    for doc_type, change, _, _ in BROKEN:
        docs[f"broken-{doc_type}-{change.__name__}"] = (mutate(sample(doc_type), change), doc_type)
    for doc_type in TYPES:
        for change in MORE:
            xml = _try_mutate(sample(doc_type), change)
            if xml is not None:
                docs[f"mutated-{doc_type}-{change.__name__}"] = (xml, doc_type)
    for doc_type in TYPES:
        for name, xml in systematic(sample(doc_type)).items():
            docs[f"dropped-{doc_type}-{name}"] = (xml, doc_type)
    for path in FIXTURE_FILES + EXAMPLE_FILES:
        report, _, xml = render(path)
        docs[f"rendered-{path.parent.name}-{path.stem}"] = (xml, report.doc_type.name)
    return docs


def _judge(docs: dict[str, tuple[bytes, str]], rules, folder: Path) -> dict[str, tuple[Outcome, Outcome]]:
    """name -> (our outcome, the second engine's), the second engine in one call per type."""
    paths = {}
    for name, (xml, _) in docs.items():
        paths[name] = folder / f"{name}.xml"
        paths[name].write_bytes(xml)
    theirs = {}
    for doc_type in TYPES:
        batch = [paths[n] for n, (_, t) in docs.items() if t == doc_type]
        theirs.update(run_second_engine(batch, doc_type))
    return {name: (ours(validate_cda(xml, rules, DocumentType[doc_type])), theirs[paths[name]])
            for name, (xml, doc_type) in docs.items()}


@pytest.fixture(scope="module")
def judged(pipeline, rules, tmp_path_factory):  # noqa: F811
    assert second_engine.TOOL.is_file(), f"the second engine is missing: {second_engine.TOOL}"
    return _judge(_documents(pipeline), rules, tmp_path_factory.mktemp("second-engine"))


def _names() -> list[str]:
    names = [f"sample-{t}" for t in TYPES]
    names += [f"broken-{t}-{c.__name__}" for t, c, _, _ in BROKEN]
    names += [f"mutated-{t}-{c.__name__}" for t in TYPES for c in MORE
              if _try_mutate(sample(t), c) is not None]
    names += [f"dropped-{t}-{name}" for t in TYPES for name in systematic(sample(t))]
    names += [f"rendered-{p.parent.name}-{p.stem}" for p in FIXTURE_FILES + EXAMPLE_FILES]
    return names


NAMES = _names()


@pytest.mark.parametrize("name", NAMES)
def test_both_engines_agree(judged, name):
    mine, theirs = judged[name]
    assert disagreements(mine, theirs) == []


def test_the_documents_cover_samples_renders_and_failures(judged):
    assert len(list(SAMPLES.glob("*.xml"))) == len(TYPES)
    assert sum(n.startswith("rendered-") for n in judged) == len(FIXTURE_FILES + EXAMPLE_FILES) >= 25
    assert sum(n.startswith("broken-") for n in judged) == 15
    outcomes = [judged[n][0] for n in judged]
    # The comparison is not vacuous: many documents fail, on the XSD and on many distinct rules.
    assert sum(not o.xsd_ok for o in outcomes) >= len(TYPES) * 2
    failed_rules = {(name.split("-")[1], rule) for name, (o, _) in judged.items() for rule, _ in o.errors}
    assert len(failed_rules) >= 75, sorted(failed_rules)
    assert all(judged[f"sample-{t}"][0] == Outcome(xsd_ok=True) for t in TYPES)
    # Reports (warnings) are compared too, not only asserts.
    assert set(TYPES) <= {n.split("-")[1] for n, (o, _) in judged.items() if o.warnings}


# --------------------------------------------------------------------------- the comparison bites

def test_a_rule_translated_to_always_pass_is_reported(monkeypatch, reference_rules, tmp_path):
    """Our translator with ERRORE-46 (LAB's CF check) made to always pass: the engines disagree."""
    real = schematron._check

    def always_pass_46(template, check):
        if schematron._rule_id(check) == "ERRORE-46":
            check = etree.fromstring(etree.tostring(check))
            check.set("test", "true()")
        real(template, check)

    monkeypatch.setattr(schematron, "_check", always_pass_46)
    wrong = load_rules(reference_rules)  # compiled afresh, with the wrong translation
    xml = mutate(sample("LAB"), lower_case_cf)
    with collector.paused():  # the session's collector must not take this wrong verdict for ours
        mine = ours(validate_cda(xml, wrong))
        assert mine.errors == frozenset()
        judged = _judge({"cf": (xml, "LAB")}, wrong, tmp_path)
    assert disagreements(*judged["cf"]) == [
        "failed assert ERRORE-46 at /ClinicalDocument[1]/recordTarget[1]/patientRole[1]/id[1]: "
        "only the second engine"]


def test_a_rule_reported_in_the_wrong_place_or_kind_is_reported():
    where = "/ClinicalDocument[1]"
    theirs = Outcome(True, frozenset({("ERRORE-26", where)}))
    assert disagreements(Outcome(True, frozenset({("ERRORE-26", where + "/id[1]")})), theirs) == [
        "failed assert ERRORE-26 at /ClinicalDocument[1]/id[1]: only ours",
        "failed assert ERRORE-26 at /ClinicalDocument[1]: only the second engine"]
    assert disagreements(Outcome(True, warnings=frozenset({("ERRORE-26", where)})), theirs) == [
        "failed assert ERRORE-26 at /ClinicalDocument[1]: only the second engine",
        "fired report ERRORE-26 at /ClinicalDocument[1]: only ours"]
    assert disagreements(Outcome(False), theirs) == ["XSD: ours fails, the second engine's passes"]


def test_the_second_engine_report_is_read_finding_by_finding(tmp_path):
    text = ("# a.xml: type=LAB schematron=x.sch\n"
            "ERROR [ERRORE 8] text | with a bar\n    at /*:ClinicalDocument[1]/*:id[1]\n"
            "WARNING [-] advice\n    at /*:ClinicalDocument[1]\n"
            "xsd=ok schematron_errors=1 warnings=1\n"
            "# b.xml: type=LAB schematron=x.sch\nXSD line 3: bad\nxsd=fail schematron_errors=0 warnings=0\n")
    assert second_engine.parse_report(text) == {
        "a.xml": Outcome(True, frozenset({("ERRORE8", "/ClinicalDocument[1]/id[1]")}),
                         frozenset({("", "/ClinicalDocument[1]")})),
        "b.xml": Outcome(False)}


def test_the_second_engine_runs_from_the_reference_pack():
    assert (REFERENCE / "schematron").is_dir() and second_engine.REFERENCE.resolve() == REFERENCE.resolve()


def test_the_session_collector_compares_what_it_collected(monkeypatch, reference_rules, tmp_path):
    """The collector the root conftest installs: agreement on a real verdict, a disagreement on a wrong one."""
    mine = collector.Collector()
    monkeypatch.setattr(collector, "COLLECTOR", mine)
    rules = load_rules(reference_rules)
    broken = mutate(sample("LAB"), lower_case_cf)
    for xml in (sample("LAB"), broken):
        issues = rules.check_schematron(etree.tostring(etree.fromstring(xml), encoding="unicode"),
                                        DocumentType.LAB)
        mine.record(rules, etree.tostring(etree.fromstring(xml), encoding="unicode"), DocumentType.LAB, issues)
    assert len(mine.documents) == 2
    assert mine.judge(tmp_path) == []
    key = next(k for k, (_, outcome) in mine.documents.items() if outcome.errors)
    mine.documents[key] = (mine.documents[key][0], Outcome(True))  # as if our translator let it pass
    assert [d.split(": ", 1)[1] for d in mine.judge(tmp_path)] == [
        "failed assert ERRORE-46 at /ClinicalDocument[1]/recordTarget[1]/patientRole[1]/id[1]: "
        "only the second engine"]


def test_the_collector_keeps_only_documents_checked_with_the_official_files(monkeypatch, tmp_path,
                                                                           reference_rules):
    mine = collector.Collector()
    monkeypatch.setattr(collector, "COLLECTOR", mine)
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "POCD_MT000040UV02").symlink_to(reference_rules / "schema" / "POCD_MT000040UV02")
    (tmp_path / "schematron").mkdir()
    own = tmp_path / "schematron" / "schematronFSE_LAB_v27.1.sch"
    own.write_text((reference_rules / "schematron" / own.name).read_text(encoding="utf-8") + "\n<!-- -->\n")
    mine.record(load_rules(tmp_path), "<x/>", DocumentType.LAB, [])
    assert mine.documents == {}
    official = load_rules(reference_rules)
    with collector.paused():
        mine.record(official, "<x/>", DocumentType.LAB, [])
    assert mine.documents == {}
    mine.record(official, "<x/>", DocumentType.LAB, [])
    mine.record(official, "<x/>", DocumentType.LAB, [])
    assert len(mine.documents) == 1
