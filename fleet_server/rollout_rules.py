"""The rollout planner's rules: how device reports and the clock move waves and devices.

Functions over a :class:`~fleet_server.rollout_plan.RolloutState` that
return a :class:`~fleet_server.rollout_progress.Step`; the state's methods
call them. Pure: no I/O, no clock.

Rules the transitions keep:

* a wave's devices are sent at once (one :class:`Assign`), except those
  outside their maintenance window, sent as their windows open
  (:mod:`fleet_server.rollout_windows`); each must commit
  within the wave's ``device_timeout_s`` of its ``sent_at`` or it is
  ``timed-out``; the wave fails as soon as fewer than
  ``ceil(success_threshold * size)`` devices can still commit;
* once every device of the wave has committed, failed or timed out (and
  enough committed), the wave is watched for ``health_window_s`` after its
  last commit, then the quality gate decides: pass moves on (or waits for
  approval), fail aborts and rolls back, undecided (not enough telemetry)
  waits, up to ``gate_timeout_s`` when that is set;
* pinned devices are skipped (reported once, at start); empty waves are skipped;
* device reports are idempotent and converge at any time, also after the
  wave moved on or the rollout ended: a late device that commits becomes
  ``committed``; after a rollback a device becomes ``rolled-back`` once it
  reports a resting state on another bundle;
* pause holds every decision and every new wave but not the clock: devices
  already sent keep their deadlines, checked on the first tick after resume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fleet_server import rollout_shadow
from fleet_server.quality_gate import GateOutcome, GateVerdict, WaveTelemetry, evaluate_gate
from fleet_server.rollout_progress import (
    Action,
    DeviceProgress,
    EventKind,
    Notify,
    Rollback,
    RolloutEvent,
    Step,
    clip,
    with_changes,
)
from fleet_server.rollout_spec import wave_label
from fleet_server.rollout_windows import send_due, send_wave
from fleet_server.statuses import (
    UNANSWERED_DEVICE_STATUSES,
    WORKING_PHASES,
    DeviceStatus,
    RolloutStatus,
    WaveStatus,
)

if TYPE_CHECKING:
    from fleet_server.rollout_plan import RolloutState

__all__ = [
    "decide",
    "device_event",
    "fail_wave",
    "new_status",
    "open_from",
    "rollback_check",
    "settle",
    "stop",
    "undecided",
]


def new_status(
    rollout: RolloutState,
    p: DeviceProgress,
    phase: str,
    active: str | None,
    reason: str,
    target: str | None,
) -> tuple[DeviceStatus, str] | None:
    """The device's status and reason after a report, or None when they stay."""
    if p.status is DeviceStatus.PENDING:
        return None
    off = rollout._off_bundle(phase, active)
    about_us = target == rollout.spec.bundle or (target is None and p.phase in WORKING_PHASES)
    wanted: tuple[DeviceStatus, str] | None = None
    if rollout._on_bundle(phase, active):
        wanted = (DeviceStatus.COMMITTED, "")
    elif p.rollback_sent:
        if off and p.status is not DeviceStatus.FAILED:
            wanted = (DeviceStatus.ROLLED_BACK, p.reason)
    elif off and phase == "rolled-back" and about_us and p.status in UNANSWERED_DEVICE_STATUSES:
        wanted = (DeviceStatus.FAILED, clip(reason or "rolled back (no reason given)"))
    elif (
        phase in WORKING_PHASES
        and target in (None, rollout.spec.bundle)
        and p.status is DeviceStatus.SENT
    ):
        wanted = (DeviceStatus.IN_PROGRESS, "")
    return None if wanted is None or wanted[0] is p.status else wanted


def device_event(
    rollout: RolloutState,
    device_id: str,
    before: DeviceProgress,
    status: DeviceStatus,
    why: str,
    now: float,
) -> list[RolloutEvent]:
    late = " (late)" if before.status is DeviceStatus.TIMED_OUT else ""
    messages = {
        DeviceStatus.COMMITTED: (EventKind.DEVICE_COMMITTED, f"committed {rollout._sha}{late}"),
        DeviceStatus.FAILED: (EventKind.DEVICE_FAILED, f"rolled {rollout._sha} back: {why}"),
        DeviceStatus.ROLLED_BACK: (EventKind.DEVICE_ROLLED_BACK, f"is off {rollout._sha} again"),
    }
    if status not in messages:
        return []
    kind, text = messages[status]
    return [rollout._event(kind, now, f"{device_id} {text}", wave=before.wave, ids=[device_id])]


def open_from(
    rollout: RolloutState, index: int, now: float, actions: list[Action], events: list[RolloutEvent]
) -> Step:
    """Send the first wave with devices at or after ``index``; complete when there is none."""
    waves = list(rollout.waves)
    while index < len(waves) and not waves[index].devices:
        waves[index] = with_changes(waves[index], status=WaveStatus.SKIPPED, finished_at=now)
        message = f"{wave_label(index)} has no devices"
        events.append(rollout._event(EventKind.WAVE_SKIPPED, now, message, wave=index))
        index += 1
    if index == len(waves):
        committed = rollout.device_counts()[DeviceStatus.COMMITTED]
        message = (
            f"rollout of {rollout._sha} completed: {committed} of {len(rollout.devices)} "
            f"devices committed, {len(rollout.skipped)} skipped"
        )
        events.append(rollout._event(EventKind.COMPLETED, now, message))
        actions.append(Notify(message))
        state = rollout._changed(
            now,
            waves=tuple(waves),
            status=RolloutStatus.COMPLETED,
            finished_at=now,
            current_wave=max(len(waves) - 1, 0),
        )
        return Step(state, actions, events)
    if rollout.spec.waves[index].shadow is not None:
        return rollout_shadow.open_shadow(
            rollout._changed(now, waves=tuple(waves)), index, now, actions, events
        )
    devices = dict(rollout.devices)
    waves[index] = with_changes(waves[index], status=WaveStatus.RUNNING, started_at=now)
    send_wave(rollout, index, now, devices, actions=actions, events=events, starting=True)
    state = rollout._changed(now, waves=tuple(waves), devices=devices, current_wave=index)
    return Step(state, actions, events)


def settle(
    rollout: RolloutState,
    index: int,
    now: float,
    actions: list[Action],
    events: list[RolloutEvent],
    telemetry: Mapping[int, WaveTelemetry],
) -> Step:
    """A running wave: fail it once too few can still commit; send the devices whose
    maintenance window opened; watch it once all were sent and are resolved."""
    wave, spec = rollout.waves[index], rollout.spec.waves[index]
    size = len(wave.devices)
    lost = sum(
        rollout.devices[d].status in (DeviceStatus.FAILED, DeviceStatus.TIMED_OUT)
        for d in wave.devices
    )
    need = math.ceil(round(spec.success_threshold * size, 9))
    label = wave_label(index)
    if size - lost < need:
        reason = (
            f"{label}: {lost} of {size} devices failed or timed out; at most "
            f"{size - lost} can commit, {need} needed (threshold {spec.success_threshold:.0%})"
        )
        return fail_wave(rollout, index, reason, now, actions, events)
    rollout = send_due(rollout, index, now, actions, events)
    statuses = [rollout.devices[d] for d in wave.devices]
    committed = [p for p in statuses if p.status is DeviceStatus.COMMITTED]
    if len(committed) + lost < size:
        return Step(rollout, actions, events)
    watch_until = max(p.finished_at or now for p in committed) + spec.health_window_s
    waves = list(rollout.waves)
    waves[index] = with_changes(
        wave, status=WaveStatus.WATCHING, settled_at=now, watch_until=watch_until
    )
    message = (
        f"{label}: {len(committed)} of {size} devices committed ({need} needed); "
        f"watching {spec.health_window_s:g} s after the last commit"
    )
    events.append(rollout._event(EventKind.WAVE_SETTLED, now, message, wave=index))
    state = rollout._changed(now, waves=tuple(waves))
    return decide(state, index, now, actions, events, telemetry)


def decide(
    rollout: RolloutState,
    index: int,
    now: float,
    actions: list[Action],
    events: list[RolloutEvent],
    telemetry: Mapping[int, WaveTelemetry],
) -> Step:
    """A watched wave after its health window: the quality gate passes, fails or waits."""
    wave, spec = rollout.waves[index], rollout.spec.waves[index]
    if wave.watch_until is None or now < wave.watch_until:
        return Step(rollout, actions, events)
    verdict = evaluate_gate(
        telemetry.get(index), spec.gate, rollout.spec.baseline, label=wave_label(index)
    )
    if verdict.outcome is GateOutcome.FAILED:
        return fail_wave(rollout, index, verdict.reason, now, actions, events, verdict=verdict)
    if verdict.outcome is GateOutcome.UNDECIDED:
        return undecided(rollout, index, verdict, now, actions, events)
    waves = list(rollout.waves)
    waves[index] = with_changes(wave, status=WaveStatus.PASSED, finished_at=now, verdict=verdict)
    events.append(
        rollout._event(EventKind.WAVE_PASSED, now, verdict.reason, wave=index, verdict=verdict)
    )
    state = rollout._changed(now, waves=tuple(waves))
    rest = [i for i in range(index + 1, len(waves)) if waves[i].devices]
    if not (spec.approval_before_next and rest):
        return open_from(state, index + 1, now, actions, events)
    message = (
        f"{wave_label(index)} passed; {wave_label(rest[0])} "
        f"({len(waves[rest[0]].devices)} devices) waits for approval"
    )
    events.append(rollout._event(EventKind.AWAITING_APPROVAL, now, message, wave=index))
    actions.append(Notify(f"rollout of {rollout._sha}: {message}"))
    return Step(state._changed(now, status=RolloutStatus.AWAITING_APPROVAL), actions, events)


def undecided(
    rollout: RolloutState,
    index: int,
    verdict: GateVerdict,
    now: float,
    actions: list[Action],
    events: list[RolloutEvent],
) -> Step:
    """Not enough telemetry after the health window: wait (saying so once), or fail at the gate timeout."""
    wave, timeout = rollout.waves[index], rollout.spec.waves[index].gate_timeout_s
    assert wave.watch_until is not None  # only watched waves are decided
    if timeout is not None and now >= wave.watch_until + timeout:
        reason = f"no quality decision {timeout:g} s after the health window: {verdict.reason}"
        return fail_wave(rollout, index, reason, now, actions, events, verdict=verdict)
    if wave.undecided_since is not None:
        return Step(rollout, actions, events)
    waves = list(rollout.waves)
    waves[index] = with_changes(wave, undecided_since=now, verdict=verdict)
    events.append(
        rollout._event(EventKind.GATE_UNDECIDED, now, verdict.reason, wave=index, verdict=verdict)
    )
    actions.append(Notify(f"rollout of {rollout._sha} waits: {verdict.reason}"))
    return Step(rollout._changed(now, waves=tuple(waves)), actions, events)


def fail_wave(
    rollout: RolloutState,
    index: int,
    reason: str,
    now: float,
    actions: list[Action],
    events: list[RolloutEvent],
    *,
    verdict: GateVerdict | None = None,
) -> Step:
    """The wave failed: record it, then abort and roll back."""
    waves = list(rollout.waves)
    waves[index] = with_changes(
        waves[index],
        status=WaveStatus.FAILED,
        finished_at=now,
        verdict=verdict,
        reason=clip(reason),
    )
    events.append(rollout._event(EventKind.WAVE_FAILED, now, reason, wave=index, verdict=verdict))
    state = rollout._changed(now, waves=tuple(waves))
    return stop(state, reason, now, actions, events, rollback=True)


def stop(
    rollout: RolloutState,
    reason: str,
    now: float,
    actions: list[Action],
    events: list[RolloutEvent],
    *,
    rollback: bool,
) -> Step:
    """End the rollout: ``rolled-back`` (previous bundle re-assigned) or ``aborted``; any
    shadow run it asked for ends too."""
    actions.extend(rollout_shadow.shadow_stop(rollout))
    affected = tuple(
        sorted(d for d, p in rollout.devices.items() if p.status is not DeviceStatus.PENDING)
    )
    common = {"finished_at": now, "reason": clip(reason), "paused_from": None}
    if not (rollback and affected):
        message = f"rollout of {rollout._sha} aborted: {reason}"
        events.append(rollout._event(EventKind.ABORTED, now, message))
        actions.append(Notify(message))
        return Step(rollout._changed(now, status=RolloutStatus.ABORTED, **common), actions, events)
    devices = dict(rollout.devices)
    back = [
        d
        for d in affected
        if rollout._off_bundle(devices[d].phase, devices[d].active)
        and devices[d].status is not DeviceStatus.FAILED
    ]
    for d in affected:
        devices[d] = with_changes(devices[d], rollback_sent=True)
        if d in back:
            devices[d] = with_changes(devices[d], status=DeviceStatus.ROLLED_BACK, finished_at=now)
    to = rollout.spec.previous_bundle
    message = (
        f"rollout of {rollout._sha} aborted: {reason}; rolling {len(affected)} devices back "
        f"to {to[:12] if to is not None else 'no assignment'}"
    )
    actions.extend([Rollback(device_ids=affected, to_sha=to), Notify(message)])
    events.append(rollout._event(EventKind.ABORTED, now, message, ids=affected))
    if back:
        text = f"{len(back)} devices were already off {rollout._sha}"
        events.append(rollout._event(EventKind.DEVICE_ROLLED_BACK, now, text, ids=back))
    state = rollout._changed(now, status=RolloutStatus.ROLLED_BACK, devices=devices, **common)
    return rollback_check(state, now, actions, events)


def rollback_check(
    rollout: RolloutState, now: float, actions: list[Action], events: list[RolloutEvent]
) -> Step:
    """After a rollback: note (once) the moment every rolled-back device is off the new bundle."""
    targets = [p for p in rollout.devices.values() if p.rollback_sent]
    if rollout.rollback_completed_at is not None or not all(
        rollout._off_bundle(p.phase, p.active) for p in targets
    ):
        return Step(rollout, actions, events)
    message = f"rollback of {rollout._sha} complete: {len(targets)} devices are off it"
    events.append(rollout._event(EventKind.ROLLBACK_COMPLETE, now, message))
    actions.append(Notify(message))
    return Step(rollout._changed(now, rollback_completed_at=now), actions, events)
