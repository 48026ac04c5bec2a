"""Normalising HL7 values for the CDA: timestamps and decimals."""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime, timedelta

from bridge.errors import InvalidValue


def normalize_ts(value: str, tz: zoneinfo.ZoneInfo, location: str) -> str:
    """HL7 DTM → ``YYYYMMDDHHMMSS+ZZZZ`` (missing parts zero, missing zone = *tz*)."""
    match = re.fullmatch(r"(\d{4,14})(?:\.\d+)?([+-]\d{4})?", value.strip())
    if not match or len(match[1]) % 2:
        raise InvalidValue("timestamp is not an HL7 date/time", location=location)
    digits = match[1].ljust(14, "0")
    if digits[4:6] == "00":
        digits = digits[:4] + "0101" + digits[8:]
    elif digits[6:8] == "00":
        digits = digits[:6] + "01" + digits[8:]
    try:
        moment = datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        raise InvalidValue("timestamp is not a valid date", location=location) from None
    if match[2]:
        return digits + match[2]
    offset = moment.replace(tzinfo=tz).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{digits}{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def local_ts(cda_ts: str, tz: zoneinfo.ZoneInfo) -> str:
    """``YYYYMMDDHHMMSS+ZZZZ`` → 14 digits local time (gateway.md §4 dates)."""
    moment = datetime.strptime(cda_ts, "%Y%m%d%H%M%S%z")
    return moment.astimezone(tz).strftime("%Y%m%d%H%M%S")


def decimal_text(text: str) -> str | None:
    """A decimal as the CDA writes it (a comma read as the point), or None if *text* is not one."""
    text = text.strip().replace(",", ".")
    return text if re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", text) else None
