"""Four-eyes approval in the rollout planner: two different people release a gated wave."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_server.errors import IllegalRolloutTransitionError
from fleet_server.rollout_plan import Assign, EventKind, RolloutState, RolloutStatus, WaveStatus
from tests.unit.test_rollout_plan import T0, make, pass_wave, wave


def awaiting(approvals: int) -> RolloutState:
    waves = (
        wave(count=1, approval_before_next=True, approvals_required=approvals),
        wave(percent=100),
    )
    state = make(n=4, waves=waves)
    state = pass_wave(state.start(T0).state, T0 + 10).state
    assert state.status is RolloutStatus.AWAITING_APPROVAL
    return state


def test_a_four_eyes_wave_is_released_by_the_second_different_approver() -> None:
    state = awaiting(2)
    first = state.approve(T0 + 100, by="alice")
    assert first.state.status is RolloutStatus.AWAITING_APPROVAL
    assert first.state.approved_by == ("alice",) and first.actions == []
    assert [e.kind for e in first.events] == [EventKind.APPROVED]
    assert first.events[0].message == (
        "wave 2 approved by alice (1 of 2); it waits for 1 more person's approval"
    )
    assert first.state.waves[1].status is WaveStatus.PENDING  # nothing sent yet

    with pytest.raises(IllegalRolloutTransitionError, match="already approved by alice"):
        first.state.approve(T0 + 101, by="alice")
    with pytest.raises(IllegalRolloutTransitionError, match="approve with a named token"):
        first.state.approve(T0 + 101)

    second = first.state.approve(T0 + 102, by="bob")
    assert second.state.status is RolloutStatus.RUNNING
    assert second.state.approved_by == ()  # the next gate counts afresh
    assert second.state.waves[1].status is WaveStatus.RUNNING
    assert second.events[0].message == "wave 2 approved by alice and bob"
    assert [type(a) for a in second.actions] == [Assign]
    assert set(second.actions[0].device_ids) == set(second.state.waves[1].devices)


def test_approvals_survive_a_restart_and_a_pause() -> None:
    state = awaiting(2).approve(T0 + 100, by="alice").state
    saved = RolloutState.model_validate_json(state.model_dump_json())  # as the registry keeps it
    assert saved.approved_by == ("alice",)
    paused = saved.pause(T0 + 101).state
    with pytest.raises(IllegalRolloutTransitionError, match="resume it first"):
        paused.approve(T0 + 102, by="bob")
    resumed = paused.resume(T0 + 103).state
    assert resumed.status is RolloutStatus.AWAITING_APPROVAL
    with pytest.raises(IllegalRolloutTransitionError, match="already approved by alice"):
        resumed.approve(T0 + 104, by="alice")
    assert resumed.approve(T0 + 105, by="bob").state.status is RolloutStatus.RUNNING


def test_one_approval_releases_an_ordinary_wave_named_or_not() -> None:
    named = awaiting(1).approve(T0 + 100, by="alice")
    assert named.state.status is RolloutStatus.RUNNING
    assert named.events[0].message == "wave 2 approved by alice"
    unnamed = awaiting(1).approve(T0 + 100)
    assert unnamed.state.status is RolloutStatus.RUNNING
    assert unnamed.events[0].message == "wave 2 approved"


def test_a_state_saved_before_four_eyes_existed_still_loads() -> None:
    state = awaiting(1)
    old = state.model_dump(mode="json")
    del old["approved_by"]
    for spec_wave in old["spec"]["waves"]:
        del spec_wave["approvals_required"]
    loaded = RolloutState.model_validate(old)
    assert loaded.approved_by == () and loaded.spec.waves[0].approvals_required == 1


def test_four_eyes_needs_an_approval_gate_and_at_most_two_people() -> None:
    with pytest.raises(ValidationError, match="needs approval_before_next"):
        wave(count=1, approvals_required=2)
    with pytest.raises(ValidationError, match="approvals_required"):
        wave(count=1, approval_before_next=True, approvals_required=3)
