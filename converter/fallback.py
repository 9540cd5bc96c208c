"""Accuracy-aware fallback: keep the fewest, most sensitive ops in float until the gate passes.

The search is greedy over the candidates that :func:`converter.sensitivity.measure_candidates`
ranked (each op with the ops that read its output, kept in float one at a
time, by how much of the int8 model's output error that removed): the next
candidate joins the float set, the model is quantised again (calibration is
reused), checked on the parity images and timed against the full int8 model;
it stops at the first model that passes the gate, or when no candidate is
left that helps within the limits: at most ``max_float_fraction`` of the model's
MACs in float, at most ``max_latency_ratio`` times full int8's invoke p50, at
most ``max_steps`` re-quantisations. An op that would break the MAC budget is
passed over (a cheaper one further down may still fit); one whose step runs
over the latency limit is taken back out.

Pure: the quantiser, the gate and the clock are callables, so the search is
tested with plain values; :mod:`converter.convert` hands it the real ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from converter.sensitivity import FloatCandidate, QuantOp

__all__ = ["FallbackLimits", "FallbackOutcome", "FallbackStep", "Trial", "search_fallback"]

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
class FallbackStep:
    """One step of the search, as logged and reported."""

    step: int
    op: str
    kind: str
    action: str
    """``kept in float``, ``taken back (latency)`` or ``passed over (MACs)``."""
    float_ops: tuple[str, ...]
    float_mac_fraction: float
    agreement: float | None = None
    accuracy_drop: float | None = None
    passed: bool = False
    latency_ratio: float | None = None
    model_bytes: int | None = None

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model bytes)."""
        return {
            "passed": self.passed,
            "stopped": self.stopped,
            "float_ops": [op.name for op in self.float_ops],
            "float_mac_fraction": round(self.float_mac_fraction, 6),
            "latency_ratio": None if self.latency_ratio is None else round(self.latency_ratio, 4),
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
    on_step: Callable[[FallbackStep], None] | None = None,
) -> FallbackOutcome:
    """Greedy search over ``candidates`` (most helpful first) for a model that passes ``check``.

    ``quantize`` gets the quantiser ids to keep in float and returns the model;
    ``latency_ratio`` times a model against full int8. Candidates that did not
    reduce the output error are never tried.
    """
    chosen: dict[str, QuantOp] = {}
    steps: list[FallbackStep] = []
    last: tuple[bytes, Trial, float] | None = None

    def record(step: FallbackStep) -> None:
        steps.append(step)
        log.info(
            "fallback step %d: %s %s (%s): %d ops in float, %.1f%% of MACs%s",
            step.step,
            step.action,
            step.op,
            step.kind,
            len(step.float_ops),
            100 * step.float_mac_fraction,
            ""
            if step.agreement is None
            else f", agreement {100 * step.agreement:.2f}%, drop {step.accuracy_drop:+.2f} points, "
            f"latency x{step.latency_ratio:.2f}",
        )
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
        names = tuple(trying)
        if fraction(trying) > limits.max_float_fraction:
            record(
                FallbackStep(
                    len(steps) + 1,
                    candidate.op.name,
                    candidate.op.kind,
                    "passed over (MACs)",
                    names,
                    fraction(trying),
                )
            )
            continue
        tries += 1
        model = quantize([member for op in trying.values() for member in op.excluded])
        trial = check(model)
        ratio = latency_ratio(model)
        over = ratio > limits.max_latency_ratio
        record(
            FallbackStep(
                len(steps) + 1,
                candidate.op.name,
                candidate.op.kind,
                "taken back (latency)" if over else "kept in float",
                names,
                fraction(trying),
                trial.agreement,
                trial.accuracy_drop,
                trial.passed and not over,
                ratio,
                len(model),
            )
        )
        if over:
            continue
        chosen = trying
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
            )
    if last is None:
        return FallbackOutcome(False, stopped, [], 0.0, None, None, None, steps)
    model, trial, ratio = last
    return FallbackOutcome(
        False, stopped, list(chosen.values()), fraction(chosen), ratio, model, trial, steps
    )
