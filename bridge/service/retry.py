"""What becomes of a processed message: finished, tried again, or set aside (issue 14).

A message the sender is still waiting for (outcome mode) is always finished:
its ACK tells the outcome, and an AR invites the sender to resend. A message
already acknowledged (commit or enhanced mode) carries a promise: the sender
will not resend it, so the bridge publishes it, tries it again for as long as
its failures are temporary, or sets it aside for an operator; it never closes
it with an AR nobody will read.

Pure: the Receiver gives the outcome and what it knows of earlier attempts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bridge.model import AckCode
from bridge.outcome import Outcome


class Next(enum.Enum):
    FINISH = "finish"
    RETRY = "retry"
    SET_ASIDE = "set aside"


@dataclass(frozen=True, slots=True)
class Decision:
    next: Next
    reason: str = ""
    delay_s: float = 0.0
    alert: bool = False
    """True the first time a temporary failure has lasted past the bound: tell the operator."""


def failure_reason(outcome: Outcome) -> str:
    """One line for the journal and the alert (ERR texts, else MSA-3)."""
    return "; ".join(e.text for e in outcome.errors if e.severity != "I") or outcome.text


def after_processing(outcome: Outcome, *, acknowledged: bool, temporary: bool, attempt: int,
                     previous_failure: str | None, requeue_s: float, requeue_max_s: float) -> Decision:
    """The fate of a message after one attempt.

    *temporary*: the failure may pass by itself (the gateway unreachable or 5xx, a worker
    lost); *attempt*: this message's attempts so far, this one included; *previous_failure*:
    the reason of its previous attempt's failure, if it failed.
    """
    if not acknowledged or outcome.code in (AckCode.AA, AckCode.CA):
        return Decision(Next.FINISH)
    reason = failure_reason(outcome)
    if outcome.code in (AckCode.AE, AckCode.CE):
        # Its content was refused (mapping, validation, the gateway): trying again changes nothing.
        return Decision(Next.SET_ASIDE, f"acknowledged, then refused: {reason}")
    if temporary:
        delay = backoff(attempt, requeue_s, requeue_max_s)
        # Once, when the back-off reaches its cap: the failure has lasted long enough to tell.
        alert = delay >= requeue_max_s and backoff(attempt - 1, requeue_s, requeue_max_s) < requeue_max_s
        return Decision(Next.RETRY, reason, delay_s=delay, alert=alert)
    if previous_failure == reason:
        return Decision(Next.SET_ASIDE, f"failed twice the same way: {reason}")
    return Decision(Next.RETRY, reason, delay_s=backoff(1, requeue_s, requeue_max_s))


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """base, 2·base, 4·base… capped at *max_s* (attempt 0: no wait yet)."""
    if attempt <= 0:
        return 0.0
    return min(base_s * 2 ** (attempt - 1), max_s)
