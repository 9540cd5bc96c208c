"""The rollout coordinator: every followed rollout's planner state, driven by plain values.

The planner (:mod:`fleet_server.rollout_plan`) decides; the coordinator
keeps the live :class:`RolloutState` of every rollout still followed, feeds
it device reports, the clock, operator commands and telemetry figures (plain
values the caller fetched for :meth:`RolloutCoordinator.due_gates`), hands
the planner's actions to ``execute`` (the server signs and publishes
assignments) and saves each new state with its events through
:meth:`Registry.save_rollout`, the one writer of the rollout tables. It
knows nothing of MQTT, so it is tested with a registry and a list of actions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from fleet_server.errors import RolloutError
from fleet_server.quality_figures import Baseline
from fleet_server.quality_gate import WaveTelemetry
from fleet_server.records import DeviceInfo, TargetSelector
from fleet_server.registry import Registry
from fleet_server.registry.leases import Fence
from fleet_server.rollout_plan import (
    Action,
    RolloutEvent,
    RolloutState,
    Step,
    recover,
    too_old_runtimes,
)
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec
from fleet_server.shadow_gate import ShadowFigures, sum_reports
from fleet_server.statuses import (
    LIVE_ROLLOUT_STATUSES,
    UNANSWERED_DEVICE_STATUSES,
    DeviceStatus,
    RolloutStatus,
    WaveStatus,
)

_OPEN = frozenset({DeviceStatus.SENT, DeviceStatus.IN_PROGRESS, DeviceStatus.TIMED_OUT})

__all__ = ["GateDue", "GateKey", "RolloutCoordinator", "followed"]

log = logging.getLogger(__name__)

GateKey = tuple[int, int]
"""(rollout id, wave index): a quality gate that is due."""

Verb = str


@dataclass(frozen=True)
class GateDue:
    """A wave whose quality gate is due: what its telemetry is to be read over."""

    rollout_id: int
    index: int
    devices: tuple[str, ...]
    started_at: float
    bundle: str
    """The bundle the wave sent: the figures since ``started_at`` on it are the new side."""
    previous: str | None
    """The bundle before: the devices' figures on it before ``started_at`` are the reference."""

    @property
    def key(self) -> GateKey:
        return (self.rollout_id, self.index)


class RolloutCoordinator:
    """The followed rollouts' states: inputs in, actions out, every new state saved with its events.

    Not thread-safe: the fleet server calls it under its own lock.
    """

    def __init__(
        self,
        registry: Registry,
        execute: Callable[[Sequence[Action]], None],
        fence: Fence | None = None,
    ) -> None:
        self.registry = registry
        self._execute = execute
        self.fence = fence
        """The rollout leader's lease: every save and every action checks it first (None: the
        only server, unfenced)."""
        self._plans: dict[int, RolloutState] = {}
        """Rollouts still followed: device reports (and, while live, the clock) move them."""
        self._saved: dict[int, RolloutState] = {}
        """Each rollout's state as its rows last projected it (absent: compare with the rows)."""
        self._unsaved: dict[int, tuple[RolloutState, list[RolloutEvent]]] = {}
        """States (and the events that led to them) not saved yet: a batch saves once."""
        self._written: dict[int, RolloutState] = {}
        """States saved inside the current batch (its transaction may still fail)."""

    # --- inputs -----------------------------------------------------------------------

    def resume(self, now: float) -> list[int]:
        """Load every rollout a restarted server must follow and re-issue what may not have gone out.

        Live rollouts, rolled-back ones whose devices are not all off the
        new bundle, and completed ones with devices that had not answered.
        """
        live = [info.id for info in self.registry.rollouts(status=LIVE_ROLLOUT_STATUSES)]
        waiting = self.registry.rollouts_with_devices(
            [RolloutStatus.ROLLED_BACK],
            [DeviceStatus.SENT, DeviceStatus.IN_PROGRESS, DeviceStatus.COMMITTED],
        ) + self.registry.rollouts_with_devices(
            [RolloutStatus.COMPLETED], sorted(UNANSWERED_DEVICE_STATUSES)
        )
        resumed = []
        for rollout_id in sorted({*live, *waiting}):
            state = self.registry.rollout_state(rollout_id)
            if state is not None and followed(state):
                self._saved[rollout_id] = state
                self.apply(rollout_id, recover(state, now))
                resumed.append(rollout_id)
        return resumed

    def create(
        self,
        bundle_sha256: str,
        target: TargetSelector,
        waves: Sequence[WaveSpec],
        baseline: Baseline | None,
        now: float,
        *,
        previous_sha256: str | None = None,
        seed: int = 0,
        ignore_windows: bool = False,
        min_runtime_version: str | None = None,
    ) -> int:
        """Plan a rollout of the registered devices ``target`` covers, store it, start it: its id.

        The targets' maintenance windows are snapshotted into its spec;
        ``ignore_windows`` sends every wave whole regardless (an emergency). Planned
        first: a rollout that cannot be planned (:class:`RolloutPlanError`, or windows
        that never open together) writes no row. Devices that reported a runtime older
        than ``min_runtime_version`` (the bundle's) are skipped with the reason (a snapshot,
        as pins are); when every target device that is not pinned is, the rollout is
        refused (:class:`RolloutError`).
        """
        devices = self.registry.select_devices(target)
        if not devices:
            raise RolloutError(f"no device matches {target.to_json()}")
        spec = RolloutSpec(
            bundle=bundle_sha256,
            previous_bundle=previous_sha256,
            devices=tuple(
                TargetDevice(
                    device_id=d.id,
                    tags=d.tags,
                    pinned_bundle=d.pinned_bundle,
                    phase=d.phase,
                    active=d.active_bundle,
                    runtime_version=d.runtime_version,
                )
                for d in devices
            ),
            waves=tuple(waves),
            seed=seed,
            baseline=baseline,
            windows=self.registry.tag_windows(t for d in devices for t in d.tags),
            ignore_windows=ignore_windows,
            min_runtime_version=min_runtime_version,
        )
        too_old = too_old_runtimes(spec)
        unpinned = sum(d.pinned_bundle is None for d in devices)
        if too_old and len(too_old) == unpinned:
            shown = "; ".join(f"{d}: {why}" for d, why in sorted(too_old.items())[:5])
            raise RolloutError(
                f"none of the {unpinned} target devices that are not pinned can run this "
                f"bundle ({shown}"
                + (", ..." if len(too_old) > 5 else "")
                + "): upgrade their edge_runtime first"
            )
        state = RolloutState.create(spec, now)
        spec.check_windows(now)
        info = self.registry.create_rollout(
            bundle_sha256, target, {}, previous_sha256=previous_sha256
        )
        self.apply(info.id, state.start(now))
        return info.id

    def device_reported(
        self,
        device_id: str,
        phase: str,
        active: str | None,
        now: float,
        *,
        target: str | None = None,
        reason: str = "",
    ) -> None:
        """A device's reported state, to every followed rollout that covers it (saved by :meth:`save`)."""
        for rollout_id, state in list(self._plans.items()):
            if device_id in state.devices:
                step = state.device_report(device_id, phase, active, reason, now, target_sha=target)
                if step.state is not state or step.events or step.actions:
                    self.apply(rollout_id, step, save=False)

    def device_stored(self, device: DeviceInfo, now: float) -> None:
        """A device's stored state (phase, active and target bundle, its newest event's reason)
        to every followed rollout that covers it: the same input whichever replica ingested it."""
        if device.phase is not None:
            self.device_reported(
                device.id,
                device.phase,
                device.active_bundle,
                now,
                target=device.target_bundle,
                reason=device.last_event_reason or "",
            )

    def due_gates(self, now: float) -> list[GateDue]:
        """The quality gates :meth:`tick` at ``now`` would evaluate: fetch their telemetry first."""
        due = []
        for rollout_id, state in self._plans.items():
            index = state.gate_due(now)
            wave = None if index is None else state.waves[index]
            if index is not None and wave is not None and wave.started_at is not None:
                spec = state.spec
                due.append(
                    GateDue(
                        rollout_id,
                        index,
                        wave.devices,
                        wave.started_at,
                        spec.bundle,
                        spec.previous_bundle,
                    )
                )
        return due

    def tick(self, now: float, telemetry: Mapping[GateKey, WaveTelemetry] | None = None) -> None:
        """Let time pass for every followed rollout, with the figures of the gates that are due."""
        figures = telemetry or {}
        for rollout_id, state in list(self._plans.items()):
            mine = {index: t for (rid, index), t in figures.items() if rid == rollout_id}
            self.apply(rollout_id, state.tick(now, mine, shadow=self._shadow_figures(state)))

    def _shadow_figures(self, state: RolloutState) -> ShadowFigures | None:
        """A running shadow wave's reports since it started, summed; None for any other wave."""
        index = state.current_wave
        wave = state.waves[index]
        if (
            state.status is not RolloutStatus.RUNNING
            or state.spec.waves[index].shadow is None
            or wave.status is not WaveStatus.RUNNING
            or wave.started_at is None
        ):
            return None
        reports = self.registry.shadow_reports(state.spec.bundle, wave.devices, wave.started_at)
        return sum_reports(reports)

    def command(
        self, rollout_id: int, verb: Verb, reason: str, now: float, *, by: str | None = None
    ) -> RolloutState:
        """``pause``, ``resume``, ``approve`` or ``abort`` a followed rollout; ``by`` names who
        (an approval counts once per person: :mod:`fleet_server.rollout_approval`)."""
        state = self._plans.get(rollout_id)
        if state is None:
            raise RolloutError(f"rollout {rollout_id} is not running")
        commands: dict[str, Callable[[], Step]] = {
            "pause": lambda: state.pause(now),
            "resume": lambda: state.resume(now),
            "approve": lambda: state.approve(now, by),
            "abort": lambda: state.abort(reason, now),
        }
        if verb not in commands:
            raise RolloutError(f"unknown rollout command {verb!r}: pause, resume, approve or abort")
        step = commands[verb]()
        self.apply(rollout_id, step)
        return step.state

    # --- state ------------------------------------------------------------------------

    def plan(self, rollout_id: int) -> RolloutState | None:
        """The live state of a rollout still followed (None once finished and settled)."""
        return self._plans.get(rollout_id)

    @property
    def followed(self) -> list[int]:
        """Ids of the rollouts still followed."""
        return sorted(self._plans)

    def apply(self, rollout_id: int, step: Step, *, save: bool = True) -> None:
        """Execute the step's actions, keep its state, save it (now, or with the batch)."""
        if step.actions:
            if self.fence is not None:
                self.registry.check_fence(self.fence)  # a replaced leader signs nothing
            self._execute(step.actions)
        state = step.state
        if followed(state):
            self._plans[rollout_id] = state
        else:
            self._plans.pop(rollout_id, None)
        _, events = self._unsaved.get(rollout_id, (state, []))
        self._unsaved[rollout_id] = (state, [*events, *step.events])
        if save:
            self.save()

    def save(self) -> None:
        """Save every state changed since the last save, with its events, and project it.

        Fenced: the lease check and the writes share one transaction, so a
        replica that lost the lead writes nothing (:class:`LeaseLostError`).
        """
        if not self._unsaved:
            return
        with self.registry.batch():
            if self.fence is not None:
                self.registry.check_fence(self.fence)
            while self._unsaved:
                rollout_id, (state, events) = next(iter(self._unsaved.items()))
                self.registry.save_rollout(
                    rollout_id, state, before=self._saved.get(rollout_id), events=events
                )
                del self._unsaved[rollout_id]
                self._written[rollout_id] = state
                if followed(state):
                    self._saved[rollout_id] = state
                else:
                    self._saved.pop(rollout_id, None)

    def forget_all(self) -> None:
        """Drop every state held (this replica lost the lead; the new leader resumes from the
        database)."""
        self._plans.clear()
        self._saved.clear()
        self._unsaved.clear()
        self._written.clear()

    def catch_up(self, now: float, *, everyone: bool = False) -> None:
        """Feed the followed rollouts the stored states of the devices whose outcome is still
        open (sent, in progress, timed out, or rolled back and not yet off the bundle), or of
        every device of them with ``everyone`` (a new leader): whichever replica stored them,
        however late its transaction committed. Reports are idempotent for the planner."""
        wanted = sorted(
            {
                device_id
                for state in self._plans.values()
                for device_id, progress in state.devices.items()
                if everyone or progress.status in _OPEN or progress.rollback_sent
            }
        )
        for device in self.registry.devices_by_id(wanted):
            self.device_stored(device, now)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Device reports handled in one database transaction; every state saved once, at its end.

        When the transaction fails, what it wrote is gone: every state saved
        in it (and every live one) is saved again by the next :meth:`save`,
        compared with the rows rather than with the last save.
        """
        self._written = {}
        try:
            with self.registry.batch():
                yield
                self.save()
        except BaseException:
            self._saved.clear()
            for rollout_id, state in {**self._written, **self._plans}.items():
                self._unsaved.setdefault(rollout_id, (state, []))
            raise
        finally:
            self._written = {}


def followed(state: RolloutState) -> bool:
    """Whether device reports still change the rollout: while it runs; after a rollback until
    every rolled-back device is off the new bundle; after it completed, until the devices
    that were sent it but had not answered (offline, late) have."""
    if not state.finished:
        return True
    if state.status is RolloutStatus.ROLLED_BACK:
        return state.rollback_completed_at is None
    if state.status is RolloutStatus.COMPLETED:
        return any(p.status in UNANSWERED_DEVICE_STATUSES for p in state.devices.values())
    return False
