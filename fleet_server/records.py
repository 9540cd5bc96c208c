"""What the registry hands out: plain frozen records, never database objects.

Statuses are :mod:`fleet_server.statuses`' enums (strings on the wire, in the
database and in the CLI): the rollout planner's vocabulary, the only one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from fleet_server.statuses import DeviceStatus, RolloutStatus, WaveStatus

__all__ = [
    "ASSIGNMENT_KINDS",
    "AVAILABILITIES",
    "NAME_PATTERN",
    "AssignmentInfo",
    "AssignmentKind",
    "Availability",
    "BundleInfo",
    "DeviceInfo",
    "DeviceOrigin",
    "RolloutInfo",
    "TargetSelector",
    "TimelineItem",
    "WaveDeviceInfo",
    "WaveInfo",
    "check_name",
]

AssignmentKind = Literal["devices", "groups"]
Availability = Literal["online", "offline", "unknown"]
DeviceOrigin = Literal["provisioned", "first-contact"]

ASSIGNMENT_KINDS: tuple[str, ...] = get_args(AssignmentKind)
AVAILABILITIES: tuple[str, ...] = get_args(Availability)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Device ids, tags and group names: one MQTT topic level and one TUF target path segment."""


def check_name(value: str, what: str) -> str:
    """``value`` if it is a valid device id, tag or group name; ``ValueError`` naming ``what``."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(
            f"{what} {value!r} is not valid: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class TargetSelector:
    """Which devices a rollout covers: all of them, those carrying every tag given, or named ones."""

    kind: Literal["all", "tags", "devices"]
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in {"all", "tags", "devices"}:
            raise ValueError(f"target kind {self.kind!r} is not one of all, tags, devices")
        if self.kind == "all" and self.values:
            raise ValueError("an 'all' target takes no values")
        if self.kind != "all" and not self.values:
            raise ValueError(f"a {self.kind!r} target needs at least one value")
        for value in self.values:
            check_name(value, "tag" if self.kind == "tags" else "device id")

    @classmethod
    def everything(cls) -> TargetSelector:
        """Every registered device."""
        return cls("all")

    @classmethod
    def tags(cls, tags: Sequence[str]) -> TargetSelector:
        """Devices that carry every one of ``tags``."""
        return cls("tags", tuple(sorted(set(tags))))

    @classmethod
    def devices(cls, device_ids: Sequence[str]) -> TargetSelector:
        """The named devices."""
        return cls("devices", tuple(sorted(set(device_ids))))

    def to_json(self) -> dict[str, Any]:
        """``{"all": true}``, ``{"tags": [...]}`` or ``{"devices": [...]}``."""
        return {"all": True} if self.kind == "all" else {self.kind: list(self.values)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TargetSelector:
        """The inverse of :meth:`to_json`; ``ValueError`` for anything else."""
        if not isinstance(data, Mapping) or len(data) != 1:
            raise ValueError(f"a target is one of all, tags, devices, got {data!r}")
        ((key, value),) = data.items()
        if key == "all":
            if value is not True:
                raise ValueError("target 'all' must be true")
            return cls.everything()
        if key not in {"tags", "devices"} or not isinstance(value, list):
            raise ValueError(f"a target is one of all, tags, devices (a list), got {data!r}")
        return cls("tags" if key == "tags" else "devices", tuple(sorted(set(value))))


@dataclass(frozen=True)
class BundleInfo:
    """A released bundle and the baseline figures a rollout compares devices against."""

    sha256: str
    name: str
    version: str
    format: str
    precision: str
    size: int
    released_at: float
    labels: tuple[str, ...]
    quality: Mapping[str, Any] | None = field(repr=False)
    baseline_accuracy: float | None
    baseline_mean_confidence: float | None
    baseline_class_distribution: Mapping[str, float] | None
    latency_budget_ms: float | None


@dataclass(frozen=True)
class DeviceInfo:
    """A device: provisioning, availability and the state it last reported."""

    id: str
    tags: tuple[str, ...]
    profile: str | None
    origin: DeviceOrigin
    pinned_bundle: str | None
    registered_at: float
    last_seen: float | None
    availability: Availability
    phase: str | None
    active_bundle: str | None
    active_name: str | None
    active_version: str | None
    last_good_bundle: str | None
    target_bundle: str | None
    target_assignment: int | None
    runtime_version: str | None
    state_updated_at: float | None
    """The device's own clock on its latest state report."""
    has_credentials: bool
    state_received_at: float | None = None
    """The server's clock when that report arrived."""
    clock_skew_s: float | None = None
    """Server receive time minus device time on the latest fresh (not retained) state report:
    positive when the device's clock is behind (or the report was slow to arrive)."""
    last_event_reason: str | None = None
    """The reason the device's newest event gave (why it refused or rolled back)."""


@dataclass(frozen=True)
class AssignmentInfo:
    """``assignments/<kind>/<name>`` -> bundle, at assignment version ``version``."""

    kind: AssignmentKind
    name: str
    bundle_sha256: str
    version: int
    updated_at: float


@dataclass(frozen=True)
class RolloutInfo:
    """A rollout's identity, target, status and settings (waves definition, thresholds)."""

    id: int
    bundle_sha256: str
    previous_sha256: str | None
    target: TargetSelector
    status: RolloutStatus
    reason: str | None
    created_at: float
    updated_at: float
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class WaveInfo:
    """One wave of a rollout."""

    id: int
    rollout_id: int
    index: int
    status: WaveStatus
    started_at: float | None
    finished_at: float | None
    settings: Mapping[str, Any]
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class WaveDeviceInfo:
    """Where one device of a rollout stands."""

    rollout_id: int
    wave_id: int
    wave_index: int
    device_id: str
    status: DeviceStatus
    reason: str | None
    updated_at: float


@dataclass(frozen=True)
class TimelineItem:
    """One timeline entry: ``kind`` names what happened, ``message`` says it to a person."""

    id: int
    at: float
    kind: str
    message: str
    rollout_id: int | None = None
    device_id: str | None = None
    data: Mapping[str, Any] | None = None
