"""Sending a wave's devices, as their maintenance windows allow: a rule of the rollout planner.

When a wave starts, its devices are sent the new bundle in one
:class:`~fleet_server.rollout_progress.Assign`, except those whose
maintenance windows (:class:`~fleet_server.windows.Schedule`, snapshotted
into the rollout's spec) are closed: they stay ``pending``, and one event
says how many wait and when the next window opens. Each tick of a running
wave then sends (one ``Assign`` per tick) the devices whose windows have
opened; each device's timeout counts from its own ``sent_at``, and the wave
settles only once every device was sent and answered. A device that already
runs the new bundle counts as committed when its wave starts, window or not
(nothing changes on it). A rollout whose spec has no windows, or that
ignores them, sends every wave whole, as it always did. Pure: no I/O, no
clock; the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet_server.rollout_progress import (
    Action,
    Assign,
    DeviceProgress,
    EventKind,
    RolloutEvent,
    with_changes,
)
from fleet_server.rollout_spec import wave_label
from fleet_server.statuses import DeviceStatus, WaveStatus
from fleet_server.windows import Schedule, describe_time

if TYPE_CHECKING:
    from fleet_server.rollout_plan import RolloutState

__all__ = ["WindowWait", "send_due", "send_wave", "window_wait"]


@dataclass(frozen=True)
class WindowWait:
    """The devices of started waves that wait for their maintenance windows, and when one opens."""

    devices: tuple[str, ...]
    next_open: float | None
    """The first time one of them may be sent (None: their windows never open in the horizon)."""
    zone_name: str
    """The zone of the windows that open first: the one :meth:`describe` shows the time in."""

    def describe(self, now: float) -> str:
        """``3 devices wait for their maintenance window (next opens Sun 02:00 Europe/Paris)``."""
        opens = (
            "none opens within the search horizon"
            if self.next_open is None
            else f"next opens {describe_time(self.next_open, self.zone_name, now)}"
        )
        return f"{len(self.devices)} devices wait for their maintenance window ({opens})"


def window_wait(state: RolloutState, now: float) -> WindowWait | None:
    """Who waits for a maintenance window in the running waves (their pending devices), and when
    the first may go; None when nobody waits."""
    running = {i for i, wave in enumerate(state.waves) if wave.status is WaveStatus.RUNNING}
    pending = [
        d
        for d, p in state.devices.items()
        if p.wave in running and p.status is DeviceStatus.PENDING
    ]
    return _wait(pending, state.spec.schedules() if pending else {}, now)


def _wait(ids: Iterable[str], schedules: dict[str, Schedule], now: float) -> WindowWait | None:
    waiting = tuple(sorted(d for d in ids if d in schedules))
    if not waiting:
        return None
    known = []
    for schedule in dict.fromkeys(schedules[d] for d in waiting):  # each schedule once
        at = schedule.next_open(now)
        if at is not None:
            known.append((at, schedule.zone_name))
    if not known:
        return WindowWait(waiting, None, schedules[waiting[0]].zone_name)
    first, zone = min(known)
    return WindowWait(waiting, first, zone)


def send_wave(
    state: RolloutState,
    index: int,
    now: float,
    devices: dict[str, DeviceProgress],
    *,
    actions: list[Action],
    events: list[RolloutEvent],
    starting: bool,
) -> bool:
    """Send wave ``index``'s pending devices that may change models at ``now``.

    Updates ``devices`` (``sent`` or, already on the bundle, ``committed``),
    and appends the :class:`Assign` and the events; ``starting`` is the
    wave's start (which always says so). Whether anything was sent.
    """
    pending = [d for d in state.waves[index].devices if devices[d].status is DeviceStatus.PENDING]
    schedules = state.spec.schedules() if pending else {}
    already = {d for d in pending if state._on_bundle(devices[d].phase, devices[d].active)}
    open_now: dict[Schedule, bool] = {}  # devices share schedules: each is evaluated once
    for schedule in {schedules[d] for d in pending if d in schedules and d not in already}:
        open_now[schedule] = schedule.is_open(now)
    closed = {
        d for d in pending if d in schedules and d not in already and not open_now[schedules[d]]
    }
    due = tuple(d for d in pending if d not in closed)
    for d in due:
        if d in already:
            devices[d] = with_changes(
                devices[d], status=DeviceStatus.COMMITTED, sent_at=now, finished_at=now
            )
        else:
            devices[d] = with_changes(devices[d], status=DeviceStatus.SENT, sent_at=now)
    if due:
        actions.append(Assign(device_ids=due, bundle_sha=state.spec.bundle))
    label, sha = wave_label(index), state._sha
    waiting = _wait(closed, schedules, now)
    if starting:
        sent = f"sent {sha} to {len(due)} devices" if due else "started"
        if state.spec.ignore_windows and state.spec.windows:
            sent += " (their maintenance windows ignored)"
        events.append(
            state._event(EventKind.WAVE_STARTED, now, f"{label}: {sent}", wave=index, ids=due)
        )
        if waiting is not None:
            message = f"{label}: {waiting.describe(now)}"
            events.append(
                state._event(
                    EventKind.WINDOW_WAITING, now, message, wave=index, ids=waiting.devices
                )
            )
    elif due:
        message = f"{label}: sent {sha} to {len(due)} devices as their maintenance window opened"
        if waiting is not None:
            message += f"; {waiting.describe(now)}"
        events.append(state._event(EventKind.WINDOW_OPENED, now, message, wave=index, ids=due))
    if already:
        message = f"{label}: {len(already)} devices already run {sha}"
        ids = tuple(d for d in due if d in already)
        events.append(state._event(EventKind.DEVICE_COMMITTED, now, message, wave=index, ids=ids))
    return bool(due)


def send_due(
    state: RolloutState, index: int, now: float, actions: list[Action], events: list[RolloutEvent]
) -> RolloutState:
    """A tick of running wave ``index``: send the devices whose windows opened (the state as is
    when none did, or when the rollout has no windows)."""
    spec = state.spec
    if not spec.windows or spec.ignore_windows or not _has_pending(state, index):
        return state
    devices = dict(state.devices)
    if not send_wave(state, index, now, devices, actions=actions, events=events, starting=False):
        return state
    return state._changed(now, devices=devices)


def _has_pending(state: RolloutState, index: int) -> bool:
    return any(state.devices[d].status is DeviceStatus.PENDING for d in state.waves[index].devices)
