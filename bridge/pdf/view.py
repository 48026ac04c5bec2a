"""What the printed report shows, read from the CDA alone (pdf.md section 6).

The report is drawn from the CDA header and the section narratives
(``section/text``), never from coded entries or the HL7 message, so that
``package`` works for any valid CDA and the PDF shows what the CDA attests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from bridge.errors import ParseError

NS = "urn:hl7-org:v3"
_N = {"h": NS}
CF_ROOT = "2.16.840.1.113883.2.9.4.3.2"
"""OID of the Italian fiscal code (codice fiscale) namespace."""

SEXES = {"M": "Maschio", "F": "Femmina", "UN": "Non definito"}


@dataclass(frozen=True)
class Section:
    title: str
    level: int
    """1 for a section of the body, 2 for one inside it, and so on."""
    text: etree._Element | None
    """The narrative block (``section/text``), or None."""


@dataclass(frozen=True)
class CdaView:
    """The header fields and the sections of one CDA, as printable strings."""

    document_code: str = ""
    document_type: str = ""
    title: str = ""
    document_id: str = ""
    set_id: str = ""
    version: str = ""
    effective_time: str = ""
    structure: str = ""
    patient_name: str = ""
    patient_fiscal_code: str = ""
    birth_date: str = ""
    sex: str = ""
    author: str = ""
    legal_authenticator: str = ""
    legal_authentication_time: str = ""
    order_id: str = ""
    prescriber: str = ""
    replaces: str = ""
    """Id of the document this one replaces (relatedDocument RPLC)."""
    sections: tuple[Section, ...] = field(default_factory=tuple)


def _parser() -> etree.XMLParser:
    # No DTDs, entities or network: the CDA may come from anywhere.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           remove_comments=True, remove_pis=True, huge_tree=False)


def parse_cda(data: bytes) -> etree._Element:
    """The ClinicalDocument root of *data*; ParseError when it is not an HL7 CDA R2 document."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"not well-formed XML (line {exc.lineno})") from None
    except ValueError:
        raise ParseError("not XML") from None
    if root.tag != f"{{{NS}}}ClinicalDocument":
        raise ParseError("not an HL7 CDA R2 document (the root element must be "
                         "ClinicalDocument in urn:hl7-org:v3)")
    if root.find("h:component/h:structuredBody", _N) is None:
        raise ParseError("the CDA has no structuredBody: nothing to print")
    return root


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _first(root, path: str) -> etree._Element | None:
    return root.find(path, _N)


def _xfirst(root, xpath: str) -> etree._Element | None:
    found = root.xpath(xpath, namespaces=_N)
    return found[0] if found else None


def _attr(root, path: str, name: str) -> str:
    el = _first(root, path)
    return _clean(el.get(name)) if el is not None else ""


def _text(root, path: str) -> str:
    el = _first(root, path)
    return _clean("".join(el.itertext())) if el is not None else ""


def person_name(name: etree._Element | None) -> str:
    """Prefix, given and family names in reading order ("Dr Mario Rossi")."""
    if name is None:
        return ""
    parts = []
    for tag in ("prefix", "given", "family", "suffix"):
        parts += [_clean("".join(el.itertext())) for el in name.findall(f"h:{tag}", _N)]
    text = " ".join(p for p in parts if p)
    return text or _clean("".join(name.itertext()))


def format_ts(value: str, *, with_time: bool = True) -> str:
    """HL7 TS ``YYYYMMDD[HHMM[SS]][+ZZZZ]`` as Italian ``DD/MM/YYYY HH:MM``; unknown shapes as they are."""
    m = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?)?(?:\.\d+)?([+-]\d{4})?", value or "")
    if not m:
        return value or ""
    year, month, day, hour, minute = m.group(1, 2, 3, 4, 5)
    date = "/".join(p for p in (day, month, year) if p)
    if with_time and hour:
        return f"{date} {hour}:{minute or '00'}"
    return date


def _sections(body: etree._Element) -> tuple[Section, ...]:
    result = []

    def walk(parent, level):
        for section in parent.iterfind("h:component/h:section", _N):
            title = _text(section, "h:title") or _attr(section, "h:code", "displayName")
            result.append(Section(title, level, _first(section, "h:text")))
            walk(section, level + 1)

    walk(body, 1)
    return tuple(result)


def read_view(root: etree._Element) -> CdaView:
    """The printable view of a parsed ClinicalDocument (see parse_cda)."""
    code = _attr(root, "h:code", "code")
    patient_role = _first(root, "h:recordTarget/h:patientRole")
    cf = ""
    if patient_role is not None:
        ids = patient_role.findall("h:id", _N)
        cf_id = next((i for i in ids if i.get("root") == CF_ROOT), ids[0] if ids else None)
        cf = _clean(cf_id.get("extension")) if cf_id is not None else ""
    sex = _attr(root, "h:recordTarget/h:patientRole/h:patient/h:administrativeGenderCode", "code")
    doc_id = _first(root, "h:id")
    set_id = _first(root, "h:setId")

    def ident(el):
        return "" if el is None else _clean(el.get("extension")) or _clean(el.get("root"))

    structure = (_text(root, "h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:name")
                 or _text(root, "h:author/h:assignedAuthor/h:representedOrganization/h:name"))
    return CdaView(
        document_code=code,
        # The PDF reads only the CDA (pdf.md): the type as its code names it, and its own title.
        document_type=_attr(root, "h:code", "displayName") or _text(root, "h:title"),
        title=_text(root, "h:title"),
        document_id=ident(doc_id),
        set_id=ident(set_id),
        version=_attr(root, "h:versionNumber", "value"),
        effective_time=format_ts(_attr(root, "h:effectiveTime", "value")),
        structure=structure,
        patient_name=person_name(_first(root, "h:recordTarget/h:patientRole/h:patient/h:name")),
        patient_fiscal_code=cf,
        birth_date=format_ts(_attr(root, "h:recordTarget/h:patientRole/h:patient/h:birthTime", "value"),
                             with_time=False),
        sex=SEXES.get(sex, sex),
        author=person_name(_first(root, "h:author/h:assignedAuthor/h:assignedPerson/h:name")),
        legal_authenticator=person_name(
            _first(root, "h:legalAuthenticator/h:assignedEntity/h:assignedPerson/h:name")),
        legal_authentication_time=format_ts(_attr(root, "h:legalAuthenticator/h:time", "value")),
        order_id=_attr(root, "h:inFulfillmentOf/h:order/h:id", "extension"),
        prescriber=person_name(_xfirst(
            root, "h:participant[h:functionCode/@code='PRE']/h:associatedEntity/h:associatedPerson/h:name")),
        replaces=ident(_xfirst(root, "h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id")),
        sections=_sections(_first(root, "h:component/h:structuredBody")),
    )
