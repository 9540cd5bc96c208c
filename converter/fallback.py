"""Accuracy-aware fallback: keep the fewest, most sensitive ops in float until the gate passes.

The search is greedy over the candidates that :func:`converter.sensitivity.measure_candidates`
ranked (each op with the ops that read its output, kept in float one at a
time, by how much of the int8 model's output error that removed): the next
candidate joins the float set and the model is quantised again (calibration
is reused).

With a ``select`` callable (the default in :mod:`converter.convert`) each
step is *chosen* on a selection set that is not the gate's photos: the model
is kept only when it moves the selection figure (the mean distance of its
scores from the float model's, top-1 agreement as tie-break) below the best
so far; otherwise it is taken back (``taken back (no gain)``) and spends
none of the MAC budget. A kept model is timed against full int8 and then
judged by the gate on the parity photos. Without ``select`` the parity check
both chooses and judges, and every step within the limits is kept (the
behaviour before selection sets; it overfits the parity photos).

It stops at the first kept model that passes the gate, or when no candidate
is left that helps within the limits: at most ``max_float_fraction`` of the
model's MACs in float, at most ``max_latency_ratio`` times full int8's invoke
p50, at most ``max_steps`` re-quantisations. An op that would break the MAC
budget is passed over (a cheaper one further down may still fit); one whose
step runs over the latency limit is taken back out.

Pure: the quantiser, the gate and the clock are callables, so the search is
tested with plain values; :mod:`converter.convert` hands it the real ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.sensitivity import FloatCandidate, QuantOp

__all__ = [
    "FallbackLimits",
    "FallbackOutcome",
    "FallbackStep",
    "Selection",
    "Trial",
    "search_fallback",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FallbackLimits:
    """What the fallback may spend."""

    max_float_fraction: float = 0.10
    """Share of the model's MACs that may stay in float."""
    max_latency_ratio: float = 1.15
    """Largest invoke p50 of the fallback model over full int8's (same backend, 1 thread)."""
    max_steps: int = 16
    """Re-quantisations at most."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_float_fraction <= 1.0:
            raise ValueError(f"max_float_fraction must be in [0, 1], not {self.max_float_fraction}")
        if self.max_latency_ratio < 1.0:
            raise ValueError(f"max_latency_ratio must be at least 1, not {self.max_latency_ratio}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, not {self.max_steps}")


@dataclass(frozen=True)
class Trial:
    """The gate's verdict on one candidate model (``detail``: whatever the caller keeps)."""

    passed: bool
    agreement: float
    accuracy_drop: float
    detail: Any = None


@dataclass(frozen=True)
class Selection:
    """A model's figure on the selection set: what the search chooses by (lower error wins,
    higher agreement breaks a tie)."""

    score_error: float
    """Mean distance of the model's scores from the float model's (total variation)."""
    agreement: float
    """Top-1 agreement with the float model on the selection set."""

    def better_than(self, other: Selection) -> bool:
        """Whether this figure beats ``other``: a smaller error, or the same and more agreement."""
        if self.score_error != other.score_error:
            return self.score_error < other.score_error
        return self.agreement > other.agreement

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly form."""
        return {"score_error": round(self.score_error, 6), "agreement": round(self.agreement, 6)}


@dataclass(frozen=True)
class FallbackStep:
    """One step of the search, as logged and reported."""

    step: int
    op: str
    kind: str
    action: str
    """``kept in float``, ``taken back (no gain)``, ``taken back (latency)`` or
    ``passed over (MACs)``."""
    float_ops: tuple[str, ...]
    float_mac_fraction: float
    agreement: float | None = None
    accuracy_drop: float | None = None
    passed: bool = False
    latency_ratio: float | None = None
    model_bytes: int | None = None
    selection: Selection | None = None
    """The model's figure on the selection set (None when the parity photos chose)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly row."""
        return {
            "step": self.step,
            "op": self.op,
            "kind": self.kind,
            "action": self.action,
            "float_ops": list(self.float_ops),
            "float_mac_fraction": round(self.float_mac_fraction, 6),
            "agreement": self.agreement,
            "accuracy_drop_points": self.accuracy_drop,
            "passed": self.passed,
            "latency_ratio": None if self.latency_ratio is None else round(self.latency_ratio, 4),
            "model_bytes": self.model_bytes,
            "selection": None if self.selection is None else self.selection.to_dict(),
        }


@dataclass
class FallbackOutcome:
    """Where the search ended: the float ops of the model it settled on, and every step."""

    passed: bool
    stopped: str
    float_ops: list[QuantOp] = field(default_factory=list)
    float_mac_fraction: float = 0.0
    latency_ratio: float | None = None
    model: bytes | None = None
    trial: Trial | None = None
    steps: list[FallbackStep] = field(default_factory=list)
    candidates: list[FloatCandidate] = field(default_factory=list)
    """What the search chose from (set by the caller that measured them)."""
    selection_set: str = "parity"
    """Which photos chose the steps (set by the caller; ``parity``: the gate's own)."""
    selection_images: int = 0
    baseline: Selection | None = None
    """Full int8's figure on the selection set (None when the parity photos chose)."""
    bundle: Path | None = None
    """Where the caller wrote the last kept model of a failed search (``--keep-failed``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model bytes)."""
        return {
            "passed": self.passed,
            "stopped": self.stopped,
            "selection_set": self.selection_set,
            "selection_images": self.selection_images,
            "full_int8_selection": None if self.baseline is None else self.baseline.to_dict(),
            "float_ops": [op.name for op in self.float_ops],
            "float_mac_fraction": round(self.float_mac_fraction, 6),
            "latency_ratio": None if self.latency_ratio is None else round(self.latency_ratio, 4),
            "bundle": None if self.bundle is None else str(self.bundle),
            "steps": [step.to_dict() for step in self.steps],
        }


def search_fallback(
    candidates: Sequence[FloatCandidate],
    total_macs: int,
    quantize: Callable[[list[str]], bytes],
    check: Callable[[bytes], Trial],
    latency_ratio: Callable[[bytes], float],
    *,
    limits: FallbackLimits = FallbackLimits(),
    select: Callable[[bytes], Selection] | None = None,
    baseline: Selection | None = None,
    on_step: Callable[[FallbackStep], None] | None = None,
) -> FallbackOutcome:
    """Greedy search over ``candidates`` (most helpful first) for a model that passes ``check``.

    ``quantize`` gets the quantiser ids to keep in float and returns the model;
    ``latency_ratio`` times a model against full int8. Candidates that did not
    reduce the output error are never tried. With ``select`` (and ``baseline``,
    full int8's figure) a step is kept only when its selection figure beats the
    best so far; the gate (``check``) is asked only about kept steps.
    """
    if select is not None and baseline is None:
        raise ValueError("select needs the full int8 model's figure as baseline")
    chosen: dict[str, QuantOp] = {}
    steps: list[FallbackStep] = []
    last: tuple[bytes, Trial, float] | None = None
    best = baseline

    def record(step: FallbackStep) -> None:
        steps.append(step)
        _log_step(step)
        if on_step is not None:
            on_step(step)

    def fraction(ops: dict[str, QuantOp]) -> float:
        return sum(op.macs for op in ops.values()) / total_macs if total_macs else 0.0

    tries = 0
    stopped = "no candidate left that helps within the limits"
    for candidate in candidates:
        if candidate.gain <= 0:
            break
        trying = dict(chosen)
        trying.update({op.name: op for op in candidate.group})
        if len(trying) == len(chosen):
            continue  # already in float
        if tries >= limits.max_steps:
            stopped = f"stopped after {limits.max_steps} re-quantisations (the step limit)"
            break

        def step(
            action: str,
            candidate: FloatCandidate = candidate,
            trying: dict[str, QuantOp] = trying,
            **figures: Any,
        ) -> None:
            record(
                FallbackStep(
                    len(steps) + 1,
                    candidate.op.name,
                    candidate.op.kind,
                    action,
                    tuple(trying),
                    fraction(trying),
                    **figures,
                )
            )

        if fraction(trying) > limits.max_float_fraction:
            step("passed over (MACs)")
            continue
        tries += 1
        model = quantize([member for op in trying.values() for member in op.excluded])
        figure = select(model) if select is not None else None
        if figure is not None and best is not None and not figure.better_than(best):
            step("taken back (no gain)", model_bytes=len(model), selection=figure)
            continue
        ratio = latency_ratio(model)
        if ratio > limits.max_latency_ratio:
            step(
                "taken back (latency)",
                latency_ratio=ratio,
                model_bytes=len(model),
                selection=figure,
            )
            continue
        trial = check(model)
        step(
            "kept in float",
            agreement=trial.agreement,
            accuracy_drop=trial.accuracy_drop,
            passed=trial.passed,
            latency_ratio=ratio,
            model_bytes=len(model),
            selection=figure,
        )
        chosen = trying
        best = figure if figure is not None else best
        last = (model, trial, ratio)
        if trial.passed:
            return FallbackOutcome(
                True,
                "gate passed",
                list(chosen.values()),
                fraction(chosen),
                ratio,
                model,
                trial,
                steps,
                baseline=baseline,
            )
    if last is None:
        return FallbackOutcome(False, stopped, [], 0.0, None, None, None, steps, baseline=baseline)
    model, trial, ratio = last
    return FallbackOutcome(
        False,
        stopped,
        list(chosen.values()),
        fraction(chosen),
        ratio,
        model,
        trial,
        steps,
        baseline=baseline,
    )


def _log_step(step: FallbackStep) -> None:
    figures = []
    if step.selection is not None:
        figures.append(
            f"selection error {step.selection.score_error:.5f}, "
            f"agreement {100 * step.selection.agreement:.2f}%"
        )
    if step.agreement is not None:
        figures.append(
            f"gate agreement {100 * step.agreement:.2f}%, drop {step.accuracy_drop:+.2f} points"
        )
    if step.latency_ratio is not None:
        figures.append(f"latency x{step.latency_ratio:.2f}")
    log.info(
        "fallback step %d: %s %s (%s): %d ops in float, %.1f%% of MACs%s",
        step.step,
        step.action,
        step.op,
        step.kind,
        len(step.float_ops),
        100 * step.float_mac_fraction,
        "".join(f", {figure}" for figure in figures),
    )
