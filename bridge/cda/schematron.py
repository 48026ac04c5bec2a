"""ISO Schematron (queryBinding xslt2) translated to an XSLT 3 stylesheet.

The translation follows what the FSE gateway does with the official
schematrons (cda.md section 1): within each pattern only the first rule whose
context matches a node fires for that node, a failed ``assert`` is an error
and a fired ``report`` is a warning. Each pattern becomes an XSLT mode whose
template rules carry descending priorities in document order, so the XSLT
processor's own template matching picks "the first matching rule".

A test that raises a dynamic error is reported as a failure of that rule
(``xsl:try``), so one odd document neither stops the run nor makes the
processor print document values.

Supported: ``ns``; ``let`` at schema, pattern and rule level (with ``value``
or with XSLT content, as the RAP schematron does); ``name`` and ``value-of``
in messages; ``include``; abstract rules used through ``extends``. Abstract
patterns (``is-a``) are not used by the official files and are refused.

The stylesheet writes a small XML document that :mod:`bridge.cda.validate` reads::

    <fsv:results xmlns:fsv="urn:fse-bridge:schematron">
      <fsv:finding severity="error|warning" id="ERRORE-b27" location="/ClinicalDocument[1]/...">text</fsv:finding>
    </fsv:results>

``id`` is the assertion's ``@id`` or else the text before the first ``|`` of
its message (the official files name their rules that way: ``ERRORE-b27| ...``).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from lxml import etree

SCH = "http://purl.oclc.org/dsdl/schematron"
XSL = "http://www.w3.org/1999/XSL/Transform"
OUT = "urn:fse-bridge:schematron"
_S = f"{{{SCH}}}"
_X = f"{{{XSL}}}"
_O = f"{{{OUT}}}"
_XS = "http://www.w3.org/2001/XMLSchema"
_ERR = "http://www.w3.org/2005/xqt-errors"

#: Text prefix that names an assertion: "ERRORE-b27| ...", "W002 | ...", "ERRORE 8| ...".
_RULE_ID = re.compile(r"^\s*([^|\n]{1,40}?)\s*\|")

# Location of a node as /name[n]/name[n]/@attr (names as written in the document).
_LOCATION_FUNCTION = """
string-join(for $a in $n/ancestor-or-self::* return
    concat('/', name($a), '[', count($a/preceding-sibling::*[node-name(.) eq node-name($a)]) + 1, ']'), '')
|| (if ($n instance of attribute()) then concat('/@', name($n)) else '')
"""


class SchematronError(ValueError):
    """The schematron file cannot be translated (names the file and the reason)."""


def translate(path: Path) -> bytes:
    """Return the XSLT 3 stylesheet (UTF-8 bytes) that checks documents against *path*."""
    schema = _load(Path(path))
    ns = {n.get("prefix"): n.get("uri") for n in schema.iter(_S + "ns")}
    # Our own constructs use prefixes of their own; xs and err are there for the
    # rules' convenience unless the schematron binds those prefixes itself.
    nsmap = {"xs": _XS, "err": _ERR}
    nsmap.update({p: u for p, u in ns.items() if p})
    nsmap.update({"xsl": XSL, "fsv": OUT, "fsvxs": _XS, "fsverr": _ERR})
    sheet = etree.Element(_X + "stylesheet", nsmap=nsmap, version="3.0")
    sheet.set("exclude-result-prefixes", " ".join(p for p in nsmap if p != "fsv"))
    etree.SubElement(sheet, _X + "output", method="xml", indent="no")

    function = etree.SubElement(sheet, _X + "function", name="fsv:location", **{"as": "fsvxs:string"})
    etree.SubElement(function, _X + "param", name="n", **{"as": "node()"})
    etree.SubElement(function, _X + "sequence", select=_LOCATION_FUNCTION.strip())

    # Schema- and pattern-level variables are global: their context is the document.
    for let in schema.findall(_S + "let"):
        _variable(sheet, let)
    patterns = [p for p in schema.iter(_S + "pattern") if p.get("abstract") != "true"]
    for pattern in patterns:
        if pattern.get("is-a"):
            raise SchematronError(f"{path.name}: abstract pattern instances (is-a) are not supported")
        for let in pattern.findall(_S + "let"):
            _variable(sheet, let)

    root = etree.SubElement(sheet, _X + "template", match="/")
    results = etree.SubElement(root, _O + "results")
    abstract = {r.get("id"): r for r in schema.iter(_S + "rule") if r.get("abstract") == "true"}
    for index, pattern in enumerate(patterns):
        mode = f"M{index}"
        etree.SubElement(results, _X + "apply-templates", select="/", mode=mode)
        rules = [r for r in pattern.findall(_S + "rule") if r.get("abstract") != "true"]
        # Walking attributes doubles the run time; only do it when a rule can match one.
        children = "@*|*" if any(_may_match_attributes(r.get("context", "")) for r in rules) else "*"
        for order, rule in enumerate(rules):
            context = rule.get("context")
            if not context:
                raise SchematronError(f"{path.name}: a rule in pattern {index + 1} has no context")
            # Earlier rules win: priorities descend in document order.
            template = etree.SubElement(sheet, _X + "template", match=context, mode=mode,
                                        priority=str(len(rules) - order))
            _rule_body(template, rule, abstract, path)
            etree.SubElement(template, _X + "apply-templates", select=children, mode=mode)
        fallback = etree.SubElement(sheet, _X + "template", match="document-node()|@*|*",
                                    mode=mode, priority="-1")
        etree.SubElement(fallback, _X + "apply-templates", select=children, mode=mode)
    return etree.tostring(sheet, xml_declaration=True, encoding="UTF-8")


def _may_match_attributes(context: str) -> bool:
    """True when a rule context, predicates aside, can select attributes."""
    previous = None
    while previous != context:  # drop [...] from the innermost out
        previous, context = context, re.sub(r"\[[^\[\]]*\]", "", context)
    return "@" in context or "attribute::" in context or "attribute(" in context


def _load(path: Path) -> etree._Element:
    try:
        schema = etree.parse(str(path)).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise SchematronError(f"{path.name}: cannot read the schematron: {exc}") from None
    if schema.tag != _S + "schema":
        raise SchematronError(f"{path.name}: not an ISO schematron (root is {schema.tag})")
    binding = schema.get("queryBinding", "xslt2").lower()
    if binding not in ("xslt2", "xslt3", "xpath2", "xpath3"):
        raise SchematronError(f"{path.name}: queryBinding {binding!r} is not supported")
    _expand_includes(schema, path, depth=0)
    return schema


def _expand_includes(element: etree._Element, path: Path, depth: int) -> None:
    if depth > 10:
        raise SchematronError(f"{path.name}: include nesting too deep")
    for include in list(element.iter(_S + "include")):
        target = (path.parent / include.get("href", "")).resolve()
        try:
            included = etree.parse(str(target)).getroot()
        except (OSError, etree.XMLSyntaxError) as exc:
            raise SchematronError(f"{path.name}: cannot include {include.get('href')}: {exc}") from None
        _expand_includes(included, target, depth + 1)
        include.getparent().replace(include, included)


def _variable(parent: etree._Element, let: etree._Element) -> None:
    variable = etree.SubElement(parent, _X + "variable", name=let.get("name"))
    if let.get("value") is not None:
        variable.set("select", let.get("value"))
    else:
        # A let with content (e.g. xsl:for-each) is copied as the variable's body.
        variable.text = let.text
        for child in let:
            variable.append(_copy(child))


def _copy(element):
    return copy.deepcopy(element)


def _rule_body(template, rule, abstract, path: Path) -> None:
    for child in rule:
        if not isinstance(child.tag, str):
            continue
        if child.tag == _S + "extends":
            base = abstract.get(child.get("rule"))
            if base is None:
                raise SchematronError(f"{path.name}: extends unknown abstract rule {child.get('rule')!r}")
            _rule_body(template, base, abstract, path)
        elif child.tag == _S + "let":
            _variable(template, child)
        elif child.tag in (_S + "assert", _S + "report"):
            _check(template, child)


def _check(template, check) -> None:
    is_assert = check.tag == _S + "assert"
    test = check.get("test")
    rule_id = _avt_escape(check.get("id") or _rule_id(check))
    # A test that raises (e.g. one item expected, two found) is an error of that
    # rule, caught here so that the processor neither stops nor prints the values.
    attempt = etree.SubElement(template, _X + "try")
    condition = etree.SubElement(attempt, _X + "if", test=f"not({test})" if is_assert else test)
    finding = etree.SubElement(condition, _O + "finding", severity="error" if is_assert else "warning",
                               id=rule_id, location="{fsv:location(.)}")
    _message(finding, check)
    catch = etree.SubElement(attempt, _X + "catch")
    failed = etree.SubElement(catch, _O + "finding", severity="error", id=rule_id,
                              location="{fsv:location(.)}")
    etree.SubElement(failed, _X + "text").text = "the rule could not be evaluated: "
    etree.SubElement(failed, _X + "value-of", select="$fsverr:code, $fsverr:description")


def _avt_escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _rule_id(check) -> str:
    match = _RULE_ID.match(check.text or "")
    return match.group(1) if match else ""


def _message(target, element) -> None:
    """Copy the message: text as xsl:text, name/value-of as xsl:value-of."""
    if element.text:
        etree.SubElement(target, _X + "text").text = element.text
    for child in element:
        if child.tag == _S + "name":
            etree.SubElement(target, _X + "value-of", select=f"name({child.get('path', '.')})")
        elif child.tag == _S + "value-of":
            etree.SubElement(target, _X + "value-of", select=child.get("select"))
        elif isinstance(child.tag, str):
            _message(target, child)  # emph, dir, span: keep their text
        if child.tail:
            etree.SubElement(target, _X + "text").text = child.tail
