"""pyHanko validation of a signed PDF, shared by the signature tests."""

from __future__ import annotations

import asyncio
import io
import threading

from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature


def off_loop(fn):
    """Run fn() on a fresh thread: pytest-twisted keeps an asyncio loop running on
    this one, where asyncio.run (used by pyHanko's synchronous API) refuses to run."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join()
    return box[0]


def validate(pdf: bytes, trust):
    """The one embedded signature of *pdf* and pyHanko's status for it under *trust*."""
    reader = PdfFileReader(io.BytesIO(pdf))
    assert len(reader.embedded_signatures) == 1
    embedded = reader.embedded_signatures[0]
    return embedded, off_loop(lambda: asyncio.run(async_validate_pdf_signature(embedded, trust)))
