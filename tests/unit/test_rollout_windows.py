"""The rollout planner with maintenance windows: a controllable clock is the ``now`` each input takes.

A wave's devices outside their windows stay pending (one event says who
waits and when the next window opens), each tick sends those whose window
opened (one Assign per tick), timeouts count from each device's own
``sent_at``, and a wave settles only once every device was sent and answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from fleet_server.quality_gate import QualityFigures, WaveTelemetry
from fleet_server.rollout_plan import (
    Assign,
    DeviceStatus,
    EventKind,
    Rollback,
    RolloutState,
    RolloutStatus,
    Step,
    WaveStatus,
    recover,
)
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec
from fleet_server.rollout_windows import window_wait
from fleet_server.windows import WindowsNeverOpenError

NEW = "b" * 64
OLD = "a" * 64
SHORT = NEW[:12]
TIMEOUT = 6 * 3600.0
HEALTH = 60.0
HEALTHY = QualityFigures(
    predictions=1000, errors=0, latency_p95_ms=20.0, mean_confidence=0.8, class_counts={"a": 600}
)


def utc(d: int, h: int, mi: int = 0, s: int = 0) -> float:
    """December 2026, UTC: the 5th is a Saturday, the 6th a Sunday."""
    return datetime(2026, 12, d, h, mi, s, tzinfo=timezone.utc).timestamp()


SAT_NOON = utc(5, 12)
LINE3 = {"line-3": ("Sat 14:00-16:00 UTC",)}


def wave(**fields: Any) -> WaveSpec:
    fields.setdefault("device_timeout_s", TIMEOUT)
    fields.setdefault("health_window_s", HEALTH)
    return WaveSpec(**fields)


def make(
    tags: Mapping[str, tuple[str, ...]],
    windows: Mapping[str, tuple[str, ...]] | None = None,
    waves: tuple[WaveSpec, ...] = (wave(percent=100),),
    active: dict[str, str] | None = None,
    **fields: Any,
) -> RolloutState:
    devices = tuple(
        TargetDevice(
            device_id=d,
            tags=t,
            phase="idle" if (active or {}).get(d) else None,
            active=(active or {}).get(d),
        )
        for d, t in tags.items()
    )
    spec = RolloutSpec(
        bundle=NEW,
        previous_bundle=OLD,
        devices=devices,
        waves=waves,
        windows=dict(windows if windows is not None else LINE3),
        **fields,
    )
    return RolloutState.create(spec, now=SAT_NOON - 60)


THREE = {"cam-1": ("line-1",), "cam-2": ("line-3",), "cam-3": ("line-3", "north")}


def commit(state: RolloutState, devices: tuple[str, ...] | list[str], now: float) -> RolloutState:
    for d in devices:
        state = state.device_report(d, "downloading", OLD, "", now, target_sha=NEW).state
        state = state.device_report(d, "committed", NEW, "probation passed", now).state
    return state


def assigned(step: Step) -> list[tuple[str, ...]]:
    return [a.device_ids for a in step.actions if isinstance(a, Assign)]


def statuses(state: RolloutState) -> dict[str, DeviceStatus]:
    return {d: p.status for d, p in state.devices.items()}


def test_devices_outside_their_window_wait_and_go_as_it_opens() -> None:
    step = make(THREE).start(SAT_NOON)
    assert assigned(step) == [("cam-1",)]
    assert [e.kind for e in step.events] == [
        EventKind.STARTED,
        EventKind.WAVE_STARTED,
        EventKind.WINDOW_WAITING,
    ]
    assert step.events[1].message == f"wave 1: sent {SHORT} to 1 devices"
    waiting = step.events[2]
    assert waiting.message == (
        "wave 1: 2 devices wait for their maintenance window (next opens Sat 14:00 UTC)"
    )
    assert waiting.device_ids == ("cam-2", "cam-3") and waiting.wave == 0
    state = step.state
    assert statuses(state) == {
        "cam-1": DeviceStatus.SENT,
        "cam-2": DeviceStatus.PENDING,
        "cam-3": DeviceStatus.PENDING,
    }
    state = commit(state, ["cam-1"], utc(5, 12, 5))
    before = state.tick(utc(5, 13, 59, 59))  # the window is still closed: nothing moves
    assert before.actions == [] and before.events == [] and before.state == state
    assert state.waves[0].status is WaveStatus.RUNNING  # one committed, two not even sent
    opened = state.tick(utc(5, 14))
    assert assigned(opened) == [("cam-2", "cam-3")]
    (event,) = opened.events
    assert event.kind is EventKind.WINDOW_OPENED
    assert event.message == f"wave 1: sent {SHORT} to 2 devices as their maintenance window opened"
    state = opened.state
    assert {state.devices[d].sent_at for d in ("cam-2", "cam-3")} == {utc(5, 14)}
    assert state.devices["cam-1"].sent_at == SAT_NOON
    again = state.tick(utc(5, 14, 0, 1))
    assert assigned(again) == [] and again.events == []  # each device is sent once
    state = commit(state, ["cam-2", "cam-3"], utc(5, 14, 5))
    settled = state.tick(utc(5, 14, 5))
    assert settled.state.waves[0].status is WaveStatus.WATCHING


def test_waiting_devices_never_time_out_and_sent_ones_count_from_their_own_sent_at() -> None:
    lenient = (wave(percent=100, success_threshold=0.5, device_timeout_s=600.0),)
    state = make(THREE, waves=lenient).start(SAT_NOON).state
    state = state.tick(SAT_NOON + 600).state  # cam-1 never answered: it times out
    assert statuses(state) == {
        "cam-1": DeviceStatus.TIMED_OUT,
        "cam-2": DeviceStatus.PENDING,  # waiting is not being late
        "cam-3": DeviceStatus.PENDING,
    }
    assert state.status is RolloutStatus.RUNNING  # 2 of 3 may still commit, 2 needed
    state = state.tick(utc(5, 14)).state  # cam-2, cam-3 sent now
    just_before = state.tick(utc(5, 14) + 599)
    assert statuses(just_before.state)["cam-2"] is DeviceStatus.SENT
    deadline = state.tick(utc(5, 14) + 600)
    assert statuses(deadline.state)["cam-2"] is DeviceStatus.TIMED_OUT
    assert deadline.state.waves[0].status is WaveStatus.FAILED  # 3 of 3 lost now


def test_a_wave_with_nobody_inside_a_window_starts_and_waits() -> None:
    step = make({"cam-2": ("line-3",)}).start(SAT_NOON)
    assert assigned(step) == []
    assert step.events[1].message == "wave 1: started" and step.events[1].device_ids == ()
    assert step.state.waves[0].status is WaveStatus.RUNNING
    assert step.state.gate_due(utc(5, 13)) is None


def test_ignore_windows_sends_everything_at_once_and_says_so() -> None:
    step = make(THREE, ignore_windows=True).start(SAT_NOON)
    assert assigned(step) == [("cam-1", "cam-2", "cam-3")]
    assert step.events[1].message == (
        f"wave 1: sent {SHORT} to 3 devices (their maintenance windows ignored)"
    )
    assert EventKind.WINDOW_WAITING not in [e.kind for e in step.events]
    assert window_wait(step.state, SAT_NOON) is None


def test_without_windows_a_wave_is_sent_whole_as_before() -> None:
    step = make(THREE, windows={}).start(SAT_NOON)
    assert assigned(step) == [("cam-1", "cam-2", "cam-3")]
    assert step.events[1].message == f"wave 1: sent {SHORT} to 3 devices"
    assert make(THREE, windows={}).spec.schedules() == {}


def test_a_device_already_on_the_bundle_commits_at_once_even_outside_its_window() -> None:
    step = make(THREE, active={"cam-2": NEW}).start(SAT_NOON)
    assert assigned(step) == [("cam-1", "cam-2")]
    assert statuses(step.state)["cam-2"] is DeviceStatus.COMMITTED
    assert statuses(step.state)["cam-3"] is DeviceStatus.PENDING
    assert [e.kind for e in step.events][-1] is EventKind.DEVICE_COMMITTED


def test_every_windowed_tag_of_a_device_must_be_open() -> None:
    windows = {"line-3": ("Sat 14:00-16:00 UTC",), "north": ("Sat 15:00-18:00 UTC",)}
    state = commit(make(THREE, windows=windows).start(SAT_NOON).state, ["cam-1"], SAT_NOON)
    at_two = state.tick(utc(5, 14))
    assert assigned(at_two) == [("cam-2",)]  # cam-3 is also "north": closed until 15:00
    assert "1 devices wait for their maintenance window (next opens Sat 15:00 UTC)" in (
        at_two.events[0].message
    )
    at_three = at_two.state.tick(utc(5, 15))
    assert assigned(at_three) == [("cam-3",)]


def test_pause_holds_the_sending_and_resume_lets_it_go() -> None:
    state = commit(make(THREE).start(SAT_NOON).state, ["cam-1"], SAT_NOON)
    state = state.pause(utc(5, 13)).state
    held = state.tick(utc(5, 14, 30))
    assert held.actions == [] and statuses(held.state)["cam-2"] is DeviceStatus.PENDING
    state = state.resume(utc(5, 14, 40)).state
    assert assigned(state.tick(utc(5, 14, 40))) == [("cam-2", "cam-3")]
    # resumed after the window closed: they wait for the next one
    late = state.pause(utc(5, 13)).state.resume(utc(5, 16)).state
    step = late.tick(utc(5, 16))
    assert step.actions == []
    wait = window_wait(step.state, utc(5, 16))
    assert wait is not None and wait.next_open == utc(12, 14)  # next Saturday


def test_abort_and_recover_leave_waiting_devices_alone() -> None:
    state = make(THREE).start(SAT_NOON).state
    aborted = state.abort("bad idea", utc(5, 13))
    (rollback,) = [a for a in aborted.actions if isinstance(a, Rollback)]
    assert rollback.device_ids == ("cam-1",)
    assert statuses(aborted.state)["cam-2"] is DeviceStatus.PENDING
    assert aborted.state.tick(utc(5, 14)).actions == []
    assert window_wait(aborted.state, utc(5, 13)) is None  # no running wave: nobody waits
    restarted = recover(state, utc(5, 13))
    assert [a.device_ids for a in restarted.actions if isinstance(a, Assign)] == [("cam-1",)]


def test_later_waves_wait_for_their_windows_too() -> None:
    waves = (wave(devices=("cam-1",)), wave(percent=100))
    state = make(THREE, waves=waves).start(SAT_NOON).state
    state = commit(state, ["cam-1"], utc(5, 12, 1))
    figures = {0: WaveTelemetry(new=HEALTHY, previous=HEALTHY)}
    step = state.tick(utc(5, 12, 1) + HEALTH, figures)
    kinds = [e.kind for e in step.events]
    assert kinds[-3:] == [EventKind.WAVE_PASSED, EventKind.WAVE_STARTED, EventKind.WINDOW_WAITING]
    assert assigned(step) == []
    assert step.state.current_wave == 1 and step.state.waves[1].status is WaveStatus.RUNNING
    assert assigned(step.state.tick(utc(5, 14))) == [("cam-2", "cam-3")]


def test_window_wait_says_who_waits_and_when_in_the_windows_zone() -> None:
    paris = {"line-3": ("Sun 02:00-04:00 Europe/Paris",)}
    tags = {f"cam-{i}": ("line-3",) for i in range(3)}
    state = make(tags, windows=paris).start(SAT_NOON).state
    wait = window_wait(state, SAT_NOON)
    assert wait is not None and wait.devices == ("cam-0", "cam-1", "cam-2")
    assert wait.next_open == utc(6, 1)  # 02:00 in Paris is 01:00 UTC in December
    assert wait.describe(SAT_NOON) == (
        "3 devices wait for their maintenance window (next opens Sun 02:00 Europe/Paris)"
    )
    sent = state.tick(utc(6, 1)).state
    assert window_wait(sent, utc(6, 1)) is None


def test_windows_are_kept_with_the_state_across_a_restart() -> None:
    state = commit(make(THREE).start(SAT_NOON).state, ["cam-1"], SAT_NOON)
    loaded = RolloutState.model_validate_json(state.model_dump_json())
    assert loaded == state and loaded.spec.windows == LINE3
    assert assigned(loaded.tick(utc(5, 14))) == [("cam-2", "cam-3")]


def test_spec_windows_are_checked_and_kept_canonical() -> None:
    spec = make(THREE, windows={"line-3": ("sat 14:00 - 16:00 utc",)}).spec
    assert spec.windows == {"line-3": ("Sat 14:00-16:00 UTC",)}
    with pytest.raises(ValidationError, match="has no time zone"):
        make(THREE, windows={"line-3": ("Sat 14:00-16:00",)})


def test_windows_that_never_open_together_are_refused_at_creation() -> None:
    never = {"line-3": ("Mon 01:00-02:00 UTC",), "north": ("Tue 01:00-02:00 UTC",)}
    spec = make(THREE, windows=never).spec
    with pytest.raises(WindowsNeverOpenError) as caught:
        spec.check_windows(SAT_NOON)
    message = str(caught.value)
    assert "1 devices (cam-3)" in message
    assert "line-3: Mon 01:00-02:00 UTC; north: Tue 01:00-02:00 UTC" in message
    make(THREE).spec.check_windows(SAT_NOON)  # these do open
    make(THREE, windows=never, ignore_windows=True).spec.check_windows(SAT_NOON)


def test_a_wave_that_fails_sends_nobody_new() -> None:
    waves = (wave(percent=100, device_timeout_s=7200.0),)
    state = make(THREE, waves=waves).start(SAT_NOON).state  # cam-1 never answers
    step = state.tick(utc(5, 14))  # cam-1 timed out (threshold 100%) as the window opens
    assert step.state.status is RolloutStatus.ROLLED_BACK
    assert assigned(step) == []
    assert [a.device_ids for a in step.actions if isinstance(a, Rollback)] == [("cam-1",)]
    assert statuses(step.state)["cam-2"] is DeviceStatus.PENDING
