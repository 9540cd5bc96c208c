"""The model-quality gate of a rollout wave: aggregated telemetry numbers in, a verdict out.

Pure, in the manner of python-tuf's ``TrustedMetadataSet``: no I/O, no clock.
The server aggregates what the wave's devices reported on the new bundle
(:class:`QualityFigures`), the same devices' figures on the previous version
before the update, and the bundle's own :class:`Baseline` (its quality report
and latency budget); :func:`evaluate_gate` compares them and returns a
:class:`GateVerdict` that lists every check with its measured value, limit and
status, and a reason an operator can read ("wave 1: latency p95 41.2 ms is
1.9x the previous 21.7 ms (limit 1.5x)").

Rules:

* a check passes when its measured value is at most its limit (the limit
  itself passes); a limit of None switches the check off;
* a check with no reference (no previous figures, no budget in the bundle)
  or whose reference has too few samples is ``skipped``: it can never get
  better data, so it must not hold the wave forever;
* a check whose new-bundle figures have too few samples is ``undecided``:
  insufficient data is never a pass;
* the verdict fails when any check fails, is undecided when none fails but
  one is undecided, and passes otherwise.

The class-distribution shift is the Jensen-Shannon divergence with base-2
logarithms (0 = the same distribution, 1 = no class in common), over the
union of both sides' labels; :func:`total_variation` is there for reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import Enum

from fleet_server.quality_figures import (
    Baseline,
    Frozen,
    GateThresholds,
    QualityFigures,
    WaveTelemetry,
)

__all__ = [
    "Baseline",
    "CheckStatus",
    "GateCheck",
    "GateOutcome",
    "GateThresholds",
    "GateVerdict",
    "QualityFigures",
    "WaveTelemetry",
    "evaluate_gate",
    "jensen_shannon",
    "total_variation",
]


class CheckStatus(str, Enum):
    """How one check came out."""

    PASSED = "passed"
    FAILED = "failed"
    UNDECIDED = "undecided"
    SKIPPED = "skipped"


class GateOutcome(str, Enum):
    """How the whole gate came out."""

    PASSED = "passed"
    FAILED = "failed"
    UNDECIDED = "undecided"


class GateCheck(Frozen):
    """One comparison: what was measured, against what, with which limit, and the outcome."""

    name: str
    status: CheckStatus
    measured: float | None = None
    limit: float | None = None
    reference: float | None = None
    reason: str


class GateVerdict(Frozen):
    """The gate's decision with every check, and one line that says why."""

    outcome: GateOutcome
    checks: tuple[GateCheck, ...]
    reason: str

    def check(self, name: str) -> GateCheck:
        """The check called ``name`` (``KeyError`` when there is none)."""
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)


def _normalised(weights: Mapping[str, float], labels: Iterable[str]) -> list[float]:
    total = float(sum(weights.values()))
    return [weights.get(label, 0.0) / total if total else 0.0 for label in labels]


def _labels(p: Mapping[str, float], q: Mapping[str, float]) -> list[str]:
    return sorted(set(p) | set(q))


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two label distributions (weights are normalised), 0..1."""
    labels = _labels(p, q)
    return 0.5 * sum(
        abs(a - b) for a, b in zip(_normalised(p, labels), _normalised(q, labels), strict=True)
    )


def jensen_shannon(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence with base-2 logarithms between two label distributions, 0..1."""
    labels = _labels(p, q)
    a, b = _normalised(p, labels), _normalised(q, labels)
    mid = [(x + y) / 2 for x, y in zip(a, b, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(v * math.log2(v / m) for v, m in zip(x, mid, strict=True) if v > 0)

    return min(1.0, max(0.0, (kl(a) + kl(b)) / 2))


def _num(value: float, limit: float | None = None, digits: int = 1) -> str:
    """``value`` rounded for people, with more digits if it would read the same as ``limit``."""

    def fmt(x: float, d: int) -> str:
        text = f"{x:.{d}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text

    shown = fmt(value, digits)
    while limit is not None and value != limit and shown == fmt(limit, digits) and digits < 6:
        digits += 1
        shown = fmt(value, digits)
    return shown


def _pct(value: float) -> str:
    return f"{_num(value * 100)}%"


class _Gate:
    """Collects the checks of one evaluation, and each one's reason without the label."""

    def __init__(self, label: str, thresholds: GateThresholds) -> None:
        self.label = label
        self.t = thresholds
        self.checks: list[GateCheck] = []
        self.details: list[str] = []

    def add(self, name: str, status: CheckStatus, detail: str, **values: float | None) -> None:
        reason = f"{self.label}: {detail}"
        self.checks.append(GateCheck(name=name, status=status, reason=reason, **values))
        self.details.append(detail)

    def skip(self, name: str, why: str) -> None:
        self.add(name, CheckStatus.SKIPPED, f"{name} skipped: {why}")

    def too_few(self, name: str, have: int, need: int, what: str = "predictions") -> None:
        detail = f"{name} undecided: {have} {what} on the new bundle (need {need})"
        self.add(name, CheckStatus.UNDECIDED, detail)

    def judge(
        self, name: str, measured: float, limit: float, reference: float | None, detail: str
    ) -> None:
        status = CheckStatus.PASSED if measured <= limit else CheckStatus.FAILED
        self.add(name, status, detail, measured=measured, limit=limit, reference=reference)


def evaluate_gate(
    telemetry: WaveTelemetry | None,
    thresholds: GateThresholds,
    baseline: Baseline | None = None,
    *,
    label: str = "wave",
) -> GateVerdict:
    """Every check of the gate over ``telemetry`` and the verdict; ``label`` starts each reason.

    No telemetry at all is an undecided verdict.
    """
    gate = _Gate(label, thresholds)
    if telemetry is None:
        return GateVerdict(
            outcome=GateOutcome.UNDECIDED,
            checks=(),
            reason=f"{label}: no telemetry from the new bundle yet",
        )
    new, previous = telemetry.new, telemetry.previous
    base = baseline or Baseline()
    _latency(gate, new, previous, base)
    _error_rate(gate, new)
    _confidence(gate, new, previous, base)
    _shift(gate, new, previous, base)
    return _verdict(gate)


def _latency(gate: _Gate, new: QualityFigures, prev: QualityFigures | None, base: Baseline) -> None:
    t = gate.t
    p95 = new.latency_p95_ms
    name = "latency_p95_vs_previous"
    if t.max_latency_ratio is None:
        gate.skip(name, "no limit")
    elif prev is None or prev.latency_p95_ms is None or prev.predictions < t.min_samples:
        gate.skip(name, "no previous p95 over enough predictions")
    elif prev.latency_p95_ms <= 0:
        gate.skip(name, "the previous p95 is 0 ms")
    elif new.predictions < t.min_samples or p95 is None:
        gate.too_few(name, new.predictions if p95 is not None else 0, t.min_samples)
    else:
        limit = t.max_latency_ratio
        ratio = p95 / prev.latency_p95_ms
        detail = (
            f"latency p95 {_num(p95)} ms is {_num(ratio, limit)}x the previous "
            f"{_num(prev.latency_p95_ms)} ms (limit {_num(limit)}x)"
        )
        gate.judge(name, ratio, limit, prev.latency_p95_ms, detail)
    name = "latency_p95_vs_budget"
    if t.max_budget_ratio is None:
        gate.skip(name, "no limit")
    elif base.latency_budget_ms is None:
        gate.skip(name, "the bundle has no latency budget")
    elif new.predictions < t.min_samples or p95 is None:
        gate.too_few(name, new.predictions if p95 is not None else 0, t.min_samples)
    else:
        budget, ratio = base.latency_budget_ms, t.max_budget_ratio
        limit_ms = budget * ratio
        verb = "over" if p95 > limit_ms else "within"
        scaled = "" if ratio == 1 else f" x {_num(ratio, None, 2)} = {_num(limit_ms)} ms"
        detail = (
            f"latency p95 {_num(p95, limit_ms)} ms is {verb} the bundle's budget "
            f"{_num(budget)} ms{scaled}"
        )
        gate.judge(name, p95, limit_ms, base.latency_budget_ms, detail)


def _error_rate(gate: _Gate, new: QualityFigures) -> None:
    t = gate.t
    name = "error_rate"
    rate = new.error_rate
    if t.max_error_rate is None:
        gate.skip(name, "no limit")
    elif rate is None or new.attempts < t.min_samples:
        gate.too_few(name, new.attempts, t.min_samples, "inference attempts")
    else:
        limit = t.max_error_rate
        detail = (
            f"{new.errors} inference errors in {new.attempts} attempts is "
            f"{_num(rate * 100, limit * 100, 2)}% (limit {_num(limit * 100, None, 2)}%)"
        )
        gate.judge(name, rate, limit, None, detail)


def _confidence(
    gate: _Gate, new: QualityFigures, prev: QualityFigures | None, base: Baseline
) -> None:
    t = gate.t
    previous = None if prev is None or prev.predictions < t.min_samples else prev.mean_confidence
    references = [
        ("confidence_drop_vs_previous", t.max_confidence_drop, previous, "the previous"),
        (
            "confidence_drop_vs_baseline",
            t.max_baseline_confidence_drop,
            base.mean_confidence,
            "the quality report's",
        ),
    ]
    for name, limit, reference, whose in references:
        mean = new.mean_confidence
        if limit is None:
            gate.skip(name, "no limit")
        elif reference is None:
            gate.skip(name, f"no mean confidence from {whose.removeprefix('the ')} to compare")
        elif new.predictions < t.min_samples or mean is None:
            gate.too_few(name, new.predictions if mean is not None else 0, t.min_samples)
        else:
            drop = reference - mean
            change = (
                f"{_num(abs(drop) * 100, limit * 100)} points {'below' if drop >= 0 else 'above'}"
            )
            detail = (
                f"mean confidence {_pct(mean)} is {change} {whose} {_pct(reference)} "
                f"(limit {_num(limit * 100)} points below)"
            )
            gate.judge(name, drop, limit, reference, detail)


def _shift(gate: _Gate, new: QualityFigures, prev: QualityFigures | None, base: Baseline) -> None:
    t = gate.t
    previous: dict[str, float] | None = None
    if prev is not None and sum(prev.class_counts.values()) >= t.min_shift_samples:
        previous = {label: float(count) for label, count in prev.class_counts.items()}
    report = base.class_distribution if base.class_distribution else None
    references = [
        ("class_shift_vs_previous", t.max_class_shift, previous, "the previous version's"),
        ("class_shift_vs_baseline", t.max_baseline_class_shift, report, "the quality report's"),
    ]
    labelled = sum(new.class_counts.values())
    shares = {label: float(count) for label, count in new.class_counts.items()}
    for name, limit, reference, whose in references:
        if limit is None:
            gate.skip(name, "no limit")
        elif reference is None:
            gate.skip(name, f"no class shares from {whose.removeprefix('the ')} to compare")
        elif labelled < t.min_shift_samples:
            gate.too_few(name, labelled, t.min_shift_samples, "labelled predictions")
        else:
            shift = jensen_shannon(shares, reference)
            detail = (
                f"class distribution shifted by {_num(shift, limit, 3)} (Jensen-Shannon) "
                f"from {whose} (limit {_num(limit, None, 3)})"
            )
            gate.judge(name, shift, limit, None, detail)


def _verdict(gate: _Gate) -> GateVerdict:
    checks = tuple(gate.checks)
    by_status: dict[CheckStatus, list[str]] = {status: [] for status in CheckStatus}
    for check, detail in zip(checks, gate.details, strict=True):
        by_status[check.status].append(detail)
    if by_status[CheckStatus.FAILED]:
        outcome, details = GateOutcome.FAILED, by_status[CheckStatus.FAILED]
    elif by_status[CheckStatus.UNDECIDED]:
        outcome, details = GateOutcome.UNDECIDED, by_status[CheckStatus.UNDECIDED]
    else:
        outcome = GateOutcome.PASSED
        passed, skipped = len(by_status[CheckStatus.PASSED]), len(by_status[CheckStatus.SKIPPED])
        details = [f"quality gate passed ({passed} checks passed, {skipped} skipped)"]
    return GateVerdict(
        outcome=outcome, checks=checks, reason=f"{gate.label}: " + "; ".join(details)
    )
