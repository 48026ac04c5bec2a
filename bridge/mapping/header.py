"""The report's header parts besides people: the custodian (from the facilities table), the encounter, the order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.errors import InvalidValue, MissingField, UnknownCode
from bridge.mapping.people import person
from bridge.model import Address, Encounter, Identifier, Order, Organization, Telecom

if TYPE_CHECKING:   # mapper imports this module to build the report
    from bridge.mapping.mapper import Mapper


def facility_row(mapper: Mapper) -> dict[str, str]:
    spec = mapper.setting("custodian.facility", "MSH-4.1")
    key, location = mapper.source(spec, required=True, what="sending facility")
    row = mapper.mappings.lookup(mapper.setting("custodian.table", "facilities.csv"), key, column="facility")
    if row is None:
        raise UnknownCode("sending facility not in the facilities table", location=location)
    return row


def custodian(row: dict[str, str]) -> Organization:
    telecoms = (Telecom(use="WP", value=row["telecom"]),) if row.get("telecom") else ()
    address = None
    if row.get("street") and row.get("city"):
        address = Address(street=row["street"], city=row["city"], postal_code=row.get("postal_code", ""),
                          country=row.get("country", "100"), county=row.get("county", ""),
                          state=row.get("state", ""), census_tract=row.get("census_tract", ""))
    part_of = Identifier(root=row["part_of_root"], extension=row["part_of"]) if row.get("part_of") else None
    return Organization(id=Identifier(root=row["root"], extension=row["code"]), name=row["name"],
                        telecoms=telecoms, address=address, part_of=part_of)


def encounter(mapper: Mapper, facility: dict[str, str], provider: Organization) -> Encounter | None:
    spec = mapper.setting("encounter")
    if not spec:
        return None
    pv1 = mapper.occurrence_index("PV1", 1)
    if pv1 is None and not spec.get("required"):
        return None
    klass, class_loc = mapper.source(spec.get("class"), what="patient class")
    code = spec.get("codes", {}).get(klass.upper(), spec.get("default_code", "AMB"))
    enc_id = None
    number, number_loc = mapper.source(spec.get("id"), required=bool(spec.get("id_required")),
                                       what="visit number")
    if number:
        enc_id = Identifier(root=spec["id_root"], extension=number)
    low = mapper.ts("encounter.low", required=bool(spec.get("low_required")), what="admission time")
    high = mapper.ts("encounter.high", required=bool(spec.get("high_required")), what="discharge time")
    if low and high and high[:14] < low[:14] and high[14:] == low[14:]:
        # The schematrons compare low/high as strings (cda.md §2.3).
        raise InvalidValue("discharge is before admission", location=mapper.source(spec.get("high"))[1])
    responsible = person(mapper, "encounter.responsible", required=bool(spec.get("responsible_required")))
    ward, _ = mapper.source(spec.get("ward"))
    facility_id = Identifier(root=facility.get("site_root", "2.16.840.1.113883.2.9.4.1.6"),
                             extension=facility["site"]) if facility.get("site") else None
    return Encounter(code=code, id=enc_id, low=low, high=high, responsible=responsible,
                     facility=facility_id, ward=ward, provider=provider)


def order(mapper: Mapper) -> Order:
    spec = mapper.setting("order")
    ids = []
    nre, _ = mapper.source(spec.get("nre"))
    if nre:
        ids.append(Identifier(root=spec.get("nre_root", "2.16.840.1.113883.2.9.4.3.9"), extension=nre))
    placer, placer_loc = mapper.source(spec.get("placer"))
    if placer and not nre:
        ids.append(Identifier(root=spec["placer_root"], extension=placer))
    if not ids:
        raise MissingField("order number (NRE or placer) is missing", location=placer_loc or "OBR^1^2")
    priority, _ = mapper.source(spec.get("priority"), what="priority")
    return Order(ids=tuple(ids), priority=priority)
