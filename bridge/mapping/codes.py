"""Coded fields (CE/CWE): a test's code as LOINC with its local translation, and coded results."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bridge.errors import InvalidValue, MissingField
from bridge.model import Code

if TYPE_CHECKING:   # mapper imports this module to build the report
    from bridge.mapping.mapper import Mapper

LOINC = "2.16.840.1.113883.6.1"


def code_of(mapper: Mapper, comps: list[str], location: str, *, what: str) -> Code:
    """A CE/CWE (code^text^system^altcode^alttext^altsystem) as LOINC with a local translation."""
    comps = [c.strip() for c in comps] + [""] * 6
    systems = mapper.setting("code_systems", {})
    local = mapper.setting("local_code_system")
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
    row = mapper.mappings.lookup("local_loinc.csv", ident, column="local") if ident else None
    local_code = Code(code=ident, system=systems.get(system, local), display=text)
    if row:
        return Code(code=row["loinc"], system=LOINC, system_name="LOINC",
                    display=row.get("display") or text, translations=(local_code,))
    return local_code


def coded_value(mapper: Mapper, comps: list[str], location: str) -> Code | None:
    """A coded result (CE/CWE) when its system is known, else None (kept as text)."""
    comps = [c.strip() for c in comps] + [""] * 6
    systems = mapper.setting("code_systems", {})
    system = systems.get(comps[2].upper())
    if comps[0] and system and not re.search(r"\s", comps[0]):
        return Code(code=comps[0], system=system, display=comps[1])
    return None
