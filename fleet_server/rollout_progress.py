"""What a rollout's state is made of, and what its transitions produce.

:class:`DeviceProgress` and :class:`WaveProgress` (parts of the planner's
:class:`~fleet_server.rollout_plan.RolloutState`), the :data:`Action` list
the server executes, the :class:`RolloutEvent` list it records, and the
:class:`Step` that carries them. Plain frozen values, no behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fleet_server.quality_gate import GateVerdict
from fleet_server.statuses import DeviceStatus, WaveStatus

if TYPE_CHECKING:
    from fleet_server.rollout_plan import RolloutState

__all__ = [
    "Action",
    "Assign",
    "DeviceProgress",
    "EventKind",
    "Notify",
    "Rollback",
    "RolloutEvent",
    "StartShadow",
    "Step",
    "StopShadow",
    "Timestamp",
    "WaveProgress",
    "clip",
    "with_changes",
]


def _check_time(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite, non-negative Unix time")
    return value


Timestamp = Annotated[float, AfterValidator(_check_time)]


def clip(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- actions: what the server executes ----------------------------------------------


@dataclass(frozen=True)
class Assign:
    """Assign ``bundle_sha`` to each of ``device_ids`` (send a wave)."""

    device_ids: tuple[str, ...]
    bundle_sha: str


@dataclass(frozen=True)
class Rollback:
    """Assign ``to_sha`` again to each of ``device_ids``; None: withdraw their assignment."""

    device_ids: tuple[str, ...]
    to_sha: str | None


@dataclass(frozen=True)
class Notify:
    """Tell the operators ``message``."""

    message: str


@dataclass(frozen=True)
class StartShadow:
    """Ask each of ``device_ids`` to run ``bundle_sha`` in shadow (a retained request)."""

    device_ids: tuple[str, ...]
    bundle_sha: str
    every_nth: int
    cpu_budget: float
    window_s: float


@dataclass(frozen=True)
class StopShadow:
    """End the shadow run of each of ``device_ids`` (clear their retained request)."""

    device_ids: tuple[str, ...]


Action = Assign | Rollback | Notify | StartShadow | StopShadow
"""Everything a transition can ask the server to do."""


# --- state ----------------------------------------------------------------------------


class EventKind(str, Enum):
    """What a :class:`RolloutEvent` records."""

    STARTED = "started"
    DEVICES_SKIPPED = "devices-skipped"
    WAVE_STARTED = "wave-started"
    SHADOW_STARTED = "shadow-started"
    """A shadow wave's devices were asked to run the bundle beside their active model."""
    WAVE_SKIPPED = "wave-skipped"
    WINDOW_WAITING = "window-waiting"
    """Devices of a starting wave wait for their maintenance window (said once per wave)."""
    WINDOW_OPENED = "window-opened"
    """Devices that waited were sent the bundle: their maintenance window opened."""
    DEVICE_COMMITTED = "device-committed"
    DEVICE_FAILED = "device-failed"
    DEVICE_TIMED_OUT = "device-timed-out"
    DEVICE_ROLLED_BACK = "device-rolled-back"
    WAVE_SETTLED = "wave-settled"
    GATE_UNDECIDED = "gate-undecided"
    WAVE_PASSED = "wave-passed"
    WAVE_FAILED = "wave-failed"
    AWAITING_APPROVAL = "awaiting-approval"
    APPROVED = "approved"
    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTED = "aborted"
    ROLLBACK_COMPLETE = "rollback-complete"
    COMPLETED = "completed"
    RECOVERED = "recovered"


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RolloutEvent(Frozen):
    """One thing that happened to the rollout, for the server's log and API."""

    kind: EventKind
    at: Timestamp
    message: str = Field(max_length=4096)
    wave: int | None = None
    device_ids: tuple[str, ...] = ()
    verdict: GateVerdict | None = None


class DeviceProgress(Frozen):
    """One target device: its wave, its status here, and what it last reported."""

    wave: int = Field(ge=0)
    status: DeviceStatus = DeviceStatus.PENDING
    sent_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    """When it committed, failed, timed out or was rolled back."""
    phase: str | None = None
    """The device's last reported lifecycle phase."""
    active: str | None = None
    """The bundle the device last reported active."""
    reason: str = Field(default="", max_length=1024)
    rollback_sent: bool = False


class WaveProgress(Frozen):
    """One planned wave: its devices and how far it got."""

    devices: tuple[str, ...]
    status: WaveStatus = WaveStatus.PENDING
    started_at: Timestamp | None = None
    settled_at: Timestamp | None = None
    """When every device had committed, failed or timed out."""
    watch_until: Timestamp | None = None
    """The end of the health window: the last commit plus ``health_window_s``."""
    undecided_since: Timestamp | None = None
    finished_at: Timestamp | None = None
    verdict: GateVerdict | None = None
    reason: str = ""


class Step(NamedTuple):
    """What an input does: the state to persist, the actions to execute, the events to record."""

    state: RolloutState
    actions: list[Action]
    events: list[RolloutEvent]


_Model = TypeVar("_Model", bound=BaseModel)


def with_changes(model: _Model, **changes: Any) -> _Model:
    """A validated copy of a frozen model with ``changes``."""
    return type(model).model_validate({**model.__dict__, **changes})
