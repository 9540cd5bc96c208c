"""Probation: the newly activated bundle serves real frames while it is watched.

:class:`ProbationMonitor` is pure: the caller feeds it every prediction of
the new bundle and every inference error, and asks for a verdict with the
current time. It fails the bundle on an inference error, a NaN/inf output,
a latency p95 over the budget, or a confidence collapse against the
previous bundle; it passes the bundle when the window ends without any.
:class:`CameraProbation` judges each camera's stream of a multi-camera
device with its own monitor (and a single camera's with one, unchanged),
leaving out the cameras that were already dead when the bundle was activated,
and gives each stream's figures for the event that ends probation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.prediction import Prediction
from edge_runtime.protocol import ProbationFigures

__all__ = [
    "CameraProbation",
    "ProbationMonitor",
    "ProbationVerdict",
    "confidence_baseline",
    "dead_cameras",
]


@dataclass(frozen=True)
class ProbationVerdict:
    """The end of probation: passed (commit) or not (roll back), and why."""

    passed: bool
    reason: str


def confidence_baseline(
    recent: Sequence[float], fallback: float | None = None, min_samples: int = 20
) -> float | None:
    """Mean confidence of the previous bundle's recent predictions.

    With fewer than ``min_samples`` finite values, ``fallback`` instead (for
    example the bundle quality report's ``mean_confidence``); None means no
    baseline, so no confidence-collapse check.
    """
    values = [value for value in recent if math.isfinite(value)]
    if len(values) >= min_samples:
        return float(np.mean(values))
    return fallback


def dead_cameras(frame_ages: Mapping[str, float | None], max_frame_age_s: float) -> dict[str, str]:
    """The cameras that are dead now, each with why: no frame for over ``max_frame_age_s``.

    ``frame_ages`` maps each camera to the seconds since its newest frame
    (None: it never sent one). Asked when a bundle is activated: these
    cameras are not judged by its probation.
    """
    dead = {}
    for camera, age in frame_ages.items():
        if age is None:
            dead[camera] = "no frame since the device started, before activation"
        elif age > max_frame_age_s:
            dead[camera] = (
                f"no frame for {age:.1f} s before activation (limit {max_frame_age_s:g} s)"
            )
    return dead


class ProbationMonitor:
    """Watches one bundle's probation and decides it.

    The window ends once ``window_s`` seconds have passed since
    ``started_at`` (when given) and at least ``min_predictions`` predictions
    were seen (0: time alone ends it, even without a prediction). Latency and confidence are judged once ``min_samples``
    predictions are in, and always at the end of the window. The first
    failure is final.
    """

    def __init__(
        self,
        started_at: float,
        *,
        window_s: float | None = None,
        min_predictions: int = 1,
        baseline_confidence: float | None = None,
        latency_budget_ms: float | None = None,
        min_confidence_ratio: float = 0.5,
        min_samples: int = 20,
        latency_percentile: float = 95.0,
    ) -> None:
        if window_s is not None and window_s < 0:
            raise ValueError("window_s must not be negative")
        if min_predictions < 0:
            raise ValueError("min_predictions must not be negative")
        if not 0.0 <= min_confidence_ratio <= 1.0:
            raise ValueError("min_confidence_ratio must be in [0, 1] (0: no confidence check)")
        self.started_at = started_at
        self.window_s = window_s
        self.min_predictions = min_predictions
        self.baseline_confidence = baseline_confidence
        self.latency_budget_ms = latency_budget_ms
        self.min_confidence_ratio = min_confidence_ratio
        self.min_samples = min_samples
        self.latency_percentile = latency_percentile
        self.labels: Counter[str] = Counter()
        self._confidence_sum = 0.0
        self._latencies: list[float] = []
        self.errors = 0
        """Inference errors recorded (the first fails probation)."""
        self._failure: ProbationVerdict | None = None
        self.last_captured_at: float | None = None
        """Capture time of the newest frame recorded through :meth:`record` (None before one)."""

    @property
    def predictions(self) -> int:
        """How many predictions were recorded."""
        return len(self._latencies)

    @property
    def mean_confidence(self) -> float | None:
        """Mean confidence so far (None before the first prediction)."""
        return self._confidence_sum / self.predictions if self.predictions else None

    @property
    def latency_p95_ms(self) -> float | None:
        """The watched latency percentile so far (None before the first prediction)."""
        if not self._latencies:
            return None
        return float(np.percentile(self._latencies, self.latency_percentile))

    def record(self, prediction: Prediction, *, finite: bool = True) -> None:
        """Record one pipeline prediction (its ``inference_ms`` is the latency watched)."""
        if self.last_captured_at is None or prediction.captured_at > self.last_captured_at:
            self.last_captured_at = prediction.captured_at
        self.record_prediction(
            prediction.label, prediction.confidence, prediction.inference_ms, finite=finite
        )

    def record_prediction(
        self, label: str, confidence: float, latency_ms: float, *, finite: bool = True
    ) -> None:
        """Record one prediction; ``finite`` is False when any of its scores was NaN/inf."""
        index = self.predictions + 1
        if not finite or not math.isfinite(confidence) or not math.isfinite(latency_ms):
            self._fail(f"NaN/inf output on prediction {index}")
        # keep the statistics finite; the failure above is already final
        confidence = confidence if math.isfinite(confidence) else 0.0
        latency_ms = latency_ms if math.isfinite(latency_ms) else 0.0
        self.labels[label] += 1
        self._confidence_sum += confidence
        self._latencies.append(latency_ms)

    def record_error(self, message: str) -> None:
        """An inference error or crash of the new bundle: probation fails."""
        self.errors += 1
        self._fail(f"inference error: {message}")

    def window_over(self, now: float) -> bool:
        """True once the window's time and prediction count are both reached."""
        elapsed = self.window_s is None or now - self.started_at >= self.window_s
        return elapsed and self.predictions >= self.min_predictions

    def verdict(self, now: float) -> ProbationVerdict | None:
        """Failed or passed, or None while probation is undecided."""
        if self._failure is not None:
            return self._failure
        over = self.window_over(now)
        if over or self.predictions >= self.min_samples:
            self._judge()
            if self._failure is not None:
                return self._failure
        if not over:
            return None
        mean = self.mean_confidence
        return ProbationVerdict(
            passed=True,
            reason=(
                f"{self.predictions} predictions without failure; latency p"
                f"{self.latency_percentile:g} {self.latency_p95_ms or 0.0:.2f} ms, "
                f"mean confidence {mean or 0.0:.3f}"
            ),
        )

    def _judge(self) -> None:
        p95 = self.latency_p95_ms
        budget = self.latency_budget_ms
        if p95 is not None and budget is not None and p95 > budget:
            self._fail(
                f"latency p{self.latency_percentile:g} {p95:.2f} ms is over the budget of "
                f"{budget:g} ms ({self.predictions} predictions)"
            )
            return
        mean = self.mean_confidence
        baseline = self.baseline_confidence
        if mean is not None and baseline is not None and baseline > 0:
            floor = self.min_confidence_ratio * baseline
            if mean < floor:
                self._fail(
                    f"confidence collapse: mean confidence {mean:.3f} is under "
                    f"{self.min_confidence_ratio:.0%} of the previous bundle's {baseline:.3f} "
                    f"({self.predictions} predictions)"
                )

    def figures(self, camera: str | None = None) -> ProbationFigures:
        """This stream's figures so far (``note``: its failure, if it failed)."""
        return ProbationFigures(
            camera=camera,
            predictions=self.predictions,
            errors=self.errors,
            latency_p95_ms=self.latency_p95_ms,
            mean_confidence=self.mean_confidence,
            baseline_confidence=self.baseline_confidence,
            note=None if self._failure is None else self._failure.reason[:300],
        )

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = ProbationVerdict(passed=False, reason=reason)


class CameraProbation:
    """One probation judged per camera stream: a :class:`ProbationMonitor` for each camera.

    ``monitors`` maps each camera id to its monitor; a single-camera device
    has one stream under the key None, whose verdicts are its monitor's, word
    for word. On several cameras the bundle fails as soon as one camera's
    monitor fails (the reason names the camera), or, with ``silence_s``, when
    a camera made no prediction with the bundle for ``silence_s`` seconds
    (counted from the start of probation, then from the capture of its
    newest frame recorded); it passes once every camera's window is over.

    ``excluded`` maps the cameras left out of the judgement (dead before
    activation) to why: their predictions and errors are not judged, and
    they are listed, not judged, in :meth:`figures` and the passing reason.
    """

    def __init__(
        self,
        monitors: Mapping[str | None, ProbationMonitor],
        *,
        silence_s: float | None = None,
        excluded: Mapping[str, str] | None = None,
    ) -> None:
        if not monitors:
            raise ValueError("probation needs at least one camera stream")
        if silence_s is not None and silence_s <= 0:
            raise ValueError("silence_s must be positive")
        self.monitors = dict(monitors)
        self.silence_s = silence_s
        self.excluded = dict(excluded or {})
        if set(self.excluded) & set(self.monitors):
            raise ValueError("a camera is either judged or excluded, not both")
        self._failure: ProbationVerdict | None = None
        self._failed_camera: str | None = None
        self._failed_note: str | None = None

    @property
    def predictions(self) -> int:
        """How many predictions were recorded, all cameras together."""
        return sum(monitor.predictions for monitor in self.monitors.values())

    def record(self, prediction: Prediction, *, finite: bool = True) -> None:
        """Record one prediction on its camera's stream (``prediction.camera_id``; others are ignored)."""
        monitor = self.monitors.get(prediction.camera_id)
        if monitor is not None:
            monitor.record(prediction, finite=finite)

    def record_error(self, message: str, camera: str | None = None) -> None:
        """An inference error of the new bundle on ``camera``'s stream: probation fails."""
        monitor = self.monitors.get(camera)
        if monitor is not None:
            monitor.record_error(message)
        elif camera is not None and camera in self.excluded:
            return  # a camera left out of the judgement (it was dead at activation)
        elif self._failure is None:  # not a stream being judged: it still counts against the bundle
            self._failure = ProbationVerdict(passed=False, reason=f"inference error: {message}")

    def verdict(self, now: float) -> ProbationVerdict | None:
        """Failed (naming the camera) or passed, or None while some camera's window is open."""
        if self._failure is not None:
            return self._failure
        verdicts: list[tuple[str | None, ProbationVerdict | None]] = []
        for camera, monitor in self.monitors.items():
            verdict = monitor.verdict(now)
            if verdict is not None and not verdict.passed:
                return self._fail(camera, verdict.reason)
            verdicts.append((camera, verdict))
        if self.silence_s is not None:
            for camera, monitor in self.monitors.items():
                since = max(monitor.started_at, monitor.last_captured_at or monitor.started_at)
                if now - since > self.silence_s:
                    what = (
                        "since activation"
                        if monitor.predictions == 0
                        else f"after {monitor.predictions} predictions"
                    )
                    return self._fail(
                        camera,
                        f"no prediction with the new bundle for {now - since:.1f} s {what}"
                        f" (limit {self.silence_s:g} s)",
                    )
        if any(verdict is None for _, verdict in verdicts):
            return None
        if len(verdicts) == 1 and verdicts[0][0] is None:
            return verdicts[0][1]
        reason = f"{len(verdicts)} cameras without failure: " + "; ".join(
            f"{camera}: {verdict.reason}" for camera, verdict in verdicts if verdict
        )
        if self.excluded:
            reason += "; not judged: " + "; ".join(
                f"{camera} ({why})" for camera, why in self.excluded.items()
            )
        return ProbationVerdict(passed=True, reason=reason)

    def figures(self) -> list[ProbationFigures]:
        """Each camera stream's figures, judged ones first (the event that ends probation carries them)."""
        judged = []
        for camera, monitor in self.monitors.items():
            figures = monitor.figures(camera)
            if figures.note is None and camera == self._failed_camera and self._failed_note:
                figures = figures.model_copy(update={"note": self._failed_note[:300]})
            judged.append(figures)
        return judged + [
            ProbationFigures(camera=camera, judged=False, note=why[:300])
            for camera, why in self.excluded.items()
        ]

    def _fail(self, camera: str | None, reason: str) -> ProbationVerdict:
        named = reason if camera is None else f"camera {camera}: {reason}"
        self._failure = ProbationVerdict(passed=False, reason=named)
        self._failed_camera, self._failed_note = camera, reason
        return self._failure
