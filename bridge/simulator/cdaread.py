"""Read a CDA the way the dispatcher does (gateway.md sections 6, 7).

The dispatcher uses an HTML-mode jsoup parser with tag selectors: the first
``<id>`` in document order is ClinicalDocument/id, the first ``<code>`` the
document type, ``recordTarget patientRole id`` the patient. Prefixed elements
(``hl7:id``) are other tags to it, so they are skipped here too.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree


class CdaProblem(Exception):
    pass


@dataclass(frozen=True, slots=True)
class CdaFacts:
    id_root: str | None
    id_extension: str | None
    code: str | None
    code_system: str | None
    patient_ids: tuple[tuple[str, str], ...]
    """(root, extension) of every recordTarget/patientRole/id."""

    @property
    def resource_hl7_type(self) -> str:
        return f"('{self.code or ''}^^{self.code_system or ''}')"


def _plain(el, name: str) -> bool:
    return isinstance(el.tag, str) and el.prefix is None and etree.QName(el).localname == name


def read_cda(xml: bytes) -> CdaFacts:
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False, recover=False)
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        raise CdaProblem(f"not well-formed XML (line {exc.lineno})") from None
    first_id = next((el for el in root.iter() if _plain(el, "id")), None)
    first_code = next((el for el in root.iter() if _plain(el, "code")), None)
    patients = []
    for target in (el for el in root.iter() if _plain(el, "recordTarget")):
        for role in (el for el in target.iter() if _plain(el, "patientRole")):
            for pid in role:
                if _plain(pid, "id"):
                    patients.append((pid.get("root", ""), pid.get("extension", "")))
    return CdaFacts(
        id_root=first_id.get("root") if first_id is not None else None,
        id_extension=first_id.get("extension") if first_id is not None else None,
        code=first_code.get("code") if first_code is not None else None,
        code_system=first_code.get("codeSystem") if first_code is not None else None,
        patient_ids=tuple(patients))
