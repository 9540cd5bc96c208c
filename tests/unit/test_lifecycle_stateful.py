"""The update lifecycle under random event sequences (Hypothesis stateful testing).

A simulated device agent drives the real :class:`UpdateState` and a real
:class:`BundleStore` in a temporary folder, the way the agent does: each
input goes to the lifecycle, each new state is persisted before anything
else happens, a restart reopens the store and calls :func:`recover`, and a
torn ``state.json`` makes the store fall back to its backup. Inputs arrive
whether or not they are legal in the current phase; the machine's own table
(written from docs, not from the code) says which are, and checks after
every step that:

* a legal input moves only along an allowed edge, to the phase the table
  says, with events that chain from the old phase to the new one and end the
  persisted history;
* an illegal input raises :class:`IllegalTransitionError` and changes
  neither the state nor ``state.json``;
* once a bundle was committed (or provisioned) there is always a last good
  bundle; outside ``activating`` and ``probation`` the active bundle is the
  last good one; the last good bundle changes only when probation passes,
  to the target, and the active one only by activation (the target) or a
  rollback (the last good one);
* the persisted state round-trips (JSON and ``state.json``), the sequence
  only grows, an assignment version once handled is never handled again;
* pruning the store never deletes a bundle the persisted state names.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from edge_runtime.errors import IllegalTransitionError
from edge_runtime.update import (
    HISTORY_LIMIT,
    BundleRef,
    BundleStore,
    Transition,
    UpdateEvent,
    UpdatePhase,
    UpdateState,
    protected_bundles,
    recover,
)

P = UpdatePhase
T0 = 1_800_000_000.0
EPOCH = "00112233aabbccdd"
MAX_RESTARTS = 2

PAYLOADS = {letter: f"bundle {letter} bytes".encode() for letter in "ABCD"}
BUNDLES = {
    letter: BundleRef(
        sha256=hashlib.sha256(data).hexdigest(), name="sorter", version=f"1.{index}.0"
    )
    for index, (letter, data) in enumerate(PAYLOADS.items())
}
BY_SHA = {ref.sha256: PAYLOADS[letter] for letter, ref in BUNDLES.items()}

RESTING = {P.IDLE, P.COMMITTED, P.ROLLED_BACK}
BUSY = set(P) - RESTING
BEFORE_ACTIVATION = {P.DOWNLOADING, P.VERIFYING, P.STAGED, P.SMOKE_TESTING}
SERVING_TARGET = {P.ACTIVATING, P.PROBATION}

# Each input's one legal phase and where it leads (DESIGN.md, "Device update lifecycle").
STEPS: dict[str, tuple[UpdatePhase, UpdatePhase]] = {
    "download_complete": (P.DOWNLOADING, P.VERIFYING),
    "verified": (P.VERIFYING, P.STAGED),
    "verification_failed": (P.VERIFYING, P.ROLLED_BACK),
    "smoke_started": (P.STAGED, P.SMOKE_TESTING),
    "smoke_passed": (P.SMOKE_TESTING, P.ACTIVATING),
    "smoke_failed": (P.SMOKE_TESTING, P.ROLLED_BACK),
    "activated": (P.ACTIVATING, P.PROBATION),
    "probation_passed": (P.PROBATION, P.COMMITTED),
    "probation_failed": (P.PROBATION, P.ROLLED_BACK),
}
TAKES_REASON = {"verification_failed", "smoke_failed", "probation_failed"}
NEXT = {legal_in: step for step, (legal_in, _) in STEPS.items() if step not in TAKES_REASON}
"""The input that moves each busy phase on when all goes well."""
FAILS = {legal_in: step for step, (legal_in, _) in STEPS.items() if step in TAKES_REASON}
"""The phase's own failure input, where it has one."""

# Every edge an event may record.
ALLOWED_EDGES = (
    {(phase, P.DOWNLOADING) for phase in RESTING}  # a new assignment
    | {(before, after) for before, after in STEPS.values()}
    | {(phase, P.ROLLED_BACK) for phase in BUSY}  # any failure, a crash after activation
    | {(phase, P.IDLE) for phase in BEFORE_ACTIVATION}  # superseded before activation
    | {(P.STAGED, P.VERIFYING), (P.SMOKE_TESTING, P.VERIFYING)}  # restarted: verify again
)

bundles = st.sampled_from(sorted(BUNDLES))
reasons = st.sampled_from(["network", "hash mismatch", "golden vector 1", "NaN output", ""])


class DeviceUpdates(RuleBasedStateMachine):
    """One device agent: the lifecycle, its persisted state and its bundle store."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="lifecycle-"))
        self.store = BundleStore(self.root)
        self.state = UpdateState.initial(now=T0, epoch=EPOCH)
        self.now = T0
        self.on_disk: UpdateState | None = None  # what state.json holds; None once torn
        self.backup: UpdateState | None = None  # what state.json.bak holds
        self.had_last_good = False
        self.fresh_start = False  # the store lost every copy: the lineage starts over

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # --- the agent's plumbing ------------------------------------------------------------

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def persist(self, state: UpdateState) -> None:
        """The agent persists every new state before it acts on it."""
        self.store.save_state(state)
        if self.on_disk is not None:  # a valid state.json becomes the backup, a torn one does not
            self.backup = self.on_disk
        self.on_disk = self.state = state

    def persisted(self) -> UpdateState | None:
        """What the store should load: state.json, else state.json.bak, else nothing."""
        return self.on_disk if self.on_disk is not None else self.backup

    def apply(self, before: UpdateState, transition: Transition) -> None:
        """Check a transition against the table, then persist it."""
        after, events = transition
        if not events:
            assert after.phase is before.phase
        else:
            assert events[0].from_state is before.phase
            assert events[-1].to_state is after.phase
            for first, second in itertools.pairwise(events):
                assert first.to_state is second.from_state
            for event in events:
                assert (event.from_state, event.to_state) in ALLOWED_EDGES, event
                assert event.at == self.now
            assert after.history[-len(events) :] == tuple(events)
        if after is not before:
            assert after.sequence > before.sequence
            assert after.updated_at == self.now
        self.check_bundle_moves(before, after, events)
        self.persist(after)

    @staticmethod
    def check_bundle_moves(
        before: UpdateState, after: UpdateState, events: list[UpdateEvent]
    ) -> None:
        """The last good bundle moves only at commit; the active one only by (de)activation."""
        if after.last_good != before.last_good:
            assert before.phase is P.PROBATION and after.phase is P.COMMITTED
            assert before.target is not None and after.last_good == before.target.bundle
        if after.active != before.active:
            activated = before.target is not None and after.active == before.target.bundle
            rolled_back = after.active == before.last_good
            assert activated or rolled_back, (before, after)
            assert any(e.to_state in {P.PROBATION, P.ROLLED_BACK} for e in events)

    def refuse(self, before: UpdateState, attempt: Callable[[], Transition]) -> None:
        """An illegal input: the typed error, no change in memory or on disk."""
        on_disk = self.store.state_path.read_bytes()
        with pytest.raises(IllegalTransitionError):
            attempt()
        assert self.state == before
        assert self.store.state_path.read_bytes() == on_disk

    # --- inputs ---------------------------------------------------------------------------

    @initialize(provisioned=st.none() | bundles)
    def provision(self, provisioned: str | None) -> None:
        ref = None
        if provisioned is not None:
            ref = BUNDLES[provisioned]
            self.store.add(PAYLOADS[provisioned])
        self.persist(UpdateState.initial(ref, now=T0, epoch=EPOCH))

    @rule(letter=bundles, delta=st.integers(-2, 3))
    def assignment_seen(self, letter: str, delta: int) -> None:
        """An assignment version near the last one handled: repeats, older ones and newer ones."""
        before, bundle, now = self.state, BUNDLES[letter], self.tick()
        assignment = (before.handled_assignment or 0) + delta
        if assignment < 0:
            self.refuse(before, lambda: before.assignment_seen(bundle, assignment, now))
            return
        transition = before.assignment_seen(bundle, assignment, now)
        handled = before.handled_assignment
        if handled is not None and assignment <= handled:
            assert transition.state is before and transition.events == []
            return
        after = transition.state
        assert after.handled_assignment == assignment
        same_target = before.target is not None and before.target.bundle == bundle
        if before.phase in BUSY and same_target:
            assert after.phase is before.phase and transition.events == []
            assert after.target is not None and after.target.key == (bundle.sha256, assignment)
        elif after.active == bundle:
            assert after.phase in RESTING  # already running it: nothing to install
        else:
            assert after.phase is P.DOWNLOADING
            assert after.target is not None and after.target.key == (bundle.sha256, assignment)
            assert after.restarts == 0 and after.started_at == now
        self.apply(before, transition)

    @rule(step=st.sampled_from(sorted(STEPS)), reason=reasons)
    def any_input(self, step: str, reason: str) -> None:
        """An input out of the blue: legal in one phase, refused in the others."""
        self.take(step, reason)

    @precondition(lambda self: self.state.phase in NEXT)
    @rule(steps=st.integers(1, len(NEXT)), fail_last=st.booleans(), reason=reasons)
    def advance(self, steps: int, fail_last: bool, reason: str) -> None:
        """The agent's work going as planned for a few steps, the last one perhaps failing."""
        for index in range(steps):
            phase = self.state.phase
            if phase not in NEXT:
                return
            last = index == steps - 1
            self.take(
                FAILS[phase] if last and fail_last and phase in FAILS else NEXT[phase], reason
            )
            self.check_invariants_now()

    def take(self, step: str, reason: str) -> None:
        before, now = self.state, self.tick()
        legal_in, leads_to = STEPS[step]
        method = getattr(before, step)
        args = (reason, now) if step in TAKES_REASON else (now,)
        if before.phase is not legal_in:
            self.refuse(before, lambda: method(*args))
            return
        if step == "verified":
            assert before.target is not None
            self.store.add(BY_SHA[before.target.bundle.sha256])  # installed, then persisted
        transition = method(*args)
        assert transition.state.phase is leads_to
        (event,) = transition.events
        if step in TAKES_REASON:
            assert event.reason.endswith(reason)
        self.apply(before, transition)

    @rule(reason=reasons)
    def failed(self, reason: str) -> None:
        """A download error, a crash in a worker, a timeout: whatever the phase."""
        before, now = self.state, self.tick()
        if before.phase in RESTING:
            self.refuse(before, lambda: before.failed(reason, now))
            return
        transition = before.failed(reason, now)
        assert transition.state.phase is P.ROLLED_BACK
        self.apply(before, transition)

    @rule(bundle_present=st.booleans(), torn=st.booleans())
    def power_cut(self, bundle_present: bool, torn: bool) -> None:
        """The agent restarts: reopens the store, loads the state and recovers.

        ``torn``: state.json lost its second half first (bit rot; an atomic write
        cannot tear it), so the store must fall back to state.json.bak.
        """
        if torn and self.on_disk is not None:
            raw = self.store.state_path.read_bytes()
            self.store.state_path.write_bytes(raw[: len(raw) // 2])
            self.on_disk = None
        expected = self.persisted()
        source = "state.json" if self.on_disk is not None else "state.json.bak"
        self.store = BundleStore(self.root)
        before = self.store.load_state(now=self.tick())
        if expected is None:  # both copies lost: a new lineage, nothing to fall back to
            assert self.store.state_source == "fresh" and before.phase is P.IDLE
            assert before.active is None and before.last_good is None
        else:
            assert before == expected
            assert self.store.state_source == source
        if expected != self.state:  # an older copy (or none): judge from what was loaded
            self.fresh_start = True
            self.had_last_good = before.last_good is not None
        self.state = before
        transition = recover(
            before, self.now, bundle_present=bundle_present, max_restarts=MAX_RESTARTS
        )
        after, phase = transition.state, before.phase
        if phase in RESTING or phase is P.DOWNLOADING:
            assert after is before
        elif phase in SERVING_TARGET:
            assert after.phase is P.ROLLED_BACK and after.active == before.last_good
        elif not bundle_present or before.restarts >= MAX_RESTARTS:
            assert after.phase is P.ROLLED_BACK
        else:
            assert after.phase is P.VERIFYING and after.restarts == before.restarts + 1
        if after is not before:
            self.apply(before, transition)
        elif expected is None:
            self.persist(after)

    @precondition(lambda self: self.state.phase in RESTING)
    @rule(max_bundles=st.integers(0, 3))
    def prune(self, max_bundles: int) -> None:
        """The agent tidies the store after an update has finished."""
        stored = set(self.store.bundles())
        persisted = self.persisted()
        protected = set() if persisted is None else protected_bundles(persisted)
        deleted = self.store.prune(keep=[], max_bundles=max_bundles)
        assert not protected & set(deleted)
        assert stored & protected <= set(self.store.bundles())
        assert len(self.store.bundles()) <= max_bundles + len(protected)

    def check_invariants_now(self) -> None:
        """Every invariant, between the steps of one rule."""
        self.always_something_to_fall_back_to()
        self.active_is_last_good_unless_trying_the_target()
        self.persisted_state_round_trips()
        self.protected_bundles_name_what_the_state_needs()

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def always_something_to_fall_back_to(self) -> None:
        state = self.state
        if state.last_good is not None:
            self.had_last_good = True
        if self.had_last_good:
            assert state.last_good is not None, "a committed bundle was forgotten"

    @invariant()
    def active_is_last_good_unless_trying_the_target(self) -> None:
        state = self.state
        if state.phase is P.PROBATION:
            assert state.target is not None and state.active == state.target.bundle
        else:  # in activating too: the swap is not done yet
            assert state.active == state.last_good
        # when probation began: kept as a record once committed, cleared by a rollback
        on_probation = state.phase in {P.PROBATION, P.COMMITTED}
        assert (state.probation_started_at is not None) is on_probation
        if state.phase in BUSY:
            assert state.target is not None
            assert state.handled_assignment == state.target.assignment

    @invariant()
    def persisted_state_round_trips(self) -> None:
        state = self.state
        assert UpdateState.model_validate_json(state.model_dump_json()) == state
        if self.on_disk is not None:
            assert UpdateState.model_validate_json(self.store.state_path.read_bytes()) == state
        assert len(state.history) <= HISTORY_LIMIT
        assert state.epoch == EPOCH or self.fresh_start

    @invariant()
    def protected_bundles_name_what_the_state_needs(self) -> None:
        state = self.state
        protected = protected_bundles(state)
        for ref in (state.active, state.last_good):
            assert ref is None or ref.sha256 in protected
        if state.target is not None:
            assert state.target.bundle.sha256 in protected


DeviceUpdates.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_device_update_lifecycle = DeviceUpdates.TestCase
