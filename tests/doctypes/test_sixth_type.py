"""A sixth document type from data alone (issue 12 item 2).

A copy of the checkout's mappings and templates gets a made-up type XYZ: its
declaration (mappings/XYZ.toml [document]), its sections (sections.csv rows),
a routing rule and a template. No Python changes, yet a message goes through
route, map, render, the CDA XSD and the PDF; validation says that no
schematron serves its template, and the gateway layer refuses to publish it
(the Region's identifiers know five types).
"""

from __future__ import annotations

import io
import pickle
import shutil
import subprocess
import sys

import pytest
from lxml import etree
from pypdf import PdfReader

from bridge.cda.render import make_environment, render_cda
from bridge.cda.validate import load_rules, validate_cda
from bridge.config import Config
from bridge.errors import ConfigError, InvalidValue
from bridge.gateway.bodies import create_body
from bridge.gateway.identifiers import document_ids, new_submission_id
from bridge.hl7.message import parse_message
from bridge.mapping import doctypes
from bridge.mapping.mapper import map_report
from bridge.mapping.tables import load_mappings
from bridge.mapping.route import load_routing, route
from bridge.pdf.package import build_unsigned_pdf
from bridge.publish.submission import build_submission

from fse_helpers import CHECKOUT, REFERENCE

NS = {"h": "urn:hl7-org:v3"}
XYZ_ROOT = "2.16.840.1.113883.2.9.10.1.99"

XYZ_TOML = f'''# XYZ: a made-up narrative type, declared from data alone.
body = "sections"
practice_setting = {{ path = "OBR-24", table = "practice_settings.csv", default = "AD_PSC107" }}

[document]
loinc = "11506-3"
display = "Nota di decorso"
title = "Nota di decorso clinico"
template = "xyz.xml.j2"
template_root = "{XYZ_ROOT}"
template_version = "1.0"
class_code = "REF"
clinical_activity = "ERP"

[sections]
table = "sections.csv"
default = "47045-0"
notes = "47045-0"

[sections.required]
"47045-0" = ["narrative"]
'''

XYZ_SECTIONS = """XYZ,11329-0,11329-0,Storia clinica
XYZ,47045-0,47045-0,Decorso
XYZ,ANAMNESI,11329-0,
"""

XYZ_RULE = '''
[[rule]]
path = "OBR-24"
map = { NOTA = "XYZ" }
'''

XYZ_TEMPLATE = """{% import "_macros.xml.j2" as m %}
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
{{ m.document_start(report, ids, effective_time) }}
{{ m.record_target(report.patient) }}
{{ m.author(report) }}
{{ m.custodian(report.custodian) }}
{{ m.legal_authenticator(report) }}
{{ m.in_fulfillment_of(report.order) }}
{{ m.documentation_of(report) }}
{{ m.related_document(ids) }}
{{ m.component_of(report) }}
<component>
  <structuredBody>
{% for s in report.sections %}
{{ m.section(s) }}
{% endfor %}
  </structuredBody>
</component>
</ClinicalDocument>
"""


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """(mappings, templates): copies of the checkout's with XYZ added; XYZ is declared for this test only."""
    monkeypatch.setattr(doctypes, "_declared", dict(doctypes._registry()))
    mappings = shutil.copytree(CHECKOUT / "mappings", tmp_path / "mappings")
    templates = shutil.copytree(CHECKOUT / "templates", tmp_path / "templates")
    (mappings / "XYZ.toml").write_text(XYZ_TOML, "utf-8")
    with (mappings / "sections.csv").open("a", encoding="utf-8") as table:
        table.write(XYZ_SECTIONS)
    with (mappings / "routing.toml").open("a", encoding="utf-8") as routing:
        routing.write(XYZ_RULE)
    (templates / "xyz.xml.j2").write_text(XYZ_TEMPLATE, "utf-8")
    return mappings, templates


def xyz_message() -> bytes:
    """The RSA example, its OBR-24 the sender's code for XYZ."""
    text = (CHECKOUT / "examples" / "rsa.hl7").read_bytes()
    assert b"||CAR|F|" in text
    return text.replace(b"||CAR|F|", b"||NOTA|F|")


def test_a_sixth_type_goes_from_data_to_cda_and_pdf_but_not_to_the_gateway(folders):
    mappings_dir, templates_dir = folders
    config = Config()
    structure = config.structure

    parsed = parse_message(xyz_message())
    routed = route(parsed, load_routing(mappings_dir))
    assert routed.doc_type.name == "XYZ"

    report = map_report(parsed, routed, load_mappings(mappings_dir, mappings_dir / "practitioners.csv"), structure)
    assert (report.doc_type, report.title, report.code_display) == (routed.doc_type, "Nota di decorso clinico",
                                                                   "Nota di decorso")
    assert [s.code.code for s in report.sections] == ["11329-0", "47045-0"]

    ids = document_ids(structure.fiscal_code, routed.doc_type.name, structure.repository, routed.accession)
    cda = render_cda(report, make_environment(templates_dir), ids)
    root = etree.fromstring(cda)
    assert root.find("h:templateId", NS).get("root") == XYZ_ROOT
    assert root.find("h:code", NS).get("code") == "11506-3"
    assert root.findtext("h:title", namespaces=NS) == "Nota di decorso clinico"

    # The CDA XSD passes; the template root picks the type, and no schematron serves it.
    validation = validate_cda(cda, load_rules(REFERENCE))
    assert validation.doc_type is routed.doc_type
    assert validation.xsd_errors == []
    assert validation.schematron is None and not validation.ok
    assert [i.rule_id for i in validation.schematron_errors] == ["SCHEMATRON"]
    assert "no schematron serves XYZ" in validation.schematron_errors[0].message
    assert XYZ_ROOT in validation.schematron_errors[0].message

    # The PDF reads the CDA only: the type's display name, its title and its text.
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(build_unsigned_pdf(cda))).pages)
    flat = " ".join(text.split())
    for expected in ("Nota di decorso", "Nota di decorso clinico", "Storia clinica",
                     "Ipertensione arteriosa in terapia da 5 anni", "Manzoni"):
        assert expected in flat, expected

    # Its gateway metadata come from the declaration, but the Region's identifiers know five types.
    submission = build_submission(report, ids.document_id, config, new_submission_id())
    assert (submission.effective_class_code, submission.clinical_activity) == ("REF", "ERP")
    with pytest.raises(InvalidValue) as refused:
        create_body(submission)
    assert "XYZ cannot be published" in str(refused.value)
    assert "LAB, RAD, LDO, RSA, RAP" in str(refused.value)


def test_the_sixth_type_is_declared_only_where_it_was_loaded(folders):
    mappings_dir, _ = folders
    load_routing(mappings_dir)
    assert doctypes.DocumentType["XYZ"].template_root == XYZ_ROOT
    # The checkout's own folder still declares five, each one object however often loaded.
    five = doctypes.load_document_types(CHECKOUT / "mappings")
    assert sorted(five) == ["LAB", "LDO", "RAD", "RAP", "RSA"]
    assert all(doctypes.DocumentType[name] is t for name, t in five.items())


def test_a_type_file_without_its_declaration_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(doctypes, "_declared", {})
    (tmp_path / "XYZ.toml").write_text(XYZ_TOML.replace('loinc = "11506-3"\n', ""), "utf-8")
    with pytest.raises(ConfigError) as missing:
        doctypes.load_document_types(tmp_path)
    assert missing.value.key == "document.loinc" and missing.value.file.endswith("XYZ.toml")
    (tmp_path / "XYZ.toml").write_text('body = "sections"\n', "utf-8")
    with pytest.raises(ConfigError) as no_table:
        doctypes.load_document_types(tmp_path)
    assert no_table.value.key == "document"


def test_a_type_unpickled_in_a_worker_does_not_hide_the_others():
    # A worker process gets its first document type by pickle, before it loads anything: its
    # validation rules must still know every type's schematron.
    code = ("import pickle, sys\n"
            "doc_type = pickle.loads(sys.stdin.buffer.read())\n"
            "from bridge.cda.validate import load_rules\n"
            "from bridge.model import DocumentType\n"
            f"rules = load_rules({str(REFERENCE)!r})\n"
            "assert DocumentType['RAD'] is doc_type\n"
            "print(' '.join(sorted(t.name for t in rules.schematrons)))\n")
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(doctypes.DocumentType.RAD),
                          capture_output=True, timeout=120, cwd=CHECKOUT)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["LAB", "LDO", "RAD", "RAP", "RSA"]
