"""The rollout planner under random input sequences (Hypothesis stateful testing).

A simulated fleet server drives the real :class:`RolloutState` of a small
random fleet (3-12 cameras, 1-3 waves with short device timeouts, health
windows and gate timeouts, random pins, tags, named and counted waves, seeds,
devices that already run the new bundle, maintenance windows around the start
time, one or two approvers): device reports of every lifecycle phase with the
new, the previous, another or no bundle active and any target, ticks with the
clock moving on by random amounts or to just before, on and just after the
next deadline (device timeout, end of the health window, gate timeout, a
window opening) with healthy, bad, thin or missing telemetry for the gate
:meth:`RolloutState.gate_due` names, the operator's commands (any approver)
whether or not they apply, and server restarts (the state through JSON and
back, then :func:`recover`). Calm runs (nobody fails, aborts or misses a
deadline) get through every wave; the others explore failures. Besides the
input it applies, each step also judges what-if inputs it does not apply:
every telling report from one device of each status, a tick at each coming
deadline, every approver while an approval is due. The rules and the tables
below are written from the planner's docstrings, not from its code, and
checked after every step:

* every input leaves the state it was given untouched; an illegal command
  raises :class:`IllegalRolloutTransitionError` (approving twice as the same
  person, or unnamed where two people must approve, too); a state that
  changes gets a higher ``sequence`` and ``updated_at`` now, one that does
  not comes with no action and no event; every event is dated now;
* the state round-trips through JSON exactly; every planned device is in
  exactly one wave (sorted, with its own wave number) and the pinned ones in
  none;
* device statuses move only along the allowed edges (an outcome is never
  replaced by ``pending``/``sent``/``in-progress``; a timed-out, failed or
  rolled-back device may still commit later; only a rollback makes
  ``rolled-back``); ``sent_at`` and ``rollback_sent`` never change once set;
  each report follows the docstring's rules, touches only its own device and
  is idempotent;
* a finished rollout never becomes live again and only device reports still
  change it; ``finished_at`` is set iff it is finished; ``paused_from`` iff
  it is paused; waves before the current one passed or were skipped, waves
  after it never started, at most one (the current) runs or is watched, and
  a decided wave never changes again; approvals are by different people, and
  a live rollout keeps a partial approval only while that approval is due;
* every ``Assign`` sends the new bundle to exactly the devices of the wave
  being opened, or (a tick) of the running wave, that may go: outside any
  maintenance window, inside their windows, or already on the bundle (from
  :func:`recover`: to the devices sent it and unfinished); every
  ``Rollback`` sends the previous bundle to exactly the devices that were sent
  the new one; a rollout ends ``rolled-back`` only with one; no step both
  sends the bundle and rolls it back;
* after a tick no device of a running wave is past its deadline or may go
  but waits, a running wave can still reach its threshold, a watched wave is
  inside its health window or waits for telemetry inside its gate timeout; a
  wave is watched only once every device was sent and answered, and passes
  only after its health window, which counts from its last commit;
* :meth:`RolloutState.gate_due` agrees with :meth:`RolloutState.tick`: when
  it says None, no telemetry changes what a tick does; when it names a wave,
  healthy telemetry for it passes that wave, bad telemetry fails it, and
  telemetry for other waves changes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from edge_runtime.update.lifecycle import UpdatePhase
from fleet_server.errors import IllegalRolloutTransitionError, RolloutError
from fleet_server.quality_gate import Baseline, GateOutcome, QualityFigures, WaveTelemetry
from fleet_server.rollout_plan import (
    Assign,
    DeviceProgress,
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
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec

P = UpdatePhase
D = DeviceStatus
R = RolloutStatus
W = WaveStatus

NEW = "b" * 64
OLD = "a" * 64
OTHER = "c" * 64
T0 = 1_800_000_000.0
MAX_DEVICES = 12

HEALTHY = QualityFigures(
    predictions=1000, errors=0, latency_p95_ms=20.0, mean_confidence=0.8, class_counts={"a": 600}
)
TELEMETRY = {
    "healthy": WaveTelemetry(new=HEALTHY, previous=HEALTHY),
    "bad": WaveTelemetry(new=HEALTHY.model_copy(update={"latency_p95_ms": 41.2}), previous=HEALTHY),
    "thin": WaveTelemetry(new=HEALTHY.model_copy(update={"predictions": 10}), previous=HEALTHY),
}
"""Healthy passes every gate below, bad fails the latency check, thin is undecided."""

# --- the vocabulary, as the docstrings of rollout_plan.py and statuses.py define it ----------

RESTING = {P.IDLE.value, P.COMMITTED.value, P.ROLLED_BACK.value}
WORKING = {p.value for p in P} - RESTING
LIVE = {R.PENDING, R.RUNNING, R.PAUSED, R.AWAITING_APPROVAL}
FINISHED = set(R) - LIVE
OUTCOMES = {D.COMMITTED, D.FAILED, D.TIMED_OUT, D.ROLLED_BACK}
UNANSWERED = {D.SENT, D.IN_PROGRESS, D.TIMED_OUT}
UNFINISHED = {D.SENT, D.IN_PROGRESS}
DECIDED_WAVES = {W.PASSED, W.FAILED, W.ABORTED, W.SKIPPED}
OPEN_WAVES = {W.RUNNING, W.WATCHING}

DEVICE_EDGES: dict[DeviceStatus, set[DeviceStatus]] = {
    D.PENDING: {D.SENT, D.COMMITTED},  # its wave opens (already on the bundle: committed)
    D.SENT: {D.IN_PROGRESS, D.COMMITTED, D.FAILED, D.TIMED_OUT, D.ROLLED_BACK},
    D.IN_PROGRESS: {D.COMMITTED, D.FAILED, D.TIMED_OUT, D.ROLLED_BACK},
    D.TIMED_OUT: {D.COMMITTED, D.FAILED, D.ROLLED_BACK},  # a late answer still counts
    D.COMMITTED: {D.ROLLED_BACK},  # only after the rollout's own rollback
    D.FAILED: {D.COMMITTED},  # reports converge: a device later seen on the bundle
    D.ROLLED_BACK: {D.COMMITTED},
}
"""Every status change one input may make to one device."""

WAVE_EDGES: dict[WaveStatus, set[WaveStatus]] = {
    W.PENDING: {W.RUNNING, W.SKIPPED},
    W.RUNNING: {W.WATCHING, W.PASSED, W.FAILED, W.ABORTED},  # settle and decide in one tick
    W.WATCHING: {W.PASSED, W.FAILED, W.ABORTED},
}

OPENS_WAVES = {"start", "approve", "tick"}
STOPS = {"abort", "tick"}


def _off(phase: str | None, active: str | None) -> bool:
    return phase in RESTING and active != NEW


def _need(spec: WaveSpec, size: int) -> int:
    return math.ceil(round(spec.success_threshold * size, 9))


def _on(phase: str | None, active: str | None) -> bool:
    return phase in RESTING and active == NEW


def _may_go(state: RolloutState, index: int, now: float) -> tuple[str, ...]:
    """Wave ``index``'s pending devices that may be sent at ``now``: outside any maintenance
    window, inside their windows, or already on the bundle (they commit, window or not)."""
    schedules = state.spec.schedules()
    return tuple(
        d
        for d in state.waves[index].devices
        if state.devices[d].status is D.PENDING
        and (
            _on(state.devices[d].phase, state.devices[d].active)
            or d not in schedules
            or schedules[d].is_open(now)
        )
    )


# --- the fleet ----------------------------------------------------------------------------

WINDOWS: list[dict[str, tuple[str, ...]]] = [
    {},
    {},
    {"dock": ("08:01-08:03 UTC",)},  # T0 is Fri 08:00 UTC: opens in a minute, for two
    {"dock": ("07:00-08:02 UTC",)},  # open, closes in two minutes until tomorrow 07:00
    {"dock": ("08:01-08:03 UTC",), "line": ("08:02-09:00 UTC",)},  # both: 08:02-08:03
    {"line": ("Fri 08:00-08:01 UTC", "Sat 00:00-00:30 UTC")},
]
"""Maintenance windows of the tags around T0 (a device with both tags needs both open)."""


@st.composite
def rollout_specs(draw: st.DrawFn) -> RolloutSpec:
    """3-12 devices (some pinned, some tagged, some already on a bundle) in 1-3 short waves."""
    n = draw(st.integers(3, MAX_DEVICES))
    ids = [f"cam-{i:02d}" for i in range(n)]
    devices = []
    for device_id in ids:
        pinned = draw(st.sampled_from([None] * 8 + [OLD, OTHER]))
        tags = draw(st.sampled_from([(), ("dock",), ("line",), ("dock", "line")]))
        phase, active = draw(
            st.sampled_from(
                [(None, None)] * 4
                + [("idle", OLD), ("committed", NEW), ("downloading", OLD), ("rolled-back", OLD)]
            )
        )
        devices.append(
            TargetDevice(
                device_id=device_id, tags=tags, pinned_bundle=pinned, phase=phase, active=active
            )
        )
    n_waves = draw(st.integers(1, 3))
    named_used = False
    waves = []
    for index in range(n_waves):
        if index == n_waves - 1:
            selector: dict[str, Any] = {"percent": 100.0}
        else:
            kind = draw(st.sampled_from(["count", "percent", "tags", "devices"]))
            if kind == "devices" and named_used:
                kind = "count"
            if kind == "count":
                selector = {"count": draw(st.integers(1, n))}
            elif kind == "percent":
                selector = {"percent": draw(st.sampled_from([10.0, 25.0, 50.0]))}
            elif kind == "tags":
                selector = {"tags": ("dock",)}
            else:
                named_used = True
                chosen = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3, unique=True))
                selector = {"devices": tuple(chosen)}
        waves.append(
            WaveSpec(
                **selector,
                success_threshold=draw(st.sampled_from([0.5, 0.75, 1.0])),
                device_timeout_s=draw(st.sampled_from([5.0, 20.0, 60.0])),
                health_window_s=draw(st.sampled_from([0.0, 3.0, 15.0])),
                gate_timeout_s=draw(st.sampled_from([None, 5.0, 30.0])),
                **draw(
                    st.sampled_from(
                        [
                            {"approval_before_next": False},
                            {"approval_before_next": True},
                            {"approval_before_next": True, "approvals_required": 2},
                        ]
                    )
                ),
            )
        )
    baseline = draw(
        st.sampled_from(
            [
                None,
                Baseline(mean_confidence=0.82, latency_budget_ms=50.0, class_distribution={"a": 1}),
            ]
        )
    )
    return RolloutSpec(
        bundle=NEW,
        previous_bundle=draw(st.sampled_from([OLD, None])),
        devices=tuple(devices),
        waves=tuple(waves),
        seed=draw(st.integers(0, 2**16)),
        baseline=baseline,
        windows=draw(st.sampled_from(WINDOWS)),
        ignore_windows=draw(st.sampled_from([False, False, False, True])),
    )


report_gaps = st.sampled_from([0.0, 0.5, 1.0, 2.0])
tick_gaps = st.one_of(
    st.sampled_from([0.0, 1.0, 3.0, 5.0, 15.0, 20.0, 30.0, 60.0, 300.0]),
    st.floats(0.0, 70.0, allow_nan=False),
)
phases = st.sampled_from(list(P))
MEANINGFUL_REPORTS = [
    (P.COMMITTED, NEW, NEW),  # committed ours
    (P.IDLE, NEW, None),  # seen resting on ours
    (P.ROLLED_BACK, OLD, NEW),  # rolled ours back
    (P.ROLLED_BACK, OLD, None),  # rolled something back: ours if last seen working
    (P.ROLLED_BACK, OLD, OLD),  # an older update's failure, retained
    (P.DOWNLOADING, OLD, NEW),  # working on ours
    (P.PROBATION, NEW, None),  # working, target unknown
    (P.VERIFYING, OLD, OLD),  # working on another bundle
    (P.IDLE, OLD, None),  # resting on the previous bundle
    (P.COMMITTED, OLD, OLD),  # committed the previous bundle (a rollback done)
    (P.IDLE, None, None),  # resting on nothing (assignment withdrawn)
]
"""(phase, active, target) of the reports the planner's rules tell apart."""
device_states = st.one_of(
    st.sampled_from(MEANINGFUL_REPORTS),
    st.tuples(phases, st.sampled_from([NEW, OLD, OTHER, None]), st.sampled_from([NEW, OLD, None])),
)


class _Long(str):
    """A reason over every length limit, printed short in a failing example."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"'x' * {len(self)}"


reasons = st.sampled_from(
    ["", "probation failed", "smoke test failed: golden 2 ✗", _Long("x" * 1500)]
)
picks = st.integers(0, 10_000)


nudges = st.sampled_from([-0.001, 0.0, 0.0, 0.001])
"""Where a tick lands around a deadline: just before, exactly on it, just after."""
qualities = st.sampled_from(["healthy", "bad", "thin", "missing"])
commands = st.sampled_from(["start", "pause", "resume", "approve", "abort"])
approvers = st.sampled_from([None, "alice", "bob"])
ANSWERS = {R.PENDING: "start", R.AWAITING_APPROVAL: "approve", R.PAUSED: "resume"}


class RolloutPlanner(RuleBasedStateMachine):
    """One rollout as the fleet server drives it: persisted state, inputs, restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.state: RolloutState
        self.now = T0
        self.ids: list[str] = []
        self.pinned: set[str] = set()
        self.calm = False
        self.steps = 0

    @initialize(
        spec=rollout_specs(),
        start_at_once=st.sampled_from([True, True, True, False]),
        calm=st.sampled_from([False, True, False]),
    )
    def plan(self, spec: RolloutSpec, start_at_once: bool, calm: bool) -> None:
        """``calm``: no device rolls back by itself, nobody aborts, nobody misses a deadline.

        Calm runs get through every wave; the others explore failures.
        """
        self.calm = calm
        self.state = RolloutState.create(spec, now=T0)
        self.ids = [d.device_id for d in spec.devices]
        self.pinned = {d.device_id for d in spec.devices if d.pinned_bundle is not None}
        assert self.state.status is R.PENDING
        assert self.state.sequence == 0
        if start_at_once:
            self._command("start", T0)

    def teardown(self) -> None:
        if hasattr(self, "state"):
            event(f"final status {self.state.status.value}")
            event(f"reached wave {self.state.current_wave + 1} of {len(self.state.waves)}")
            event(f"calm={self.calm} steps={self.steps // 10 * 10}+")

    # --- plumbing ---------------------------------------------------------------------------

    def _checked(
        self,
        old: RolloutState,
        call: Callable[[], Step],
        now: float,
        kind: str,
        *,
        guard: bool = True,
    ) -> Step:
        """One input's step: the old state stays as it was (``guard``: checked here, else
        around a batch of what-if probes, whose steps are not applied), the step keeps every
        rule."""
        frozen = old.model_dump() if guard else None
        step = call()
        if frozen is not None:
            assert old.model_dump() == frozen, "an input changed the state it was given"
        new = step.state
        assert isinstance(new, RolloutState)
        self._check_history(old, step, now, kind)
        self._check_device_edges(old, new, kind)
        self._check_wave_edges(old, new)
        self._check_actions(old, step, now, kind)
        return step

    @staticmethod
    def _refused(old: RolloutState, call: Callable[[], Step]) -> None:
        """An operator command that does not apply: a typed error and nothing changes."""
        frozen = old.model_dump()
        with pytest.raises(IllegalRolloutTransitionError):
            call()
        assert old.model_dump() == frozen

    def _sent(self, statuses: set[DeviceStatus]) -> list[str]:
        return sorted(d for d, p in self.state.devices.items() if p.status in statuses)

    # --- what every step keeps ------------------------------------------------------------

    @staticmethod
    def _check_history(old: RolloutState, step: Step, now: float, kind: str) -> None:
        new, actions, events = step
        assert new.spec == old.spec
        assert new.created_at == old.created_at
        assert new.skipped == old.skipped
        # sequence: grows with every change; nothing happens without a change
        assert new.sequence >= old.sequence
        if new != old:
            assert new.sequence > old.sequence
            assert new.updated_at == now
        else:
            assert actions == [], actions
            assert events == [], events
        for e in events:
            assert e.at == now
            assert e.wave is None or 0 <= e.wave < len(new.waves)
        # finished stays finished; only device reports still change it
        if old.finished:
            assert new.status is old.status
            assert new.finished_at == old.finished_at
            if kind != "report":
                assert new == old
        if not old.finished and new.finished:
            assert new.finished_at == now
            assert any(isinstance(a, Notify) for a in actions)
        if old.started_at is not None:
            assert new.started_at == old.started_at
        assert new.current_wave >= old.current_wave
        if old.rollback_completed_at is not None:
            assert new.rollback_completed_at == old.rollback_completed_at
        elif new.rollback_completed_at is not None:
            assert new.rollback_completed_at == now
            assert EventKind.ROLLBACK_COMPLETE in [e.kind for e in events]

    @staticmethod
    def _check_device_edges(old: RolloutState, new: RolloutState, kind: str) -> None:
        """Allowed status edges only; sent_at and rollback_sent stay once set."""
        assert set(new.devices) == set(old.devices)
        for d, p in new.devices.items():
            q = old.devices[d]
            assert p.wave == q.wave
            if q.sent_at is not None:
                assert p.sent_at == q.sent_at
            if q.rollback_sent:
                assert p.rollback_sent
            elif p.rollback_sent:
                assert kind in STOPS
            if p.status is q.status:
                continue
            assert p.status in DEVICE_EDGES[q.status], (d, q.status, p.status, kind)
            if p.status is D.TIMED_OUT:
                assert kind == "tick"
            if q.status is D.PENDING:
                assert kind in OPENS_WAVES
            if p.status in (D.IN_PROGRESS, D.FAILED):
                assert kind == "report"
            if p.status is D.ROLLED_BACK:
                assert p.rollback_sent

    @staticmethod
    def _check_wave_edges(old: RolloutState, new: RolloutState) -> None:
        """Allowed wave edges only; a decided wave never changes again."""
        for i, (w, v) in enumerate(zip(new.waves, old.waves, strict=True)):
            assert w.devices == v.devices
            if v.status in DECIDED_WAVES:
                assert w == v, i
            elif w.status is not v.status:
                assert w.status in WAVE_EDGES[v.status], (i, v.status, w.status)
            if v.started_at is not None:
                assert w.started_at == v.started_at

    @staticmethod
    def _check_actions(old: RolloutState, step: Step, now: float, kind: str) -> None:
        """Assign: the new bundle to the wave opened; Rollback: the previous one to all sent it."""
        new, actions, _ = step
        assigns = [a for a in actions if isinstance(a, Assign)]
        rollbacks = [a for a in actions if isinstance(a, Rollback)]
        assert len(assigns) + len(rollbacks) <= 1
        for a in assigns:
            assert kind in OPENS_WAVES
            assert a.bundle_sha == NEW
            index = new.current_wave
            assert a.device_ids
            # the wave opened now, or (a tick) the running wave's devices whose windows opened
            assert a.device_ids == _may_go(old, index, now)
            if old.waves[index].status is W.PENDING:
                assert index > old.current_wave or old.status is R.PENDING
            else:
                assert kind == "tick"
                assert index == old.current_wave
                assert old.waves[index].status is W.RUNNING
            for d in a.device_ids:
                assert old.devices[d].status is D.PENDING
                assert new.devices[d].sent_at == now
        newly_sent = {
            d
            for d, p in new.devices.items()
            if old.devices[d].sent_at is None and p.sent_at is not None
        }
        assert newly_sent == {d for a in assigns for d in a.device_ids}
        for i, (w, v) in enumerate(zip(new.waves, old.waves, strict=True)):
            if v.status is W.PENDING and w.status is W.RUNNING:  # opened: who may go went
                assert {a.device_ids for a in assigns} == ({_may_go(old, i, now)} - {()})
        for r in rollbacks:
            assert kind in STOPS
            assert r.to_sha == new.spec.previous_bundle
            was_sent = tuple(sorted(d for d, p in old.devices.items() if p.sent_at is not None))
            assert r.device_ids
            assert r.device_ids == was_sent
            assert all(new.devices[d].rollback_sent for d in r.device_ids)
            assert old.status in LIVE
            assert new.status is R.ROLLED_BACK
        if old.status is not R.ROLLED_BACK and new.status is R.ROLLED_BACK:
            assert len(rollbacks) == 1

    # --- device reports -----------------------------------------------------------------------

    def _report(
        self,
        device: str,
        phase: UpdatePhase,
        *,
        active: str | None,
        target: str | None,
        reason: str = "",
        now: float,
        as_enum: bool = False,
    ) -> Step:
        old = self.state
        # what-ifs first: every telling report from one device of each status
        probed = {p.status: d for d, p in sorted(old.devices.items(), reverse=True)}
        probed[old.devices[device].status if device in old.devices else D.PENDING] = device
        frozen = old.model_dump()
        for d in probed.values():
            for probe in MEANINGFUL_REPORTS:
                self._report_step(old, d, *probe, reason=reason, now=now, guard=False)
        assert old.model_dump() == frozen, "a report changed the state it was given"
        step = self._report_step(
            old, device, phase, active, target, reason=reason, now=now, as_enum=as_enum
        )
        self.state = step.state
        self.now = now
        self.steps += 1
        return step

    def _report_step(
        self,
        old: RolloutState,
        device: str,
        phase: UpdatePhase,
        active: str | None,
        target: str | None,
        *,
        reason: str,
        now: float,
        as_enum: bool = False,
        guard: bool = True,
    ) -> Step:
        """A report's step, checked against the docstring's rules."""
        before = old.devices.get(device)

        def call() -> Step:
            name: Any = phase if as_enum else phase.value
            return old.device_report(device, name, active, reason, now, target_sha=target)

        step = self._checked(old, call, now, "report", guard=guard)
        new = step.state
        assert all(isinstance(a, Notify) for a in step.actions)
        if before is None:  # outside the rollout or skipped: ignored
            assert step == Step(old, [], [])
            return step
        p = new.devices[device]
        assert p.phase == phase.value
        assert p.active == active
        # a report touches its own device only (and may complete the rollback)
        assert _with_device(new, device, before, old) == old
        assert p.status is _expected_status(before, phase, active, target), (before, p)
        if p.status is D.FAILED and before.status is not D.FAILED:
            assert p.reason
            assert len(p.reason) <= 1024
            assert p.reason[:20] == (reason or "rolled back (no reason given)")[:20]
        if p.status is not before.status and p.status in OUTCOMES:
            assert p.finished_at == now
        # repeats change nothing
        again = new.device_report(device, phase.value, active, reason, now + 1.0, target_sha=target)
        assert again == Step(new, [], [])
        return step

    @rule(
        pick=picks,
        status=st.sampled_from([*D, None]),
        report=device_states,
        reason=reasons,
        gap=report_gaps,
        as_enum=st.booleans(),
    )
    def device_reports(
        self,
        *,
        pick: int,
        status: DeviceStatus | None,
        report: tuple[UpdatePhase, str | None, str | None],
        reason: str,
        gap: float,
        as_enum: bool,
    ) -> None:
        """A device in ``status`` (else one sent the bundle; None: any device of the spec,
        pinned ones too) reports a phase, an active bundle and a target."""
        sent = sorted(d for d, p in self.state.devices.items() if p.sent_at is not None)
        chosen = sorted(d for d, p in self.state.devices.items() if p.status is status)
        candidates = (chosen or sent or self.ids) if status is not None else self.ids
        device = candidates[pick % len(candidates)]
        phase, active, target = report
        self._report(
            device,
            phase,
            active=active,
            target=target,
            reason=reason,
            now=self.now + gap,
            as_enum=as_enum,
        )

    @rule(pick=picks, phase=phases, stranger=st.booleans())
    def foreign_or_garbled_report(self, pick: int, phase: UpdatePhase, stranger: bool) -> None:
        """A device outside the rollout is ignored; an unknown phase is a typed error."""
        if stranger:
            self._report("stranger", phase, active=NEW, target=NEW, now=self.now)
            return
        old = self.state
        frozen = old.model_dump()
        device = self.ids[pick % len(self.ids)]
        if device in old.devices:
            with pytest.raises(RolloutError, match="unknown phase"):
                old.device_report(device, "exploded", NEW, "", self.now)
        else:
            assert old.device_report(device, "exploded", NEW, "", self.now) == Step(old, [], [])
        assert old.model_dump() == frozen

    @precondition(lambda self: self._sent(UNANSWERED))
    @rule(pick=picks, gap=report_gaps, working=st.sampled_from([P.DOWNLOADING, P.PROBATION]))
    def device_commits(self, pick: int, gap: float, working: UpdatePhase) -> None:
        """A device sent the bundle works on it, then commits it."""
        candidates = self._sent(UNANSWERED)
        device = candidates[pick % len(candidates)]
        self._report(device, working, active=OLD, target=NEW, now=self.now + gap)
        self._report(device, P.COMMITTED, active=NEW, target=NEW, now=self.now)

    @precondition(lambda self: not self.calm and self._sent(UNANSWERED))
    @rule(pick=picks, gap=report_gaps, reason=reasons, about=st.sampled_from([NEW, None]))
    def device_rolls_the_bundle_back(
        self, pick: int, gap: float, reason: str, about: str | None
    ) -> None:
        """A device sent the bundle rolls it back (smoke test, probation) and says why."""
        candidates = self._sent(UNANSWERED)
        device = candidates[pick % len(candidates)]
        now = self.now + gap
        self._report(device, P.ROLLED_BACK, active=OLD, target=about, reason=reason, now=now)

    @precondition(
        lambda self: (
            self.state.status in (R.RUNNING, R.PAUSED)
            and any(
                self.state.devices[d].status in UNFINISHED
                for d in self.state.waves[self.state.current_wave].devices
            )
        )
    )
    @rule(gap=report_gaps)
    def wave_commits(self, gap: float) -> None:
        """Every unfinished device of the current wave commits."""
        now = self.now + gap
        for d in self.state.waves[self.state.current_wave].devices:
            if self.state.devices[d].status in UNFINISHED:
                self._report(d, P.COMMITTED, active=NEW, target=NEW, now=now)

    @precondition(
        lambda self: any(
            p.rollback_sent and not _off(p.phase, p.active) for p in self.state.devices.values()
        )
    )
    @rule(pick=picks, gap=report_gaps, phase=st.sampled_from([P.IDLE, P.COMMITTED]))
    def device_follows_the_rollback(self, pick: int, gap: float, phase: UpdatePhase) -> None:
        candidates = sorted(
            d
            for d, p in self.state.devices.items()
            if p.rollback_sent and not _off(p.phase, p.active)
        )
        device = candidates[pick % len(candidates)]
        previous = self.state.spec.previous_bundle
        self._report(device, phase, active=previous, target=OLD, now=self.now + gap)

    @precondition(
        lambda self: (
            not self.calm
            and self.state.status is R.RUNNING
            and any(
                self.state.devices[d].status in UNFINISHED
                for d in self.state.waves[self.state.current_wave].devices
            )
        )
    )
    @rule(margin=st.sampled_from([-1, 0, 0, 1]), quality=qualities)
    def stragglers(self, margin: int, quality: str) -> None:
        """``margin`` devices more than the threshold needs commit; the others miss the deadline."""
        state = self.state
        wave, spec = state.waves[state.current_wave], state.spec.waves[state.current_wave]
        committed = sum(state.devices[d].status is D.COMMITTED for d in wave.devices)
        unfinished = [d for d in wave.devices if state.devices[d].status in UNFINISHED]
        for d in unfinished[: max(0, _need(spec, len(wave.devices)) + margin - committed)]:
            self._report(d, P.COMMITTED, active=NEW, target=NEW, now=self.now)
        self._tick(max([self.now, *self._device_deadlines()]), quality, other_waves=False)

    @precondition(lambda self: self.calm and not self.state.finished)
    @rule(gap=report_gaps)
    def happy_path(self, gap: float) -> None:
        """One wave's worth of the good case: start or resume, commits, healthy gate, approval."""
        wave = self.state.current_wave
        for _ in range(6):
            state = self.state
            if state.finished or state.current_wave != wave:
                return
            if state.status in ANSWERS:
                self.operator_moves_it_on(gap)
            elif any(state.devices[d].status in UNFINISHED for d in state.waves[wave].devices):
                self.wave_commits(gap)
            else:
                self.tick_at_the_next_deadline(0.0, "healthy", other_waves=False)

    # --- the clock ------------------------------------------------------------------------

    @rule(gap=tick_gaps, quality=qualities, other_waves=st.booleans())
    def tick(self, gap: float, quality: str, other_waves: bool) -> None:
        self._tick(self.now + gap, quality, other_waves)

    def _device_deadlines(self) -> list[float]:
        state = self.state
        spec = state.spec.waves[state.current_wave]
        return [
            p.sent_at + spec.device_timeout_s
            for p in (state.devices[d] for d in state.waves[state.current_wave].devices)
            if p.status in UNFINISHED and p.sent_at is not None
        ]

    @rule(nudge=nudges, quality=qualities, other_waves=st.booleans())
    def tick_at_the_next_deadline(self, nudge: float, quality: str, other_waves: bool) -> None:
        """Just before, on or just after the next device deadline, window end or gate timeout."""
        state = self.state
        wave, spec = state.waves[state.current_wave], state.spec.waves[state.current_wave]
        members = [state.devices[d] for d in wave.devices]
        deadlines = self._device_deadlines()
        if wave.status is W.RUNNING and all(p.status in OUTCOMES for p in members):
            commits = [p.finished_at for p in members if p.status is D.COMMITTED]
            deadlines.extend(t + spec.health_window_s for t in commits if t is not None)
        if wave.watch_until is not None:
            deadlines.append(wave.watch_until)
            if spec.gate_timeout_s is not None:
                deadlines.append(wave.watch_until + spec.gate_timeout_s)
        deadlines.extend(self._window_openings())
        later = [t + nudge for t in deadlines if t + nudge >= self.now]
        self._tick(min(later, default=self.now), quality, other_waves)

    def _tick(self, now: float, quality: str, other_waves: bool) -> None:
        old = self.state
        if self.calm and old.status is R.RUNNING:  # stop short of every device deadline
            now = max(self.now, min([now, *(t - 0.01 for t in self._device_deadlines())]))
            quality = "healthy" if quality == "bad" else quality
        frozen = old.model_dump()
        for probe in self._upcoming(old):  # what-ifs first: a tick on each next deadline
            self._tick_step(old, probe, "missing", other_waves=False, guard=False)
        assert old.model_dump() == frozen, "a tick changed the state it was given"
        due = old.gate_due(now)
        self._check_gate_due(old, due, now)
        step = self._tick_step(old, now, quality, other_waves=other_waves)
        self.state = step.state
        self.now = now
        self.steps += 1

    def _upcoming(self, state: RolloutState) -> list[float]:
        """The next moments a tick should act: deadlines, end of window, gate timeout."""
        if state.status is not R.RUNNING:
            return [self.now + 10_000.0]  # nothing may move however late
        times = {self.now}
        wave, spec = state.waves[state.current_wave], state.spec.waves[state.current_wave]
        times.update(
            p.sent_at + spec.device_timeout_s
            for p in (state.devices[d] for d in wave.devices)
            if p.status in UNFINISHED and p.sent_at is not None
        )
        if wave.watch_until is not None:
            times.add(wave.watch_until)
            if spec.gate_timeout_s is not None:
                times.add(wave.watch_until + spec.gate_timeout_s)
        times.update(self._window_openings())
        return sorted(t for t in times if t >= self.now)

    def _window_openings(self) -> set[float]:
        """When the maintenance windows of the running wave's waiting devices open next."""
        state = self.state
        schedules = state.spec.schedules()
        if state.waves[state.current_wave].status is not W.RUNNING:
            return set()
        opens = (
            schedules[d].next_open(self.now)
            for d in state.waves[state.current_wave].devices
            if state.devices[d].status is D.PENDING and d in schedules
        )
        return {t for t in opens if t is not None}

    def _tick_step(
        self, old: RolloutState, now: float, quality: str, *, other_waves: bool, guard: bool = True
    ) -> Step:
        """A tick's step with the telemetry ``quality`` for the gate due, checked."""
        due = old.gate_due(now)
        telemetry: dict[int, WaveTelemetry] = {}
        if other_waves:
            telemetry = {i: TELEMETRY["bad"] for i in range(len(old.waves)) if i != due}
        if due is not None and quality != "missing":
            telemetry[due] = TELEMETRY[quality]
        step = self._checked(old, lambda: old.tick(now, telemetry), now, "tick", guard=guard)
        if old.status is not R.RUNNING:
            assert step == Step(old, [], [])
            return step
        self._check_deadlines(old, step.state, now)
        self._check_tick_kept_the_rules(old, step.state, now, due, quality)
        self._check_decisions(old, step.state, now, due, quality)
        return step

    @staticmethod
    def _check_deadlines(old: RolloutState, new: RolloutState, now: float) -> None:
        """A running rollout's tick times out exactly the devices at or past their deadline."""
        spec = old.spec.waves[old.current_wave]
        for d in old.waves[old.current_wave].devices:
            before, after = old.devices[d], new.devices[d]
            if before.status not in UNFINISHED:
                continue
            assert before.sent_at is not None
            if now >= before.sent_at + spec.device_timeout_s:
                assert after.status in (D.TIMED_OUT, D.ROLLED_BACK), (d, after.status)
            else:
                assert after.status in (before.status, D.ROLLED_BACK), (d, after.status)
            if after.status is D.ROLLED_BACK:  # the tick failed the wave; it was off already
                assert new.status is R.ROLLED_BACK
                assert _off(after.phase, after.active)

    @staticmethod
    def _check_tick_kept_the_rules(
        old: RolloutState, new: RolloutState, now: float, due: int | None, quality: str
    ) -> None:
        """Deadlines, thresholds, health windows and gate timeouts as the docstring says."""
        index = new.current_wave
        wave, spec = new.waves[index], new.spec.waves[index]
        members = [new.devices[d] for d in wave.devices]
        if old.current_wave == index and new.status is R.RUNNING and wave.status is W.RUNNING:
            for p in members:  # nobody past the deadline is still waited for
                if p.status in UNFINISHED:
                    assert p.sent_at is not None
                    assert now < p.sent_at + spec.device_timeout_s
            assert _may_go(new, index, now) == ()  # nobody who may go still waits
            lost = sum(p.status in (D.FAILED, D.TIMED_OUT) for p in members)
            committed = sum(p.status is D.COMMITTED for p in members)
            assert len(members) - lost >= _need(spec, len(members))  # it can still pass
            assert committed + lost < len(members)  # else it would be watched now
        if new.status is R.RUNNING and wave.status is W.WATCHING:
            assert wave.watch_until is not None
            if now >= wave.watch_until:  # the gate could not decide yet
                assert wave.undecided_since is not None
                assert due == index
                assert quality in ("thin", "missing")
                if spec.gate_timeout_s is not None:
                    assert now < wave.watch_until + spec.gate_timeout_s

    @staticmethod
    def _check_decisions(
        old: RolloutState, new: RolloutState, now: float, due: int | None, quality: str
    ) -> None:
        """Settled from the last commit; passed after the window, then on (or approval asked)."""
        for i, (w, v) in enumerate(zip(new.waves, old.waves, strict=True)):
            if v.status is W.RUNNING and w.watch_until is not None:  # settled in this tick
                commits = [  # a tick commits nobody, but its rollback may roll some back
                    p.finished_at
                    for p in (old.devices[d] for d in w.devices)
                    if p.status is D.COMMITTED and p.finished_at is not None
                ]
                assert w.settled_at == now
                assert w.watch_until == max(commits) + new.spec.waves[i].health_window_s
            if w.status is W.PASSED and v.status is not W.PASSED:
                assert w.watch_until is not None
                assert now >= w.watch_until
                assert (due, quality) == (i, "healthy")
                rest = [j for j in range(i + 1, len(new.waves)) if new.waves[j].devices]
                if new.spec.waves[i].approval_before_next and rest:
                    assert new.status is R.AWAITING_APPROVAL
                    assert new.current_wave == i
                elif rest:  # the next wave with devices goes out at once
                    assert new.status is R.RUNNING
                    assert new.current_wave == rest[0]
                else:
                    assert new.status is R.COMPLETED
            if w.status is W.FAILED and w.verdict is not None and v.status is not W.FAILED:
                assert due == i  # failed at its gate (bad telemetry or the gate timeout)

    @staticmethod
    def _check_gate_due(old: RolloutState, due: int | None, now: float) -> None:
        """gate_due(now) names exactly the wave whose gate tick(now) evaluates."""
        frozen = old.model_dump()
        plain = old.tick(now)
        if old.status is not R.RUNNING:
            assert due is None
            assert plain == Step(old, [], [])
        everywhere = {
            quality: {i: TELEMETRY[quality] for i in range(len(old.waves))}
            for quality in ("healthy", "bad")
        }
        if due is None:
            for telemetry in everywhere.values():
                assert old.tick(now, telemetry) == plain
        else:
            assert due == old.current_wave
            passed = old.tick(now, {due: TELEMETRY["healthy"]})
            assert any(e.kind is EventKind.WAVE_PASSED and e.wave == due for e in passed.events)
            assert passed.state.waves[due].status is W.PASSED
            failed = old.tick(now, {due: TELEMETRY["bad"]})
            assert any(e.kind is EventKind.WAVE_FAILED and e.wave == due for e in failed.events)
            verdict = failed.state.waves[due].verdict
            assert verdict is not None
            assert verdict.outcome is GateOutcome.FAILED
            others = {i: t for i, t in everywhere["bad"].items() if i != due}
            assert old.tick(now, others) == plain
        assert old.model_dump() == frozen

    # --- the operator ----------------------------------------------------------------------

    @rule(command=commands, gap=report_gaps, reason=reasons, rollback=st.booleans(), by=approvers)
    def operator(
        self, command: str, gap: float, reason: str, rollback: bool, by: str | None
    ) -> None:
        """Any command at any time (``by``: the approver): it applies, or it is refused and
        nothing changes. Nobody aborts a calm run."""
        if not (self.calm and command == "abort"):
            self._command(command, self.now + gap, reason=reason, rollback=rollback, by=by)

    @precondition(lambda self: self.state.status in ANSWERS)
    @rule(gap=report_gaps)
    def operator_moves_it_on(self, gap: float) -> None:
        """Start a pending rollout, approve an awaiting one (someone new), resume a paused one."""
        by = next(name for name in ("alice", "bob", "carol") if name not in self.state.approved_by)
        self._command(ANSWERS[self.state.status], self.now + gap, by=by)

    def _command(
        self,
        command: str,
        now: float,
        *,
        reason: str = "",
        rollback: bool = True,
        by: str | None = None,
    ) -> None:
        step = self._command_step(self.state, command, now, reason=reason, rollback=rollback, by=by)
        if step is not None:
            self.state = step.state
            self.steps += 1
        self.now = now

    def _command_step(
        self,
        old: RolloutState,
        command: str,
        now: float,
        *,
        reason: str = "",
        rollback: bool = True,
        by: str | None = None,
    ) -> Step | None:
        """An operator command's step, checked; None when it is (rightly) refused."""
        calls: dict[str, Callable[[], Step]] = {
            "start": lambda: old.start(now),
            "pause": lambda: old.pause(now),
            "resume": lambda: old.resume(now),
            "approve": lambda: old.approve(now, by),
            "abort": lambda: old.abort(reason, now, rollback=rollback),
        }
        applies = {
            "start": {R.PENDING},
            "pause": {R.RUNNING, R.AWAITING_APPROVAL, R.PAUSED},
            "resume": {R.PAUSED, R.RUNNING},
            "approve": {R.AWAITING_APPROVAL},
            "abort": set(R) - {R.COMPLETED},
        }
        needed = old.spec.waves[old.current_wave].approvals_required
        four_eyes_refuses = command == "approve" and (
            (needed > 1 and by is None) or (by is not None and by in old.approved_by)
        )
        if old.status not in applies[command] or four_eyes_refuses:
            self._refused(old, calls[command])
            return None
        step = self._checked(old, calls[command], now, command)
        new = step.state
        if (command, old.status) in {
            ("pause", R.PAUSED),
            ("resume", R.RUNNING),
            ("abort", R.ABORTED),
            ("abort", R.ROLLED_BACK),
        }:
            assert step == Step(old, [], [])  # already there: nothing to do
        elif command == "start":
            assert new.started_at == now
            assert new.status is (R.RUNNING if new.devices else R.COMPLETED)
            skipped = [e for e in step.events if e.kind is EventKind.DEVICES_SKIPPED]
            assert [e.device_ids for e in skipped] == (
                [tuple(sorted(old.skipped))] if old.skipped else []
            )
        elif command == "pause":
            assert new.status is R.PAUSED
            assert new.paused_from is old.status
            assert step.actions == []
        elif command == "resume":
            assert new.status is old.paused_from
            assert step.actions == []
        elif command == "approve" and len(old.approved_by) + 1 < needed:
            assert new.status is R.AWAITING_APPROVAL  # one more person must approve
            assert new.approved_by == (*old.approved_by, by)
            assert step.actions == []
            assert [e.kind for e in step.events] == [EventKind.APPROVED]
        elif command == "approve":
            assert new.status is R.RUNNING
            assert new.current_wave > old.current_wave
            assert new.approved_by == ()
        else:
            self._check_abort(old, new, rollback=rollback)
        return step

    @staticmethod
    def _check_abort(old: RolloutState, new: RolloutState, *, rollback: bool) -> None:
        sent = any(p.sent_at is not None for p in old.devices.values())
        assert new.status is (R.ROLLED_BACK if rollback and sent else R.ABORTED)
        assert new.reason.startswith("aborted by operator: ")
        assert new.paused_from is None
        current = old.waves[old.current_wave]
        if current.status in OPEN_WAVES:
            assert new.waves[old.current_wave].status is W.ABORTED
        else:
            assert new.waves[old.current_wave] == current

    # --- a server restart -------------------------------------------------------------------

    @rule(gap=report_gaps)
    def restart(self, gap: float) -> None:
        """The server persisted the state as JSON, stopped, read it back and recovers."""
        now = self.now + gap
        old = self.state
        restored = RolloutState.model_validate(json.loads(json.dumps(old.model_dump(mode="json"))))
        assert restored == old
        step = recover(restored, now)
        assert step.state is restored  # what it re-issues: the invariant below
        self.state = restored
        self.now = now

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def recover_reissues_only_what_may_not_have_gone_out(self) -> None:
        state = self.state
        step = recover(state, self.now)
        assert step.state is state
        assert [e.kind for e in step.events] == [EventKind.RECOVERED]
        assert step.events[0].at == self.now
        expected: list[Any] = []
        if state.status in (R.RUNNING, R.PAUSED, R.AWAITING_APPROVAL):
            unfinished = self._sent(UNFINISHED)  # keeping their sent_at: deadlines still apply
            if unfinished:
                expected = [Assign(device_ids=tuple(unfinished), bundle_sha=NEW)]
        elif state.status is R.ROLLED_BACK:
            behind = sorted(
                d
                for d, p in state.devices.items()
                if p.rollback_sent and not _off(p.phase, p.active)
            )
            if behind:
                expected = [Rollback(device_ids=tuple(behind), to_sha=state.spec.previous_bundle)]
        assert step.actions == expected

    @invariant()
    def round_trips_through_json(self) -> None:
        state = self.state
        data = json.loads(json.dumps(state.model_dump(mode="json")))
        assert RolloutState.model_validate(data) == state

    @invariant()
    def every_device_in_exactly_one_wave(self) -> None:
        state = self.state
        assert len(state.waves) == len(state.spec.waves)
        placed = [d for w in state.waves for d in w.devices]
        assert len(placed) == len(set(placed))
        assert set(placed) == set(state.devices)
        assert set(state.skipped) == self.pinned
        assert not self.pinned & set(state.devices)
        assert set(state.devices) | self.pinned == set(self.ids)
        for i, w in enumerate(state.waves):
            assert list(w.devices) == sorted(w.devices)
            for d in w.devices:
                assert state.devices[d].wave == i
        assert sum(state.device_counts().values()) == len(state.devices)

    @invariant()
    def rollout_fields_agree_with_its_status(self) -> None:
        state = self.state
        assert state.finished == (state.status in FINISHED)
        assert (state.finished_at is not None) == state.finished
        assert (state.paused_from is not None) == (state.status is R.PAUSED)
        assert state.paused_from in (None, R.RUNNING, R.AWAITING_APPROVAL)
        assert state.updated_at >= state.created_at
        never_started = all(w.status is W.PENDING for w in state.waves)
        assert (state.started_at is None) == never_started
        if state.status is R.PENDING:
            assert never_started
            assert state.current_wave == 0
        if state.rollback_completed_at is not None:
            assert state.status is R.ROLLED_BACK
        if state.status is not R.RUNNING:
            assert state.gate_due(self.now) is None

    @invariant()
    def approvals_count_different_people(self) -> None:
        state = self.state
        if R.AWAITING_APPROVAL in (state.status, state.paused_from):
            for by in (None, "alice", "bob"):  # what-ifs: each approver, judged, not applied
                self._command_step(state, "approve", self.now, by=by)
        assert len(set(state.approved_by)) == len(state.approved_by)
        assert None not in state.approved_by
        if state.approved_by and not state.finished:  # a partial four-eyes approval
            assert R.AWAITING_APPROVAL in (state.status, state.paused_from)
            needed = state.spec.waves[state.current_wave].approvals_required
            assert len(state.approved_by) < needed

    @invariant()
    def rollback_reaches_every_device_sent_the_bundle(self) -> None:
        state = self.state
        rollback_sent = {d for d, p in state.devices.items() if p.rollback_sent}
        was_sent = {d for d, p in state.devices.items() if p.sent_at is not None}
        if state.status is not R.ROLLED_BACK:
            assert not rollback_sent
            return
        assert rollback_sent
        assert rollback_sent == was_sent
        if all(_off(state.devices[d].phase, state.devices[d].active) for d in rollback_sent):
            assert state.rollback_completed_at is not None

    @invariant()
    def waves_move_in_order(self) -> None:
        state = self.state
        current = state.current_wave
        assert 0 <= current < len(state.waves)
        for w in state.waves[:current]:
            assert w.status in (W.PASSED, W.SKIPPED)
        for w in state.waves[current + 1 :]:
            assert w.status is W.PENDING
        open_waves = [i for i, w in enumerate(state.waves) if w.status in OPEN_WAVES]
        assert open_waves in ([], [current])
        wave = state.waves[current]
        if open_waves:
            assert state.status in (R.RUNNING, R.PAUSED)
        if R.RUNNING in (state.status, state.paused_from):
            assert wave.status in OPEN_WAVES
        if R.AWAITING_APPROVAL in (state.status, state.paused_from):
            assert wave.status is W.PASSED
            assert state.spec.waves[current].approval_before_next
            assert any(w.devices for w in state.waves[current + 1 :])
        if state.status is R.COMPLETED:
            assert all(w.status in (W.PASSED, W.SKIPPED) for w in state.waves)
            assert current == len(state.waves) - 1
        if any(w.status is W.FAILED for w in state.waves):
            assert state.status is R.ROLLED_BACK
        if any(w.status is W.ABORTED for w in state.waves):
            assert state.status in (R.ABORTED, R.ROLLED_BACK)

    @invariant()
    def wave_fields_agree_with_their_status(self) -> None:
        state = self.state
        rolled_back = any(p.rollback_sent for p in state.devices.values())
        for i, w in enumerate(state.waves):
            members = [state.devices[d] for d in w.devices]
            if not w.devices:
                assert w.status in (W.PENDING, W.SKIPPED)
            assert (w.status is W.SKIPPED) <= (not w.devices)
            assert (w.started_at is None) == (w.status in (W.PENDING, W.SKIPPED))
            assert (w.finished_at is not None) == (w.status in DECIDED_WAVES)
            waiting = [d for d in w.devices if state.devices[d].status is D.PENDING]
            if w.status is W.PENDING:
                assert len(waiting) == len(members)
            elif waiting:  # sent as their maintenance windows open
                assert w.status in (W.RUNNING, W.FAILED, W.ABORTED)
                assert set(waiting) <= set(state.spec.schedules())
            if w.status is W.RUNNING:
                assert w.settled_at is None
                assert w.watch_until is None
            if w.status is W.WATCHING:
                assert w.settled_at is not None
                assert w.watch_until is not None
            if w.status is W.PASSED:
                assert w.verdict is not None
                assert w.verdict.outcome is GateOutcome.PASSED
                assert w.watch_until is not None
                assert w.finished_at is not None
                assert w.finished_at >= w.watch_until
            if w.status in (W.WATCHING, W.PASSED):  # every device sent and answered
                assert all(p.status in OUTCOMES for p in members)
                if not rolled_back:
                    committed = sum(p.status is D.COMMITTED for p in members)
                    assert committed >= _need(state.spec.waves[i], len(members))

    @invariant()
    def device_fields_agree_with_their_status(self) -> None:
        state = self.state
        for p in state.devices.values():
            assert (p.status is D.PENDING) == (p.sent_at is None)
            assert (p.finished_at is not None) == (p.status in OUTCOMES)
            if p.sent_at is not None and p.finished_at is not None:
                assert p.finished_at >= p.sent_at
            if p.status is D.ROLLED_BACK:
                assert p.rollback_sent
            if p.status is D.TIMED_OUT:
                assert p.sent_at is not None
                assert p.finished_at is not None
                assert p.finished_at >= p.sent_at + state.spec.waves[p.wave].device_timeout_s
            if p.status is D.FAILED:
                assert p.reason
            assert len(p.reason) <= 1024


RolloutPlanner.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_rollout_planner = RolloutPlanner.TestCase


def _expected_status(
    before: DeviceProgress, phase: UpdatePhase, active: str | None, target: str | None
) -> DeviceStatus:
    """A device's status after a report, by the rules of ``device_report``'s docstring, in order."""
    on = phase.value in RESTING and active == NEW
    off = _off(phase.value, active)
    about_us = target == NEW or (target is None and before.phase in WORKING)
    if before.status is D.PENDING:
        return D.PENDING  # not sent yet: only remembered
    if on:
        return D.COMMITTED
    if before.rollback_sent:
        return D.ROLLED_BACK if off and before.status is not D.FAILED else before.status
    if off and phase is P.ROLLED_BACK and about_us and before.status in UNANSWERED:
        return D.FAILED
    if phase.value in WORKING and target in (None, NEW) and before.status is D.SENT:
        return D.IN_PROGRESS
    return before.status


def _with_device(
    state: RolloutState, device: str, progress: DeviceProgress, before: RolloutState
) -> RolloutState:
    """``state`` with ``device`` as ``progress`` again, and what a report may also change
    (sequence, updated_at, the rollback's completion) as in ``before``."""
    return state.model_copy(
        update={
            "devices": {**state.devices, device: progress},
            "sequence": before.sequence,
            "updated_at": before.updated_at,
            "rollback_completed_at": before.rollback_completed_at,
        }
    )
