"""The shadow wave's gate: the devices' shadow reports summed, judged against the wave's limits.

Pure: reports in (:class:`~edge_runtime.protocol.shadow.ShadowReport`, parsed
at the boundary), a :class:`~fleet_server.quality_gate.GateVerdict` out, with
one :class:`~fleet_server.quality_gate.GateCheck` per limit, so the planner
records a shadow verdict like any wave's. Rules:

* a device that reports ``failed`` fails the gate at once, with its reason;
* the gate waits (undecided) until every device of the wave has reported a
  running window, the wave has run ``min_duration_s`` and at least
  ``min_frames`` frames were compared in all; after ``timeout_s`` waiting
  is a failure (:mod:`fleet_server.rollout_shadow` says so);
* then it fails when agreement with the active model is under
  ``min_agreement``, when a class's share of the answers moved more than
  ``max_class_shift`` (candidate against active, on the same frames), when the
  candidate failed on more than ``max_error_rate`` of the frames it took, or
  when its time per frame is over ``max_latency_ratio`` times the active
  model's or its p95 over ``max_latency_ms``; on multi-camera devices, also
  when one camera's agreement (over at least :data:`CAMERA_MIN_FRAMES`
  frames) is under ``min_agreement`` or a class's share on one camera moved
  more than ``max_class_shift`` (from devices that report each camera's class
  counts), so a line where one belt sees what the others do not is judged on
  that belt too; it passes otherwise. The figures are summed by
  :mod:`fleet_server.shadow_figures`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.protocol.shadow import ShadowRequest
from fleet_server.quality_gate import CheckStatus, GateCheck, GateOutcome, GateVerdict
from fleet_server.shadow_figures import CAMERA_MIN_FRAMES, ShadowFigures, sum_reports

__all__ = ["CAMERA_MIN_FRAMES", "ShadowFigures", "ShadowStage", "evaluate_shadow", "sum_reports"]


class ShadowStage(BaseModel):
    """How a shadow wave runs on its devices and what it must show to let the rollout go on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_nth: int = Field(default=5, ge=1, le=10_000)
    """The candidate takes one classified frame in this many, of each camera."""
    cpu_budget: float = Field(default=0.25, gt=0.0, le=1.0)
    """The share of one core the candidate may use on each device."""
    window_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    """Seconds between two reports of a device."""
    min_duration_s: float = Field(default=600.0, ge=0.0, allow_inf_nan=False)
    """The wave runs at least this long before it is judged."""
    min_frames: int = Field(default=200, ge=1)
    """Frames compared (all devices together) before it is judged."""
    timeout_s: float = Field(default=3600.0, gt=0.0, allow_inf_nan=False)
    """Not enough figures this long after the wave started: it fails."""
    min_agreement: float = Field(default=0.9, ge=0.0, le=1.0)
    """The share of compared frames on which the candidate answers as the active model."""
    max_class_shift: float = Field(default=0.1, ge=0.0, le=1.0)
    """The most any class's share of the answers may move (0.1: ten points)."""
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_latency_ratio: float | None = Field(default=2.0, gt=0.0, allow_inf_nan=False)
    """The candidate's mean time per frame against the active model's (None: not checked)."""
    max_latency_ms: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    """The candidate's p95 time per frame, in milliseconds (None: not checked)."""
    max_budget_ratio: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    """The candidate's p95 against the latency budget its manifest declares (1.0: within it;
    None: not checked). In shadow the candidate runs niced and paused by its CPU budget, so
    its times are an upper bound of what it will take as the active model."""

    def request(self, bundle_sha256: str) -> ShadowRequest:
        """What the wave's devices are sent."""
        return ShadowRequest(
            bundle_sha256=bundle_sha256,
            every_nth=self.every_nth,
            cpu_budget=self.cpu_budget,
            window_s=self.window_s,
        )


def _check(
    name: str, failed: bool, measured: float | None, limit: float | None, reason: str
) -> GateCheck:
    status = CheckStatus.FAILED if failed else CheckStatus.PASSED
    return GateCheck(name=name, status=status, measured=measured, limit=limit, reason=reason)


def evaluate_shadow(
    figures: ShadowFigures,
    stage: ShadowStage,
    devices: Sequence[str],
    elapsed_s: float,
    *,
    label: str = "shadow wave",
    budget_ms: float | None = None,
) -> GateVerdict:
    """Judge a shadow wave's figures (see the module); ``elapsed_s`` since the wave started;
    ``budget_ms``, the candidate's own latency budget (its manifest's), if it has one."""
    if figures.failures:
        device, why = sorted(figures.failures.items())[0]
        reason = f"{label} failed: {device}: {why}"
        check = GateCheck(name="runs", status=CheckStatus.FAILED, reason=reason)
        return GateVerdict(outcome=GateOutcome.FAILED, checks=(check,), reason=reason)
    waiting = _waiting(figures, stage, devices, elapsed_s)
    if waiting:
        reason = f"{label} undecided: {'; '.join(waiting)}"
        check = GateCheck(
            name="frames",
            status=CheckStatus.UNDECIDED,
            measured=float(figures.compared),
            limit=float(stage.min_frames),
            reason=reason,
        )
        return GateVerdict(outcome=GateOutcome.UNDECIDED, checks=(check,), reason=reason)
    checks = _checks(figures, stage, budget_ms)
    failed = [c.reason for c in checks if c.status is CheckStatus.FAILED]
    summary = _summary(figures, len(devices))
    if failed:
        reason = f"{label} failed: {'; '.join(failed)} ({summary})"
        return GateVerdict(outcome=GateOutcome.FAILED, checks=checks, reason=reason)
    reason = f"{label} passed: {summary}"
    return GateVerdict(outcome=GateOutcome.PASSED, checks=checks, reason=reason)


def _waiting(
    figures: ShadowFigures, stage: ShadowStage, devices: Sequence[str], elapsed_s: float
) -> list[str]:
    silent = [d for d in devices if d not in figures.devices_running]
    waiting = []
    if silent:
        shown = ", ".join(silent[:5]) + (", ..." if len(silent) > 5 else "")
        waiting.append(f"{len(silent)} of {len(devices)} devices not running it yet ({shown})")
    if figures.compared < stage.min_frames:
        waiting.append(f"{figures.compared} of {stage.min_frames} frames compared")
    if elapsed_s < stage.min_duration_s:
        waiting.append(f"{elapsed_s:.0f} of {stage.min_duration_s:g} s run")
    return waiting


def _checks(
    figures: ShadowFigures, stage: ShadowStage, budget_ms: float | None
) -> tuple[GateCheck, ...]:
    agreement = figures.agreement or 0.0
    checks = [
        _check(
            "agreement",
            agreement < stage.min_agreement,
            agreement,
            stage.min_agreement,
            f"agreement with the active model {agreement:.1%} over {figures.compared} frames "
            f"(min {stage.min_agreement:.0%})",
        )
    ]
    weakest = figures.weakest_camera()
    if weakest is not None:
        camera, compared, agreed = weakest
        checks.append(
            _check(
                "camera-agreement",
                agreed / compared < stage.min_agreement,
                agreed / compared,
                stage.min_agreement,
                f"camera {camera}: agreement {agreed / compared:.1%} over {compared} frames "
                f"(min {stage.min_agreement:.0%})",
            )
        )
    shift = figures.class_shift()
    if shift is not None:
        name, by = shift
        checks.append(
            _check(
                "class-shift",
                by > stage.max_class_shift,
                by,
                stage.max_class_shift,
                f"{name}'s share moved {by * 100:.1f} points: "
                f"{figures.active_classes.get(name, 0)} frames for the active model, "
                f"{figures.candidate_classes.get(name, 0)} for the candidate "
                f"(max {stage.max_class_shift * 100:g})",
            )
        )
    shifted = figures.most_shifted_camera()
    if shifted is not None:
        camera, label, by = shifted
        own = figures.cameras[camera]
        checks.append(
            _check(
                "camera-class-shift",
                by > stage.max_class_shift,
                by,
                stage.max_class_shift,
                f"camera {camera}: {label}'s share moved {by * 100:.1f} points: "
                f"{own.active_classes.get(label, 0)} frames for the active model, "
                f"{own.candidate_classes.get(label, 0)} for the candidate "
                f"(max {stage.max_class_shift * 100:g})",
            )
        )
    taken = figures.compared + figures.errors
    rate = figures.errors / taken if taken else 0.0
    checks.append(
        _check(
            "errors",
            rate > stage.max_error_rate,
            rate,
            stage.max_error_rate,
            f"the candidate failed on {figures.errors} of {taken} frames ({rate:.1%}, max "
            f"{stage.max_error_rate:.1%})" + (f": {figures.last_error}" if figures.errors else ""),
        )
    )
    candidate_ms = figures.mean(figures.candidate_ms_sum)
    active_ms = figures.mean(figures.active_ms_sum)
    if stage.max_latency_ratio is not None and candidate_ms is not None and active_ms:
        ratio = candidate_ms / active_ms
        checks.append(
            _check(
                "latency-ratio",
                ratio > stage.max_latency_ratio,
                ratio,
                stage.max_latency_ratio,
                f"the candidate takes {candidate_ms:.2f} ms a frame, the active model "
                f"{active_ms:.2f} ms (x{ratio:.2f}, max x{stage.max_latency_ratio:g})",
            )
        )
    p95 = figures.candidate_p95_ms
    if stage.max_latency_ms is not None and p95 is not None:
        checks.append(
            _check(
                "latency-p95",
                p95 > stage.max_latency_ms,
                p95,
                stage.max_latency_ms,
                f"the candidate's p95 is {p95:.2f} ms a frame (max {stage.max_latency_ms:g} ms)",
            )
        )
    if stage.max_budget_ratio is not None and budget_ms is not None and p95 is not None:
        limit = budget_ms * stage.max_budget_ratio
        checks.append(
            _check(
                "latency-budget",
                p95 > limit,
                p95,
                limit,
                f"the candidate's p95 is {p95:.2f} ms a frame, its budget {budget_ms:g} ms "
                f"(max x{stage.max_budget_ratio:g})",
            )
        )
    return tuple(checks)


def _summary(figures: ShadowFigures, devices: int) -> str:
    agreement = figures.agreement or 0.0
    shift = figures.class_shift()
    candidate = figures.mean(figures.candidate_confidence_sum)
    active = figures.mean(figures.active_confidence_sum)
    parts = [
        f"{figures.compared} frames on {devices} devices",
        f"agreement {agreement:.1%}",
        f"confidence {_pct(candidate)} vs {_pct(active)} active",
    ]
    if shift is not None:
        parts.append(f"largest class shift {shift[0]} {shift[1] * 100:.1f} points")
    candidate_ms, active_ms = (
        figures.mean(figures.candidate_ms_sum),
        figures.mean(figures.active_ms_sum),
    )
    if candidate_ms is not None and active_ms is not None:
        parts.append(f"{candidate_ms:.2f} ms a frame vs {active_ms:.2f} ms active")
    parts.append(f"{figures.errors} errors")
    return ", ".join(parts)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
