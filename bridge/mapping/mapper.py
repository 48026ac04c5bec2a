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
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from typing import Any

from stdnum.it import codicefiscale, iva

from bridge.errors import ConfigError, InvalidValue, MissingField, UnknownCode
from bridge.hl7.message import ParsedMessage
from bridge.hl7.path import Path, Reader, parse_path
from bridge.mapping import participations
from bridge.mapping.access import access_policies
from bridge.mapping.tables import Mappings
from bridge.mapping.sections import fill_required
from bridge.mapping.specimens import narrative_specimens, specimen_line
from bridge.mapping.text import BREAK, paragraphs, text_lines
from bridge.mapping.values import decimal_text, local_ts, normalize_ts
from bridge.model import (Address, Code, DocumentType, Encounter, Exam, Identifier, Media, Note, Notice,
                          Observation, Order, Organization, Patient, Person, Range, Report,
                          Section, Specimen, Telecom)

CF_ROOT = "2.16.840.1.113883.2.9.4.3.2"
LOINC = "2.16.840.1.113883.6.1"


# --------------------------------------------------------------------------- the mapper

class _Mapper:
    """State of one mapping run: the message, the settings, the look-ups."""

    def __init__(self, parsed: ParsedMessage, mappings: Mappings, settings: dict, doc_type: DocumentType):
        self.reader = Reader(parsed)
        self.m = mappings
        self.s = settings
        self.doc_type = doc_type
        self.tz = zoneinfo.ZoneInfo(settings.get("timezone", "Europe/Rome"))
        self.refs: dict[str, int] = {}
        self.prts = participations.attach(self.reader)
        self.notices: list[Notice] = []
        self.report_notes: list[str] = []

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
            row = self.m.lookup(spec["table"], value)
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
        node: Any = self.s
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

    # -- people

    def person(self, key: str, scope=None, *, required: bool) -> Person | None:
        """A practitioner from XCN-like fields, or the PRT participation standing for an empty one."""
        spec = self.setting(key)
        fields = spec if isinstance(spec, list) else [spec] if spec else []
        roles = self.setting("participations", {})
        for text in fields:
            path = parse_path(text)
            occurrence = (scope or {}).get(path.segment, 1)
            index = self.occurrence_index(path.segment, occurrence)
            if index is None:
                continue
            found = self.practitioner(index, path.field, f"{path.segment}^{occurrence}^{path.field}^1")
            if found is None and f"{path.segment}-{path.field}" in roles:
                prt = participations.find(self.reader, self.prts, (path.segment, occurrence),
                                          roles[f"{path.segment}-{path.field}"])
                if prt is not None:
                    found = self.practitioner(prt[0], 5, f"PRT^{prt[1]}^5^1")
            if found is not None:
                return found
        if required:
            where = parse_path(fields[0]).location((scope or {}).get(parse_path(fields[0]).segment, 1)) \
                if fields else ""
            raise MissingField(f"{key.rsplit('.', 1)[-1].replace('_', ' ')} is missing", location=where)
        return None

    def practitioner(self, index: int, field: int, location: str) -> Person | None:
        """The XCN in *field* of segment *index* (None when empty): a valid CF id, else the practitioners table."""
        reps = self.reader.repetitions(index, field)
        if not reps or not any(c.strip() for c in reps[0]):
            return None
        comps = [c.strip() for c in reps[0]]
        # NDL/CNN (OBR-32..35) carry id&family&given as subcomponents of component 1.
        first = self.reader.raw_field(index, field).split(self.reader.rs)[0].split(self.reader.cs)[0]
        if self.reader.ss in first:
            comps = [self.reader.unescape(p).strip() for p in first.split(self.reader.ss)]
        else:
            # XCN.2 is an FN: the surname is its first subcomponent.
            comps[1:2] = [c.split(self.reader.ss)[0] for c in comps[1:2]]
        ident, family, given = (comps + ["", "", ""])[:3]
        middle = comps[3] if len(comps) > 3 else ""
        if not ident:
            raise MissingField("practitioner has no id", location=location)
        cf = ident.upper()
        known = self.m.practitioners.get(ident)
        if codicefiscale.is_valid(cf) and len(cf) == 16:
            family = family or (known.family if known else "")
            given = given or (known.given if known else "")
        else:
            if known is None:
                raise UnknownCode("practitioner not in the practitioners table and id is not a valid CF",
                                  location=location)
            cf, family, given = known.fiscal_code, family or known.family, given or known.given
        if not family or not given:
            raise MissingField("practitioner name needs family and given", location=location)
        given = " ".join(p for p in (given, middle) if p)
        return Person(fiscal_code=cf, family=family, given=given)

    # -- patient

    def patient(self) -> Patient:
        p = self.setting("patient")
        pid = self.occurrence_index("PID", 1)
        if pid is None:
            raise MissingField("no PID segment", location="PID^1")
        id_field = parse_path(p.get("ids", "PID-3")).field
        location = f"PID^1^{id_field}"
        reps = self.reader.repetitions(pid, id_field)
        cf_types = {t.upper() for t in p.get("cf_id_types", ["NNITA"])}
        cf_authorities = set(p.get("cf_authorities", [CF_ROOT]))
        other_roots = {k.upper(): v for k, v in p.get("other_ids", {}).items()}
        cf = ""
        invalid_cf = False
        others: list[Identifier] = []
        local_ids: list[Identifier] = []
        local_types = {t.upper() for t in p.get("local_id_types", [])}
        local_root = p.get("local_id_root", "")
        for comps in reps:
            comps = comps + [""] * 6
            value, authority, id_type = comps[0].strip(), comps[3], comps[4].strip().upper()
            if not value:
                continue
            marked = id_type in cf_types or any(a in authority for a in cf_authorities)
            if id_type in other_roots and not marked:
                others.append(Identifier(root=other_roots[id_type], extension=value.upper()))
                continue
            if id_type in local_types and not marked:
                if local_root:
                    local_ids.append(Identifier(root=local_root, extension=value))
                continue
            candidate = value.upper()
            if marked:
                if codicefiscale.is_valid(candidate) and len(candidate) == 16:
                    cf = cf or candidate
                else:
                    invalid_cf = True
            elif not cf and len(candidate) == 16 and codicefiscale.is_valid(candidate):
                cf = candidate
        ids: list[Identifier] = []
        if cf:
            ids.append(Identifier(root=CF_ROOT, extension=cf))
            person_id = cf
        elif others:
            roots = {i.root for i in others}
            team_card, team_person = other_roots.get("TEAM"), other_roots.get("TEAMPN")
            if team_card in roots and team_person not in roots or team_person in roots and team_card not in roots:
                raise MissingField("TEAM card and TEAM personal number must come together", location=location)
            for ident in others:
                if ident.root != team_card and ident.root != team_person and \
                        not re.fullmatch(r"[A-Z0-9]{16}", ident.extension):
                    raise InvalidValue("STP/ENI code must have 16 characters [A-Z0-9]", location=location)
            ids.extend(others)
            main = next((i for i in others if i.root == team_card), others[0])
            person_id = f"{main.extension}^^^&{main.root}&ISO"
        elif invalid_cf:
            raise InvalidValue("patient fiscal code is not valid", location=location)
        else:
            raise MissingField("patient fiscal code is missing", location=location)

        ids.extend(local_ids)
        family, loc = self.source(p.get("family"), required=True, what="patient family name")
        given_parts = [self.source(g)[0] for g in p.get("given", [])]
        given = " ".join(g for g in given_parts if g)
        if not given:
            raise MissingField("patient given name is missing", location=loc.rsplit("^", 1)[0] + "^2")
        gender, _ = self.source(p.get("gender"), what="patient sex")
        birth, birth_loc = self.source(p.get("birth_time"))
        if birth:
            if not re.fullmatch(r"\d{8}(\d*)([.+-].*)?", birth):
                raise InvalidValue("birth date is not an HL7 date", location=birth_loc)
            birth = birth[:8]
            try:
                datetime.strptime(birth, "%Y%m%d")
            except ValueError:
                # The XSD and schematrons take 19751304 as a TS: only here can it be caught.
                raise InvalidValue("birth date is not a valid date (YYYYMMDD)", location=birth_loc) from None
        self.birth_location = birth_loc
        addresses = tuple(self.addresses(pid, p.get("address", {})))
        telecoms = tuple(self.telecoms(pid, p.get("telecom", {})))
        return Patient(ids=tuple(ids), person_id=person_id, family=family, given=given,
                       gender=gender or "UN", birth_time=birth, addresses=addresses, telecoms=telecoms)

    def addresses(self, index: int, spec: dict) -> list[Address]:
        if not spec:
            return []
        out = []
        field_no = parse_path(spec.get("field", "PID-11")).field
        uses = spec.get("use", {})
        countries = spec.get("country", {})
        for comps in self.reader.repetitions(index, field_no):
            comps = [c.strip() for c in comps] + [""] * 12
            street, city = comps[0], comps[2]
            if not street or not city:
                continue
            use = uses.get(comps[6].upper())
            if use is None:
                # Address types without a patient-address use (business, mailing...) are left out.
                continue
            country = countries.get(comps[5].upper(), comps[5] or countries.get("", ""))
            out.append(Address(use=use, street=street, city=city, state=comps[3] if comps[3].isdigit() else "",
                               postal_code=comps[4], country=country, county=comps[8] if len(comps[8]) == 2 else "",
                               census_tract=comps[9]))
        return out

    def telecoms(self, index: int, spec: dict) -> list[Telecom]:
        out = []
        for key, use in (("home", spec.get("home_use", "HP")), ("work", "WP")):
            field_text = spec.get(key)
            if not field_text:
                continue
            for comps in self.reader.repetitions(index, parse_path(field_text).field):
                comps = [c.strip() for c in comps] + [""] * 12
                email = comps[3] if "@" in comps[3] else comps[0] if "@" in comps[0] else ""
                if email:
                    out.append(Telecom(use=use if key == "work" else spec.get("email_use", "HP"),
                                       value=f"mailto:{email}"))
                    continue
                number = comps[11] or comps[0] or "".join(comps[5:7])
                number = re.sub(r"[^0-9+]", "", number)
                if number:
                    mobile = comps[2].upper() == "CP" or comps[1].upper() == "ORN"
                    out.append(Telecom(use="MC" if mobile and key == "home" else use, value=f"tel:{number}"))
        return out

    # -- organisation, encounter, order

    def facility_row(self) -> dict[str, str]:
        spec = self.setting("custodian.facility", "MSH-4.1")
        key, location = self.source(spec, required=True, what="sending facility")
        row = self.m.lookup(self.setting("custodian.table", "facilities.csv"), key, column="facility")
        if row is None:
            raise UnknownCode("sending facility not in the facilities table", location=location)
        return row

    def custodian(self, row: dict[str, str]) -> Organization:
        telecoms = (Telecom(use="WP", value=row["telecom"]),) if row.get("telecom") else ()
        address = None
        if row.get("street") and row.get("city"):
            address = Address(street=row["street"], city=row["city"], postal_code=row.get("postal_code", ""),
                              country=row.get("country", "100"), county=row.get("county", ""),
                              state=row.get("state", ""), census_tract=row.get("census_tract", ""))
        part_of = Identifier(root=row["part_of_root"], extension=row["part_of"]) if row.get("part_of") else None
        return Organization(id=Identifier(root=row["root"], extension=row["code"]), name=row["name"],
                            telecoms=telecoms, address=address, part_of=part_of)

    def encounter(self, facility: dict[str, str], provider: Organization) -> Encounter | None:
        spec = self.setting("encounter")
        if not spec:
            return None
        pv1 = self.occurrence_index("PV1", 1)
        if pv1 is None and not spec.get("required"):
            return None
        klass, class_loc = self.source(spec.get("class"), what="patient class")
        code = spec.get("codes", {}).get(klass.upper(), spec.get("default_code", "AMB"))
        enc_id = None
        number, number_loc = self.source(spec.get("id"), required=bool(spec.get("id_required")),
                                         what="visit number")
        if number:
            enc_id = Identifier(root=spec["id_root"], extension=number)
        low = self.ts("encounter.low", required=bool(spec.get("low_required")), what="admission time")
        high = self.ts("encounter.high", required=bool(spec.get("high_required")), what="discharge time")
        if low and high and high[:14] < low[:14] and high[14:] == low[14:]:
            # The schematrons compare low/high as strings (cda.md §2.3).
            raise InvalidValue("discharge is before admission", location=self.source(spec.get("high"))[1])
        responsible = self.person("encounter.responsible", required=bool(spec.get("responsible_required")))
        ward, _ = self.source(spec.get("ward"))
        facility_id = Identifier(root=facility.get("site_root", "2.16.840.1.113883.2.9.4.1.6"),
                                 extension=facility["site"]) if facility.get("site") else None
        return Encounter(code=code, id=enc_id, low=low, high=high, responsible=responsible,
                         facility=facility_id, ward=ward, provider=provider)

    def order(self) -> Order:
        spec = self.setting("order")
        ids = []
        nre, _ = self.source(spec.get("nre"))
        if nre:
            ids.append(Identifier(root=spec.get("nre_root", "2.16.840.1.113883.2.9.4.3.9"), extension=nre))
        placer, placer_loc = self.source(spec.get("placer"))
        if placer and not nre:
            ids.append(Identifier(root=spec["placer_root"], extension=placer))
        if not ids:
            raise MissingField("order number (NRE or placer) is missing", location=placer_loc or "OBR^1^2")
        priority, _ = self.source(spec.get("priority"), what="priority")
        return Order(ids=tuple(ids), priority=priority)

    # -- codes

    def code(self, comps: list[str], location: str, *, what: str) -> Code:
        """A CE/CWE (code^text^system^altcode^alttext^altsystem) as LOINC with a local translation."""
        comps = [c.strip() for c in comps] + [""] * 6
        systems = self.setting("code_systems", {})
        local = self.setting("local_code_system")
        ident, text, system = comps[0], comps[1], comps[2].upper()
        alt, alt_text, alt_system = comps[3], comps[4], comps[5].upper()
        if not ident and not alt:
            raise MissingField(f"{what} has no code", location=location)
        if re.search(r"\s", ident + alt):
            # CDA codes are tokens (XSD cs): a code with blanks is a description, not a code.
            raise InvalidValue(f"{what}: a code cannot contain blanks", location=location)
        if system in ("LN", "LOINC"):
            translations = ()
            if alt:
                translations = (Code(code=alt, system=systems.get(alt_system, local),
                                     display=alt_text or text),)
            return Code(code=ident, system=LOINC, system_name="LOINC", display=text, translations=translations)
        if alt_system in ("LN", "LOINC") and alt:
            return Code(code=alt, system=LOINC, system_name="LOINC", display=alt_text or text,
                        translations=(Code(code=ident, system=systems.get(system, local), display=text),))
        row = self.m.lookup("local_loinc.csv", ident, column="local") if ident else None
        local_code = Code(code=ident, system=systems.get(system, local), display=text)
        if row:
            return Code(code=row["loinc"], system=LOINC, system_name="LOINC",
                        display=row.get("display") or text, translations=(local_code,))
        return local_code

    def coded_value(self, comps: list[str], location: str) -> Code | None:
        """A coded result (CE/CWE) when its system is known, else None (kept as text)."""
        comps = [c.strip() for c in comps] + [""] * 6
        systems = self.setting("code_systems", {})
        system = systems.get(comps[2].upper())
        if comps[0] and system and not re.search(r"\s", comps[0]):
            return Code(code=comps[0], system=system, display=comps[1])
        return None

    # -- groups

    def groups(self) -> list[dict]:
        """OBR groups in order: their occurrence numbers and OBX/NTE/SPM children."""
        out: list[dict] = []
        counts: dict[str, int] = {}
        current: dict | None = None
        last_obx: dict | None = None
        for index, text in enumerate(self.reader.segments):
            seg = text[:3]
            counts[seg] = counts.get(seg, 0) + 1
            if seg == "OBR":
                current = {"scope": {"OBR": counts[seg], "ORC": max(counts.get("ORC", 1), 1),
                                     "PID": 1, "PV1": 1, "MSH": 1},
                           "index": index, "obx": [], "notes": [], "spm": None}
                out.append(current)
                last_obx = None
            elif current is None:
                if seg == "NTE":
                    self.report_notes.extend(self.nte_text(index))
                continue
            elif seg == "OBX":
                last_obx = {"index": index, "occurrence": counts[seg], "notes": []}
                current["scope"].setdefault("OBX", counts[seg])
                current["obx"].append(last_obx)
            elif seg == "NTE":
                (last_obx["notes"] if last_obx else current["notes"]).extend(self.nte_text(index))
            elif seg == "SPM" and current["spm"] is None:
                current["spm"] = (index, counts[seg])
        return out

    def nte_text(self, index: int) -> list[str]:
        """An NTE's comment (NTE-3 repetitions are lines), or nothing when it is blank."""
        note = "\n".join(self.reader.values(index, parse_path("NTE-3[*]")))
        return [note.strip("\n")] if note.strip() else []

    def obx_lines(self, obx: dict, *, highlight: bool = False) -> list[str]:
        """OBX-5 as lines: repetitions and ``\\.br\\`` break lines, escapes decoded, blank lines kept.

        *highlight*: keep ``\\H\\…\\N\\`` as marks (narrative paragraphs show them bold).
        """
        out: list[str] = []
        for part in [obx] + obx.get("more", []):
            values = self.reader.values(part["index"], parse_path("OBX-5[*]"), highlight=highlight)
            # An OBX with an empty OBX-5 is a blank line (a paragraph break).
            out.extend([line for value in values for line in text_lines(value)] or [BREAK])
        return out

    def obx_text(self, obx: dict) -> str:
        """OBX-5 as text: lines joined, blank lines kept inside, none at the ends."""
        return "\n".join(self.obx_lines(obx)).strip("\n")

    def access_policies(self) -> tuple[str, ...]:
        return access_policies(self.reader, self.setting("access", {}))

    # -- what is left out, and said so in the ACK

    def notice(self, text: str, location: str, severity: str = "I") -> None:
        self.notices.append(Notice(code="0", text=text, location=location, severity=severity))

    @property
    def attachment_types(self) -> set[str]:
        return {t.upper() for t in self.setting("observation.attachment_types", ["ED", "RP"])}

    def attachment(self, obx: dict) -> Media:
        """An ED OBX-5 (``^type^subtype^Base64^data``) as Base64 with its MIME type, checked."""
        i, n = obx["index"], obx["occurrence"]
        comps = [c.strip() for c in (self.reader.repetitions(i, 5) or [[]])[0]] + [""] * 5
        if comps[3].upper() not in ("BASE64", "B64"):
            raise InvalidValue("attachment encoding must be Base64", location=f"OBX^{n}^5^4")
        value = re.sub(r"\s+", "", comps[4])
        if not value or not re.fullmatch(r"[A-Za-z0-9+/]+=*", value):
            raise InvalidValue("attachment data is not Base64", location=f"OBX^{n}^5^5")
        if len(value) * 3 // 4 > int(self.setting("observation.attachment_max_bytes", 700_000)):
            # The signed PDF that embeds this CDA must stay under the gateway's 1 MB (pdf.md §1).
            raise InvalidValue("attachment too large for the document", location=f"OBX^{n}^5^5")
        media_type = self.setting("observation.media_types", {}).get(f"{comps[1]}/{comps[2]}".upper())
        if media_type is None:
            raise UnknownCode("attachment type not in observation.media_types", location=f"OBX^{n}^5^2")
        return Media(media_type=media_type, value=value)

    def attachment_left_out(self, n: int, value_type: str) -> None:
        """An attachment (ED/RP) where the type's guide has no multimedia: a warning, never narrative text."""
        self.notice(f"attachment ({value_type}) not carried: {self.doc_type.name} has no place for it",
                    f"OBX^{n}^5", severity="W")

    def left_out(self, obx: dict) -> bool:
        """OBX-11 says the result is deleted or wrong (``omit`` in observation.status): leave it out, say so."""
        status = self.reader.value(obx["index"], parse_path("OBX-11")).upper()
        if self.setting("observation.status", {}).get(status) != "omit":
            return False
        self.notice(f"result left out of the document: OBX-11 is {status}", f"OBX^{obx['occurrence']}^11")
        return True

    def observation(self, obx: dict, group: dict) -> Observation:
        r, i, n = self.reader, obx["index"], obx["occurrence"]
        value_type = r.value(i, parse_path("OBX-2")).upper()
        code = self.code(r.repetitions(i, 3)[0] if r.repetitions(i, 3) else [], f"OBX^{n}^3",
                         what="observation identifier")
        status = self.setting("observation.status", {}).get(r.value(i, parse_path("OBX-11")).upper(), "completed")
        raw_time = r.value(i, parse_path("OBX-14"))
        effective = normalize_ts(raw_time, self.tz, f"OBX^{n}^14") if raw_time else group["time"]
        unit_raw = r.value(i, parse_path("OBX-6.1"))
        unit = self.unit(unit_raw, f"OBX^{n}^6")
        kind, value, low, high, coded, shown, media_type = "", "", "", "", None, "", ""
        if status != "aborted":
            if value_type == "NM":
                text = r.value(i, parse_path("OBX-5"))
                value = decimal_text(text) or ""
                if not value:
                    raise InvalidValue("numeric result is not a number", location=f"OBX^{n}^5")
                kind, shown = "PQ", text
            elif value_type == "SN":
                comps = (r.repetitions(i, 5) or [[]])[0] + ["", "", "", ""]
                comparator, num1, sep, num2 = (c.strip() for c in comps[:4])
                shown = " ".join(c for c in (comparator, num1, sep, num2) if c)
                a, b = decimal_text(num1), decimal_text(num2)
                if a is not None and sep in ("-",) and b is not None:
                    kind, low, high = "IVL_PQ", a, b
                elif a is not None and not sep and comparator in ("<", "<="):
                    kind, high = "IVL_PQ", a
                elif a is not None and not sep and comparator in (">", ">="):
                    kind, low = "IVL_PQ", a
                elif a is not None and not sep and comparator in ("", "="):
                    kind, value = "PQ", a
                else:
                    kind, value = "ST", shown
                if not shown:
                    raise MissingField("result value is missing", location=f"OBX^{n}^5")
            elif value_type == "ED":
                media = self.attachment(obx)
                kind, value, media_type = "ED", media.value, media.media_type
                shown = f"Allegato ({media_type})"
            elif value_type in ("CE", "CWE", "CNE", "CF"):
                comps = (r.repetitions(i, 5) or [[]])[0]
                coded = self.coded_value(comps, f"OBX^{n}^5")
                shown = (comps[1] if len(comps) > 1 and comps[1] else comps[0] if comps else "").strip()
                kind = "CD" if coded else "ST"
                value = shown
            else:
                shown = self.obx_text(obx)
                kind, value = "ST", shown
            if not shown:
                raise MissingField("result value is missing", location=f"OBX^{n}^5")
        ranges = ()
        range_text = r.value(i, parse_path("OBX-7"))
        if range_text:
            ranges = (self.reference_range(range_text, unit),)
        interpretation = None
        flag = r.value(i, parse_path("OBX-8.1"))
        if flag and status != "aborted":
            codes = self.setting("observation.interpretation", {})
            mapped = codes.get(flag.upper())
            if mapped is None:
                raise UnknownCode("abnormal flag not in the interpretation codes", location=f"OBX^{n}^8")
            interpretation = Code(code=mapped[0], system="2.16.840.1.113883.5.83", display=mapped[1],
                                  system_name="HL7 ObservationInterpretation")
        notes = tuple(Note(ref=self.ref("note"), text=t) for t in obx["notes"])
        return Observation(ref=self.ref("obs"), code=code, name=self.local_name(r.repetitions(i, 3), code),
                           unit_text=unit_raw, status=status, effective_time=effective,
                           value_type=kind if status != "aborted" else "", value=value,
                           unit=unit if kind in ("PQ", "IVL_PQ") else "", low=low, high=high,
                           coded=coded, text=shown, interpretation=interpretation, ranges=ranges,
                           notes=notes, media_type=media_type)

    def unit(self, raw: str, location: str) -> str:
        if not raw:
            return "1"
        row = self.m.lookup("units.csv", raw, column="unit")
        if row:
            return row["ucum"]
        if re.fullmatch(r"[A-Za-z0-9/.%*\[\]{}()^'_-]+", raw):
            return raw
        raise UnknownCode("unit not in units.csv and not UCUM", location=location)

    def reference_range(self, text: str, unit: str) -> Range:
        clean = text.strip()
        match = re.fullmatch(r"([+-]?\d+(?:[.,]\d+)?)\s*-\s*([+-]?\d+(?:[.,]\d+)?)", clean)
        if match:
            return Range(low=decimal_text(match[1]) or "", high=decimal_text(match[2]) or "", unit=unit, text=clean)
        match = re.fullmatch(r"(<=?|>=?)\s*([+-]?\d+(?:[.,]\d+)?)", clean)
        if match:
            number = decimal_text(match[2]) or ""
            return Range(high=number, unit=unit, text=clean) if match[1].startswith("<") \
                else Range(low=number, unit=unit, text=clean)
        return Range(text=clean)

    def specimen(self, group: dict) -> Specimen | None:
        spec = self.setting("specimen", {})
        if group["spm"]:
            index, occ = group["spm"]
            raw, location = self.reader.value(index, parse_path("SPM-4.1")), f"SPM^{occ}^4^1"
        else:
            raw, location = self.source(spec.get("source", "OBR-15.1"), group["scope"])
        if not raw:
            return None
        row = self.m.lookup(spec.get("table", "specimens.csv"), raw.upper(), column="local")
        if row is None:
            raise UnknownCode("specimen type not in specimens.csv", location=location)
        return Specimen(code=Code(code=row["code"], system="2.16.840.1.113883.5.129", display=row["display"],
                                  system_name="SpecimenType"),
                        collected=group["collected"])

    # -- body

    def exams(self, groups: list[dict]) -> list[tuple[str, Exam]]:
        """(specialty section code, exam) per OBR group (LAB)."""
        out = []
        spec = self.setting("specialty")
        for group in groups:
            scope = group["scope"]
            n = scope["OBR"]
            specialty, _ = self.source(spec, scope, what="diagnostic service section")
            comps = self.reader.repetitions(group["index"], 4)
            code = self.code(comps[0] if comps else [], f"OBR^{n}^4", what="universal service identifier")
            kept = self.results(group)
            observations = tuple(self.observation(obx, group) for obx in kept)
            if not observations and group["obx"]:
                self.notice("order left out of the document: none of its results is to be shown",
                            f"OBR^{n}^4")
                continue
            if not observations:
                raise MissingField("no results (OBX) for this order", location=f"OBR^{n}^4")
            # Preliminary results (OBX-11 P, R, I, S) make the act, and the document, partial.
            partial = {v.upper() for v in self.setting("observation.partial", [])}
            statuses = {self.reader.value(obx["index"], parse_path("OBX-11")).upper() for obx in kept}
            status = "active" if statuses & partial else "completed"
            notes = tuple(Note(ref=self.ref("note"), text=t) for t in group["notes"])
            out.append((specialty, Exam(ref=self.ref("exam"), code=code, name=self.local_name(
                                            self.reader.repetitions(group["index"], 4), code), status=status,
                                        effective_time=group["time"], specimen=self.specimen(group),
                                        observations=observations, notes=notes)))
        return out

    def results(self, group: dict) -> list[dict]:
        """The OBX of a LAB group that become observations: attachments the type cannot carry,
        deleted or wrong results (said in the ACK) and blank text lines are left out; the
        lines of one text result sent one per OBX (``observation.continued_lines``, same
        OBX-3 and OBX-4) are one observation."""
        carried = {t.upper() for t in self.setting("observation.carried_attachments", [])}
        continued = {t.upper() for t in self.setting("observation.continued_lines", ["TX"])}
        kept: list[dict] = []
        run = None
        for obx in group["obx"]:
            i, n = obx["index"], obx["occurrence"]
            value_type = self.reader.value(i, parse_path("OBX-2")).upper()
            key = (self.reader.raw_field(i, 3), self.reader.raw_field(i, 4), self.reader.raw_field(i, 11)) \
                if value_type in continued else None
            if key is not None and key == run:
                kept[-1].setdefault("more", []).append(obx)
                kept[-1]["notes"] = kept[-1]["notes"] + obx["notes"]
                continue
            run = None
            if value_type in self.attachment_types and value_type not in carried:
                self.attachment_left_out(n, value_type)
            elif self.left_out(obx):
                continue
            elif value_type in ("TX", "FT") and not self.obx_text(obx).strip() and not obx["notes"] and \
                    self.setting("observation.status", {}).get(
                        self.reader.value(i, parse_path("OBX-11")).upper()) != "aborted":
                continue   # a blank line between text results: nothing to show
            else:
                kept.append(dict(obx))
                run = key
        return kept

    def local_name(self, reps: list[list[str]], code: Code) -> str:
        """The name the sender gave a test (CE.2, else CE.5), else the code's display name."""
        comps = [c.strip() for c in (reps[0] if reps else [])] + ["", "", "", "", ""]
        return comps[1] or comps[4] or code.display or code.code

    def lab_sections(self, groups: list[dict]) -> tuple[Section, ...]:
        by_code: dict[str, list[Exam]] = {}
        for specialty, exam in self.exams(groups):
            by_code.setdefault(specialty, []).append(exam)
        if not by_code:
            raise MissingField("no results to publish: every result is left out (OBX-11)", location="OBX^1^11")
        sections = []
        for code, exams in by_code.items():
            row = self.m.lookup("lab_specialties.csv", code, column="loinc")
            if row is None:
                raise ConfigError(f"specialty section {code} is not one of the LAB section codes",
                                  file=str(self.m.directory / "lab_specialties.csv"))
            sections.append(Section(code=Code(code=code, system=LOINC, system_name="LOINC",
                                              display=row["display"]),
                                    title=row["display"], ref=self.ref("sec"), exams=tuple(exams)))
        return tuple(sections)

    def narrative_sections(self, groups: list[dict], procedures: list[Code], report_notes: list[str],
                           specimens: tuple[Specimen, ...] = ()) -> tuple[Section, ...]:
        """Sections of RAD/RSA/RAP/LDO: each OBX goes to the section its OBX-3 maps to.

        Consecutive lines of one OBX-3 (``observation.continued_lines`` types,
        one TX line per OBX) make one paragraph; an empty OBX-5 or a blank line
        ends it. Required sections are then filled as the type declares
        (:mod:`bridge.mapping.sections`).
        """
        table = self.setting("sections.table", "sections.csv")
        default = self.setting("sections.default")
        notes_section = self.setting("sections.notes", default)
        continued = {t.upper() for t in self.setting("observation.continued_lines", ["TX"])}
        carried = {t.upper() for t in self.setting("observation.carried_attachments", [])}
        # Sections whose entry can hold one attachment (RAP: the AP observation's observationMedia).
        media_sections = set(self.setting("sections.media", []))
        media: dict[str, Media] = {}
        flat: dict[str, list[str]] = {}
        codes: dict[str, list[Code]] = {}
        run = None

        def add(section: str, lines: list[str], key=None) -> None:
            nonlocal run
            target = flat.setdefault(section, [])
            if key is None or key != run:
                target.append(BREAK)
            target.extend(lines)
            run = key

        add(notes_section, [line for n in report_notes for line in text_lines(n) + [BREAK]])
        for group in groups:
            for obx in group["obx"]:
                i, n = obx["index"], obx["occurrence"]
                section = self.section_of(obx, table, default)
                value_type = self.reader.value(i, parse_path("OBX-2")).upper()
                if value_type in self.attachment_types:
                    if value_type in carried and section in media_sections and section not in media:
                        media[section] = self.attachment(obx)
                    else:
                        self.attachment_left_out(n, value_type)
                    continue
                if self.left_out(obx):
                    continue
                if value_type in ("CE", "CWE", "CNE"):
                    comps = (self.reader.repetitions(i, 5) or [[]])[0]
                    coded = self.coded_value(comps, f"OBX^{n}^5")
                    if coded:
                        codes.setdefault(section, []).append(coded)
                    lines = [(comps[1] if len(comps) > 1 and comps[1] else comps[0] if comps else "").strip()]
                    add(section, lines)
                else:
                    key = (section, self.reader.raw_field(i, 3), self.reader.raw_field(i, 4)) \
                        if value_type in continued else None
                    add(section, self.obx_lines(obx, highlight=True) or [BREAK], key)
                for note in obx["notes"]:
                    add(section, text_lines(note))
            for note in group["notes"]:
                add(notes_section, text_lines(note))
        texts = {code: paras for code, lines in flat.items() if (paras := paragraphs(lines))}
        for code, item in media.items():
            texts.setdefault(code, (f"Allegato ({item.media_type})",))
        if not texts:
            raise MissingField("the report has no text (every OBX-5 is empty)", location="OBX^1^5")
        order = [row["section"] for row in self.m.tables.get(table, ())
                 if row.get("type") == self.doc_type.name and row.get("obx") == row.get("section")]
        titles = {row["section"]: row["title"] for row in self.m.tables.get(table, ())
                  if row.get("type") == self.doc_type.name and row.get("title")}
        texts = fill_required(texts, self.setting("sections.required", {}), procedures=procedures,
                                       titles=titles, note=self.setting("narrative.copied_note", ""))
        shown_in = self.setting("specimens.section")
        if specimens and shown_in:
            texts[shown_in] = texts.get(shown_in, ()) + tuple(specimen_line(s) for s in specimens)
        out = []
        for code in sorted(texts, key=lambda c: order.index(c) if c in order else len(order)):
            title = titles.get(code, code)
            out.append(Section(code=Code(code=code, system=LOINC, system_name="LOINC", display=title),
                               title=title, ref=self.ref("sec"), paragraphs=texts[code],
                               codes=tuple(codes.get(code, ())), media=media.get(code)))
        return tuple(out)

    def section_of(self, obx: dict, table: str, default: str | None) -> str:
        """The section an OBX goes to: OBX-3.1, then its suffix OBX-3.1.2 (``RM093&IMP``), in the table."""
        i, n = obx["index"], obx["occurrence"]
        for path in self.setting("narrative.section_keys", ["OBX-3.1", "OBX-3.1.2"]):
            ident = self.reader.value(i, parse_path(path))
            if not ident:
                continue
            row = self.m.lookup(table, ident, column="obx", type=self.doc_type.name) \
                or self.m.lookup(table, ident, column="section", type=self.doc_type.name)
            if row:
                return row["section"]
        if not default:
            raise UnknownCode("observation identifier not mapped to a section", location=f"OBX^{n}^3")
        return default


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
    m = _Mapper(parsed, mappings, mapping.settings, doc_type)
    groups = m.groups()
    if not groups:
        raise MissingField("no OBR segment", location="OBR^1")
    for group in groups:
        group["collected"] = m.ts("times.collected", group["scope"], what="observation date/time")
        group["time"] = m.ts("times.observation", group["scope"], what="observation date/time")
    effective = m.ts("times.report", groups[-1]["scope"], what="report date/time")
    patient = m.patient()
    if patient.birth_time and patient.birth_time > effective[:8]:
        raise InvalidValue("birth date is after the report date", location=m.birth_location)
    legal = m.person("legal_authenticator", groups[0]["scope"], required=True)
    author = m.person("author", groups[0]["scope"], required=False) or legal
    referrer = m.person("referrer", groups[0]["scope"], required=False)
    facility = m.facility_row()
    custodian = m.custodian(facility)
    author = Person(fiscal_code=author.fiscal_code, family=author.family, given=author.given,
                    telecoms=custodian.telecoms)
    procedures = []
    for group in groups:
        comps = m.reader.repetitions(group["index"], 4)
        procedures.append(m.code(comps[0] if comps else [], f"OBR^{group['scope']['OBR']}^4",
                                 what="universal service identifier"))
    body = mapping.settings.get("body", "sections")
    if body == "results":
        if m.report_notes and groups:
            # Comments on the whole report (NTE before the first OBR) go with the first exam.
            groups[0]["notes"][:0] = m.report_notes
        sections = m.lab_sections(groups)
        specimens = tuple(e.specimen for s in sections for e in s.exams if e.specimen)
    else:
        order = m.order()
        specimens = narrative_specimens(m, m.setting("specimens", {}),
                                        m.setting("specimens.id_root") or order.ids[0].root)
        sections = m.narrative_sections(groups, procedures, m.report_notes, specimens)
    status = "completed"
    if any(e.status == "active" for s in sections for e in s.exams):
        status = "active"
    encounter = m.encounter(facility, custodian)
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
        order=m.order(), service_start=service_start, service_end=effective,
        service_code=m.source(m.setting("service_code"), groups[0]["scope"], what="service code")[0],
        referrer=referrer, encounter=encounter, sections=sections, procedures=tuple(procedures),
        specimens=specimens,
        document_class=doc_type.class_code, inpatient=inpatient,
        practice_setting=practice or "AD_PSC999", billing=billing or "SSN",
        clinical_activity=doc_type.clinical_activity,
        service_start_local=local_ts(service_start, m.tz), service_end_local=local_ts(effective, m.tz),
        access_policies=m.access_policies(), notices=tuple(m.notices))
