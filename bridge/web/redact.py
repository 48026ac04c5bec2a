"""What the page says of a journal's text: fiscal codes masked (official schematron messages
quote them, and such messages are in an entry's error text)."""

from __future__ import annotations

import re

#: A fiscal code (or any 16-character code of capitals and digits with both): some official
#: schematron messages quote it (ERRORE-46 "codice fiscale '...'"), and those messages are
#: in an entry's error text.
_FISCAL_CODE = re.compile(r"\b(?=[A-Z0-9]{0,15}[0-9])(?=[A-Z0-9]{0,15}[A-Z])[A-Z0-9]{16}\b")


def redact(text: str | None) -> str | None:
    """*text* with fiscal codes masked."""
    return _FISCAL_CODE.sub("[redacted]", text) if text else text
