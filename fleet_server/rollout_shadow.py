"""The planner's rules for a shadow wave: ask its devices to run the bundle beside their active model,
then let the shadow gate decide whether the rollout goes on to real activation or stops.

Pure, like :mod:`fleet_server.rollout_rules` (which calls :func:`open_shadow`
when the first wave is a shadow wave, and :func:`shadow_stop` when a rollout
ends). A shadow wave's devices are never sent the bundle as an assignment:
they get a :class:`StartShadow` action (a retained request), report their
figures, and the gate (:func:`fleet_server.shadow_gate.evaluate_shadow`)
decides on them, on each tick, once it is handed them:

* passed: the wave ``passed`` with the verdict, the shadow runs end
  (:class:`StopShadow`) and the next wave opens (or waits for approval when
  the shadow wave asks for it), the rollout's real activation;
* failed, or still undecided ``timeout_s`` after the wave started: the wave
  ``failed`` and the rollout is ``aborted`` with the figures as its reason;
  nothing is rolled back, since no device ever activated the bundle;
* undecided: it waits (saying so once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet_server import rollout_rules as rules
from fleet_server.quality_gate import GateOutcome, GateVerdict
from fleet_server.rollout_progress import (
    Action,
    EventKind,
    Notify,
    RolloutEvent,
    StartShadow,
    Step,
    StopShadow,
    clip,
    with_changes,
)
from fleet_server.rollout_spec import wave_label
from fleet_server.shadow_gate import ShadowFigures, evaluate_shadow
from fleet_server.statuses import RolloutStatus, WaveStatus

if TYPE_CHECKING:
    from fleet_server.rollout_plan import RolloutState

__all__ = [
    "ShadowFigures",
    "is_shadow",
    "judge_shadow",
    "open_shadow",
    "shadow_label",
    "shadow_resume",
    "shadow_start",
    "shadow_stop",
]


def is_shadow(rollout: RolloutState, index: int) -> bool:
    """Whether wave ``index`` is a shadow wave."""
    return rollout.spec.waves[index].shadow is not None


def shadow_label(index: int) -> str:
    """``"wave 1 (shadow)"``."""
    return f"{wave_label(index)} (shadow)"


def shadow_start(rollout: RolloutState, index: int) -> StartShadow:
    """The action that asks wave ``index``'s devices to run the bundle in shadow."""
    stage = rollout.spec.waves[index].shadow
    assert stage is not None  # noqa: S101 - callers check is_shadow first
    return StartShadow(
        device_ids=rollout.waves[index].devices,
        bundle_sha=rollout.spec.bundle,
        every_nth=stage.every_nth,
        cpu_budget=stage.cpu_budget,
        window_s=stage.window_s,
    )


def shadow_stop(rollout: RolloutState) -> list[Action]:
    """End every shadow run the rollout asked for (clearing a request twice does no harm)."""
    if not rollout.waves or not is_shadow(rollout, 0) or not rollout.waves[0].devices:
        return []
    return [StopShadow(device_ids=rollout.waves[0].devices)]


def shadow_resume(rollout: RolloutState) -> list[Action]:
    """After a server restart: ask a running shadow wave's devices again (a broker without
    persistence lost the retained requests)."""
    index = rollout.current_wave
    if rollout.finished or not is_shadow(rollout, index):
        return []
    if rollout.waves[index].status is not WaveStatus.RUNNING:
        return []
    return [shadow_start(rollout, index)]


def open_shadow(
    rollout: RolloutState, index: int, now: float, actions: list[Action], events: list[RolloutEvent]
) -> Step:
    """Start the shadow wave ``index`` (it has devices): requests out, the wave running."""
    waves = list(rollout.waves)
    waves[index] = with_changes(waves[index], status=WaveStatus.RUNNING, started_at=now)
    state = rollout._changed(now, waves=tuple(waves), current_wave=index)
    start = shadow_start(state, index)
    actions.append(start)
    message = (
        f"{shadow_label(index)}: {len(start.device_ids)} devices run {rollout._sha} beside their "
        f"active model (every {start.every_nth} frames, {start.cpu_budget:.0%} of a core): "
        f"{', '.join(start.device_ids)}"
    )
    events.append(
        rollout._event(EventKind.SHADOW_STARTED, now, message, wave=index, ids=start.device_ids)
    )
    return Step(state, actions, events)


def judge_shadow(
    rollout: RolloutState, index: int, now: float, figures: ShadowFigures | None
) -> Step:
    """A running shadow wave on a tick: pass, fail or wait (see the module)."""
    wave, spec = rollout.waves[index], rollout.spec.waves[index]
    stage = spec.shadow
    assert stage is not None and wave.started_at is not None  # noqa: S101 - a running shadow wave
    label = shadow_label(index)
    baseline = rollout.spec.baseline
    verdict = evaluate_shadow(
        figures or ShadowFigures(),
        stage,
        wave.devices,
        now - wave.started_at,
        label=label,
        budget_ms=None if baseline is None else baseline.latency_budget_ms,
    )
    actions: list[Action] = []
    events: list[RolloutEvent] = []
    if verdict.outcome is GateOutcome.UNDECIDED:
        if now < wave.started_at + stage.timeout_s:
            return _waiting(rollout, index, verdict, now)
        reason = f"no shadow decision {stage.timeout_s:g} s after it started: {verdict.reason}"
        verdict = verdict.model_copy(update={"outcome": GateOutcome.FAILED, "reason": reason})
    waves = list(rollout.waves)
    if verdict.outcome is GateOutcome.FAILED:  # stop() ends the shadow runs
        waves[index] = with_changes(
            wave,
            status=WaveStatus.FAILED,
            finished_at=now,
            verdict=verdict,
            reason=clip(verdict.reason),
        )
        events.append(
            rollout._event(EventKind.WAVE_FAILED, now, verdict.reason, wave=index, verdict=verdict)
        )
        state = rollout._changed(now, waves=tuple(waves))
        return rules.stop(state, verdict.reason, now, actions, events, rollback=False)
    waves[index] = with_changes(wave, status=WaveStatus.PASSED, finished_at=now, verdict=verdict)
    events.append(
        rollout._event(EventKind.WAVE_PASSED, now, verdict.reason, wave=index, verdict=verdict)
    )
    state = rollout._changed(now, waves=tuple(waves))
    actions.extend(shadow_stop(state))
    rest = [i for i in range(index + 1, len(waves)) if waves[i].devices]
    if not (spec.approval_before_next and rest):
        return rules.open_from(state, index + 1, now, actions, events)
    message = (
        f"{label} passed; {wave_label(rest[0])} ({len(waves[rest[0]].devices)} devices) "
        "waits for approval"
    )
    events.append(rollout._event(EventKind.AWAITING_APPROVAL, now, message, wave=index))
    actions.append(Notify(f"rollout of {rollout._sha}: {message}"))
    return Step(state._changed(now, status=RolloutStatus.AWAITING_APPROVAL), actions, events)


def _waiting(rollout: RolloutState, index: int, verdict: GateVerdict, now: float) -> Step:
    """Undecided: say so once (the first time), then wait quietly."""
    wave = rollout.waves[index]
    if wave.undecided_since is not None:
        return Step(rollout, [], [])
    waves = list(rollout.waves)
    waves[index] = with_changes(wave, undecided_since=now, verdict=verdict)
    event = rollout._event(
        EventKind.GATE_UNDECIDED, now, verdict.reason, wave=index, verdict=verdict
    )
    return Step(rollout._changed(now, waves=tuple(waves)), [], [event])
