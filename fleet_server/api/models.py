"""What the HTTP API reads and answers: request bodies and typed replies (so ``/openapi.json``
describes real schemas, and a reply that strays from them is a server error, not a surprise)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fleet_server.records import (
    BundleInfo,
    DeviceInfo,
    RolloutInfo,
    check_name,
)
from fleet_server.rollout_approval import approvals_required
from fleet_server.rollout_plan import RolloutState
from fleet_server.rollout_spec import Sha256, WaveSpec
from fleet_server.rollout_windows import window_wait
from fleet_server.statuses import (
    TERMINAL_ROLLOUT_STATUSES,
    DeviceStatus,
    RolloutStatus,
    WaveStatus,
)
from fleet_server.windows import describe_time

__all__ = [
    "BundleView",
    "CommandRequest",
    "CrlRequest",
    "CrlView",
    "DeviceView",
    "ImportRequest",
    "MqttSettings",
    "PinRequest",
    "PlannerView",
    "ProvisionReply",
    "ProvisionRequest",
    "RolloutRequest",
    "RolloutSummary",
    "RolloutView",
    "TargetRequest",
    "TimelineView",
    "Verb",
    "WaveView",
]

Verb = Literal["pause", "resume", "approve", "abort"]

DeviceId = Annotated[str, AfterValidator(lambda v: check_name(v, "device id"))]
Tag = Annotated[str, AfterValidator(lambda v: check_name(v, "tag"))]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProvisionRequest(_Request):
    """A device to register ahead of its first contact."""

    id: DeviceId
    tags: list[Tag] = Field(default_factory=list)
    profile: str | None = None


class PinRequest(_Request):
    """The bundle to keep a device on (``null`` unpins it)."""

    sha256: Sha256 | None


class ImportRequest(_Request):
    """A released bundle file, as a path on the fleet server's machine."""

    path: str = Field(min_length=1)


class TargetRequest(_Request):
    """Which devices a rollout covers: all, those carrying every tag, or named ones."""

    kind: Literal["all", "tags", "devices"]
    values: list[str] = Field(default_factory=list)


class RolloutRequest(_Request):
    """A rollout: the bundle, its target, what a rollback restores, and its waves (canary first)."""

    bundle_sha256: Sha256
    target: TargetRequest
    previous_sha256: Sha256 | None = None
    waves: list[WaveSpec] = Field(min_length=1, max_length=100)
    seed: int = 0
    ignore_windows: bool = False
    """Send every wave at once, whatever the devices' maintenance windows (an emergency; the
    rollout's timeline and the audit log record it)."""


class CrlRequest(_Request):
    """The fleet CA's certificate revocation list, PEM, for the broker (``fleet ca revoke``)."""

    crl_pem: str = Field(min_length=1, max_length=900_000)


class CommandRequest(_Request):
    """Why an operator aborts (ignored by the other commands)."""

    reason: str = Field(default="operator abort", max_length=1024)


# --- replies --------------------------------------------------------------------------


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


DeviceView = DeviceInfo
"""A device as the API answers it: the registry's record itself (a dataclass FastAPI reads)."""


class MqttSettings(BaseModel):
    """What a device's config needs to reach the broker (and, once, its broker password)."""

    model_config = ConfigDict(extra="forbid")

    topic_prefix: str
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    """The device broker speaks TLS only (``mqtts://``)."""
    ca_pem: str | None = None
    """The CA certificate(s) the device trusts for the broker, PEM (None: the system's)."""


class CrlView(BaseModel):
    """The revocation list now in the broker's hands."""

    crl_number: int
    revoked: int
    """How many certificates it revokes."""
    next_update: float | None
    """When it expires (Unix time): the broker refuses every client certificate after that."""


class ProvisionReply(BaseModel):
    """A provisioned device (or one whose credentials changed) and its MQTT settings."""

    device: DeviceInfo
    mqtt: MqttSettings


class BundleView(_Reply):
    """A released bundle and the baseline figures rollouts compare devices against."""

    sha256: str
    name: str
    version: str
    format: str
    precision: str
    size: int
    released_at: float
    labels: tuple[str, ...]
    baseline_accuracy: float | None
    baseline_mean_confidence: float | None
    baseline_class_distribution: dict[str, float] | None
    latency_budget_ms: float | None

    @classmethod
    def of(cls, info: BundleInfo) -> BundleView:
        return cls.model_validate(info)


class RolloutSummary(BaseModel):
    """A rollout's identity, target and status."""

    id: int
    bundle_sha256: str
    previous_sha256: str | None
    target: dict[str, Any]
    """``{"all": true}``, ``{"tags": [...]}`` or ``{"devices": [...]}``."""
    status: RolloutStatus
    reason: str | None
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, info: RolloutInfo) -> RolloutSummary:
        return cls(
            id=info.id,
            bundle_sha256=info.bundle_sha256,
            previous_sha256=info.previous_sha256,
            target=info.target.to_json(),
            status=info.status,
            reason=info.reason,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


class WaveView(BaseModel):
    """One wave: its status, when it ran, its devices and how many are in each status."""

    index: int
    status: WaveStatus
    started_at: float | None
    finished_at: float | None
    devices: int
    counts: dict[DeviceStatus, int]


class PlannerView(BaseModel):
    """The live planner state of a rollout still followed."""

    status: RolloutStatus
    current_wave: int
    waves: int
    devices: int
    skipped: dict[str, str]
    counts: dict[DeviceStatus, int]
    approvals_required: int
    """How many different people must approve the next wave, when it waits (2: four-eyes)."""
    approved_by: list[str]
    """Who approved the wave the rollout awaits, so far."""
    ignore_windows: bool
    """Created with ``ignore_windows``: every wave is sent whole, maintenance windows or not."""
    waiting_for_window: list[str]
    """Devices of a running wave not sent yet: outside their maintenance windows."""
    next_window_opens_at: float | None
    next_window_opens: str | None
    """When the first of them may be sent, in its window's zone (``Sun 02:00 Europe/Paris``)."""
    shadow_devices: list[str] = []
    """The devices of the rollout's shadow wave (the first), if it has one (``docs/shadow.md``)."""

    @classmethod
    def of(cls, plan: RolloutState) -> PlannerView:
        now = time.time()
        wait = window_wait(plan, now)
        opens = None if wait is None else wait.next_open
        return cls(
            status=plan.status,
            current_wave=plan.current_wave,
            waves=len(plan.waves),
            devices=len(plan.devices),
            skipped=dict(plan.skipped),
            counts={k: v for k, v in plan.device_counts().items() if v},
            approvals_required=approvals_required(plan),
            approved_by=list(plan.approved_by),
            ignore_windows=plan.spec.ignore_windows,
            waiting_for_window=[] if wait is None else list(wait.devices),
            next_window_opens_at=opens,
            next_window_opens=(
                None if wait is None or opens is None else describe_time(opens, wait.zone_name, now)
            ),
            shadow_devices=shadow_devices(plan),
        )


def shadow_devices(plan: RolloutState | None) -> list[str]:
    """The devices of the plan's shadow wave (its first), or none."""
    if plan is None or not plan.spec.waves or not plan.spec.waves[0].shadow:
        return []
    return list(plan.waves[0].devices)


class RolloutView(RolloutSummary):
    """A rollout's status, its waves with device counts per status, and the planner's summary."""

    finished: bool
    waves: list[WaveView]
    counts: dict[DeviceStatus, int]
    planner: PlannerView | None
    shadow_devices: list[str] = []
    """The devices of the rollout's shadow wave (its first), followed or ended; ``[]``: none."""

    @classmethod
    def build(
        cls,
        info: RolloutInfo,
        waves: list[WaveView],
        counts: dict[DeviceStatus, int],
        plan: RolloutState | None,
        saved: RolloutState | None = None,
    ) -> RolloutView:
        """``plan``: the live state of a followed rollout; ``saved``: the stored one (an ended
        rollout's shape, for its shadow wave)."""
        return cls(
            **RolloutSummary.of(info).model_dump(),
            finished=info.status in TERMINAL_ROLLOUT_STATUSES,
            waves=waves,
            counts=counts,
            planner=None if plan is None else PlannerView.of(plan),
            shadow_devices=shadow_devices(plan if plan is not None else saved),
        )


class TimelineView(_Reply):
    """One timeline entry: ``kind`` names what happened, ``message`` says it to a person."""

    id: int
    at: float
    kind: str
    message: str
    rollout_id: int | None
    device_id: str | None
    data: dict[str, Any] | None
