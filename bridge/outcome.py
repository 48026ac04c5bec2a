"""What a processed message came to: the data an ACK is built from.

Stages raise :class:`~bridge.errors.BridgeError`; ``bridge.publish.record.classify``
turns errors and gateway results into an :class:`Outcome`; ``answer.build_ack`` turns the
outcome into bytes. The journal stores outcomes so a resend gets the same ACK.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.errors import BridgeError
from bridge.model import AckCode


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrItem:
    """One ERR segment: where (``PID^1^3``), HL7 table 0357 code, severity E/W/I, text."""

    code: str
    text: str
    location: str = ""
    severity: str = "E"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    code: AckCode
    text: str = ""
    """MSA-3 (at most 80 characters once escaped; answer.py truncates)."""
    errors: tuple[ErrItem, ...] = ()
    document_id: str | None = None
    operation: str | None = None
    x_cart_id: str | None = None
    trace_id: str | None = None
    workflow_instance_id: str | None = None
    details: dict = field(default_factory=dict)
    """Anything else worth journaling (gateway problem body, validation summary)."""

    @classmethod
    def from_error(cls, error: BridgeError, **extra) -> "Outcome":
        item = ErrItem(code=error.err_code, text=error.message, location=error.location,
                       severity=error.severity)
        return cls(code=AckCode(error.ack_code), text=error.message, errors=(item,), **extra)

    @property
    def final(self) -> bool:
        """AA and AE are final (a resend gets the stored ACK); AR may be retried."""
        return self.code in (AckCode.AA, AckCode.AE, AckCode.CA, AckCode.CE)
