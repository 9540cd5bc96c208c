"""What devices report, read at the boundary: the server's side of :mod:`edge_runtime.protocol`.

The models are the protocol's own (one definition, shared with the device
that builds them); these functions parse with them and raise the fleet
server's :class:`~fleet_server.errors.MalformedReportError` (a
:class:`~edge_runtime.errors.MalformedMessageError`) with the protocol's
message. Each takes the payload bytes or an already decoded value.
"""

from __future__ import annotations

from typing import Any

from edge_runtime.errors import MalformedMessageError
from edge_runtime.protocol import (
    MAX_TELEMETRY_BYTES,
    Availability,
    EventReport,
    ReportedBundle,
    ReportedTarget,
    StateReport,
    TelemetryReport,
)
from fleet_server.errors import MalformedReportError

__all__ = [
    "MAX_TELEMETRY_BYTES",
    "Availability",
    "EventReport",
    "ReportedBundle",
    "ReportedTarget",
    "StateReport",
    "TelemetryReport",
    "parse_availability",
    "parse_event",
    "parse_state",
    "parse_telemetry",
    "parse_telemetry_report",
]


def parse_state(payload: Any, device_id: str) -> StateReport:
    """Read a reported state published under ``devices/<device_id>/``."""
    try:
        return StateReport.parse(payload, device_id)
    except MalformedMessageError as exc:
        raise MalformedReportError(str(exc)) from exc


def parse_event(payload: Any, device_id: str) -> EventReport:
    """Read an update event or refusal published under ``devices/<device_id>/``."""
    try:
        return EventReport.parse(payload, device_id)
    except MalformedMessageError as exc:
        raise MalformedReportError(str(exc)) from exc


def parse_telemetry_report(
    payload: Any, device_id: str, max_bytes: int = MAX_TELEMETRY_BYTES
) -> TelemetryReport:
    """Read a telemetry snapshot no larger than ``max_bytes`` (as received, or encoded compactly)."""
    try:
        return TelemetryReport.parse(payload, device_id, max_bytes=max_bytes)
    except MalformedMessageError as exc:
        raise MalformedReportError(str(exc)) from exc


def parse_telemetry(
    payload: Any, device_id: str, max_bytes: int = MAX_TELEMETRY_BYTES
) -> dict[str, Any]:
    """A telemetry snapshot as the JSON object to store: the fields the device sent that the
    protocol knows (:meth:`TelemetryReport.to_stored`)."""
    return parse_telemetry_report(payload, device_id, max_bytes).to_stored()


def parse_availability(payload: bytes, device_id: str) -> Availability:
    """Read an availability payload: ``online`` or ``offline`` (an empty one deletes the retained
    message; skip it before calling)."""
    try:
        return Availability.parse(payload, device_id)
    except MalformedMessageError as exc:
        raise MalformedReportError(str(exc)) from exc
