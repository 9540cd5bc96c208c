"""The smoke test a staged bundle passes before it may serve: load, specs, golden vectors, latency.

Loading a model the device has never run is a trust boundary: a hostile or
broken file may make the backend raise anything, so every failure there
becomes a :class:`SmokeTestError` that says what went wrong. A bundle that
passes comes back already loaded, so the caller can swap it in without
loading it twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_runtime.bundle.model_bundle import Bundle
from edge_runtime.classifier import Classification, Classifier, GoldenReport
from edge_runtime.errors import BundleError, GoldenMismatchError, SmokeTestError

__all__ = ["SmokeReport", "smoke_test"]

log = logging.getLogger(__name__)

_SYNTHETIC_FRAMES = 4


@dataclass(frozen=True)
class SmokeReport:
    """A passed smoke test: the loaded classifier and what was measured."""

    classifier: Classifier
    golden: GoldenReport
    latency_runs: int
    invoke_p50_ms: float
    invoke_p95_ms: float
    budget_ms: float | None
    seconds: float

    @property
    def bundle(self) -> Bundle:
        """The bundle that was tested."""
        return self.classifier.bundle

    @property
    def backend(self) -> str:
        """The backend that ran it."""
        return self.classifier.backend.name


def _synthetic_frames(bundle: Bundle) -> list[npt.NDArray[np.uint8]]:
    """Deterministic random frames of the model's input size, for bundles without golden vectors."""
    spec = bundle.manifest.preprocessing
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8)
        for _ in range(_SYNTHETIC_FRAMES)
    ]


def _classify(classifier: Classifier, frame: npt.NDArray[np.uint8], what: str) -> Classification:
    try:
        result = classifier.classify(frame)
    except Exception as exc:  # boundary: an untrusted model runs inside the backend
        raise SmokeTestError(f"inference failed on {what}: {exc}") from exc
    if not np.all(np.isfinite(result.scores)):
        raise SmokeTestError(f"{what}: the model outputs NaN/inf scores")
    return result


def smoke_test(
    bundle: Bundle,
    backend: str = "auto",
    threads: int = 1,
    latency_runs: int = 20,
    budget_ms: float | None = None,
) -> SmokeReport:
    """Load ``bundle`` and prove it works here, or raise :class:`SmokeTestError` saying why.

    Steps: load with ``backend`` (which checks the tensor specs against the
    manifest), run every golden frame and refuse NaN/inf scores, replay the
    golden vectors against their expected scores, then time ``latency_runs``
    invocations on golden (or synthetic) frames and compare the median with
    ``budget_ms``, or the manifest's ``compatibility.latency_budget_ms``.
    """
    if latency_runs < 1:
        raise ValueError("latency_runs must be at least 1")
    started = time.perf_counter()
    manifest = bundle.manifest
    try:
        classifier = Classifier(bundle, backend=backend, threads=threads)
    except Exception as exc:  # boundary: a hostile model may make the backend raise anything
        raise SmokeTestError(f"cannot load: {exc}") from exc
    try:
        try:
            golden_frames = bundle.golden_frames()
        except BundleError as exc:
            raise SmokeTestError(f"cannot decode golden frames: {exc}") from exc
        golden_inputs = [] if manifest.golden is None else manifest.golden.vectors
        for index, (vector, frame) in enumerate(zip(golden_inputs, golden_frames, strict=True)):
            _classify(classifier, frame, f"golden vector {index} ({vector.input})")
        try:
            golden = classifier.replay_golden()
        except GoldenMismatchError as exc:
            raise SmokeTestError(str(exc)) from exc
        except Exception as exc:  # boundary: see _classify
            raise SmokeTestError(f"inference failed on golden vectors: {exc}") from exc
        frames = golden_frames or _synthetic_frames(bundle)
        _classify(classifier, frames[0], "warm-up frame")
        timings = sorted(
            _classify(classifier, frames[run % len(frames)], f"latency run {run}").invoke_ms
            for run in range(latency_runs)
        )
        p50 = float(np.percentile(timings, 50))
        p95 = float(np.percentile(timings, 95))
        budget = budget_ms if budget_ms is not None else manifest.compatibility.latency_budget_ms
        if budget is not None and p50 > budget:
            raise SmokeTestError(
                f"invoke latency p50 {p50:.2f} ms is over the budget of {budget:g} ms "
                f"({latency_runs} runs on {classifier.backend.name})"
            )
    except BaseException:
        classifier.backend.close()
        raise
    report = SmokeReport(
        classifier=classifier,
        golden=golden,
        latency_runs=latency_runs,
        invoke_p50_ms=p50,
        invoke_p95_ms=p95,
        budget_ms=budget,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "smoke test passed for %s %s (%s): %d golden vectors, invoke p50 %.2f ms, budget %s ms",
        manifest.name,
        manifest.version,
        bundle.sha256[:12],
        golden.vectors,
        p50,
        budget,
    )
    return report
