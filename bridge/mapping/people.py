"""The people of a report: practitioners (XCN fields or PRT), and the patient with addresses and telecoms."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from stdnum.it import codicefiscale

from bridge.errors import InvalidValue, MissingField, UnknownCode
from bridge.hl7.path import parse_path
from bridge.mapping import participations
from bridge.model import Address, Identifier, Patient, Person, Telecom

if TYPE_CHECKING:   # mapper imports this module to build the report
    from bridge.mapping.mapper import Mapper

CF_ROOT = "2.16.840.1.113883.2.9.4.3.2"


def person(mapper: Mapper, key: str, scope=None, *, required: bool) -> Person | None:
    """A practitioner from XCN-like fields, or the PRT participation standing for an empty one."""
    spec = mapper.setting(key)
    fields = spec if isinstance(spec, list) else [spec] if spec else []
    roles = mapper.setting("participations", {})
    for text in fields:
        path = parse_path(text)
        occurrence = (scope or {}).get(path.segment, 1)
        index = mapper.occurrence_index(path.segment, occurrence)
        if index is None:
            continue
        found = practitioner(mapper, index, path.field, f"{path.segment}^{occurrence}^{path.field}^1")
        if found is None and f"{path.segment}-{path.field}" in roles:
            prt = participations.find(mapper.reader, mapper.prts, (path.segment, occurrence),
                                      roles[f"{path.segment}-{path.field}"])
            if prt is not None:
                found = practitioner(mapper, prt[0], 5, f"PRT^{prt[1]}^5^1")
        if found is not None:
            return found
    if required:
        where = parse_path(fields[0]).location((scope or {}).get(parse_path(fields[0]).segment, 1)) \
            if fields else ""
        raise MissingField(f"{key.rsplit('.', 1)[-1].replace('_', ' ')} is missing", location=where)
    return None


def practitioner(mapper: Mapper, index: int, field: int, location: str) -> Person | None:
    """The XCN in *field* of segment *index* (None when empty): a valid CF id, else the practitioners table."""
    reader = mapper.reader
    reps = reader.repetitions(index, field)
    if not reps or not any(c.strip() for c in reps[0]):
        return None
    comps = [c.strip() for c in reps[0]]
    # NDL/CNN (OBR-32..35) carry id&family&given as subcomponents of component 1.
    first = reader.raw_field(index, field).split(reader.rs)[0].split(reader.cs)[0]
    if reader.ss in first:
        comps = [reader.unescape(p).strip() for p in first.split(reader.ss)]
    else:
        # XCN.2 is an FN: the surname is its first subcomponent.
        comps[1:2] = [c.split(reader.ss)[0] for c in comps[1:2]]
    ident, family, given = (comps + ["", "", ""])[:3]
    middle = comps[3] if len(comps) > 3 else ""
    if not ident:
        raise MissingField("practitioner has no id", location=location)
    cf = ident.upper()
    known = mapper.mappings.practitioners.get(ident)
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


def patient(mapper: Mapper) -> tuple[Patient, str]:
    """The patient, and the location of the birth date (map_report checks it against the report date)."""
    p = mapper.setting("patient")
    pid = mapper.occurrence_index("PID", 1)
    if pid is None:
        raise MissingField("no PID segment", location="PID^1")
    id_field = parse_path(p.get("ids", "PID-3")).field
    location = f"PID^1^{id_field}"
    reps = mapper.reader.repetitions(pid, id_field)
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
    family, loc = mapper.source(p.get("family"), required=True, what="patient family name")
    given_parts = [mapper.source(g)[0] for g in p.get("given", [])]
    given = " ".join(g for g in given_parts if g)
    if not given:
        raise MissingField("patient given name is missing", location=loc.rsplit("^", 1)[0] + "^2")
    gender, _ = mapper.source(p.get("gender"), what="patient sex")
    birth, birth_loc = mapper.source(p.get("birth_time"))
    if birth:
        if not re.fullmatch(r"\d{8}(\d*)([.+-].*)?", birth):
            raise InvalidValue("birth date is not an HL7 date", location=birth_loc)
        birth = birth[:8]
        try:
            datetime.strptime(birth, "%Y%m%d")
        except ValueError:
            # The XSD and schematrons take 19751304 as a TS: only here can it be caught.
            raise InvalidValue("birth date is not a valid date (YYYYMMDD)", location=birth_loc) from None
    found = Patient(ids=tuple(ids), person_id=person_id, family=family, given=given, gender=gender or "UN",
                    birth_time=birth, addresses=tuple(addresses(mapper, pid, p.get("address", {}))),
                    telecoms=tuple(telecoms(mapper, pid, p.get("telecom", {}))))
    return found, birth_loc


def addresses(mapper: Mapper, index: int, spec: dict) -> list[Address]:
    if not spec:
        return []
    out = []
    field_no = parse_path(spec.get("field", "PID-11")).field
    uses = spec.get("use", {})
    countries = spec.get("country", {})
    for comps in mapper.reader.repetitions(index, field_no):
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


def telecoms(mapper: Mapper, index: int, spec: dict) -> list[Telecom]:
    out = []
    for key, use in (("home", spec.get("home_use", "HP")), ("work", "WP")):
        field_text = spec.get(key)
        if not field_text:
            continue
        for comps in mapper.reader.repetitions(index, parse_path(field_text).field):
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
