"""The rollout planner with plain values: wave planning, every rule of the state machine, restarts."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from fleet_server.errors import IllegalRolloutTransitionError, RolloutError, RolloutPlanError
from fleet_server.quality_gate import GateOutcome, GateThresholds, QualityFigures, WaveTelemetry
from fleet_server.rollout_plan import (
    Assign,
    DeviceStatus,
    EventKind,
    Notify,
    Rollback,
    RolloutState,
    RolloutStatus,
    Step,
    WaveStatus,
    recover,
)
from fleet_server.rollout_spec import (
    RolloutSpec,
    TargetDevice,
    WaveSpec,
    desired_bundle,
    plan_waves,
    wave_label,
)

NEW = "b" * 64
OLD = "a" * 64
OTHER = "c" * 64
T0 = 1_800_000_000.0
WINDOW = 60.0
TIMEOUT = 600.0

HEALTHY = QualityFigures(
    predictions=1000, errors=0, latency_p95_ms=20.0, mean_confidence=0.8, class_counts={"a": 600}
)
SLOW = HEALTHY.model_copy(update={"latency_p95_ms": 41.2})


def ids(n: int) -> list[str]:
    return [f"cam-{i:02d}" for i in range(n)]


def wave(**fields: Any) -> WaveSpec:
    fields.setdefault("health_window_s", WINDOW)
    fields.setdefault("device_timeout_s", TIMEOUT)
    return WaveSpec(**fields)


THREE_WAVES = (wave(count=1), wave(percent=30), wave(percent=100))


def make(
    n: int = 10,
    waves: tuple[WaveSpec, ...] = THREE_WAVES,
    pinned: dict[str, str] | None = None,
    **fields: Any,
) -> RolloutState:
    pins = pinned or {}
    devices = tuple(
        TargetDevice(device_id=d, tags=("line-a",), pinned_bundle=pins.get(d)) for d in ids(n)
    )
    fields.setdefault("previous_bundle", OLD)
    spec = RolloutSpec(bundle=NEW, devices=devices, waves=waves, seed=7, **fields)
    return RolloutState.create(spec, now=T0)


def telemetry(state: RolloutState, new: QualityFigures = HEALTHY) -> dict[int, WaveTelemetry]:
    return {i: WaveTelemetry(new=new, previous=HEALTHY) for i in range(len(state.waves))}


def commit(state: RolloutState, devices: tuple[str, ...] | list[str], now: float) -> RolloutState:
    """Each device downloads, then commits the new bundle."""
    for d in devices:
        state = state.device_report(d, "downloading", OLD, "", now, target_sha=NEW).state
        state = state.device_report(d, "committed", NEW, "probation passed", now).state
    return state


def kinds(step: Step) -> list[EventKind]:
    return [e.kind for e in step.events]


def started(**kwargs: Any) -> tuple[RolloutState, Step]:
    state = make(**kwargs)
    step = state.start(T0)
    return step.state, step


def pass_wave(state: RolloutState, now: float) -> Step:
    """Commit every device of the current wave at ``now`` and tick past its health window."""
    state = commit(state, state.waves[state.current_wave].devices, now)
    return state.tick(now + WINDOW, telemetry(state))


# --- wave planning ---------------------------------------------------------------------


def test_plan_is_deterministic_disjoint_complete_and_sorted() -> None:
    devices = ids(20)
    plan = plan_waves(devices, THREE_WAVES, seed=3)
    assert [len(w) for w in plan] == [1, 6, 13]
    assert sorted(d for w in plan for d in w) == devices
    assert all(list(w) == sorted(w) for w in plan)
    shuffled = devices[:]
    random.Random(1).shuffle(shuffled)
    assert plan_waves(shuffled, THREE_WAVES, seed=3) == plan
    others = {tuple(plan_waves(devices, THREE_WAVES, seed=s)[1]) for s in range(10)}
    assert len(others) > 1  # the seed changes the draw


def test_percentages_are_of_the_total_rounded_up_at_least_one() -> None:
    waves = (wave(percent=10), wave(percent=25), wave(percent=100))
    assert [len(w) for w in plan_waves(ids(10), waves, 0)] == [1, 3, 6]
    tiny = (wave(percent=1), wave(percent=100))
    assert [len(w) for w in plan_waves(ids(5), tiny, 0)] == [1, 4]
    exact = (wave(percent=7), wave(percent=100))
    assert [len(w) for w in plan_waves(ids(100), exact, 0)] == [7, 93]


def test_counts_are_capped_and_later_waves_may_be_empty() -> None:
    waves = (wave(count=8), wave(count=5), wave(percent=100))
    assert [len(w) for w in plan_waves(ids(10), waves, 0)] == [8, 2, 0]


def test_named_devices_are_placed_before_any_draw() -> None:
    waves = (wave(percent=50), wave(devices=("cam-03", "cam-03")), wave(percent=100))
    for seed in range(20):
        plan = plan_waves(ids(10), waves, seed)
        assert plan[1] == ("cam-03",)
        assert "cam-03" not in plan[0]
        assert len(plan[0]) == 5


def test_tag_waves_take_the_tagged_devices_not_already_named() -> None:
    tags = {"cam-01": ["dock"], "cam-02": ["dock", "line-a"], "cam-05": ["line-a"]}
    waves = (wave(devices=("cam-02",)), wave(tags=("dock",)), wave(percent=100))
    plan = plan_waves(ids(6), waves, 0, tags=tags)
    assert plan[0] == ("cam-02",)
    assert plan[1] == ("cam-01",)
    assert set(plan[2]) == {"cam-00", "cam-03", "cam-04", "cam-05"}


@pytest.mark.parametrize(
    ("devices", "waves", "message"),
    [
        (ids(3), (wave(devices=("cam-09",)), wave(percent=100)), "not a target"),
        (
            ids(3),
            (wave(devices=("cam-01",)), wave(devices=("cam-01",)), wave(percent=100)),
            "named in wave 1 and in wave 2",
        ),
        ([*ids(3), "cam-01"], (wave(percent=100),), "more than once: cam-01"),
        (ids(10), (wave(count=2), wave(percent=50)), "3 of 10 devices are in no wave"),
    ],
)
def test_impossible_plans_are_typed_errors(
    devices: list[str], waves: tuple[WaveSpec, ...], message: str
) -> None:
    with pytest.raises(RolloutPlanError, match=message):
        plan_waves(devices, waves, 0)


def test_skipped_named_devices_are_left_out_quietly() -> None:
    plan = plan_waves(ids(3), (wave(devices=("cam-09",)), wave(percent=100)), 0, skip={"cam-09"})
    assert plan == [(), ("cam-00", "cam-01", "cam-02")]


def test_wave_spec_needs_exactly_one_selector_and_sane_settings() -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        WaveSpec()
    with pytest.raises(ValidationError, match="got percent, count"):
        WaveSpec(percent=10, count=2)
    with pytest.raises(ValidationError):
        WaveSpec(percent=0)
    with pytest.raises(ValidationError):
        WaveSpec(count=1, success_threshold=1.5)
    with pytest.raises(ValidationError):
        WaveSpec(count=1, surprise=True)  # type: ignore[call-arg]


def test_rollout_spec_refuses_duplicates_and_a_self_rollback() -> None:
    device = TargetDevice(device_id="cam-00")
    with pytest.raises(ValidationError, match="listed twice"):
        RolloutSpec(bundle=NEW, devices=(device, device), waves=(wave(percent=100),))
    with pytest.raises(ValidationError, match="previous_bundle"):
        RolloutSpec(bundle=NEW, previous_bundle=NEW, devices=(device,), waves=(wave(percent=100),))
    with pytest.raises(ValidationError, match="sha256"):
        RolloutSpec(bundle="nope", devices=(device,), waves=(wave(percent=100),))
    with pytest.raises(ValidationError):
        RolloutSpec(bundle=NEW, devices=(device,), waves=())


def test_desired_bundle_pin_then_first_group() -> None:
    device = TargetDevice(device_id="cam-new", tags=("line-b", "line-a"))
    groups = {"line-a": OLD, "line-b": NEW}
    assert desired_bundle(device, groups, {}) == NEW
    assert desired_bundle(device, {"line-a": OLD}, None) == OLD
    assert desired_bundle(device, groups, {"cam-new": OTHER}) == OTHER
    pinned = device.model_copy(update={"pinned_bundle": OTHER})
    assert desired_bundle(pinned, groups, {}) == OTHER
    assert desired_bundle(pinned, groups, {"cam-new": OLD}) == OLD
    assert desired_bundle(TargetDevice(device_id="lonely"), groups, {}) is None


def test_wave_labels_count_from_one() -> None:
    assert wave_label(0) == "wave 1"


# --- the success path ------------------------------------------------------------------


def test_three_waves_succeed_in_order() -> None:
    state = make()
    assert state.status is RolloutStatus.PENDING
    step = state.start(T0)
    state = step.state
    assert state.status is RolloutStatus.RUNNING
    canary = state.waves[0].devices
    assert len(canary) == 1
    assert step.actions == [Assign(device_ids=canary, bundle_sha=NEW)]
    assert kinds(step) == [EventKind.STARTED, EventKind.WAVE_STARTED]
    assert state.devices[canary[0]].status is DeviceStatus.SENT
    assert state.devices[canary[0]].sent_at == T0

    state = commit(state, canary, T0 + 10)
    assert state.devices[canary[0]].status is DeviceStatus.COMMITTED
    step = state.tick(T0 + 11, telemetry(state))
    assert kinds(step) == [EventKind.WAVE_SETTLED]
    assert step.state.waves[0].status is WaveStatus.WATCHING
    assert step.state.waves[0].watch_until == T0 + 10 + WINDOW
    state = step.state
    assert state.tick(T0 + 10 + WINDOW - 0.001, telemetry(state)).events == []

    step = state.tick(T0 + 10 + WINDOW, telemetry(state))
    assert kinds(step) == [EventKind.WAVE_PASSED, EventKind.WAVE_STARTED]
    assert step.events[0].verdict is not None
    assert step.events[0].verdict.outcome is GateOutcome.PASSED
    second = step.state.waves[1].devices
    assert len(second) == 3
    assert step.actions == [Assign(device_ids=second, bundle_sha=NEW)]
    assert step.state.current_wave == 1

    step = pass_wave(step.state, T0 + 100)
    assert kinds(step) == [
        EventKind.WAVE_SETTLED,
        EventKind.WAVE_PASSED,
        EventKind.WAVE_STARTED,
    ]
    third = step.state.waves[2].devices
    assert len(third) == 6
    assert set(canary) | set(second) | set(third) == set(ids(10))

    step = pass_wave(step.state, T0 + 200)
    state = step.state
    assert state.status is RolloutStatus.COMPLETED
    assert state.finished
    assert state.finished_at == T0 + 200 + WINDOW
    assert kinds(step)[-1] is EventKind.COMPLETED
    assert step.actions == [
        Notify("rollout of bbbbbbbbbbbb completed: 10 of 10 devices committed, 0 skipped")
    ]
    assert state.device_counts()[DeviceStatus.COMMITTED] == 10
    assert [w.status for w in state.waves] == [WaveStatus.PASSED] * 3
    assert state.tick(T0 + 9999, telemetry(state)) == Step(state, [], [])


def test_state_survives_a_json_round_trip() -> None:
    state, _ = started()
    state = commit(state, state.waves[0].devices, T0 + 5)
    state = state.tick(T0 + 5 + WINDOW, telemetry(state)).state
    restored = RolloutState.model_validate_json(state.model_dump_json())
    assert restored == state


def test_empty_waves_are_skipped_and_a_rollout_with_no_device_completes() -> None:
    waves = (wave(count=5), wave(count=5), wave(percent=100))
    state, step = started(waves=waves)
    step = pass_wave(state, T0)
    step = pass_wave(step.state, T0 + 100)
    assert EventKind.WAVE_SKIPPED in kinds(step)
    assert step.state.status is RolloutStatus.COMPLETED
    assert step.state.waves[2].status is WaveStatus.SKIPPED

    pins = {d: OTHER for d in ids(3)}
    state, step = started(n=3, pinned=pins)
    assert state.status is RolloutStatus.COMPLETED
    assert [a for a in step.actions if isinstance(a, Assign)] == []


def test_health_window_counts_from_the_last_commit() -> None:
    state, _ = started(waves=(wave(count=3), wave(percent=100)))
    first, second, third = state.waves[0].devices
    state = commit(state, [first], T0 + 10)
    state = commit(state, [second, third], T0 + 50)
    state = state.tick(T0 + 51, telemetry(state)).state
    assert state.waves[0].watch_until == T0 + 50 + WINDOW
    assert state.tick(T0 + 109, telemetry(state)).events == []
    assert EventKind.WAVE_PASSED in kinds(state.tick(T0 + 110, telemetry(state)))


# --- failures: gate, timeouts, devices ---------------------------------------------------


def test_canary_failing_the_gate_aborts_and_rolls_back_every_affected_device() -> None:
    waves = (wave(count=2, success_threshold=0.5), wave(percent=100))
    state, _ = started(waves=waves)
    good, silent = state.waves[0].devices
    state = commit(state, [good], T0 + 10)
    state = state.device_report(silent, "downloading", OLD, "", T0 + 20, target_sha=NEW).state
    assert state.tick(T0 + TIMEOUT - 1, telemetry(state)).events == []
    # at the timeout the wave settles; its health window (from the commit) is over: the gate decides
    step = state.tick(T0 + TIMEOUT, {0: WaveTelemetry(new=SLOW, previous=HEALTHY)})
    state = step.state
    assert state.devices[silent].status is DeviceStatus.TIMED_OUT
    reason = "wave 1: latency p95 41.2 ms is 2.1x the previous 20 ms (limit 1.5x)"
    assert state.status is RolloutStatus.ROLLED_BACK
    assert state.reason == reason
    assert state.waves[0].status is WaveStatus.FAILED
    assert state.waves[0].verdict is not None
    assert state.waves[0].verdict.outcome is GateOutcome.FAILED
    assert state.waves[1].status is WaveStatus.PENDING
    rollback = [a for a in step.actions if isinstance(a, Rollback)]
    assert rollback == [Rollback(device_ids=(good, silent), to_sha=OLD)]
    notes = [a.message for a in step.actions if isinstance(a, Notify)]
    assert notes == [
        f"rollout of {NEW[:12]} aborted: {reason}; rolling 2 devices back to {OLD[:12]}"
    ]
    assert kinds(step) == [
        EventKind.DEVICE_TIMED_OUT,
        EventKind.WAVE_SETTLED,
        EventKind.WAVE_FAILED,
        EventKind.ABORTED,
    ]
    assert all(state.devices[d].rollback_sent for d in (good, silent))
    assert not any(a for a in step.actions if isinstance(a, Assign))
    # nothing moves any more
    assert state.tick(T0 + 99999, telemetry(state)) == Step(state, [], [])


def test_rollback_converges_and_completes_once() -> None:
    state, _ = started(waves=(wave(count=2), wave(percent=100)))
    first, second = state.waves[0].devices
    state = commit(state, [first, second], T0 + 10)
    state = state.abort("wrong model", T0 + 20).state
    assert state.status is RolloutStatus.ROLLED_BACK
    step = state.device_report(first, "downloading", NEW, "", T0 + 30, target_sha=OLD)
    assert step.events == []  # working on the previous bundle: still committed here
    step = step.state.device_report(first, "committed", OLD, "", T0 + 40, target_sha=OLD)
    assert kinds(step) == [EventKind.DEVICE_ROLLED_BACK]
    assert step.state.devices[first].status is DeviceStatus.ROLLED_BACK
    assert step.state.rollback_completed_at is None
    step = step.state.device_report(second, "committed", OLD, "", T0 + 50, target_sha=OLD)
    assert kinds(step) == [EventKind.DEVICE_ROLLED_BACK, EventKind.ROLLBACK_COMPLETE]
    assert step.actions == [Notify(f"rollback of {NEW[:12]} complete: 2 devices are off it")]
    assert step.state.rollback_completed_at == T0 + 50
    again = step.state.device_report(second, "committed", OLD, "", T0 + 60, target_sha=OLD)
    assert again == Step(step.state, [], [])


@pytest.mark.parametrize(("committed", "passes"), [(2, False), (3, True), (4, True)])
def test_device_timeout_against_the_success_threshold(committed: int, passes: bool) -> None:
    waves = (wave(count=4, success_threshold=0.75), wave(percent=100))
    state, _ = started(waves=waves)
    devices = state.waves[0].devices
    state = commit(state, devices[:committed], T0 + 10)
    before = state.tick(T0 + TIMEOUT - 0.001, telemetry(state))
    if committed < len(devices):
        assert before.events == []  # not every device is resolved yet
    else:
        assert kinds(before)[0] is EventKind.WAVE_SETTLED  # all committed: no need to wait
    step = state.tick(T0 + TIMEOUT, telemetry(state))
    late = devices[committed:]
    if late:
        assert kinds(step)[0] is EventKind.DEVICE_TIMED_OUT
        assert step.events[0].device_ids == late
        assert all(step.state.devices[d].status is DeviceStatus.TIMED_OUT for d in late)
    if passes:
        assert step.state.status is RolloutStatus.RUNNING
        # the health window (from the last commit, long ago) is over: decided in the same tick
        assert EventKind.WAVE_PASSED in kinds(step)
        assert step.state.current_wave == 1
    else:
        assert step.state.status is RolloutStatus.ROLLED_BACK
        assert step.state.reason == (
            "wave 1: 2 of 4 devices failed or timed out; at most 2 can commit, 3 needed "
            "(threshold 75%)"
        )
        assert Rollback(device_ids=devices, to_sha=OLD) in step.actions


def test_device_failures_fail_the_wave_before_the_timeout() -> None:
    waves = (wave(count=3, success_threshold=0.6), wave(percent=100))
    state, _ = started(waves=waves)
    a, b, _c = state.waves[0].devices
    step = state.device_report(
        a, "rolled-back", OLD, "smoke test failed: golden 2", T0 + 5, target_sha=NEW
    )
    assert kinds(step) == [EventKind.DEVICE_FAILED]
    assert step.events[0].message == f"{a} rolled {NEW[:12]} back: smoke test failed: golden 2"
    state = step.state
    assert state.devices[a].status is DeviceStatus.FAILED
    assert state.devices[a].reason == "smoke test failed: golden 2"
    assert state.tick(T0 + 6, telemetry(state)).state.status is RolloutStatus.RUNNING
    state = state.device_report(b, "verifying", OLD, "", T0 + 7).state
    state = state.device_report(b, "rolled-back", OLD, "verification failed", T0 + 8).state
    assert state.devices[b].status is DeviceStatus.FAILED
    step = state.tick(T0 + 9, telemetry(state))
    assert step.state.status is RolloutStatus.ROLLED_BACK
    assert "at most 1 can commit, 2 needed" in step.state.reason


def test_a_stale_rolled_back_state_is_not_taken_for_a_failure() -> None:
    state, _ = started()
    canary = state.waves[0].devices[0]
    # the retained state of an older update, before the device saw this one
    step = state.device_report(canary, "rolled-back", OLD, "old failure", T0 + 1)
    assert step.state.devices[canary].status is DeviceStatus.SENT
    step = state.device_report(canary, "rolled-back", OLD, "x", T0 + 1, target_sha=OTHER)
    assert step.state.devices[canary].status is DeviceStatus.SENT
    step = state.device_report(canary, "downloading", OLD, "", T0 + 1, target_sha=OTHER)
    assert step.state.devices[canary].status is DeviceStatus.SENT
    step = state.device_report(canary, "probation", NEW, "", T0 + 1)
    assert step.state.devices[canary].status is DeviceStatus.IN_PROGRESS


def test_gate_with_too_little_telemetry_waits_and_says_so_once() -> None:
    state, _ = started()
    state = commit(state, state.waves[0].devices, T0)
    thin = {0: WaveTelemetry(new=HEALTHY.model_copy(update={"predictions": 10}), previous=HEALTHY)}
    step = state.tick(T0 + WINDOW, thin)
    assert kinds(step) == [EventKind.WAVE_SETTLED, EventKind.GATE_UNDECIDED]
    assert len([a for a in step.actions if isinstance(a, Notify)]) == 1
    state = step.state
    assert state.status is RolloutStatus.RUNNING
    assert state.waves[0].status is WaveStatus.WATCHING
    assert state.waves[0].undecided_since == T0 + WINDOW
    assert state.tick(T0 + WINDOW + 5, thin) == Step(state, [], [])
    assert state.tick(T0 + WINDOW + 5, {}) == Step(state, [], [])
    assert state.tick(T0 + 99999) == Step(state, [], [])  # no gate timeout: waits
    step = state.tick(T0 + WINDOW + 10, telemetry(state))
    assert kinds(step) == [EventKind.WAVE_PASSED, EventKind.WAVE_STARTED]


def test_gate_timeout_fails_an_undecided_wave() -> None:
    waves = (wave(count=1, gate_timeout_s=300), wave(percent=100))
    state, _ = started(waves=waves)
    state = commit(state, state.waves[0].devices, T0)
    state = state.tick(T0 + WINDOW).state
    assert state.tick(T0 + WINDOW + 299.9).events == []
    step = state.tick(T0 + WINDOW + 300)
    assert step.state.status is RolloutStatus.ROLLED_BACK
    assert step.state.reason == (
        "no quality decision 300 s after the health window: "
        "wave 1: no telemetry from the new bundle yet"
    )


def test_per_wave_gate_thresholds_apply() -> None:
    lenient = wave(count=1, gate=GateThresholds(max_latency_ratio=3.0))
    state, _ = started(waves=(lenient, wave(percent=100)))
    state = commit(state, state.waves[0].devices, T0)
    step = state.tick(T0 + WINDOW, telemetry(state, SLOW))
    assert step.state.status is RolloutStatus.RUNNING
    assert step.state.current_wave == 1


# --- operator commands ---------------------------------------------------------------------


def test_approval_between_waves() -> None:
    waves = (wave(count=1, approval_before_next=True), wave(percent=100))
    state, _ = started(waves=waves)
    step = pass_wave(state, T0)
    state = step.state
    assert state.status is RolloutStatus.AWAITING_APPROVAL
    assert kinds(step) == [
        EventKind.WAVE_SETTLED,
        EventKind.WAVE_PASSED,
        EventKind.AWAITING_APPROVAL,
    ]
    assert step.actions == [
        Notify(f"rollout of {NEW[:12]}: wave 1 passed; wave 2 (9 devices) waits for approval")
    ]
    assert state.tick(T0 + 9999, telemetry(state)) == Step(state, [], [])
    with pytest.raises(IllegalRolloutTransitionError, match="approve it instead"):
        state.resume(T0 + 100)
    step = state.approve(T0 + 100)
    assert kinds(step) == [EventKind.APPROVED, EventKind.WAVE_STARTED]
    assert step.actions == [Assign(device_ids=step.state.waves[1].devices, bundle_sha=NEW)]
    assert step.state.status is RolloutStatus.RUNNING
    with pytest.raises(
        IllegalRolloutTransitionError, match="cannot approve a rollout that is running"
    ):
        step.state.approve(T0 + 101)


def test_approval_of_the_last_wave_is_not_asked() -> None:
    waves = (wave(count=1), wave(percent=100, approval_before_next=True))
    state, _ = started(waves=waves)
    step = pass_wave(pass_wave(state, T0).state, T0 + 100)
    assert step.state.status is RolloutStatus.COMPLETED


def test_pause_holds_decisions_and_resume_carries_on() -> None:
    state, _ = started()
    state = commit(state, state.waves[0].devices, T0)
    step = state.pause(T0 + 1)
    assert kinds(step) == [EventKind.PAUSED]
    paused = step.state
    assert paused.status is RolloutStatus.PAUSED
    assert paused.pause(T0 + 2) == Step(paused, [], [])
    assert paused.tick(T0 + 9999, telemetry(paused)) == Step(paused, [], [])
    with pytest.raises(IllegalRolloutTransitionError, match="resume it first"):
        paused.approve(T0 + 2)
    # reports still converge while paused
    assert (
        paused.device_report("cam-00", "idle", OLD, "", T0 + 2).state.devices["cam-00"].active
        == OLD
    )
    step = paused.resume(T0 + 3)
    assert kinds(step) == [EventKind.RESUMED]
    running = step.state
    assert running.status is RolloutStatus.RUNNING
    assert running.resume(T0 + 4) == Step(running, [], [])
    step = running.tick(T0 + WINDOW + 10, telemetry(running))
    assert EventKind.WAVE_PASSED in kinds(step)


def test_pause_does_not_stop_device_deadlines() -> None:
    state, _ = started(waves=(wave(count=2), wave(percent=100)))
    state = state.pause(T0 + 1).state
    state = state.resume(T0 + TIMEOUT + 100).state
    step = state.tick(T0 + TIMEOUT + 100, telemetry(state))
    assert kinds(step)[0] is EventKind.DEVICE_TIMED_OUT
    assert step.state.status is RolloutStatus.ROLLED_BACK


def test_pause_and_resume_while_awaiting_approval() -> None:
    waves = (wave(count=1, approval_before_next=True), wave(percent=100))
    state, _ = started(waves=waves)
    state = pass_wave(state, T0).state
    state = state.pause(T0 + 100).state
    assert state.paused_from is RolloutStatus.AWAITING_APPROVAL
    state = state.resume(T0 + 101).state
    assert state.status is RolloutStatus.AWAITING_APPROVAL
    assert state.paused_from is None


@pytest.mark.parametrize("command", ["start", "pause", "resume", "approve"])
def test_commands_that_do_not_apply_are_refused(command: str) -> None:
    state, _ = started(waves=(wave(percent=100),))
    done = pass_wave(state, T0).state
    assert done.status is RolloutStatus.COMPLETED
    with pytest.raises(IllegalRolloutTransitionError, match="completed"):
        getattr(done, command)(T0 + 1000)
    with pytest.raises(IllegalRolloutTransitionError, match="cannot abort a completed"):
        done.abort("too late", T0 + 1000)


def test_pending_rollout_only_starts_or_aborts() -> None:
    state = make()
    for command in ("pause", "resume", "approve"):
        with pytest.raises(IllegalRolloutTransitionError, match="pending"):
            getattr(state, command)(T0)
    step = state.abort("changed my mind", T0)
    assert step.state.status is RolloutStatus.ABORTED
    assert not any(isinstance(a, Rollback) for a in step.actions)
    with pytest.raises(IllegalRolloutTransitionError):
        step.state.start(T0)


def test_operator_abort_rolls_back_every_device_sent_the_bundle() -> None:
    state, _ = started()
    canary = state.waves[0].devices
    state = pass_wave(state, T0).state
    second = state.waves[1].devices
    state = state.device_report(second[0], "probation", NEW, "", T0 + 200, target_sha=NEW).state
    step = state.abort("operator saw misroutes", T0 + 300)
    state = step.state
    assert state.status is RolloutStatus.ROLLED_BACK
    assert state.reason == "aborted by operator: operator saw misroutes"
    assert state.waves[1].status is WaveStatus.ABORTED
    assert state.waves[2].status is WaveStatus.PENDING
    rollback = next(a for a in step.actions if isinstance(a, Rollback))
    assert rollback == Rollback(device_ids=tuple(sorted(canary + second)), to_sha=OLD)
    assert not set(rollback.device_ids) & set(state.waves[2].devices)
    assert kinds(step) == [EventKind.ABORTED]
    assert state.abort("again", T0 + 400) == Step(state, [], [])


def test_abort_without_rollback_and_without_a_previous_bundle() -> None:
    state, _ = started()
    step = state.abort("keep the canary", T0 + 5, rollback=False)
    assert step.state.status is RolloutStatus.ABORTED
    assert [type(a) for a in step.actions] == [Notify]

    state, _ = started(previous_bundle=None)
    step = state.abort("no way back", T0 + 5)
    assert Rollback(device_ids=state.waves[0].devices, to_sha=None) in step.actions
    assert "back to no assignment" in step.events[0].message


def test_abort_counts_devices_already_off_the_bundle_as_rolled_back() -> None:
    waves = (wave(count=3, success_threshold=0.3), wave(percent=100))
    state, _ = started(waves=waves)
    a, b, c = state.waves[0].devices
    state = commit(state, [a], T0 + 1)
    state = state.device_report(
        b, "rolled-back", OLD, "probation failed", T0 + 2, target_sha=NEW
    ).state
    state = state.device_report(c, "idle", OLD, "", T0 + 3).state  # never took it
    step = state.abort("stop", T0 + 4)
    state = step.state
    assert state.devices[a].status is DeviceStatus.COMMITTED
    assert state.devices[b].status is DeviceStatus.FAILED
    assert state.devices[c].status is DeviceStatus.ROLLED_BACK
    assert kinds(step) == [EventKind.ABORTED, EventKind.DEVICE_ROLLED_BACK]
    step = state.device_report(a, "committed", OLD, "", T0 + 5)
    assert EventKind.ROLLBACK_COMPLETE in kinds(step)


# --- devices: pinned, late, idempotent, recovery ----------------------------------------------


def test_pinned_devices_are_skipped_and_reported() -> None:
    pins = {"cam-01": OTHER, "cam-02": OLD}
    waves = (wave(devices=("cam-01", "cam-03")), wave(percent=100))
    state = make(n=6, waves=waves, pinned=pins)
    assert state.skipped == {"cam-01": f"pinned to {OTHER[:12]}", "cam-02": f"pinned to {OLD[:12]}"}
    assert "cam-01" not in state.devices
    assert state.waves[0].devices == ("cam-03",)
    step = state.start(T0)
    assert kinds(step) == [EventKind.STARTED, EventKind.DEVICES_SKIPPED, EventKind.WAVE_STARTED]
    assert step.events[1].device_ids == ("cam-01", "cam-02")
    assert "cam-01 (pinned to cccccccccccc)" in step.events[1].message
    state = step.state
    assert state.device_report("cam-01", "committed", NEW, "", T0 + 1) == Step(state, [], [])
    state = pass_wave(state, T0).state
    assigned = {
        d for a in pass_wave(state, T0 + 100).actions if isinstance(a, Assign) for d in a.device_ids
    }
    assert not assigned & set(pins)
    assert all(not set(pins) & set(w.devices) for w in state.waves)


def test_late_device_converges_after_completion() -> None:
    waves = (wave(count=1), wave(percent=100, success_threshold=0.5))
    state, _ = started(n=4, waves=waves)
    state = pass_wave(state, T0).state
    last = state.waves[1].devices
    state = commit(state, last[:2], T0 + 100)
    state = state.tick(T0 + 100 + TIMEOUT, telemetry(state)).state
    assert state.status is RolloutStatus.COMPLETED
    offline = last[2]
    assert state.devices[offline].status is DeviceStatus.TIMED_OUT

    step = state.device_report(offline, "downloading", OLD, "", T0 + 5000, target_sha=NEW)
    assert step.state.devices[offline].status is DeviceStatus.TIMED_OUT
    step = step.state.device_report(offline, "committed", NEW, "", T0 + 5100)
    assert kinds(step) == [EventKind.DEVICE_COMMITTED]
    assert step.events[0].message == f"{offline} committed {NEW[:12]} (late)"
    assert step.actions == []
    assert step.state.status is RolloutStatus.COMPLETED
    assert step.state.devices[offline].status is DeviceStatus.COMMITTED
    assert step.state.devices[offline].finished_at == T0 + 5100


def test_device_already_running_the_bundle_commits_when_its_wave_starts() -> None:
    state = make(waves=(wave(count=1), wave(percent=100)))
    later = next(d for d in ids(10) if d not in state.waves[0].devices)
    state = state.device_report(later, "committed", NEW, "", T0 - 1).state
    assert state.devices[later].status is DeviceStatus.PENDING
    state = pass_wave(state.start(T0).state, T0).state
    assert state.devices[later].status is DeviceStatus.COMMITTED
    assert state.devices[later].sent_at == T0 + WINDOW


def test_duplicate_and_foreign_reports_change_nothing() -> None:
    state, _ = started()
    canary = state.waves[0].devices[0]
    first = state.device_report(canary, "committed", NEW, "", T0 + 1)
    assert kinds(first) == [EventKind.DEVICE_COMMITTED]
    again = first.state.device_report(canary, "committed", NEW, "", T0 + 2)
    assert again.state is first.state
    assert again.events == [] and again.actions == []
    assert state.device_report("stranger", "committed", NEW, "", T0) == Step(state, [], [])
    with pytest.raises(RolloutError, match="unknown phase 'exploded'"):
        state.device_report(canary, "exploded", NEW, "", T0)


def test_update_phase_enum_values_are_accepted() -> None:
    from edge_runtime.update.lifecycle import UpdatePhase

    state, _ = started()
    canary = state.waves[0].devices[0]
    step = state.device_report(canary, UpdatePhase.COMMITTED, NEW, "", T0 + 1)
    assert step.state.devices[canary].status is DeviceStatus.COMMITTED
    assert step.state.devices[canary].phase == "committed"


def test_recover_resends_only_to_unfinished_devices_and_keeps_deadlines() -> None:
    waves = (wave(count=4, success_threshold=0.25), wave(percent=100))
    state, _ = started(waves=waves)
    first_wave = state.waves[0].devices
    done, working, quiet, failed = state.waves[0].devices
    state = commit(state, [done], T0 + 10)
    state = state.device_report(working, "verifying", OLD, "", T0 + 20, target_sha=NEW).state
    state = state.device_report(failed, "rolled-back", OLD, "bad", T0 + 30, target_sha=NEW).state
    restored = RolloutState.model_validate_json(state.model_dump_json())

    step = recover(restored, T0 + 100)
    assert step.state is restored
    assert step.actions == [Assign(device_ids=tuple(sorted((working, quiet))), bundle_sha=NEW)]
    assert kinds(step) == [EventKind.RECOVERED]
    assert restored.devices[quiet].sent_at == T0
    step = restored.tick(T0 + TIMEOUT, telemetry(restored))
    assert step.state.devices[quiet].status is DeviceStatus.TIMED_OUT
    assert step.state.devices[working].status is DeviceStatus.TIMED_OUT
    moved_on = step.state
    assert moved_on.current_wave == 1
    again = recover(moved_on, T0 + TIMEOUT + 1)
    assert again.actions == [Assign(device_ids=moved_on.waves[1].devices, bundle_sha=NEW)]
    assert not set(first_wave) & set(moved_on.waves[1].devices)


def test_recover_after_a_rollback_reissues_it_to_devices_still_on_the_bundle() -> None:
    state, _ = started(waves=(wave(count=2), wave(percent=100)))
    first, second = state.waves[0].devices
    state = commit(state, [first, second], T0 + 1)
    state = state.abort("stop", T0 + 2).state
    state = state.device_report(first, "committed", OLD, "", T0 + 3).state
    step = recover(state, T0 + 4)
    assert step.actions == [Rollback(device_ids=(second,), to_sha=OLD)]


def test_recover_of_a_finished_or_pending_rollout_sends_nothing() -> None:
    assert recover(make(), T0).actions == []
    state, _ = started(waves=(wave(percent=100),))
    assert recover(pass_wave(state, T0).state, T0 + 1000).actions == []


def test_times_must_be_sane() -> None:
    state = make()
    with pytest.raises(ValidationError):
        state.start(-1.0)
    with pytest.raises(ValidationError):
        state.start(float("nan"))


def test_approval_skips_empty_waves_to_the_next_one_with_devices() -> None:
    waves = (
        wave(count=5, approval_before_next=True),
        wave(tags=("dock",)),
        wave(devices=("cam-05",)),
    )
    state, _ = started(n=6, waves=waves)
    assert [len(w.devices) for w in state.waves] == [5, 0, 1]
    state = pass_wave(state, T0).state
    assert state.status is RolloutStatus.AWAITING_APPROVAL
    step = state.approve(T0 + 100)
    assert kinds(step) == [EventKind.APPROVED, EventKind.WAVE_SKIPPED, EventKind.WAVE_STARTED]
    assert step.events[0].message == "wave 3 approved"
    assert step.actions == [Assign(device_ids=("cam-05",), bundle_sha=NEW)]


def test_devices_already_running_the_bundle_commit_when_their_wave_starts() -> None:
    """Issue #15, item 8: what the device reported before the rollout counts, no timeout."""
    runs_it = {"cam-00", "cam-03"}
    devices = tuple(
        TargetDevice(
            device_id=d,
            phase="committed" if d in runs_it else "idle",
            active=NEW if d in runs_it else OLD,
        )
        for d in ids(4)
    )
    spec = RolloutSpec(
        bundle=NEW, previous_bundle=OLD, devices=devices, waves=(wave(percent=100),), seed=1
    )
    step = RolloutState.create(spec, now=T0).start(T0)
    statuses = {d: p.status for d, p in step.state.devices.items()}
    assert {d for d, s in statuses.items() if s is DeviceStatus.COMMITTED} == runs_it
    assert {d for d, s in statuses.items() if s is DeviceStatus.SENT} == {"cam-01", "cam-02"}
    assert "2 devices already run" in " ".join(e.message for e in step.events)
    state = commit(step.state, ["cam-01", "cam-02"], T0 + 5)
    assert state.tick(T0 + 5 + WINDOW, telemetry(state)).state.status is RolloutStatus.COMPLETED
    # a spec written before these fields existed still loads
    legacy = spec.model_dump(mode="json")
    for device in legacy["devices"]:
        del device["phase"], device["active"]
    assert RolloutSpec.model_validate(legacy).devices[0].active is None
