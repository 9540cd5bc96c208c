"""What a rollout is asked to do: the bundle, the target devices and the waves, and how waves are filled.

Plain values only, parsed once at the boundary (pydantic, ``extra="forbid"``).
:func:`plan_waves` puts every eligible device into exactly one wave,
deterministically; :func:`desired_bundle` says which bundle a device that
was not part of a rollout (a new device joining a group, one that was pinned)
should run. The state machine that moves a rollout on is
:mod:`fleet_server.rollout_plan`.

Wave selectors (exactly one per wave):

* ``devices``: named devices; they are placed first, before any other wave
  takes devices, so a named device is never drawn by an earlier percentage;
* ``tags``: every device not already placed that carries one of the tags;
* ``percent``: a percentage **of all the rollout's eligible devices** (not of
  those remaining), rounded up, at least one device while any remain, at
  most what remains; ``percent=100`` takes the rest;
* ``count``: that many devices (at most what remains).

Percentages and counts draw from the devices left after named and tagged
waves, in a seeded shuffle of the sorted ids, so the same spec and seed give
the same plan. Every eligible device must land in a wave (end the list with
``percent=100`` to take the rest); a device no wave takes is a
:class:`~fleet_server.errors.RolloutPlanError`, never a silent omission.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from fleet_server.errors import RolloutPlanError
from fleet_server.quality_gate import Baseline, GateThresholds
from fleet_server.shadow_gate import ShadowStage
from fleet_server.windows import Schedule, WindowsNeverOpenError, WindowSpecError, parse_window

__all__ = [
    "RolloutSpec",
    "Sha256",
    "TargetDevice",
    "WaveSpec",
    "desired_bundle",
    "plan_waves",
    "wave_label",
]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _check_sha256(value: str) -> str:
    if not _SHA256_RE.match(value):
        raise ValueError("must be 64 lowercase hex digits (a sha256)")
    return value


Sha256 = Annotated[str, AfterValidator(_check_sha256)]
DeviceId = Annotated[str, Field(min_length=1, max_length=128)]
Tag = Annotated[str, Field(min_length=1, max_length=128)]


def _check_window(value: str) -> str:
    try:
        return parse_window(value).text
    except WindowSpecError as exc:
        raise ValueError(str(exc)) from exc


WindowText = Annotated[str, AfterValidator(_check_window)]
"""A maintenance window spec (:mod:`fleet_server.windows`), kept in its canonical spelling."""


def wave_label(index: int) -> str:
    """How people read wave ``index`` (0-based): ``"wave 1"`` is the first wave, the canary."""
    return f"wave {index + 1}"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetDevice(_Frozen):
    """A device the rollout targets: its id, its tags (groups), and the bundle it is pinned to."""

    device_id: DeviceId
    tags: tuple[Tag, ...] = ()
    pinned_bundle: Sha256 | None = None
    """A pinned device keeps this bundle: rollouts skip it."""
    phase: str | None = Field(default=None, max_length=32)
    """The lifecycle phase the device last reported when the rollout was planned."""
    active: Sha256 | None = None
    """The bundle the device last reported active then: a device that already runs the
    rollout's bundle counts as committed as soon as its wave starts."""
    runtime_version: str | None = Field(default=None, max_length=64)
    """The edge_runtime version the device last reported (None: never reported)."""


class WaveSpec(_Frozen):
    """One wave: which devices (exactly one selector) and how it is judged."""

    percent: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    devices: tuple[DeviceId, ...] = ()
    tags: tuple[Tag, ...] = ()
    success_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    """Fraction of the wave's devices that must commit within ``device_timeout_s``."""
    device_timeout_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 3600.0
    """Seconds from sending to a device until it must have committed."""
    health_window_s: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 600.0
    """Seconds after the wave's last commit during which it is watched before the gate decides."""
    gate_timeout_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    """Seconds after the health window to wait for enough telemetry; then the wave fails. None: wait."""
    gate: GateThresholds = Field(default_factory=GateThresholds)
    approval_before_next: bool = False
    """After this wave passes, the next one waits for an operator's approval."""
    approvals_required: Literal[1, 2] = 1
    """How many different people must approve the next wave (2: four-eyes)."""
    shadow: ShadowStage | None = None
    """A shadow wave (the first wave only): its devices run the bundle beside their active model
    and never activate it; :mod:`fleet_server.shadow_gate` judges their reports. Its devices
    are taken again by the waves after it, which activate the bundle."""

    @model_validator(mode="after")
    def _one_selector(self) -> WaveSpec:
        chosen = [
            name
            for name, value in (
                ("percent", self.percent),
                ("count", self.count),
                ("devices", self.devices or None),
                ("tags", self.tags or None),
            )
            if value is not None
        ]
        if len(chosen) != 1:
            raise ValueError(
                "a wave needs exactly one of percent, count, devices, tags"
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        if self.approvals_required > 1 and not self.approval_before_next:
            raise ValueError("approvals_required above 1 needs approval_before_next")
        return self


class RolloutSpec(_Frozen):
    """A rollout as asked for: new and previous bundle, resolved target devices, waves.

    The first wave is the canary. ``baseline`` holds the new bundle's own
    figures for the quality gate (see :meth:`Baseline.from_manifest`).
    """

    bundle: Sha256
    previous_bundle: Sha256 | None = None
    """What a rollback re-assigns; None: the server withdraws the devices' assignment instead."""
    devices: tuple[TargetDevice, ...]
    waves: tuple[WaveSpec, ...] = Field(min_length=1, max_length=100)
    seed: int = 0
    baseline: Baseline | None = None
    windows: dict[Tag, tuple[WindowText, ...]] = Field(default_factory=dict)
    """The maintenance windows of the targets' tags when the rollout was created (a snapshot, so
    every server replica decides alike): a device is sent the bundle only while each of its tags
    that has windows is inside one (:class:`~fleet_server.windows.Schedule`)."""
    ignore_windows: bool = False
    """Send every wave's devices at once, windows or not (an emergency)."""
    min_runtime_version: str | None = Field(default=None, max_length=64)
    """The bundle's ``compatibility.min_runtime_version``: a device that reported an older
    runtime is left out (skipped, with the reason), since it would refuse the bundle."""

    @model_validator(mode="after")
    def _consistent(self) -> RolloutSpec:
        if self.bundle == self.previous_bundle:
            raise ValueError("previous_bundle is the bundle being rolled out")
        if any(wave.shadow is not None for wave in self.waves[1:]):
            raise ValueError("only the first wave may be a shadow wave")
        if self.waves[0].shadow is not None and len(self.waves) < 2:
            raise ValueError("a shadow wave needs a wave after it that activates the bundle")
        seen: set[str] = set()
        for device in self.devices:
            if device.device_id in seen:
                raise ValueError(f"device {device.device_id!r} is listed twice")
            seen.add(device.device_id)
        return self

    def schedules(self) -> dict[str, Schedule]:
        """Each device's maintenance schedule, for the devices that have one and while the
        windows apply (none with :attr:`ignore_windows`)."""
        if self.ignore_windows or not self.windows:
            return {}
        shared: dict[tuple[str, ...], Schedule] = {}
        found = {}
        for device in self.devices:
            tags = tuple(sorted(t for t in set(device.tags) if self.windows.get(t)))
            if tags:
                if tags not in shared:
                    shared[tags] = Schedule.of(tags, self.windows)
                found[device.device_id] = shared[tags]
        return found

    def check_windows(self, now: float) -> None:
        """:class:`~fleet_server.windows.WindowsNeverOpenError` when a target device's windows
        never open together (its tags' windows never overlap): it would wait forever."""
        by_schedule: dict[Schedule, list[str]] = {}
        for device_id, schedule in self.schedules().items():
            by_schedule.setdefault(schedule, []).append(device_id)
        for schedule, ids in by_schedule.items():
            if schedule.next_open(now) is None:
                shown = ", ".join(sorted(ids)[:5]) + (", ..." if len(ids) > 5 else "")
                raise WindowsNeverOpenError(
                    f"the maintenance windows of {len(ids)} devices ({shown}) never open at the "
                    f"same time ({schedule}): change the windows, or use --ignore-windows"
                )


def _wave_size(spec: WaveSpec, total: int, remaining: int) -> int:
    if spec.count is not None:
        wanted = spec.count
    else:
        assert spec.percent is not None  # the selector validator guarantees one
        # round() first so that 7% of 100 is 7, not 8 from 7.000000000000001
        wanted = math.ceil(round(spec.percent * total / 100.0, 9))
    return min(max(wanted, 1), remaining)


def plan_waves(
    device_ids: Sequence[str],
    waves_spec: Sequence[WaveSpec],
    seed: int,
    *,
    tags: Mapping[str, Collection[str]] | None = None,
    skip: Collection[str] = (),
) -> list[tuple[str, ...]]:
    """The devices of each wave (sorted ids), one tuple per wave spec, some possibly empty.

    ``device_ids`` are the eligible devices; ``tags`` gives each device's tags
    for tag selectors; a named device in ``skip`` (a pinned one) is left out
    without complaint. :class:`RolloutPlanError` for a repeated device id, a
    named device that is not a target, a device named in two waves, or a
    device that no wave takes.
    """
    if waves_spec and waves_spec[0].shadow is not None:
        # a shadow wave takes its devices without placing them: the waves after it take all
        real = plan_waves(device_ids, waves_spec[1:], seed, tags=tags, skip=skip)
        chooser = waves_spec[0].model_copy(update={"shadow": None})
        shadow = plan_waves(
            device_ids, [chooser, WaveSpec(percent=100.0)], seed, tags=tags, skip=skip
        )[0]
        return [shadow, *real]
    ids = sorted(device_ids)
    if len(set(ids)) != len(ids):
        repeated = sorted({d for d in ids if ids.count(d) > 1})
        raise RolloutPlanError(f"devices listed more than once: {', '.join(repeated)}")
    known, skipped = set(ids), set(skip)
    plan: list[tuple[str, ...]] = [() for _ in waves_spec]
    placed: dict[str, int] = {}
    for index, wave in enumerate(waves_spec):
        named: list[str] = []
        for device in dict.fromkeys(wave.devices):
            if device in skipped:
                continue
            if device not in known:
                raise RolloutPlanError(
                    f"{wave_label(index)} names device {device!r}, which is not a target of the rollout"
                )
            if device in placed:
                raise RolloutPlanError(
                    f"device {device!r} is named in {wave_label(placed[device])} "
                    f"and in {wave_label(index)}"
                )
            placed[device] = index
            named.append(device)
        plan[index] = tuple(sorted(named))
    device_tags = tags or {}
    for index, wave in enumerate(waves_spec):
        if wave.tags:
            wanted = set(wave.tags)
            chosen = [d for d in ids if d not in placed and wanted & set(device_tags.get(d, ()))]
            placed.update(dict.fromkeys(chosen, index))
            plan[index] = tuple(chosen)
    pool = [d for d in ids if d not in placed]
    random.Random(seed).shuffle(pool)  # noqa: S311 - a reproducible draw, not a secret
    for index, wave in enumerate(waves_spec):
        if (wave.percent is None and wave.count is None) or not pool:
            continue
        size = _wave_size(wave, len(ids), len(pool))
        plan[index] = tuple(sorted(pool[:size]))
        pool = pool[size:]
    if pool:
        shown = ", ".join(sorted(pool)[:5]) + (", ..." if len(pool) > 5 else "")
        raise RolloutPlanError(
            f"{len(pool)} of {len(ids)} devices are in no wave ({shown}); "
            "end the waves with percent=100 to take the rest"
        )
    return plan


def desired_bundle(
    device: TargetDevice,
    group_assignments: Mapping[str, str],
    pins: Mapping[str, str] | None = None,
) -> str | None:
    """The bundle ``device`` should run outside any rollout: its pin, else its group's current version.

    New devices get their group's current version: a device that joins a
    group while a rollout runs gets what the group runs now (a rollout moves
    the group's assignment only once it completes), and the rollout does not
    take it in. ``pins`` (device id to sha256) wins over the device's own
    ``pinned_bundle``; among several groups (tags) the first one, in the
    device's order, that has an assignment decides. None when nothing applies.
    """
    pin = (pins or {}).get(device.device_id) or device.pinned_bundle
    if pin is not None:
        return pin
    for tag in device.tags:
        if tag in group_assignments:
            return group_assignments[tag]
    return None
