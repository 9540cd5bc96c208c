"""What devices report, read at the boundary: reported state, update events, telemetry.

The payloads are those of ``docs/protocol.md``. Readers of protocol major
version 1 ignore unknown fields; a payload of another major version, with a
wrong field or about another device is a :class:`MalformedReportError`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.update.lifecycle import PROTOCOL_VERSION, UpdatePhase
from fleet_server.errors import MalformedReportError

__all__ = [
    "MAX_TELEMETRY_BYTES",
    "EventReport",
    "ReportedBundle",
    "ReportedTarget",
    "StateReport",
    "parse_event",
    "parse_state",
    "parse_telemetry",
]

MAX_TELEMETRY_BYTES = 16 * 1024
"""The largest telemetry snapshot (as JSON) the registry stores. A device's snapshot (metrics,
health, quality) is about 2-4 KiB; with 2,000 kept per device this bounds one device's
telemetry at 32 MiB."""


def _check_time(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite, non-negative Unix time")
    return value


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Timestamp = Annotated[float, AfterValidator(_check_time)]


class _Report(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class ReportedBundle(_Report):
    """``{"bundle", "name", "version"}``: a bundle the device holds."""

    bundle: Sha256
    name: str | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=64)


class ReportedTarget(_Report):
    """``{"bundle", "assignment"}``: the bundle the device is installing (or just finished)."""

    bundle: Sha256
    assignment: int = Field(ge=0)


class StateReport(_Report):
    """The retained ``devices/<id>/state`` payload."""

    protocol: int = PROTOCOL_VERSION
    device_id: str | None = None
    state: UpdatePhase
    active: ReportedBundle | None = None
    last_good: ReportedBundle | None = None
    target: ReportedTarget | None = None
    runtime_version: str | None = Field(default=None, max_length=64)
    updated_at: Timestamp
    """The device's clock: stored and compared with the server's for skew, never used to order."""
    sequence: int | None = Field(default=None, ge=0, le=2**62)
    """Grows with every state change on the device; orders reports within one epoch."""
    epoch: str | None = Field(default=None, max_length=32, pattern=r"^[0-9a-f]*$")
    """The device state's lineage; a new one (a wiped store) always supersedes the old."""

    def supersedes(self, epoch: str | None, sequence: int | None) -> bool:
        """Whether this report replaces a stored one of ``(epoch, sequence)``.

        Within one epoch a lower sequence is an older report (a redelivery,
        or a replica's late copy); anything else is taken in arrival order. A
        device clock that jumped cannot make a later report look older.
        """
        if self.sequence is None or sequence is None or self.epoch != epoch:
            return True
        return self.sequence >= sequence


class EventReport(_Report):
    """One ``devices/<id>/events`` payload: a lifecycle transition or a refusal."""

    protocol: int = PROTOCOL_VERSION
    device_id: str | None = None
    kind: Literal["transition", "refused"] = "transition"
    bundle: Sha256 | None = None
    assignment: int | None = Field(default=None, ge=0)
    from_state: UpdatePhase | None = Field(default=None, alias="from")
    to_state: UpdatePhase | None = Field(default=None, alias="to")
    reason: str = Field(default="", max_length=4096)
    at: Timestamp

    def dedupe_key(self, device_id: str) -> str:
        """The same event delivered twice (QoS 1) has the same key."""
        if self.kind == "refused":
            digest = hashlib.sha256(self.reason.encode("utf-8")).hexdigest()[:16]
            return f"refused:{device_id}:{self.at!r}:{digest}"
        from_state = self.from_state.value if self.from_state else ""
        to_state = self.to_state.value if self.to_state else ""
        return (
            f"event:{device_id}:{self.bundle}:{self.assignment}:{from_state}:{to_state}:{self.at!r}"
        )

    def message(self) -> str:
        """The event as one line for people."""
        if self.kind == "refused":
            return f"refused: {self.reason}"
        from_state = self.from_state.value if self.from_state else "?"
        to_state = self.to_state.value if self.to_state else "?"
        bundle = (self.bundle or "?")[:12]
        text = f"{from_state} -> {to_state} (bundle {bundle}, assignment {self.assignment})"
        return f"{text}: {self.reason}" if self.reason else text


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
        for error in exc.errors()[:5]
    )


def _check_payload(payload: Any, device_id: str, what: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise MalformedReportError(f"{what} from {device_id} is not a JSON object")
    protocol = payload.get("protocol", PROTOCOL_VERSION)
    if protocol != PROTOCOL_VERSION:
        raise MalformedReportError(
            f"{what} from {device_id} uses protocol {protocol!r}; this server reads "
            f"protocol {PROTOCOL_VERSION}"
        )
    claimed = payload.get("device_id", device_id)
    if claimed != device_id:
        raise MalformedReportError(
            f"{what} published for device {device_id} names device {claimed!r}"
        )
    return payload


def parse_state(payload: Any, device_id: str) -> StateReport:
    """Read a reported state published under ``devices/<device_id>/``."""
    data = _check_payload(payload, device_id, "state")
    try:
        return StateReport.model_validate(data)
    except ValidationError as exc:
        raise MalformedReportError(f"state from {device_id} is invalid: {_problems(exc)}") from exc


def parse_event(payload: Any, device_id: str) -> EventReport:
    """Read an update event or refusal published under ``devices/<device_id>/``."""
    data = _check_payload(payload, device_id, "event")
    try:
        event = EventReport.model_validate(data)
    except ValidationError as exc:
        raise MalformedReportError(f"event from {device_id} is invalid: {_problems(exc)}") from exc
    if event.kind == "transition" and (
        event.bundle is None or event.to_state is None or event.assignment is None
    ):
        raise MalformedReportError(
            f"event from {device_id} is invalid: a transition needs bundle, assignment and to"
        )
    return event


def parse_telemetry(
    payload: Any, device_id: str, max_bytes: int = MAX_TELEMETRY_BYTES
) -> dict[str, Any]:
    """A telemetry snapshot as a JSON-safe dict no larger than ``max_bytes`` once encoded."""
    data = _check_payload(payload, device_id, "telemetry")
    try:
        encoded = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MalformedReportError(
            f"telemetry from {device_id} is not JSON-safe (NaN, infinity or odd types): {exc}"
        ) from exc
    if len(encoded) > max_bytes:
        raise MalformedReportError(
            f"telemetry from {device_id} is {len(encoded)} bytes, over the {max_bytes}-byte cap"
        )
    result: dict[str, Any] = json.loads(encoded)
    return result
