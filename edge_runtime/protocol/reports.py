"""What a device reports about itself: reported state, update events, telemetry, availability.

The device builds these models and sends :meth:`~WireMessage.encode`; the
fleet server reads them with ``parse(payload, device_id)``, once, before any
logic sees them (``docs/protocol.md``, "Device state and events" and
"Telemetry").
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, JsonValue, Strict, model_validator

from edge_runtime.errors import MalformedMessageError
from edge_runtime.protocol._wire import (
    PROTOCOL_VERSION,
    DeviceId,
    DeviceReport,
    Sha256,
    Timestamp,
    WireMessage,
    clip,
)

__all__ = [
    "MAX_REASON_CHARS",
    "MAX_TELEMETRY_BYTES",
    "RECENT_EVENTS",
    "RECENT_REASON_CHARS",
    "Availability",
    "EventReport",
    "ProbationFigures",
    "ReportedBundle",
    "ReportedTarget",
    "StateReport",
    "TelemetryHealth",
    "TelemetryQuality",
    "TelemetryReport",
    "UpdatePhase",
]

MAX_TELEMETRY_BYTES: Final = 16 * 1024
"""The largest telemetry snapshot (as JSON) a reader takes. A device's snapshot (metrics,
health, quality) is about 2-4 KiB; with 2,000 kept per device this bounds one device's
telemetry at 32 MiB."""

MAX_REASON_CHARS: Final = 4096
"""The longest reason an event may carry; senders clip theirs to 1,024 characters."""

_SENT_REASON_CHARS = 1024
_Label = Annotated[str, Field(max_length=128)]
_Count = Annotated[int, Field(ge=0, le=2**62)]
_FreeForm = Annotated[dict[str, JsonValue], Field(max_length=256)]


class UpdatePhase(str, Enum):
    """Where a device is in installing a bundle; the values are the protocol's state names.

    The update lifecycle (``edge_runtime.update.lifecycle``) moves through
    these; it is defined here, once, because it is what ``state``, ``from``
    and ``to`` carry on the wire.
    """

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGED = "staged"
    SMOKE_TESTING = "smoke-testing"
    ACTIVATING = "activating"
    PROBATION = "probation"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled-back"


_Phase = Annotated[UpdatePhase, Strict(False)]  # a JSON string names the member


class ReportedBundle(WireMessage):
    """``{"bundle", "name", "version"}``: a bundle the device holds."""

    bundle: Sha256
    name: str | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=64)


class ReportedTarget(WireMessage):
    """``{"bundle", "assignment"}``: the bundle the device is installing (or just finished)."""

    bundle: Sha256
    assignment: _Count


RECENT_EVENTS: Final = 10
"""At most this many recent events ride in a state report (an update is 7 transitions)."""
RECENT_REASON_CHARS: Final = 200
"""Their reasons are clipped to this (the event messages themselves carry up to 1,024)."""


class StateReport(DeviceReport):
    """The retained ``devices/<id>/state`` payload: where the device's update lifecycle stands."""

    kind_name: ClassVar[str] = "state"

    protocol: Literal[1] = PROTOCOL_VERSION
    device_id: DeviceId | None = None
    state: _Phase
    active: ReportedBundle | None = None
    """The bundle serving frames."""
    last_good: ReportedBundle | None = None
    """The bundle the device falls back to."""
    target: ReportedTarget | None = None
    """The bundle being installed; after ``committed``/``rolled-back``, the one just finished."""
    runtime_version: str | None = Field(default=None, max_length=64)
    updated_at: Timestamp
    """The device's clock: stored and compared with the server's for skew, never used to order."""
    sequence: int | None = Field(default=None, ge=0, le=2**62)
    """Grows with every state change on the device; orders reports within one epoch."""
    epoch: str | None = Field(default=None, max_length=32, pattern=r"^[0-9a-f]*$")
    """The device state's lineage; a new one (a wiped store) always supersedes the old."""
    store_problem: str | None = Field(default=None, max_length=500)
    """Why the device cannot persist its update state (a full disk); absent when it can."""
    recent: list[EventReport] | None = Field(default=None, max_length=RECENT_EVENTS)
    """The device's newest lifecycle events, oldest first: a fleet server that lost an event
    message (a replica killed after the broker handed it over) stores them from here."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object sent on the wire (``store_problem`` and ``recent`` only when there are)."""
        omit = {name for name in ("store_problem", "recent") if getattr(self, name) is None}
        data = self.model_dump(mode="json", by_alias=True, exclude=omit or None)
        if self.recent is not None:
            data["recent"] = [event.to_dict() for event in self.recent]
        return data

    def supersedes(self, epoch: str | None, sequence: int | None) -> bool:
        """Whether this report replaces a stored one of ``(epoch, sequence)``.

        Within one epoch a lower sequence is an older report (a redelivery,
        or a replica's late copy); anything else is taken in arrival order. A
        device clock that jumped cannot make a later report look older.
        """
        if self.sequence is None or sequence is None or self.epoch != epoch:
            return True
        return self.sequence >= sequence


MAX_PROBATION_STREAMS: Final = 64
"""The most camera streams an event's ``probation`` lists."""


class ProbationFigures(WireMessage):
    """One camera stream's figures at the end of a probation (an event's ``probation`` entry).

    ``camera`` is None on a single-camera device. A camera that had sent no
    frame for ``health.max_frame_age_s`` when the bundle was activated is
    listed with ``judged`` false and ``note`` saying why: the bundle was not
    judged on it.
    """

    camera: str | None = Field(default=None, max_length=64)
    judged: bool = True
    """False: excluded from the judgement (the camera was dead before activation)."""
    predictions: _Count = 0
    """Predictions the new bundle made on this stream during probation."""
    errors: _Count = 0
    """Inference errors of the new bundle on this stream."""
    latency_p95_ms: float | None = Field(default=None, ge=0)
    """The stream's inference latency p95 with the new bundle (None without a prediction)."""
    mean_confidence: float | None = None
    baseline_confidence: float | None = None
    """The previous bundle's recent mean confidence on this stream (None: not enough of it)."""
    note: str | None = Field(default=None, max_length=300)
    """Why the camera was not judged, or what failed on its stream."""

    def summary(self) -> str:
        """The stream's figures as a few words for people."""
        name = "" if self.camera is None else f"{self.camera}: "
        if not self.judged:
            return f"{name}not judged ({self.note or 'excluded'})"
        words = [f"{self.predictions} predictions"]
        if self.errors:
            words.append(f"{self.errors} errors")
        if self.latency_p95_ms is not None:
            words.append(f"p95 {self.latency_p95_ms:.2f} ms")
        if self.mean_confidence is not None:
            confidence = f"confidence {self.mean_confidence:.3f}"
            if self.baseline_confidence is not None:
                confidence += f" (before {self.baseline_confidence:.3f})"
            words.append(confidence)
        return name + ", ".join(words)


class EventReport(DeviceReport):
    """One ``devices/<id>/events`` payload: a lifecycle transition, or a refusal.

    A transition carries ``bundle``, ``assignment``, ``to`` (and ``from``);
    a refusal (``"kind": "refused"``) only says why. Build them with
    :meth:`transition` and :meth:`refusal`.
    """

    kind_name: ClassVar[str] = "event"

    protocol: Literal[1] = PROTOCOL_VERSION
    device_id: DeviceId | None = None
    kind: Literal["transition", "refused"] = "transition"
    bundle: Sha256 | None = None
    assignment: _Count | None = None
    from_state: _Phase | None = Field(default=None, alias="from")
    to_state: _Phase | None = Field(default=None, alias="to")
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)
    at: Timestamp
    probation: list[ProbationFigures] | None = Field(default=None, max_length=MAX_PROBATION_STREAMS)
    """On the event that ends a probation (``from`` probation): each camera stream's figures.
    Absent on other events, and from devices that predate it."""

    @model_validator(mode="after")
    def _transition_is_complete(self) -> EventReport:
        if self.kind == "transition" and (
            self.bundle is None or self.to_state is None or self.assignment is None
        ):
            raise ValueError("a transition needs bundle, assignment and to")
        return self

    @classmethod
    def transition(
        cls,
        device_id: str,
        *,
        bundle: str,
        assignment: int,
        from_state: UpdatePhase,
        to_state: UpdatePhase,
        reason: str,
        at: float,
        probation: list[ProbationFigures] | None = None,
    ) -> EventReport:
        """The event of one lifecycle transition (``probation``: the figures of the probation it ends)."""
        return cls(
            device_id=device_id,
            bundle=bundle,
            assignment=assignment,
            from_state=from_state,
            to_state=to_state,
            reason=clip(reason, _SENT_REASON_CHARS),
            at=at,
            probation=probation or None,
        )

    @classmethod
    def refusal(cls, device_id: str, reason: str, at: float) -> EventReport:
        """The event of refused metadata or bundle outside a transition (a replay, a bad signature)."""
        return cls(
            device_id=device_id, kind="refused", reason=clip(reason, _SENT_REASON_CHARS), at=at
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object sent on the wire: a transition without ``kind``, a refusal without the
        transition's fields."""
        omit = {"kind"} if self.kind == "transition" else set()
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=omit)

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
        text = f"{text}: {self.reason}" if self.reason else text
        if self.probation:
            text += " [" + "; ".join(figures.summary() for figures in self.probation) + "]"
        return text


StateReport.model_rebuild()  # its `recent` holds EventReports, defined after it


class TelemetryHealth(WireMessage):
    """The ``health`` section of telemetry: the device's ``/healthz`` verdict."""

    status: str = Field(default="", max_length=32)
    """``"ok"`` or ``"unhealthy"``."""
    reasons: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list, max_length=32
    )
    details: _FreeForm = Field(default_factory=dict)
    """The numbers behind the verdict (uptime, frame age, ...)."""


class TelemetryQuality(WireMessage):
    """The ``quality`` section of telemetry: what the serving bundle's predictions looked like."""

    bundle: Sha256 | None = None
    """The bundle these figures describe."""
    predictions: _Count = 0
    mean_confidence: float | None = None
    """Mean of the finite confidences; null before any."""
    class_counts: dict[_Label, _Count] = Field(default_factory=dict, max_length=1024)
    """Label (the uncertain label included) -> predictions of that label."""
    confidence_histogram: list[_Count] = Field(default_factory=list, max_length=100)
    """Predictions per equal bin of their top-1 confidence over 0..1 (10 bins: ``[0, 0.1)`` ...
    ``[0.9, 1]``; non-finite ones in none); empty from devices that predate it."""


class TelemetryReport(DeviceReport):
    """One periodic ``devices/<id>/telemetry`` snapshot: ``/stats`` content plus quality.

    The envelope is typed; ``metrics`` (the ``/metrics`` series by name) and
    ``info`` stay free-form JSON objects, bounded by the snapshot's size cap.
    """

    kind_name: ClassVar[str] = "telemetry"
    max_bytes: ClassVar[int] = MAX_TELEMETRY_BYTES

    protocol: Literal[1] = PROTOCOL_VERSION
    device_id: DeviceId | None = None
    bundle: Sha256 | None = None
    """The bundle serving now."""
    at: Timestamp | None = None
    """When the snapshot was taken (the device's clock)."""
    health: TelemetryHealth | None = None
    metrics: _FreeForm = Field(default_factory=dict)
    """``counters``, ``gauges`` and ``histograms``, each series name -> value (``/stats``)."""
    info: _FreeForm = Field(default_factory=dict)
    """What runs: device id, source, bundle, backend, reconnects, dropped frames."""
    quality: TelemetryQuality | None = None

    def to_stored(self) -> dict[str, Any]:
        """The snapshot as a reader keeps it: the fields the device sent and this reader knows."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Availability(Enum):
    """The retained ``devices/<id>/availability`` payload: the bytes ``online`` or ``offline``.

    Not JSON: ``offline`` is also the device's MQTT Last Will, which the
    broker publishes for it when the connection drops.
    """

    ONLINE = "online"
    OFFLINE = "offline"

    def encode(self) -> bytes:
        """The payload bytes."""
        return self.value.encode("ascii")

    @classmethod
    def parse(cls, payload: bytes, device_id: str) -> Availability:
        """Read an availability payload; anything but ``online``/``offline`` is malformed.

        An empty payload deletes the retained message: readers skip it before parsing.
        """
        try:
            return cls(bytes(payload).decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedMessageError(
                f"availability from {device_id} is not 'online' or 'offline': "
                f"{clip(repr(bytes(payload[:40])), 60)}"
            ) from exc
