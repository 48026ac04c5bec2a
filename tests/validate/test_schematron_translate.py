"""The schematron-to-XSLT translation on small schematrons written for the tests."""

import pytest
from saxonche import PySaxonProcessor

from bridge.cda.schematron import SchematronError, translate
from bridge.cda.validate import read_findings

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2"
        xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <ns prefix="t" uri="urn:test"/>
"""

DOC = """<list xmlns="urn:test" limit="2">
  <item kind="a" n="1"/>
  <item kind="b" n="2"/>
  <item kind="b" n="3"><sub/></item>
</list>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    processor = PySaxonProcessor(license=False)
    xslt = processor.new_xslt30_processor()
    folder = tmp_path_factory.mktemp("sch")

    def run(body: str, doc: str = DOC, extra: dict | None = None):
        for name, text in (extra or {}).items():
            (folder / name).write_text(text)
        path = folder / "test.sch"
        path.write_text(HEAD + body + "</schema>")
        executable = xslt.compile_stylesheet(stylesheet_text=translate(path).decode())
        output = executable.transform_to_string(xdm_node=processor.parse_xml(xml_text=doc))
        return [(i.severity, i.rule_id, i.location, i.message) for i in read_findings(output)]

    return run


def test_first_matching_rule_of_a_pattern_fires(run):
    findings = run("""
      <pattern>
        <rule context="t:item[@kind='a']"><assert test="false()">A1| first rule</assert></rule>
        <rule context="t:item"><assert test="false()">B1| second rule</assert></rule>
      </pattern>
      <pattern>
        <rule context="t:item[@n='1']"><assert test="false()">C1| other pattern</assert></rule>
      </pattern>""")
    assert [(f[1], f[2]) for f in findings] == [
        ("A1", "/list[1]/item[1]"), ("B1", "/list[1]/item[2]"), ("B1", "/list[1]/item[3]"),
        ("C1", "/list[1]/item[1]"),
    ]


def test_assert_is_error_report_is_warning(run):
    findings = run("""
      <pattern>
        <rule context="t:item">
          <assert test="@n != '2'">E1| n must not be 2</assert>
          <report test="t:sub">W001 | item has a sub</report>
          <assert id="by-id" test="@kind">no id prefix here</assert>
          <assert test="@n != '3'">
            ERRORE 8| spaced id, as some official rules write it</assert>
          <assert id="R9" test="@n != '1'">with an id</assert>
        </rule>
      </pattern>""")
    assert findings == [
        ("error", "R9", "/list[1]/item[1]", "with an id"),
        ("error", "E1", "/list[1]/item[2]", "n must not be 2"),
        ("warning", "W001", "/list[1]/item[3]", "item has a sub"),
        ("error", "ERRORE 8", "/list[1]/item[3]", "spaced id, as some official rules write it"),
    ]


def test_lets_at_every_level_and_message_values(run):
    findings = run("""
      <let name="limit" value="number(/t:list/@limit)"/>
      <pattern>
        <let name="kinds" value="count(distinct-values(//t:item/@kind))"/>
        <rule context="t:item">
          <let name="n" value="number(@n)"/>
          <let name="path"><xsl:for-each select="ancestor-or-self::*">/<xsl:value-of select="local-name()"/></xsl:for-each></let>
          <assert test="$n le $limit">E2| <name/> <value-of select="$n"/> over <value-of select="$limit"/> at <value-of select="$path"/> (<value-of select="$kinds"/> kinds) in <name path=".."/></assert>
        </rule>
      </pattern>""")
    assert findings == [("error", "E2", "/list[1]/item[3]", "item 3 over 2 at /list/item (2 kinds) in list")]


def test_attribute_context_location(run):
    findings = run("""
      <pattern><rule context="t:item/@kind"><assert test=". = 'a'">E3| kind</assert></rule></pattern>""")
    assert [f[2] for f in findings] == ["/list[1]/item[2]/@kind", "/list[1]/item[3]/@kind"]


def test_include_and_abstract_rules(run):
    included = """<pattern xmlns="http://purl.oclc.org/dsdl/schematron">
      <rule context="t:sub"><assert test="false()">I1| from the included file</assert></rule>
    </pattern>"""
    findings = run("""
      <include href="part.sch"/>
      <pattern>
        <rule abstract="true" id="numbered"><assert test="@n">E4| needs n</assert></rule>
        <rule context="t:item | t:sub"><extends rule="numbered"/></rule>
      </pattern>""", extra={"part.sch": included})
    assert [(f[1], f[2]) for f in findings] == [("I1", "/list[1]/item[3]/sub[1]"), ("E4", "/list[1]/item[3]/sub[1]")]


def test_clean_document_has_no_findings(run):
    assert run("""<pattern><rule context="t:item"><assert test="@n">E5| n</assert></rule></pattern>""") == []


def test_abstract_pattern_instances_are_refused(tmp_path):
    path = tmp_path / "a.sch"
    path.write_text(HEAD + '<pattern is-a="base" id="x"/></schema>')
    with pytest.raises(SchematronError, match="is-a"):
        translate(path)


def test_not_a_schematron(tmp_path):
    path = tmp_path / "b.sch"
    path.write_text("<xsl:stylesheet xmlns:xsl='http://www.w3.org/1999/XSL/Transform' version='3.0'/>")
    with pytest.raises(SchematronError, match="b.sch: not an ISO schematron"):
        translate(path)
    path.write_text("<schema")
    with pytest.raises(SchematronError, match="b.sch: cannot read"):
        translate(path)
