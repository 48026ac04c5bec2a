"""render.py and identifiers.py on their own: escaping, strictness, the Toscana ids."""

from __future__ import annotations

import dataclasses

import jinja2
import pytest
from lxml import etree

from bridge.errors import ConfigError, InvalidValue
from bridge.gateway.identifiers import (document_id, document_ids, local_id, reduce_accession, repository_id,
                                split_document_id)
from bridge.cda.render import keep_lines, make_environment, render_cda, styled, text_lines
from bridge.hl7.path import HIGHLIGHT, NORMAL

from .conftest import CHECKOUT, EXAMPLES

H = "{urn:hl7-org:v3}"


def test_gateway_example_ids():
    assert document_id("01386030488", "LAB", "999", "A26-00412", 1) == \
        "2.16.840.1.113883.2.9.2.90.4.4^01386030488.LAB.999.A26-00412_1"
    assert document_id("01386030488", "LAB", "own", "18881699", 1) == \
        "2.16.840.1.113883.2.9.2.90.4.4^01386030488.LAB.01386030488.18881699_1"
    assert document_id("01386030488", "RAD", "own", "X", 2, repository_index=2) == \
        "2.16.840.1.113883.2.9.2.90.4.4^01386030488.RAD.01386030488-2.X_2"
    assert repository_id("01386030488", "999") == "2.16.840.1.113883.2.9.2.90.4.5.999"
    assert repository_id("01386030488", "201") == "2.16.840.1.113883.2.9.2.90.4.5.201"
    assert repository_id("01386030488", "own") == "2.16.840.1.113883.2.9.2.90.4.5.01386030488"
    assert repository_id("01386030488", "own", 3) == "2.16.840.1.113883.2.9.2.90.4.5.01386030488-3"


def test_accession_reduced_to_safe_characters():
    assert reduce_accession("A26/00412 bis") == "A2600412bis"
    assert local_id("LAB-26_7", 3) == "LAB-267_3"
    with pytest.raises(InvalidValue):
        reduce_accession("///")


def test_replacement_ids_keep_the_set():
    first = document_ids("01386030488", "LAB", "999", "A1")
    assert (first.version_number, first.previous) == (1, None)
    assert (first.set_root, first.set_extension) == (first.root, first.extension)
    third = document_ids("01386030488", "LAB", "999", "A1",
                         previous_id=document_id("01386030488", "LAB", "999", "A1", 2), previous_version=2)
    assert third.extension.endswith("A1_3") and third.version_number == 3
    assert third.set_extension == first.extension
    assert third.previous == split_document_id(document_id("01386030488", "LAB", "999", "A1", 2))


def test_explicit_set_id_wins():
    ids = document_ids("01386030488", "LAB", "999", "A1", previous_id="r^x.A1_5", previous_version=1,
                       set_id="r^x.A1_5")
    assert (ids.set_root, ids.set_extension, ids.version_number) == ("r", "x.A1_5", 2)


def test_environment_is_strict_and_escapes():
    env = make_environment(CHECKOUT / "templates")
    assert env.undefined is jinja2.StrictUndefined
    assert env.autoescape is True
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ nothing.here }}").render()
    assert env.from_string("<a>{{ v }}</a>").render(v="<&>\"") == "<a>&lt;&amp;&gt;&#34;</a>"


def test_text_helpers():
    assert text_lines("a\r\nb\rc\nd") == ["a", "b", "c", "d"]
    assert str(keep_lines("x < y\ny & z")) == "x &lt; y&#10;y &amp; z"


def test_names_with_markup_characters_are_escaped(pipeline):
    report, ids, _ = pipeline(EXAMPLES / "lab.hl7")
    patient = dataclasses.replace(report.patient, family="O'Brien <&> \"Test\"")
    env = make_environment(CHECKOUT / "templates")
    xml = render_cda(dataclasses.replace(report, patient=patient), env, ids)
    family = etree.fromstring(xml).find(f".//{H}patient/{H}name/{H}family")
    assert family.text == "O'Brien <&> \"Test\""


def test_missing_template_is_a_config_error(pipeline):
    report, ids, _ = pipeline(EXAMPLES / "lab.hl7")
    env = make_environment(CHECKOUT / "templates")
    with pytest.raises(ConfigError):
        render_cda(dataclasses.replace(report, template="nope.xml.j2"), env, ids)


def test_missing_templates_folder(tmp_path):
    with pytest.raises(ConfigError):
        make_environment(tmp_path / "absent")


def test_effective_time_override(pipeline):
    report, ids, _ = pipeline(EXAMPLES / "lab.hl7")
    env = make_environment(CHECKOUT / "templates")
    xml = render_cda(report, env, dataclasses.replace(ids, effective_time="20260311080000+0100"))
    assert etree.fromstring(xml).find(f"{H}effectiveTime").get("value") == "20260311080000+0100"


@pytest.mark.parametrize("text, expected", [
    ("a < b\nc", "a &lt; b<br/>c"),
    (f"{HIGHLIGHT}A){NORMAL} testo", '<content styleCode="Bold">A)</content> testo'),
    (f"{HIGHLIGHT}aperto\nriga", '<content styleCode="Bold">aperto<br/>riga</content>'),
    (f"{NORMAL}x{HIGHLIGHT}{HIGHLIGHT}y{NORMAL}{NORMAL}", 'x<content styleCode="Bold">y</content>')])
def test_styled_narrative_is_balanced_and_escaped(text, expected):
    assert str(styled(text)) == expected
    etree.fromstring(f"<p>{styled(text)}</p>")
