"""The update lifecycle state machine, with plain values: every path, every refusal, restarts."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_runtime.errors import IllegalTransitionError, UpdateError
from edge_runtime.update import (
    HISTORY_LIMIT,
    BundleRef,
    Transition,
    UpdatePhase,
    UpdateState,
    event_payload,
    protected_bundles,
    recover,
    reported_state,
)

P = UpdatePhase
A = BundleRef(sha256="a" * 64, name="sorter", version="1.0.0")
B = BundleRef(sha256="b" * 64, name="sorter", version="1.1.0")
C = BundleRef(sha256="c" * 64, name="sorter", version="1.2.0")
T0 = 1_800_000_000.0

# The path of a successful update, one input per phase.
HAPPY: list[tuple[UpdatePhase, Callable[[UpdateState, float], Transition]]] = [
    (P.DOWNLOADING, lambda s, t: s.download_complete(t)),
    (P.VERIFYING, lambda s, t: s.verified(t)),
    (P.STAGED, lambda s, t: s.smoke_started(t)),
    (P.SMOKE_TESTING, lambda s, t: s.smoke_passed(t)),
    (P.ACTIVATING, lambda s, t: s.activated(t)),
    (P.PROBATION, lambda s, t: s.probation_passed(t)),
]


def start() -> UpdateState:
    """A device running A (committed long ago), nothing in progress."""
    return UpdateState.initial(A, now=T0)


def in_phase(phase: UpdatePhase, bundle: BundleRef = B, assignment: int = 1) -> UpdateState:
    """A state in ``phase``, installing ``bundle`` over A."""
    state = start()
    if phase is P.IDLE:
        return state
    state = state.assignment_seen(bundle, assignment, T0 + 1).state
    if phase is P.ROLLED_BACK:
        return state.failed("test failure", T0 + 2).state
    for step, (current, advance) in enumerate(HAPPY):
        if current is phase:
            return state
        state = advance(state, T0 + 2 + step).state
    assert state.phase is P.COMMITTED is phase
    return state


def test_phase_values_are_the_protocol_state_names() -> None:
    assert [p.value for p in UpdatePhase] == [
        "idle",
        "downloading",
        "verifying",
        "staged",
        "smoke-testing",
        "activating",
        "probation",
        "committed",
        "rolled-back",
    ]


def test_happy_path_walks_every_phase_and_commits() -> None:
    state = start()
    transition = state.assignment_seen(B, 7, T0 + 1)
    state = transition.state
    assert state.phase is P.DOWNLOADING
    assert state.target is not None and state.target.key == (B.sha256, 7)
    assert state.started_at == T0 + 1
    events = list(transition.events)
    expected = [P.IDLE, P.DOWNLOADING]
    for step, (phase, advance) in enumerate(HAPPY):
        assert state.phase is phase
        assert (state.active == A and state.last_good == A) or phase is P.PROBATION
        before = state.sequence
        transition = advance(state, T0 + 2 + step)
        state = transition.state
        assert state.sequence == before + 1
        assert state.updated_at == T0 + 2 + step
        events += transition.events
        expected.append(state.phase)
        if state.phase is P.PROBATION:
            assert state.active == B and state.last_good == A
            assert state.probation_started_at == T0 + 2 + step
    assert state.phase is P.COMMITTED
    assert state.active == B and state.last_good == B
    assert [(e.from_state, e.to_state) for e in events] == list(itertools.pairwise(expected))
    assert all(e.bundle == B.sha256 and e.assignment == 7 for e in events)
    assert list(state.history) == events
    assert protected_bundles(state) == {B.sha256}


@pytest.mark.parametrize(
    ("phase", "fail", "reason"),
    [
        (
            P.VERIFYING,
            lambda s, t: s.verification_failed("hash mismatch", t),
            "verification failed: hash mismatch",
        ),
        (
            P.SMOKE_TESTING,
            lambda s, t: s.smoke_failed("golden vector 0", t),
            "smoke test failed: golden vector 0",
        ),
        (
            P.PROBATION,
            lambda s, t: s.probation_failed("NaN output", t),
            "probation failed: NaN output",
        ),
    ],
)
def test_each_failure_input_rolls_back(
    phase: UpdatePhase, fail: Callable[[UpdateState, float], Transition], reason: str
) -> None:
    state = in_phase(phase)
    transition = fail(state, T0 + 50)
    after = transition.state
    assert after.phase is P.ROLLED_BACK
    assert after.active == A and after.last_good == A
    assert after.probation_started_at is None
    (event,) = transition.events
    assert (event.from_state, event.to_state, event.reason) == (phase, P.ROLLED_BACK, reason)
    assert (event.bundle, event.assignment) == (B.sha256, 1)
    assert after.target is not None and after.target.key == (B.sha256, 1)


BUSY = [P.DOWNLOADING, P.VERIFYING, P.STAGED, P.SMOKE_TESTING, P.ACTIVATING, P.PROBATION]
RESTING = [P.IDLE, P.COMMITTED, P.ROLLED_BACK]


@pytest.mark.parametrize("phase", BUSY)
def test_failed_from_any_phase_with_an_update_rolls_back_to_last_good(phase: UpdatePhase) -> None:
    transition = in_phase(phase).failed("power supply brown-out", T0 + 50)
    assert transition.state.phase is P.ROLLED_BACK
    assert transition.state.active == A
    assert [(e.from_state, e.to_state, e.reason) for e in transition.events] == [
        (phase, P.ROLLED_BACK, "power supply brown-out")
    ]


@pytest.mark.parametrize("phase", RESTING)
def test_failed_without_an_update_is_refused(phase: UpdatePhase) -> None:
    with pytest.raises(IllegalTransitionError, match=f"state '{phase.value}': no update"):
        in_phase(phase).failed("x", T0 + 50)


INPUTS: dict[str, tuple[Callable[[UpdateState], Transition], UpdatePhase]] = {
    "download complete": (lambda s: s.download_complete(T0 + 99), P.DOWNLOADING),
    "verified": (lambda s: s.verified(T0 + 99), P.VERIFYING),
    "verification failed": (lambda s: s.verification_failed("x", T0 + 99), P.VERIFYING),
    "smoke test started": (lambda s: s.smoke_started(T0 + 99), P.STAGED),
    "smoke test passed": (lambda s: s.smoke_passed(T0 + 99), P.SMOKE_TESTING),
    "smoke test failed": (lambda s: s.smoke_failed("x", T0 + 99), P.SMOKE_TESTING),
    "activated": (lambda s: s.activated(T0 + 99), P.ACTIVATING),
    "probation passed": (lambda s: s.probation_passed(T0 + 99), P.PROBATION),
    "probation failed": (lambda s: s.probation_failed("x", T0 + 99), P.PROBATION),
}
ILLEGAL = [
    (what, phase)
    for what, (_, legal_in) in INPUTS.items()
    for phase in UpdatePhase
    if phase is not legal_in
]


@pytest.mark.parametrize(("what", "phase"), ILLEGAL, ids=[f"{w}-in-{p.value}" for w, p in ILLEGAL])
def test_every_illegal_transition_is_refused_and_changes_nothing(
    what: str, phase: UpdatePhase
) -> None:
    state = in_phase(phase)
    apply, legal_in = INPUTS[what]
    with pytest.raises(IllegalTransitionError) as info:
        apply(state)
    assert isinstance(info.value, UpdateError)
    assert str(info.value) == (
        f"cannot take {what!r} in state {phase.value!r} (only in {legal_in.value!r} with a target)"
    )
    assert state.phase is phase  # frozen: nothing was mutated


def test_illegal_transition_count_covers_the_whole_table() -> None:
    assert len(ILLEGAL) == len(INPUTS) * (len(UpdatePhase) - 1)


def test_state_is_immutable() -> None:
    state = start()
    with pytest.raises(ValidationError):
        state.phase = P.DOWNLOADING  # type: ignore[misc]


# --- idempotency and superseding -------------------------------------------------------


@pytest.mark.parametrize("phase", list(UpdatePhase))
def test_repeated_or_older_assignment_is_ignored_in_every_phase(phase: UpdatePhase) -> None:
    state = in_phase(phase, assignment=5)
    if phase is P.IDLE:
        state = state.assignment_seen(A, 5, T0 + 1).state  # the active bundle: recorded only
    for assignment in (5, 4, 0):
        for bundle in (A, B, C):
            transition = state.assignment_seen(bundle, assignment, T0 + 100)
            assert transition.state is state
            assert transition.events == []


def test_assignment_of_the_active_bundle_is_recorded_but_starts_nothing() -> None:
    state = start()
    transition = state.assignment_seen(A, 3, T0 + 1)
    assert transition.events == []
    assert transition.state.phase is P.IDLE
    assert transition.state.handled_assignment == 3
    assert transition.state.target is None
    # and once handled, a repeat is not even a change
    assert transition.state.assignment_seen(A, 3, T0 + 2).state is transition.state


def test_rolled_back_bundle_is_not_retried_for_the_same_assignment_but_is_for_a_newer_one() -> None:
    state = in_phase(P.ROLLED_BACK, assignment=6)
    assert state.assignment_seen(B, 6, T0 + 10) == (state, [])
    retry = state.assignment_seen(B, 7, T0 + 11)
    assert retry.state.phase is P.DOWNLOADING
    assert retry.state.target is not None and retry.state.target.key == (B.sha256, 7)
    assert retry.state.restarts == 0 and retry.state.started_at == T0 + 11
    assert [(e.from_state, e.to_state) for e in retry.events] == [(P.ROLLED_BACK, P.DOWNLOADING)]


def test_committed_accepts_the_next_assignment_like_idle() -> None:
    state = in_phase(P.COMMITTED)
    transition = state.assignment_seen(C, 2, T0 + 20)
    assert transition.state.phase is P.DOWNLOADING
    assert transition.state.active == B and transition.state.last_good == B
    (event,) = transition.events
    assert (event.bundle, event.assignment, event.from_state) == (C.sha256, 2, P.COMMITTED)
    assert event.reason == "assignment 2: sorter 1.2.0"


@pytest.mark.parametrize("phase", BUSY)
def test_newer_assignment_of_the_same_bundle_only_adopts_the_version(phase: UpdatePhase) -> None:
    state = in_phase(phase, assignment=1)
    transition = state.assignment_seen(B, 2, T0 + 30)
    assert transition.events == []
    assert transition.state.phase is phase
    assert transition.state.target is not None and transition.state.target.key == (B.sha256, 2)
    assert transition.state.sequence == state.sequence + 1


@pytest.mark.parametrize("phase", [P.DOWNLOADING, P.VERIFYING, P.STAGED, P.SMOKE_TESTING])
def test_newer_assignment_before_activation_abandons_and_starts_over(phase: UpdatePhase) -> None:
    transition = in_phase(phase).assignment_seen(C, 2, T0 + 30)
    assert [(e.bundle, e.assignment, e.from_state, e.to_state) for e in transition.events] == [
        (B.sha256, 1, phase, P.IDLE),
        (C.sha256, 2, P.IDLE, P.DOWNLOADING),
    ]
    assert transition.events[0].reason == f"superseded by assignment 2 (bundle {C.sha256[:12]})"
    assert transition.state.phase is P.DOWNLOADING and transition.state.active == A


@pytest.mark.parametrize("phase", [P.ACTIVATING, P.PROBATION])
def test_newer_assignment_after_activation_rolls_back_first(phase: UpdatePhase) -> None:
    transition = in_phase(phase).assignment_seen(C, 2, T0 + 30)
    assert [(e.from_state, e.to_state) for e in transition.events] == [
        (phase, P.ROLLED_BACK),
        (P.ROLLED_BACK, P.DOWNLOADING),
    ]
    assert transition.state.active == A and transition.state.last_good == A


def test_operator_reassigning_the_last_good_bundle_during_probation_aborts_it() -> None:
    transition = in_phase(P.PROBATION).assignment_seen(A, 2, T0 + 30)
    state = transition.state
    assert state.phase is P.ROLLED_BACK and state.active == A
    assert [(e.from_state, e.to_state) for e in transition.events] == [(P.PROBATION, P.ROLLED_BACK)]
    assert state.handled_assignment == 2


def test_reassigning_the_active_bundle_cancels_a_download() -> None:
    transition = in_phase(P.DOWNLOADING).assignment_seen(A, 2, T0 + 30)
    assert transition.state.phase is P.IDLE and transition.state.active == A
    assert transition.state.target is None  # the abandoned bundle is neither reported nor kept
    assert [(e.from_state, e.to_state) for e in transition.events] == [(P.DOWNLOADING, P.IDLE)]


def test_first_bundle_on_a_fresh_device_has_nothing_to_fall_back_to() -> None:
    state = UpdateState.initial(now=T0)
    state = state.assignment_seen(A, 1, T0 + 1).state
    for step, (_, advance) in enumerate(HAPPY[:-1]):
        state = advance(state, T0 + 2 + step).state
    assert state.phase is P.PROBATION and state.active == A and state.last_good is None
    rolled = state.probation_failed("crash", T0 + 20).state
    assert rolled.active is None and rolled.last_good is None


def test_negative_assignment_is_refused() -> None:
    with pytest.raises(IllegalTransitionError, match="negative"):
        start().assignment_seen(B, -1, T0)


# --- recovery after a restart ---------------------------------------------------------------


RECOVERY: dict[UpdatePhase, tuple[UpdatePhase, str | None]] = {
    P.IDLE: (P.IDLE, None),
    P.DOWNLOADING: (P.DOWNLOADING, None),
    P.VERIFYING: (P.VERIFYING, None),
    P.STAGED: (P.VERIFYING, "restarted during staged; verifying the bundle again"),
    P.SMOKE_TESTING: (P.VERIFYING, "restarted during smoke-testing; verifying the bundle again"),
    P.ACTIVATING: (P.ROLLED_BACK, "restarted during activating"),
    P.PROBATION: (P.ROLLED_BACK, "restarted during probation"),
    P.COMMITTED: (P.COMMITTED, None),
    P.ROLLED_BACK: (P.ROLLED_BACK, None),
}


def test_recovery_table_covers_every_phase() -> None:
    assert set(RECOVERY) == set(UpdatePhase)


@pytest.mark.parametrize("phase", list(UpdatePhase))
def test_recover_from_each_phase(phase: UpdatePhase) -> None:
    state = in_phase(phase)
    transition = recover(state, T0 + 500)
    expected_phase, reason = RECOVERY[phase]
    after = transition.state
    assert after.phase is expected_phase
    if reason is None:
        assert transition.events == []
    else:
        (event,) = transition.events
        assert (event.from_state, event.to_state, event.reason) == (phase, expected_phase, reason)
        assert (event.bundle, event.assignment) == (B.sha256, 1)
    # whatever happened, the bundle that serves after a restart is a known-good one
    if phase in (P.ACTIVATING, P.PROBATION):
        assert after.active == A == after.last_good
    elif phase is not P.COMMITTED:
        assert after.active == A
    # recovering twice changes no more than recovering once (except the restart count)
    again = recover(after, T0 + 501)
    assert again.state.phase is after.phase
    assert again.events == []


@pytest.mark.parametrize("phase", [P.VERIFYING, P.STAGED, P.SMOKE_TESTING])
def test_recover_abandons_when_the_bundle_file_is_gone(phase: UpdatePhase) -> None:
    transition = recover(in_phase(phase), T0 + 500, bundle_present=False)
    assert transition.state.phase is P.ROLLED_BACK and transition.state.active == A
    assert transition.events[0].reason == f"restarted during {phase.value}: the bundle file is gone"


def test_recover_gives_up_on_a_bundle_that_keeps_crashing_the_device() -> None:
    state = in_phase(P.SMOKE_TESTING)
    for attempt in range(3):
        state = recover(state, T0 + attempt).state
        assert state.phase is P.VERIFYING and state.restarts == attempt + 1
        state = state.verified(T0 + 10).state.smoke_started(T0 + 11).state
    transition = recover(state, T0 + 20, max_restarts=3)
    assert transition.state.phase is P.ROLLED_BACK
    assert transition.events[0].reason == "restarted 4 times during smoke-testing; giving up"
    # the next assignment starts with a clean count
    assert transition.state.assignment_seen(C, 2, T0 + 30).state.restarts == 0


# --- persistence and payloads ---------------------------------------------------------------


def test_state_round_trips_through_json_and_refuses_unknown_fields() -> None:
    state = in_phase(P.PROBATION)
    raw = state.model_dump_json()
    assert UpdateState.model_validate_json(raw) == state
    data = json.loads(raw)
    assert data["phase"] == "probation"
    data["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        UpdateState.model_validate(data)


def test_history_is_bounded_and_sequence_only_grows() -> None:
    state = start()
    sequences = [state.sequence]
    for assignment in range(1, 40):
        bundle = B if assignment % 2 else C
        state = state.assignment_seen(bundle, assignment, T0 + assignment).state
        state = state.failed("network", T0 + assignment).state
        sequences.append(state.sequence)
    assert len(state.history) == HISTORY_LIMIT
    assert state.history[-1].reason == "network" and state.history[-1].assignment == 39
    assert sequences == sorted(set(sequences))


def test_long_reasons_are_clipped() -> None:
    state = in_phase(P.SMOKE_TESTING).smoke_failed("x" * 10_000, T0).state
    assert len(state.history[-1].reason) == 1024


def _protocol_examples() -> list[dict[str, Any]]:
    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    section = text[text.index("## Device state and events") :]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]


def test_reported_state_matches_the_documented_payload() -> None:
    documented = _protocol_examples()[0]
    payload = reported_state("cam-1", in_phase(P.PROBATION, assignment=7), "0.1.0")
    assert set(payload) == set(documented)
    assert set(payload["active"]) == set(documented["active"])
    assert set(payload["last_good"]) == set(documented["last_good"])
    assert set(payload["target"]) == set(documented["target"])
    assert payload["state"] == "probation"
    assert payload["active"] == {"bundle": B.sha256, "name": "sorter", "version": "1.1.0"}
    assert payload["last_good"] == {"bundle": A.sha256, "name": "sorter", "version": "1.0.0"}
    assert payload["target"] == {"bundle": B.sha256, "assignment": 7}
    assert payload["protocol"] == 1 and payload["runtime_version"] == "0.1.0"
    json.dumps(payload, allow_nan=False)
    fresh = reported_state("cam-1", UpdateState.initial(now=T0), "0.1.0")
    assert fresh["active"] is None and fresh["target"] is None and fresh["state"] == "idle"


def test_event_payload_matches_the_documented_payload() -> None:
    documented = _protocol_examples()[1]
    transition = in_phase(P.SMOKE_TESTING, assignment=7).smoke_failed("golden vector 2", T0 + 9)
    payload = event_payload("cam-1", transition.events[0])
    assert set(payload) == set(documented)
    assert payload == {
        "protocol": 1,
        "device_id": "cam-1",
        "bundle": B.sha256,
        "assignment": 7,
        "from": "smoke-testing",
        "to": "rolled-back",
        "reason": "smoke test failed: golden vector 2",
        "at": T0 + 9,
    }
