"""Map a routed ORU^R01 to the neutral :class:`~bridge.model.Report` (issue 3 part 2).

What comes from where is data: mappings/header.toml (shared header parts),
one mappings/<TYPE>.toml per document type (its own keys, and a [header]
table overriding shared ones) and the CSV code tables next to them. This
module only interprets them. A *source* in those files is

* ``"PID-5.1"``: one HL7 path (``SEG-field[rep].component.subcomponent``);
* ``["OBR-22", "MSH-7"]``: the first that is not empty;
* ``{ path = ..., default = "...", map = {...}, table = "x.csv", column = "...",
  when = { path = "PV1-2", in = ["I"] } }``: with a default, an inline map or
  a CSV look-up, and a condition on another field.

Every failure raises a :mod:`bridge.errors` error naming the HL7 location
(``PID^1^3``, ``OBR^1^32^1``) with its table 0357 code: 101 missing, 102 bad
format or invalid CF, 103 unknown code or practitioner. Messages never carry
patient data.

The report is built in parts, each a module of plain functions taking the
:class:`Mapper` (the message and the settings of one run): people (patient,
practitioners), header (custodian, encounter, order), codes, groups (OBR
groups, OBX and NTE text), observations (the LAB body) and narrative (the
body of the other types). map_report puts them together.
"""

from __future__ import annotations

import zoneinfo
from typing import Any

from stdnum.it import codicefiscale, iva

from bridge.errors import ConfigError, InvalidValue, MissingField, UnknownCode
from bridge.hl7.message import ParsedMessage
from bridge.hl7.path import Path, Reader, parse_path
from bridge.mapping import header, participations, people
from bridge.mapping.access import access_policies
from bridge.mapping.codes import code_of
from bridge.mapping.groups import obr_groups
from bridge.mapping.narrative import narrative_sections
from bridge.mapping.observations import lab_sections
from bridge.mapping.specimens import narrative_specimens
from bridge.mapping.tables import Mappings
from bridge.mapping.values import local_ts, normalize_ts
from bridge.model import DocumentType, Notice, Person, Report


class Mapper:
    """State of one mapping run: the message, the settings, the look-ups; reads sources and
    hands out references and notices to the modules that build the parts."""

    def __init__(self, parsed: ParsedMessage, mappings: Mappings, settings: dict, doc_type: DocumentType):
        self.reader = Reader(parsed)
        self.mappings = mappings
        self.settings = settings
        self.doc_type = doc_type
        self.tz = zoneinfo.ZoneInfo(settings.get("timezone", "Europe/Rome"))
        self.refs: dict[str, int] = {}
        self.prts = participations.attach(self.reader)
        self.notices: list[Notice] = []

    # -- sources

    def occurrence_index(self, segment: str, occurrence: int) -> int | None:
        found = self.reader.occurrences(segment)
        return found[occurrence - 1] if 0 < occurrence <= len(found) else None

    def read(self, path: Path, scope: dict[str, int] | None = None) -> tuple[str, str]:
        """(value, location) of *path*; *scope* gives segment occurrences of the current group."""
        occurrence = (scope or {}).get(path.segment, 1)
        index = self.occurrence_index(path.segment, occurrence)
        location = path.location(occurrence)
        if index is None:
            return "", location
        return self.reader.value(index, path), location

    def source(self, spec: Any, scope: dict[str, int] | None = None, *, required: bool = False,
               what: str = "field") -> tuple[str, str]:
        """Evaluate a source spec: (value, location of the path it came from)."""
        if spec is None:
            return "", ""
        if isinstance(spec, str):
            spec = {"path": spec}
        elif isinstance(spec, list):
            spec = {"path": spec}
        paths = spec.get("path", [])
        paths = [paths] if isinstance(paths, str) else list(paths)
        value, location = "", ""
        when = spec.get("when")
        if when:
            cond, _ = self.read(parse_path(when["path"]), scope)
            if cond.upper() not in {v.upper() for v in when.get("in", [])}:
                paths = []
        for text in paths:
            value, loc = self.read(parse_path(text), scope)
            location = location or loc
            if value:
                location = loc
                break
        if value and "map" in spec:
            mapped = spec["map"].get(value, spec["map"].get(value.upper()))
            if mapped is None and "default" not in spec:
                raise UnknownCode(f"{what}: code not in the mapping", location=location)
            value = mapped if mapped is not None else spec["default"]
        elif value and "table" in spec:
            row = self.mappings.lookup(spec["table"], value)
            if row is None:
                if "default" not in spec:
                    raise UnknownCode(f"{what}: code not in {spec['table']}", location=location)
                value = spec["default"]
            else:
                value = row.get(spec.get("column", "value"), "")
        if not value:
            value = str(spec.get("default", ""))
        if required and not value:
            raise MissingField(f"{what} is missing", location=location)
        return value, location

    def setting(self, key: str, default: Any = None) -> Any:
        node: Any = self.settings
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def ts(self, key: str, scope=None, *, required: bool = True, what: str = "") -> str:
        value, location = self.source(self.setting(key), scope, required=required, what=what or key)
        return normalize_ts(value, self.tz, location) if value else ""

    def ref(self, prefix: str) -> str:
        self.refs[prefix] = self.refs.get(prefix, 0) + 1
        return f"{prefix}{self.refs[prefix]}"

    def notice(self, text: str, location: str, severity: str = "I") -> None:
        """Something left out of the document, said in the ACK."""
        self.notices.append(Notice(code="0", text=text, location=location, severity=severity))


def map_report(parsed: ParsedMessage, route, mappings: Mappings, structure) -> Report:
    """Build the Report of *parsed* as routed (*route*: bridge.mapping.route.Route).

    *structure* is the configuration's StructureSettings (its P.IVA is checked
    here, so a misconfigured structure is caught before anything is sent).
    """
    doc_type: DocumentType = route.doc_type
    mapping = mappings.types.get(doc_type)
    if mapping is None:
        raise ConfigError(f"no mapping for document type {doc_type.name}",
                          file=str(mappings.directory / f"{doc_type.name}.toml"))
    if not (iva.is_valid(structure.fiscal_code) or codicefiscale.is_valid(structure.fiscal_code)):
        raise ConfigError("not a valid P.IVA or fiscal code", key="structure.fiscal_code")
    m = Mapper(parsed, mappings, mapping.settings, doc_type)
    groups, report_notes = obr_groups(m)
    if not groups:
        raise MissingField("no OBR segment", location="OBR^1")
    for group in groups:
        group["collected"] = m.ts("times.collected", group["scope"], what="observation date/time")
        group["time"] = m.ts("times.observation", group["scope"], what="observation date/time")
    effective = m.ts("times.report", groups[-1]["scope"], what="report date/time")
    patient, birth_location = people.patient(m)
    if patient.birth_time and patient.birth_time > effective[:8]:
        raise InvalidValue("birth date is after the report date", location=birth_location)
    legal = people.person(m, "legal_authenticator", groups[0]["scope"], required=True)
    author = people.person(m, "author", groups[0]["scope"], required=False) or legal
    referrer = people.person(m, "referrer", groups[0]["scope"], required=False)
    facility = header.facility_row(m)
    custodian = header.custodian(facility)
    author = Person(fiscal_code=author.fiscal_code, family=author.family, given=author.given,
                    telecoms=custodian.telecoms)
    procedures = []
    for group in groups:
        comps = m.reader.repetitions(group["index"], 4)
        procedures.append(code_of(m, comps[0] if comps else [], f"OBR^{group['scope']['OBR']}^4",
                                  what="universal service identifier"))
    body = mapping.settings.get("body", "sections")
    if body == "results":
        if report_notes and groups:
            # Comments on the whole report (NTE before the first OBR) go with the first exam.
            groups[0]["notes"][:0] = report_notes
        sections = lab_sections(m, groups)
        specimens = tuple(e.specimen for s in sections for e in s.exams if e.specimen)
    else:
        order = header.order(m)
        specimens = narrative_specimens(m, m.setting("specimens", {}),
                                        m.setting("specimens.id_root") or order.ids[0].root)
        sections = narrative_sections(m, groups, procedures, report_notes, specimens)
    status = "completed"
    if any(e.status == "active" for s in sections for e in s.exams):
        status = "active"
    encounter = header.encounter(m, facility, custodian)
    inpatient_classes = {c.upper() for c in mapping.settings.get("inpatient_classes", ["I"])}
    klass, _ = m.source(m.setting("patient_class"))
    inpatient = klass.upper() in inpatient_classes if klass else doc_type.inpatient
    practice, _ = m.source(m.setting("practice_setting"), groups[0]["scope"], what="practice setting")
    billing, _ = m.source(m.setting("billing"), groups[0]["scope"], what="billing regime")
    service_start = min(g["collected"] for g in groups)
    return Report(
        doc_type=doc_type, title=doc_type.title, code_display=doc_type.display, template=doc_type.template,
        template_version=doc_type.template_version,
        effective_time=effective, status=status, accession=route.accession,
        confidentiality=mapping.settings.get("confidentiality", "N"),
        language=mapping.settings.get("language", "it-IT"),
        patient=patient, author=author, author_time=effective,
        legal_authenticator=legal, legal_time=effective, custodian=custodian,
        order=header.order(m), service_start=service_start, service_end=effective,
        service_code=m.source(m.setting("service_code"), groups[0]["scope"], what="service code")[0],
        referrer=referrer, encounter=encounter, sections=sections, procedures=tuple(procedures),
        specimens=specimens,
        document_class=doc_type.class_code, inpatient=inpatient,
        practice_setting=practice or "AD_PSC999", billing=billing or "SSN",
        clinical_activity=doc_type.clinical_activity,
        service_start_local=local_ts(service_start, m.tz), service_end_local=local_ts(effective, m.tz),
        access_policies=access_policies(m.reader, m.setting("access", {})), notices=tuple(m.notices))
