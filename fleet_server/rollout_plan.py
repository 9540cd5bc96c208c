"""The rollout planner as a pure state machine: a persisted state in, a new state, actions and events out.

Nothing here does I/O or reads a clock, in the manner of python-tuf's
``TrustedMetadataSet`` and of the device's
:mod:`edge_runtime.update.lifecycle`: every input is a method of
:class:`RolloutState` that takes the time and returns a :class:`Step` (the
new state, the :data:`Action` list the server executes, the
:class:`RolloutEvent` list it records). :func:`recover` after a restart
re-issues only what may not have gone out.

Rollout status: ``pending -> running <-> paused``, ``running ->
awaiting-approval -> running`` between waves that ask for it, then
``completed``; a failed wave or an operator's abort ends in ``rolled-back``
(the previous bundle re-assigned to every device that was sent the new one)
or ``aborted`` (stopped, nothing rolled back).

The rules the transitions keep: :mod:`fleet_server.rollout_rules`; the
values a state is made of: :mod:`fleet_server.rollout_progress`.

Waves are numbered from 0 in the state and from 1 in messages ("wave 1"
is the canary).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal

from pydantic import Field

from edge_runtime.bundle.compat import compatibility_problem
from fleet_server import rollout_approval
from fleet_server import rollout_rules as rules
from fleet_server.errors import IllegalRolloutTransitionError, RolloutError
from fleet_server.quality_gate import GateVerdict, WaveTelemetry
from fleet_server.rollout_progress import (
    Action,
    Assign,
    DeviceProgress,
    EventKind,
    Frozen,
    Notify,
    Rollback,
    RolloutEvent,
    Step,
    Timestamp,
    WaveProgress,
    clip,
    with_changes,
)
from fleet_server.rollout_shadow import ShadowFigures, judge_shadow, shadow_resume
from fleet_server.rollout_spec import RolloutSpec, plan_waves, wave_label
from fleet_server.statuses import (
    RESTING_PHASES,
    TERMINAL_ROLLOUT_STATUSES,
    WORKING_PHASES,
    DeviceStatus,
    RolloutStatus,
    WaveStatus,
)

__all__ = [
    "Action",
    "Assign",
    "DeviceProgress",
    "DeviceStatus",
    "EventKind",
    "Notify",
    "Rollback",
    "RolloutEvent",
    "RolloutState",
    "RolloutStatus",
    "Step",
    "WaveProgress",
    "WaveStatus",
    "recover",
    "too_old_runtimes",
]


class RolloutState(Frozen):
    """Everything the server must remember about one rollout across a restart."""

    schema_version: Literal[1] = 1
    spec: RolloutSpec
    status: RolloutStatus = RolloutStatus.PENDING
    paused_from: RolloutStatus | None = None
    current_wave: int = Field(default=0, ge=0)
    waves: tuple[WaveProgress, ...]
    devices: dict[str, DeviceProgress]
    skipped: dict[str, str] = Field(default_factory=dict)
    """Devices the rollout leaves alone (pinned), with why."""
    reason: str = ""
    """Why the rollout was aborted or rolled back."""
    approved_by: tuple[str, ...] = ()
    """Who approved the wave the rollout awaits, so far (:mod:`fleet_server.rollout_approval`)."""
    created_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    rollback_completed_at: Timestamp | None = None
    updated_at: Timestamp
    sequence: int = Field(default=0, ge=0)

    @classmethod
    def create(cls, spec: RolloutSpec, now: float) -> RolloutState:
        """A pending rollout with its waves planned; :class:`RolloutPlanError` if they cannot be."""
        skipped = {
            d.device_id: f"pinned to {d.pinned_bundle[:12]}"
            for d in spec.devices
            if d.pinned_bundle is not None
        }
        skipped.update(too_old_runtimes(spec))
        eligible = [d for d in spec.devices if d.device_id not in skipped]
        known = {d.device_id: d for d in eligible}
        plan = plan_waves(
            [d.device_id for d in eligible],
            spec.waves,
            spec.seed,
            tags={d.device_id: d.tags for d in eligible},
            skip=skipped,
        )
        return cls(
            spec=spec,
            waves=tuple(WaveProgress(devices=ids) for ids in plan),
            devices={
                d: DeviceProgress(wave=i, phase=known[d].phase, active=known[d].active)
                for i, ids in enumerate(plan)
                for d in ids
            },
            skipped=skipped,
            created_at=now,
            updated_at=now,
        )

    # --- queries ------------------------------------------------------------------

    def device_counts(self) -> dict[DeviceStatus, int]:
        """How many target devices are in each status (skipped devices not included)."""
        counts = dict.fromkeys(DeviceStatus, 0)
        for progress in self.devices.values():
            counts[progress.status] += 1
        return counts

    @property
    def finished(self) -> bool:
        """Completed, aborted or rolled back: only device reports still change it."""
        return self.status in TERMINAL_ROLLOUT_STATUSES

    def gate_due(self, now: float) -> int | None:
        """The wave whose quality gate :meth:`tick` at ``now`` would evaluate, if any.

        The caller fetches that wave's telemetry (a database query) and hands
        it to :meth:`tick` as plain values; on every other tick (most of
        them) nothing is fetched. A running wave is probed with a pure tick
        that may settle it: its gate is due once its health window ended.
        """
        if self.status is not RolloutStatus.RUNNING:
            return None
        index = self.current_wave
        wave = self.waves[index]
        if wave.status is WaveStatus.RUNNING:
            wave = self.tick(now).state.waves[index]
            if wave.status is WaveStatus.RUNNING:
                return None
        if wave.watch_until is None or now < wave.watch_until:
            return None
        return index

    # --- operator commands ----------------------------------------------------------

    def start(self, now: float) -> Step:
        """Send the first wave (the canary); a rollout with no eligible device completes at once."""
        if self.status is not RolloutStatus.PENDING:
            raise IllegalRolloutTransitionError(
                f"cannot start a rollout that is {self.status.value}"
            )
        n = len(self.devices)
        events = [self._event(EventKind.STARTED, now, f"rollout of {self._sha} to {n} devices")]
        if self.skipped:
            ids = tuple(sorted(self.skipped))
            listed = ", ".join(f"{d} ({self.skipped[d]})" for d in ids)
            events.append(
                self._event(
                    EventKind.DEVICES_SKIPPED, now, f"{len(ids)} devices skipped: {listed}", ids=ids
                )
            )
        state = self._changed(now, status=RolloutStatus.RUNNING, started_at=now)
        return rules.open_from(state, 0, now, [], events)

    def pause(self, now: float) -> Step:
        """Hold the rollout: no decision, no new wave (devices already sent carry on)."""
        if self.status is RolloutStatus.PAUSED:
            return Step(self, [], [])
        if self.status not in (RolloutStatus.RUNNING, RolloutStatus.AWAITING_APPROVAL):
            raise IllegalRolloutTransitionError(
                f"cannot pause a rollout that is {self.status.value}"
            )
        state = self._changed(now, status=RolloutStatus.PAUSED, paused_from=self.status)
        return Step(state, [], [self._event(EventKind.PAUSED, now, "rollout paused")])

    def resume(self, now: float) -> Step:
        """Carry on from where :meth:`pause` held the rollout."""
        if self.status is RolloutStatus.RUNNING:
            return Step(self, [], [])
        if self.status is not RolloutStatus.PAUSED or self.paused_from is None:
            raise IllegalRolloutTransitionError(
                f"cannot resume a rollout that is {self.status.value}"
                + (
                    " (approve it instead)"
                    if self.status is RolloutStatus.AWAITING_APPROVAL
                    else ""
                )
            )
        state = self._changed(now, status=self.paused_from, paused_from=None)
        message = f"rollout resumed ({self.paused_from.value})"
        return Step(state, [], [self._event(EventKind.RESUMED, now, message)])

    def approve(self, now: float, by: str | None = None) -> Step:
        """``by`` lets the next wave go after one that asked for approval (by two people: four-eyes)."""
        return rollout_approval.approve(self, now, by)

    def abort(self, reason: str, now: float, *, rollback: bool = True) -> Step:
        """Stop the rollout; with ``rollback`` re-assign the previous bundle to every device sent the new one.

        Aborting an aborted or rolled-back rollout changes nothing; a
        completed one cannot be aborted (roll the previous bundle out instead).
        """
        if self.status in (RolloutStatus.ABORTED, RolloutStatus.ROLLED_BACK):
            return Step(self, [], [])
        if self.status is RolloutStatus.COMPLETED:
            raise IllegalRolloutTransitionError(
                "cannot abort a completed rollout; roll the previous bundle out instead"
            )
        waves = list(self.waves)
        current = waves[self.current_wave]
        if current.status in (WaveStatus.RUNNING, WaveStatus.WATCHING):
            waves[self.current_wave] = with_changes(
                current, status=WaveStatus.ABORTED, finished_at=now, reason=clip(reason)
            )
        state = self._changed(now, waves=tuple(waves))
        return rules.stop(state, f"aborted by operator: {reason}", now, [], [], rollback=rollback)

    # --- inputs from devices and the clock ------------------------------------------

    def device_report(
        self,
        device_id: str,
        phase: str,
        active_sha: str | None,
        reason: str,
        now: float,
        *,
        target_sha: str | None = None,
    ) -> Step:
        """A device's retained reported state (``docs/protocol.md``): phase, active bundle, reason.

        ``phase`` is a lifecycle phase name (an ``UpdatePhase`` works too);
        ``target_sha`` is the bundle of the reported ``target`` when known.
        A resting phase (idle, committed) with the new bundle active makes the
        device ``committed``; ``rolled-back`` with another bundle active makes
        it ``failed`` when the report is about the new bundle (its target is
        the new bundle, or, without a target, the device was last seen working
        on an update); after the rollout's rollback, any resting phase on
        another bundle makes it ``rolled-back``. Repeats change nothing;
        devices outside the rollout (or skipped) are ignored; the report of a
        device not sent yet is only remembered.
        """
        progress = self.devices.get(device_id)
        if progress is None:
            return Step(self, [], [])
        name = str(phase.value) if isinstance(phase, Enum) else str(phase)
        if name not in RESTING_PHASES and name not in WORKING_PHASES:
            raise RolloutError(f"device {device_id!r} reported an unknown phase {name!r}")
        change = rules.new_status(self, progress, name, active_sha, reason, target_sha)
        updated = with_changes(progress, phase=name, active=active_sha)
        events: list[RolloutEvent] = []
        if change is not None:
            status, why = change
            finished = progress.finished_at if status is DeviceStatus.IN_PROGRESS else now
            updated = with_changes(updated, status=status, reason=why, finished_at=finished)
            events.extend(rules.device_event(self, device_id, progress, status, why, now))
        if updated == progress:
            return Step(self, [], [])
        state = self._changed(now, devices={**self.devices, device_id: updated})
        if state.status is RolloutStatus.ROLLED_BACK:
            return rules.rollback_check(state, now, [], events)
        return Step(state, [], events)

    def tick(
        self,
        now: float,
        telemetry_by_wave: Mapping[int, WaveTelemetry] | None = None,
        *,
        shadow: ShadowFigures | None = None,
    ) -> Step:
        """Let time pass: device timeouts, wave completion, health window, quality gate, next wave.

        ``telemetry_by_wave`` maps a wave index to its devices' figures on the
        new bundle (and on the previous one); a wave with none is undecided; ``shadow``, a
        running shadow wave's figures (:mod:`fleet_server.rollout_shadow`). Only a running rollout moves.
        """
        if self.status is not RolloutStatus.RUNNING:
            return Step(self, [], [])
        index = self.current_wave
        wave, spec = self.waves[index], self.spec.waves[index]
        if spec.shadow is not None and wave.status is WaveStatus.RUNNING:
            return judge_shadow(self, index, now, shadow)
        telemetry = telemetry_by_wave or {}
        events: list[RolloutEvent] = []
        expired = [
            d
            for d in wave.devices
            if self.devices[d].status in (DeviceStatus.SENT, DeviceStatus.IN_PROGRESS)
            and now >= (self.devices[d].sent_at or 0.0) + spec.device_timeout_s
        ]
        state = self
        if expired:
            why = f"not committed {spec.device_timeout_s:g} s after it was sent"
            devices = dict(self.devices)
            for d in expired:
                devices[d] = with_changes(
                    devices[d], status=DeviceStatus.TIMED_OUT, finished_at=now, reason=why
                )
            message = f"{wave_label(index)}: {len(expired)} devices timed out: {', '.join(expired)}"
            events.append(
                self._event(EventKind.DEVICE_TIMED_OUT, now, message, wave=index, ids=expired)
            )
            state = self._changed(now, devices=devices)
        if wave.status is WaveStatus.RUNNING:
            return rules.settle(state, index, now, [], events, telemetry)
        if wave.status is WaveStatus.WATCHING:
            return rules.decide(state, index, now, [], events, telemetry)
        return Step(state, [], events)

    # --- helpers --------------------------------------------------------------------

    @property
    def _sha(self) -> str:
        return self.spec.bundle[:12]

    def _changed(self, now: float, **changes: Any) -> RolloutState:
        """A validated copy with ``changes``, a newer sequence and ``updated_at``."""
        data = {**self.__dict__, **changes, "sequence": self.sequence + 1, "updated_at": now}
        return RolloutState.model_validate(data)

    def _event(
        self,
        kind: EventKind,
        now: float,
        message: str,
        *,
        wave: int | None = None,
        ids: tuple[str, ...] | list[str] = (),
        verdict: GateVerdict | None = None,
    ) -> RolloutEvent:
        return RolloutEvent(
            kind=kind,
            at=now,
            message=clip(message, 4096),
            wave=wave,
            device_ids=tuple(ids),
            verdict=verdict,
        )

    def _on_bundle(self, phase: str | None, active: str | None) -> bool:
        return phase in RESTING_PHASES and active == self.spec.bundle

    def _off_bundle(self, phase: str | None, active: str | None) -> bool:
        return phase in RESTING_PHASES and active != self.spec.bundle


def recover(state: RolloutState, now: float) -> Step:
    """What to re-issue after the server restarted with ``state`` persisted.

    A running (or paused, or awaiting) rollout assigns the new bundle again to
    devices sent it that have not finished (``sent`` or ``in-progress``),
    keeping their ``sent_at`` so their timeouts still apply; a rolled-back
    one re-issues the rollback to devices not yet off the new bundle. Devices
    that committed, failed or timed out get nothing again; the state itself
    is unchanged.
    """
    actions: list[Action] = shadow_resume(state)
    if not state.finished:  # a pending one has sent nothing yet
        unfinished = sorted(
            d
            for d, p in state.devices.items()
            if p.status in (DeviceStatus.SENT, DeviceStatus.IN_PROGRESS)
        )
        if unfinished:
            actions.append(Assign(device_ids=tuple(unfinished), bundle_sha=state.spec.bundle))
    elif state.status is RolloutStatus.ROLLED_BACK:
        pending = sorted(
            d
            for d, p in state.devices.items()
            if p.rollback_sent and not state._off_bundle(p.phase, p.active)
        )
        if pending:
            actions.append(Rollback(device_ids=tuple(pending), to_sha=state.spec.previous_bundle))
    sent = sum(len(a.device_ids) for a in actions if isinstance(a, Assign | Rollback))
    message = f"recovered after a restart ({state.status.value}); re-issued to {sent} devices"
    return Step(state, actions, [state._event(EventKind.RECOVERED, now, message)])


def too_old_runtimes(spec: RolloutSpec) -> dict[str, str]:
    """The target devices (not pinned) whose reported runtime is older than the bundle needs,
    each with why; a device that never reported its version is sent the bundle (it checks)."""
    if spec.min_runtime_version is None:
        return {}
    found = {}
    for device in spec.devices:
        if device.pinned_bundle is not None:
            continue
        problem = compatibility_problem(spec.min_runtime_version, device.runtime_version)
        if problem is not None:
            found[device.device_id] = (
                f"runtime {device.runtime_version}, the bundle needs >= {spec.min_runtime_version}"
            )
    return found
