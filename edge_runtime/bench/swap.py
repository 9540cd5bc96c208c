"""The hot-swap gap: the worst pause between predictions while a new model is loaded and swapped in.

The device's own pipeline runs on a paced synthetic camera; after a steady
period, a new classifier is built in the background
(``ActiveModel.load_in_background``, as the update agent does) and swapped
in between two frames. Like ``benchmarks/update_targets.py``, the figure is
the largest gap between consecutive predictions from the start of the load
until shortly after the swap, against the median steady-state interval.
Unlike it, no broker, download or verification is involved: only the swap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.bundle import read_bundle
from edge_runtime.bundle.model_bundle import Bundle
from edge_runtime.classifier import Classifier
from edge_runtime.errors import EdgefleetError, RuntimeDeviceError
from edge_runtime.health import HealthState
from edge_runtime.metrics import RuntimeMetrics
from edge_runtime.outputs import PredictionSink
from edge_runtime.pipeline import ActiveModel, Pipeline
from edge_runtime.prediction import Prediction
from edge_runtime.sources import CaptureThread, LatestFrameSlot
from edge_runtime.sources.synthetic import SyntheticSource, SyntheticSourceConfig

__all__ = ["SwapRun", "SwapSummary", "bench_swap"]


@dataclass(frozen=True)
class SwapRun:
    """One swap: how long the load took and the worst prediction gap around it."""

    to_bundle: str
    load_ms: float
    max_gap_ms: float
    steady_interval_ms: float
    gap_ratio: float
    predictions_in_window: int


@dataclass(frozen=True)
class SwapSummary:
    """All swaps of one run, with the worst ratio as the headline."""

    fps: float
    backend: str
    threads: int
    runs: list[SwapRun]

    @property
    def worst_gap_ratio(self) -> float:
        """Largest gap over steady interval across swaps."""
        return max(run.gap_ratio for run in self.runs)

    @property
    def worst_gap_ms(self) -> float:
        """Largest gap across swaps (milliseconds)."""
        return max(run.max_gap_ms for run in self.runs)


class _Times(PredictionSink):
    name = "bench-swap"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []

    def emit(self, prediction: Prediction) -> None:
        del prediction
        with self.lock:
            self.times.append(time.monotonic())

    def between(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [t for t in self.times if start <= t <= end]


def _swap_once(
    model: ActiveModel,
    times: _Times,
    target: Bundle,
    *,
    backend: str,
    threads: int,
    interval: float,
    settle_s: float,
) -> SwapRun:
    done = threading.Event()
    failure: list[EdgefleetError] = []

    def finished(_c: Classifier | None, error: EdgefleetError | None) -> None:
        if error is not None:
            failure.append(error)
        done.set()

    # the window opens at the last prediction before the load, so a stall that starts
    # with the load counts in full
    before = times.between(0.0, time.monotonic())
    started = time.monotonic()
    model.load_in_background(target, backend=backend, threads=threads, on_done=finished)
    done.wait(timeout=120)
    loaded = time.monotonic()
    if failure:
        raise failure[0]
    time.sleep(settle_s)
    window = ([before[-1]] if before else []) + times.between(started, time.monotonic())
    gap = float(np.max(np.diff(window))) if len(window) > 1 else time.monotonic() - started
    return SwapRun(
        to_bundle=f"{target.manifest.name} {target.manifest.version}",
        load_ms=(loaded - started) * 1e3,
        max_gap_ms=gap * 1e3,
        steady_interval_ms=interval * 1e3,
        gap_ratio=gap / interval,
        predictions_in_window=len(window),
    )


def bench_swap(
    bundle_paths: Sequence[Path],
    *,
    swaps: int = 5,
    fps: float = 30.0,
    backend: str = "auto",
    threads: int = 1,
    steady_s: float = 1.5,
    settle_s: float = 0.5,
    width: int = 640,
    height: int = 480,
    progress: Callable[[int, int], None] | None = None,
) -> SwapSummary:
    """Swap between ``bundle_paths`` (cyclically; one bundle swaps to a fresh copy) ``swaps`` times."""
    if not bundle_paths:
        raise ValueError("need at least one bundle")
    bundles: list[Bundle] = [read_bundle(p) for p in bundle_paths]
    model = ActiveModel(Classifier(bundles[0], backend=backend, threads=threads))
    times = _Times()
    slot = LatestFrameSlot()
    source = SyntheticSource(SyntheticSourceConfig(width=width, height=height, fps=fps))
    capture = CaptureThread(source, slot)
    pipeline = Pipeline(
        "bench-swap",
        capture=capture,
        slot=slot,
        model=model,
        sinks=[times],
        metrics=RuntimeMetrics(),
        health=HealthState(),
    )
    stop = threading.Event()
    worker = threading.Thread(target=pipeline.run, args=(stop,), name="bench-swap", daemon=True)
    capture.start()
    worker.start()
    runs: list[SwapRun] = []
    try:
        time.sleep(steady_s)
        for index in range(swaps):
            target = bundles[(index + 1) % len(bundles)]
            steady = times.between(time.monotonic() - steady_s, time.monotonic())
            if len(steady) < 3:
                raise RuntimeDeviceError(
                    f"only {len(steady)} predictions in {steady_s} s before swap {index + 1}: "
                    "the model is too slow for this frame rate, or the pipeline stopped"
                )
            interval = float(np.median(np.diff(steady)))
            runs.append(
                _swap_once(
                    model,
                    times,
                    target,
                    backend=backend,
                    threads=threads,
                    interval=interval,
                    settle_s=settle_s,
                )
            )
            if progress is not None:
                progress(index + 1, swaps)
            time.sleep(max(0.0, steady_s - settle_s))
    finally:
        stop.set()
        worker.join(timeout=10)
        capture.stop(timeout=2.0)
    return SwapSummary(fps=fps, backend=backend, threads=threads, runs=runs)
