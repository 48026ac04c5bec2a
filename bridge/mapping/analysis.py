"""The first, pure stage of every message: parse, route, map.

It needs nothing but the message's bytes and the configuration, changes
nothing, and holds the only parse tree of the message, so it runs in a
worker process (:mod:`bridge.service.workers`) and may start before the message is
journaled: only its small result, an :class:`Analysis`, comes back to the
service. Functions here take the *stages* first (anything with ``config``,
``routing`` and ``mappings``: a worker's :class:`~bridge.service.stages.Stages`, or
the service's :class:`~bridge.publish.pipeline.Publisher`), as the worker passes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import BridgeError, UnsupportedMessage
from bridge.hl7.message import ParsedMessage, parse_configured
from bridge.mapping.mapper import map_report
from bridge.model import Action, Report
from bridge.mapping.route import Route, route

#: Message types and events sent to the pipeline; anything else is refused (AR 200/201).
PROCESSED = {"ORU": {"R01"}, "MDM": {"T02", "T10"}}


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """What the service keeps of one message's parse (the tree stays where it was parsed)."""

    control_id: str
    message_type: str
    """MSH-9.1 (ORU)."""
    trigger_event: str
    """MSH-9.2 (R01)."""
    charset: str
    """The Python codec the message was decoded with."""
    route: Route | None = None
    """Type, action and accession (:func:`analyse` of a supported message)."""
    route_error: BridgeError | None = None
    """Why the message could not be routed (raised by :meth:`routed`)."""
    report: Report | None = None
    """The mapped report, for a message routed to be published."""
    mapping_error: BridgeError | None = None
    """Why the report could not be mapped; raised only if the report is needed."""

    def routed(self) -> Route:
        """The route, or the routing's error (the pipeline's first step)."""
        if self.route_error is not None:
            raise self.route_error
        if self.route is None:
            raise BridgeError("the message was not routed")
        return self.route

    def mapped_report(self) -> Report:
        """The report, or the mapping's error (a message the registry decides to publish)."""
        if self.mapping_error is not None:
            raise self.mapping_error
        if self.report is None:
            raise BridgeError("the message was not mapped")
        return self.report


def _summary(parsed: ParsedMessage, **more) -> Analysis:
    return Analysis(control_id=parsed.control_id, message_type=parsed.message_type,
                    trigger_event=parsed.trigger_event, charset=parsed.charset, **more)


def summarise(stages, raw: bytes) -> Analysis:
    """Parse only (services whose handler is not the document pipeline). Raises ParseError."""
    return _summary(parse_configured(raw, stages.config.mllp))


def unsupported(message) -> UnsupportedMessage | None:
    """The refusal for a message type or event the bridge does not process, else None.

    *message*: anything with ``message_type`` and ``trigger_event`` (an Analysis, a ParsedMessage).
    """
    kind, event = message.message_type.upper(), message.trigger_event.upper()
    if kind not in PROCESSED:
        return UnsupportedMessage(f"message type {kind or '(empty)'} not supported", location="MSH^1^9^1",
                                  code="200")
    if event not in PROCESSED[kind]:
        return UnsupportedMessage(f"event {kind}^{event or '(empty)'} not supported", location="MSH^1^9^2",
                                  code="201")
    return None


def analyse(stages, raw: bytes) -> Analysis:
    """Parse, then route and map a message of a type and event the pipeline processes.

    Raises ParseError. Routing and mapping errors are kept in the result,
    raised when the pipeline needs what failed (a commit-mode message is
    accepted once parsed; a cancellation needs no report).
    """
    parsed = parse_configured(raw, stages.config.mllp)
    if unsupported(parsed) is not None:
        return _summary(parsed)
    try:
        routed = route(parsed, stages.routing)
    except BridgeError as exc:
        return _summary(parsed, route_error=exc)
    if routed.action is not Action.PUBLISH:
        return _summary(parsed, route=routed)
    try:
        report = map_report(parsed, routed, stages.mappings, stages.config.structure)
    except BridgeError as exc:
        return _summary(parsed, route=routed, mapping_error=exc)
    return _summary(parsed, route=routed, report=report)
