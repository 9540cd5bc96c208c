"""The rollout planner as a pure state machine: a persisted state in, a new state, actions and events out.

Nothing here does I/O or reads a clock, in the manner of python-tuf's
``TrustedMetadataSet`` and of the device's
:mod:`edge_runtime.update.lifecycle`: every input is a method of
:class:`RolloutState` that takes the time and returns a :class:`Step` (the
new state, the :data:`Action` list the server executes, the
:class:`RolloutEvent` list it records). The server persists the state before
it acts (so :func:`recover` after a restart only re-issues what may not have
gone out), writes the assignments, feeds device reports and telemetry in,
and calls :meth:`RolloutState.tick` periodically.

Rollout status: ``pending -> running <-> paused``, ``running ->
awaiting-approval -> running`` between waves that ask for it, then
``completed``; a failed wave or an operator's abort ends in ``rolled-back``
(the previous bundle re-assigned to every device that was sent the new one)
or ``aborted`` (stopped, nothing rolled back).

Rules the transitions keep:

* a wave's devices are sent at once (one :class:`Assign`); each must commit
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

Waves are numbered from 0 in the state and from 1 in messages ("wave 1"
is the canary).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fleet_server.errors import IllegalRolloutTransitionError, RolloutError
from fleet_server.quality_gate import GateOutcome, GateVerdict, WaveTelemetry, evaluate_gate
from fleet_server.rollout_spec import RolloutSpec, plan_waves, wave_label
from fleet_server.statuses import (
    RESTING_PHASES,
    TERMINAL_ROLLOUT_STATUSES,
    UNANSWERED_DEVICE_STATUSES,
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
]


def _check_time(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite, non-negative Unix time")
    return value


Timestamp = Annotated[float, AfterValidator(_check_time)]


def _clip(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- actions: what the server executes ----------------------------------------------


@dataclass(frozen=True)
class Assign:
    """Assign ``bundle_sha`` to each of ``device_ids`` (send a wave)."""

    device_ids: tuple[str, ...]
    bundle_sha: str


@dataclass(frozen=True)
class Rollback:
    """Assign ``to_sha`` again to each of ``device_ids``; None: withdraw their assignment."""

    device_ids: tuple[str, ...]
    to_sha: str | None


@dataclass(frozen=True)
class Notify:
    """Tell the operators ``message``."""

    message: str


Action = Assign | Rollback | Notify
"""Everything a transition can ask the server to do."""


# --- state ----------------------------------------------------------------------------


class EventKind(str, Enum):
    """What a :class:`RolloutEvent` records."""

    STARTED = "started"
    DEVICES_SKIPPED = "devices-skipped"
    WAVE_STARTED = "wave-started"
    WAVE_SKIPPED = "wave-skipped"
    DEVICE_COMMITTED = "device-committed"
    DEVICE_FAILED = "device-failed"
    DEVICE_TIMED_OUT = "device-timed-out"
    DEVICE_ROLLED_BACK = "device-rolled-back"
    WAVE_SETTLED = "wave-settled"
    GATE_UNDECIDED = "gate-undecided"
    WAVE_PASSED = "wave-passed"
    WAVE_FAILED = "wave-failed"
    AWAITING_APPROVAL = "awaiting-approval"
    APPROVED = "approved"
    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTED = "aborted"
    ROLLBACK_COMPLETE = "rollback-complete"
    COMPLETED = "completed"
    RECOVERED = "recovered"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RolloutEvent(_Frozen):
    """One thing that happened to the rollout, for the server's log and API."""

    kind: EventKind
    at: Timestamp
    message: str = Field(max_length=4096)
    wave: int | None = None
    device_ids: tuple[str, ...] = ()
    verdict: GateVerdict | None = None


class DeviceProgress(_Frozen):
    """One target device: its wave, its status here, and what it last reported."""

    wave: int = Field(ge=0)
    status: DeviceStatus = DeviceStatus.PENDING
    sent_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    """When it committed, failed, timed out or was rolled back."""
    phase: str | None = None
    """The device's last reported lifecycle phase."""
    active: str | None = None
    """The bundle the device last reported active."""
    reason: str = Field(default="", max_length=1024)
    rollback_sent: bool = False


class WaveProgress(_Frozen):
    """One planned wave: its devices and how far it got."""

    devices: tuple[str, ...]
    status: WaveStatus = WaveStatus.PENDING
    started_at: Timestamp | None = None
    settled_at: Timestamp | None = None
    """When every device had committed, failed or timed out."""
    watch_until: Timestamp | None = None
    """The end of the health window: the last commit plus ``health_window_s``."""
    undecided_since: Timestamp | None = None
    finished_at: Timestamp | None = None
    verdict: GateVerdict | None = None
    reason: str = ""


class Step(NamedTuple):
    """What an input does: the state to persist, the actions to execute, the events to record."""

    state: RolloutState
    actions: list[Action]
    events: list[RolloutEvent]


_Model = TypeVar("_Model", bound=BaseModel)


def _with(model: _Model, **changes: Any) -> _Model:
    """A validated copy of a frozen model with ``changes``."""
    return type(model).model_validate({**model.__dict__, **changes})


class RolloutState(_Frozen):
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
        return state._open_from(0, now, [], events)

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

    def approve(self, now: float) -> Step:
        """Let the next wave go after one that asked for approval."""
        if self.status is not RolloutStatus.AWAITING_APPROVAL:
            hint = " (resume it first)" if self.status is RolloutStatus.PAUSED else ""
            raise IllegalRolloutTransitionError(
                f"cannot approve a rollout that is {self.status.value}{hint}"
            )
        later = range(self.current_wave + 1, len(self.waves))
        nxt = next((i for i in later if self.waves[i].devices), self.current_wave + 1)
        event = self._event(EventKind.APPROVED, now, f"{wave_label(nxt)} approved", wave=nxt)
        state = self._changed(now, status=RolloutStatus.RUNNING)
        return state._open_from(self.current_wave + 1, now, [], [event])

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
            waves[self.current_wave] = _with(
                current, status=WaveStatus.ABORTED, finished_at=now, reason=_clip(reason)
            )
        state = self._changed(now, waves=tuple(waves))
        return state._stop(f"aborted by operator: {reason}", now, [], [], rollback=rollback)

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
        change = self._new_status(progress, name, active_sha, reason, target_sha)
        updated = _with(progress, phase=name, active=active_sha)
        events: list[RolloutEvent] = []
        if change is not None:
            status, why = change
            finished = progress.finished_at if status is DeviceStatus.IN_PROGRESS else now
            updated = _with(updated, status=status, reason=why, finished_at=finished)
            events.extend(self._device_event(device_id, progress, status, why, now))
        if updated == progress:
            return Step(self, [], [])
        state = self._changed(now, devices={**self.devices, device_id: updated})
        if state.status is RolloutStatus.ROLLED_BACK:
            return state._rollback_check(now, [], events)
        return Step(state, [], events)

    def tick(
        self, now: float, telemetry_by_wave: Mapping[int, WaveTelemetry] | None = None
    ) -> Step:
        """Let time pass: device timeouts, wave completion, health window, quality gate, next wave.

        ``telemetry_by_wave`` maps a wave index to its devices' figures on the
        new bundle (and on the previous one); a wave with none is undecided.
        Only a running rollout moves.
        """
        if self.status is not RolloutStatus.RUNNING:
            return Step(self, [], [])
        index = self.current_wave
        wave, spec = self.waves[index], self.spec.waves[index]
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
                devices[d] = _with(
                    devices[d], status=DeviceStatus.TIMED_OUT, finished_at=now, reason=why
                )
            message = f"{wave_label(index)}: {len(expired)} devices timed out: {', '.join(expired)}"
            events.append(
                self._event(EventKind.DEVICE_TIMED_OUT, now, message, wave=index, ids=expired)
            )
            state = self._changed(now, devices=devices)
        if wave.status is WaveStatus.RUNNING:
            return state._settle(index, now, [], events, telemetry)
        if wave.status is WaveStatus.WATCHING:
            return state._decide(index, now, [], events, telemetry)
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
            message=_clip(message, 4096),
            wave=wave,
            device_ids=tuple(ids),
            verdict=verdict,
        )

    def _on_bundle(self, phase: str | None, active: str | None) -> bool:
        return phase in RESTING_PHASES and active == self.spec.bundle

    def _off_bundle(self, phase: str | None, active: str | None) -> bool:
        return phase in RESTING_PHASES and active != self.spec.bundle

    def _new_status(
        self, p: DeviceProgress, phase: str, active: str | None, reason: str, target: str | None
    ) -> tuple[DeviceStatus, str] | None:
        """The device's status and reason after a report, or None when they stay."""
        if p.status is DeviceStatus.PENDING:
            return None
        off = self._off_bundle(phase, active)
        about_us = target == self.spec.bundle or (target is None and p.phase in WORKING_PHASES)
        wanted: tuple[DeviceStatus, str] | None = None
        if self._on_bundle(phase, active):
            wanted = (DeviceStatus.COMMITTED, "")
        elif p.rollback_sent:
            if off and p.status is not DeviceStatus.FAILED:
                wanted = (DeviceStatus.ROLLED_BACK, p.reason)
        elif off and phase == "rolled-back" and about_us and p.status in UNANSWERED_DEVICE_STATUSES:
            wanted = (DeviceStatus.FAILED, _clip(reason or "rolled back (no reason given)"))
        elif (
            phase in WORKING_PHASES
            and target in (None, self.spec.bundle)
            and p.status is DeviceStatus.SENT
        ):
            wanted = (DeviceStatus.IN_PROGRESS, "")
        return None if wanted is None or wanted[0] is p.status else wanted

    def _device_event(
        self, device_id: str, before: DeviceProgress, status: DeviceStatus, why: str, now: float
    ) -> list[RolloutEvent]:
        late = " (late)" if before.status is DeviceStatus.TIMED_OUT else ""
        messages = {
            DeviceStatus.COMMITTED: (EventKind.DEVICE_COMMITTED, f"committed {self._sha}{late}"),
            DeviceStatus.FAILED: (EventKind.DEVICE_FAILED, f"rolled {self._sha} back: {why}"),
            DeviceStatus.ROLLED_BACK: (EventKind.DEVICE_ROLLED_BACK, f"is off {self._sha} again"),
        }
        if status not in messages:
            return []
        kind, text = messages[status]
        return [self._event(kind, now, f"{device_id} {text}", wave=before.wave, ids=[device_id])]

    def _open_from(
        self, index: int, now: float, actions: list[Action], events: list[RolloutEvent]
    ) -> Step:
        """Send the first wave with devices at or after ``index``; complete when there is none."""
        waves = list(self.waves)
        while index < len(waves) and not waves[index].devices:
            waves[index] = _with(waves[index], status=WaveStatus.SKIPPED, finished_at=now)
            message = f"{wave_label(index)} has no devices"
            events.append(self._event(EventKind.WAVE_SKIPPED, now, message, wave=index))
            index += 1
        if index == len(waves):
            committed = self.device_counts()[DeviceStatus.COMMITTED]
            message = (
                f"rollout of {self._sha} completed: {committed} of {len(self.devices)} "
                f"devices committed, {len(self.skipped)} skipped"
            )
            events.append(self._event(EventKind.COMPLETED, now, message))
            actions.append(Notify(message))
            state = self._changed(
                now,
                waves=tuple(waves),
                status=RolloutStatus.COMPLETED,
                finished_at=now,
                current_wave=max(len(waves) - 1, 0),
            )
            return Step(state, actions, events)
        devices = dict(self.devices)
        ids = waves[index].devices
        already = [d for d in ids if self._on_bundle(devices[d].phase, devices[d].active)]
        for d in ids:
            if d in already:
                devices[d] = _with(
                    devices[d], status=DeviceStatus.COMMITTED, sent_at=now, finished_at=now
                )
            else:
                devices[d] = _with(devices[d], status=DeviceStatus.SENT, sent_at=now)
        waves[index] = _with(waves[index], status=WaveStatus.RUNNING, started_at=now)
        actions.append(Assign(device_ids=ids, bundle_sha=self.spec.bundle))
        message = f"{wave_label(index)}: sent {self._sha} to {len(ids)} devices"
        events.append(self._event(EventKind.WAVE_STARTED, now, message, wave=index, ids=ids))
        if already:
            message = f"{wave_label(index)}: {len(already)} devices already run {self._sha}"
            events.append(
                self._event(EventKind.DEVICE_COMMITTED, now, message, wave=index, ids=already)
            )
        state = self._changed(now, waves=tuple(waves), devices=devices, current_wave=index)
        return Step(state, actions, events)

    def _settle(
        self,
        index: int,
        now: float,
        actions: list[Action],
        events: list[RolloutEvent],
        telemetry: Mapping[int, WaveTelemetry],
    ) -> Step:
        """A running wave: fail it once too few can still commit; watch it once all are resolved."""
        wave, spec = self.waves[index], self.spec.waves[index]
        statuses = [self.devices[d] for d in wave.devices]
        size = len(statuses)
        committed = [p for p in statuses if p.status is DeviceStatus.COMMITTED]
        lost = sum(p.status in (DeviceStatus.FAILED, DeviceStatus.TIMED_OUT) for p in statuses)
        need = math.ceil(round(spec.success_threshold * size, 9))
        label = wave_label(index)
        if size - lost < need:
            reason = (
                f"{label}: {lost} of {size} devices failed or timed out; at most "
                f"{size - lost} can commit, {need} needed (threshold {spec.success_threshold:.0%})"
            )
            return self._fail_wave(index, reason, now, actions, events)
        if len(committed) + lost < size:
            return Step(self, actions, events)
        watch_until = max(p.finished_at or now for p in committed) + spec.health_window_s
        waves = list(self.waves)
        waves[index] = _with(
            wave, status=WaveStatus.WATCHING, settled_at=now, watch_until=watch_until
        )
        message = (
            f"{label}: {len(committed)} of {size} devices committed ({need} needed); "
            f"watching {spec.health_window_s:g} s after the last commit"
        )
        events.append(self._event(EventKind.WAVE_SETTLED, now, message, wave=index))
        state = self._changed(now, waves=tuple(waves))
        return state._decide(index, now, actions, events, telemetry)

    def _decide(
        self,
        index: int,
        now: float,
        actions: list[Action],
        events: list[RolloutEvent],
        telemetry: Mapping[int, WaveTelemetry],
    ) -> Step:
        """A watched wave after its health window: the quality gate passes, fails or waits."""
        wave, spec = self.waves[index], self.spec.waves[index]
        if wave.watch_until is None or now < wave.watch_until:
            return Step(self, actions, events)
        verdict = evaluate_gate(
            telemetry.get(index), spec.gate, self.spec.baseline, label=wave_label(index)
        )
        if verdict.outcome is GateOutcome.FAILED:
            return self._fail_wave(index, verdict.reason, now, actions, events, verdict=verdict)
        if verdict.outcome is GateOutcome.UNDECIDED:
            return self._undecided(index, verdict, now, actions, events)
        waves = list(self.waves)
        waves[index] = _with(wave, status=WaveStatus.PASSED, finished_at=now, verdict=verdict)
        events.append(
            self._event(EventKind.WAVE_PASSED, now, verdict.reason, wave=index, verdict=verdict)
        )
        state = self._changed(now, waves=tuple(waves))
        rest = [i for i in range(index + 1, len(waves)) if waves[i].devices]
        if not (spec.approval_before_next and rest):
            return state._open_from(index + 1, now, actions, events)
        message = (
            f"{wave_label(index)} passed; {wave_label(rest[0])} "
            f"({len(waves[rest[0]].devices)} devices) waits for approval"
        )
        events.append(self._event(EventKind.AWAITING_APPROVAL, now, message, wave=index))
        actions.append(Notify(f"rollout of {self._sha}: {message}"))
        return Step(state._changed(now, status=RolloutStatus.AWAITING_APPROVAL), actions, events)

    def _undecided(
        self,
        index: int,
        verdict: GateVerdict,
        now: float,
        actions: list[Action],
        events: list[RolloutEvent],
    ) -> Step:
        """Not enough telemetry after the health window: wait (saying so once), or fail at the gate timeout."""
        wave, timeout = self.waves[index], self.spec.waves[index].gate_timeout_s
        assert wave.watch_until is not None  # only watched waves are decided
        if timeout is not None and now >= wave.watch_until + timeout:
            reason = f"no quality decision {timeout:g} s after the health window: {verdict.reason}"
            return self._fail_wave(index, reason, now, actions, events, verdict=verdict)
        if wave.undecided_since is not None:
            return Step(self, actions, events)
        waves = list(self.waves)
        waves[index] = _with(wave, undecided_since=now, verdict=verdict)
        events.append(
            self._event(EventKind.GATE_UNDECIDED, now, verdict.reason, wave=index, verdict=verdict)
        )
        actions.append(Notify(f"rollout of {self._sha} waits: {verdict.reason}"))
        return Step(self._changed(now, waves=tuple(waves)), actions, events)

    def _fail_wave(
        self,
        index: int,
        reason: str,
        now: float,
        actions: list[Action],
        events: list[RolloutEvent],
        *,
        verdict: GateVerdict | None = None,
    ) -> Step:
        """The wave failed: record it, then abort and roll back."""
        waves = list(self.waves)
        waves[index] = _with(
            waves[index],
            status=WaveStatus.FAILED,
            finished_at=now,
            verdict=verdict,
            reason=_clip(reason),
        )
        events.append(self._event(EventKind.WAVE_FAILED, now, reason, wave=index, verdict=verdict))
        state = self._changed(now, waves=tuple(waves))
        return state._stop(reason, now, actions, events, rollback=True)

    def _stop(
        self,
        reason: str,
        now: float,
        actions: list[Action],
        events: list[RolloutEvent],
        *,
        rollback: bool,
    ) -> Step:
        """End the rollout: ``rolled-back`` (previous bundle re-assigned) or ``aborted``."""
        affected = tuple(
            sorted(d for d, p in self.devices.items() if p.status is not DeviceStatus.PENDING)
        )
        common = {"finished_at": now, "reason": _clip(reason), "paused_from": None}
        if not (rollback and affected):
            message = f"rollout of {self._sha} aborted: {reason}"
            events.append(self._event(EventKind.ABORTED, now, message))
            actions.append(Notify(message))
            return Step(self._changed(now, status=RolloutStatus.ABORTED, **common), actions, events)
        devices = dict(self.devices)
        back = [
            d
            for d in affected
            if self._off_bundle(devices[d].phase, devices[d].active)
            and devices[d].status is not DeviceStatus.FAILED
        ]
        for d in affected:
            devices[d] = _with(devices[d], rollback_sent=True)
            if d in back:
                devices[d] = _with(devices[d], status=DeviceStatus.ROLLED_BACK, finished_at=now)
        to = self.spec.previous_bundle
        message = (
            f"rollout of {self._sha} aborted: {reason}; rolling {len(affected)} devices back "
            f"to {to[:12] if to is not None else 'no assignment'}"
        )
        actions.extend([Rollback(device_ids=affected, to_sha=to), Notify(message)])
        events.append(self._event(EventKind.ABORTED, now, message, ids=affected))
        if back:
            text = f"{len(back)} devices were already off {self._sha}"
            events.append(self._event(EventKind.DEVICE_ROLLED_BACK, now, text, ids=back))
        state = self._changed(now, status=RolloutStatus.ROLLED_BACK, devices=devices, **common)
        return state._rollback_check(now, actions, events)

    def _rollback_check(
        self, now: float, actions: list[Action], events: list[RolloutEvent]
    ) -> Step:
        """After a rollback: note (once) the moment every rolled-back device is off the new bundle."""
        targets = [p for p in self.devices.values() if p.rollback_sent]
        if self.rollback_completed_at is not None or not all(
            self._off_bundle(p.phase, p.active) for p in targets
        ):
            return Step(self, actions, events)
        message = f"rollback of {self._sha} complete: {len(targets)} devices are off it"
        events.append(self._event(EventKind.ROLLBACK_COMPLETE, now, message))
        actions.append(Notify(message))
        return Step(self._changed(now, rollback_completed_at=now), actions, events)


def recover(state: RolloutState, now: float) -> Step:
    """What to re-issue after the server restarted with ``state`` persisted.

    A running (or paused, or awaiting) rollout assigns the new bundle again to
    devices sent it that have not finished (``sent`` or ``in-progress``),
    keeping their ``sent_at`` so their timeouts still apply; a rolled-back
    one re-issues the rollback to devices not yet off the new bundle. Devices
    that committed, failed or timed out get nothing again; the state itself
    is unchanged.
    """
    actions: list[Action] = []
    if state.status in (
        RolloutStatus.RUNNING,
        RolloutStatus.PAUSED,
        RolloutStatus.AWAITING_APPROVAL,
    ):
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
