"""The latency engine: one bundle x backend x thread count, measured against a bare invoke loop.

For each configuration it times the bundle read and the classifier's
initialisation, the first inference, then warm frames through the device's
own per-frame path (decode, preprocess, invoke, postprocess). Blocks of
pipeline frames alternate with blocks of bare runtime invokes on one fixed
preprocessed tensor (ABBA order, so drift and machine noise hit both), and
the ratio of our invoke stage to the bare one is reported with a bootstrap
interval. CPU time and wall time are taken over the pipeline blocks only.
"""

from __future__ import annotations

import gc
import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.bench.bare import BareInvoke
from edge_runtime.bench.inputs import BenchInputs
from edge_runtime.bench.report import (
    BareComparison,
    ConfigResult,
    Samples,
    SingleStream,
    StageBreakdown,
)
from edge_runtime.bench.stats import (
    bootstrap_median_ratio,
    percentile,
    single_stream_valid,
    summarize,
)
from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier

__all__ = ["MLPERF_MIN_DURATION_S", "MLPERF_MIN_QUERIES", "BenchSettings", "bench_configuration"]

log = logging.getLogger(__name__)

# MLPerf Inference single-stream defaults (mlperf.conf: min_duration 600000 ms, min_query_count 1024)
MLPERF_MIN_QUERIES = 1024
MLPERF_MIN_DURATION_S = 600.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BenchSettings:
    """How long and how to measure each configuration.

    Without ``runs`` and ``seconds`` a normal run measures 200 frames; in
    single-stream mode it runs until ``min_queries`` and ``min_duration_s``
    are both reached, and ``runs``/``seconds``, if given, cap it (a capped
    run can be invalid).
    """

    warmup: int = 10
    runs: int | None = None
    seconds: float | None = None
    block: int = 8
    single_stream: bool = False
    min_queries: int = MLPERF_MIN_QUERIES
    min_duration_s: float = MLPERF_MIN_DURATION_S
    tolerance: float = 0.05
    accuracy: bool = True

    def _target_runs(self) -> int | None:
        if self.runs is None and self.seconds is None and not self.single_stream:
            return 200
        return self.runs

    def done(self, count: int, elapsed_s: float) -> bool:
        """Whether the measurement has what it needs after ``count`` frames in ``elapsed_s``."""
        runs = self._target_runs()
        if runs is not None and count >= runs:
            return True
        if self.seconds is not None and elapsed_s >= self.seconds:
            return True
        if self.single_stream and runs is None and self.seconds is None:
            return count >= self.min_queries and elapsed_s >= self.min_duration_s
        return False

    def progress(self, count: int, elapsed_s: float) -> tuple[int, int]:
        """(completed, total) for a progress bar: frames when counted, else tenths of a percent."""
        runs = self._target_runs()
        if runs is not None:
            return min(count, runs), runs
        if self.seconds is not None:
            fraction = elapsed_s / self.seconds
        else:
            fraction = min(count / self.min_queries, elapsed_s / self.min_duration_s)
        return min(1000, int(1000 * fraction)), 1000


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux 4.0+); whether it worked."""
    try:
        with Path("/proc/self/clear_refs").open("w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _peak_rss_mb(reset_worked: bool) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    if reset_worked:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@dataclass
class _Recorder:
    """The warm measurements of one configuration, stage by stage (milliseconds)."""

    classifier: Classifier
    inputs: BenchInputs
    decode: list[float] = field(default_factory=list)
    preprocess: list[float] = field(default_factory=list)
    invoke: list[float] = field(default_factory=list)
    postprocess: list[float] = field(default_factory=list)
    end_to_end: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    correct: dict[int, bool] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def pipeline_once(self, record: bool = True) -> None:
        """Decode (if the inputs need it) and classify the next frame, recording each stage."""
        item = self.inputs.next()
        t0 = time.perf_counter()
        result = self.classifier.classify(item.image)
        wall_ms = (time.perf_counter() - t0) * 1e3
        if not record:
            return
        if item.decode_ms is not None:
            self.decode.append(item.decode_ms)
        self.preprocess.append(result.preprocess_ms)
        self.invoke.append(result.invoke_ms)
        self.postprocess.append(result.postprocess_ms)
        self.end_to_end.append((item.decode_ms or 0.0) + wall_ms)
        if item.truth is not None:
            self.correct[item.index] = result.answer.label == item.truth

    def pipeline_block(self, settings: BenchSettings) -> None:
        """Up to ``settings.block`` frames, adding their wall and CPU time to the totals."""
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(settings.block):
            self.pipeline_once()
            if settings.done(len(self.end_to_end), self.wall_s + time.perf_counter() - wall0):
                break
        self.wall_s += time.perf_counter() - wall0
        self.cpu_s += time.process_time() - cpu0

    def finish_accuracy(self) -> None:
        """Classify (untimed) the labelled frames the timed loop did not reach."""
        for index in range(self.inputs.size):
            truth = self.inputs.truth_of(index)
            if truth is None or index in self.correct:
                continue
            image = self.inputs.frame_at(index)
            if image is not None:
                self.correct[index] = self.classifier.classify(image).answer.label == truth


def _measure(
    recorder: _Recorder, bare: BareInvoke, settings: BenchSettings, progress: Progress | None
) -> None:
    for _ in range(settings.warmup):
        recorder.pipeline_once(record=False)
        bare.once()
    block = 0
    while not settings.done(len(recorder.end_to_end), recorder.wall_s):
        pipeline_first = block % 4 in (0, 3)  # ABBA: A B | B A | B A | A B ...
        if pipeline_first:
            recorder.pipeline_block(settings)
        recorder.bare.extend(bare.once() for _ in range(settings.block))
        if not pipeline_first:
            recorder.pipeline_block(settings)
        block += 1
        if progress is not None:
            progress(*settings.progress(len(recorder.end_to_end), recorder.wall_s))


def _single_stream(recorder: _Recorder, settings: BenchSettings) -> SingleStream | None:
    if not settings.single_stream:
        return None
    queries = len(recorder.end_to_end)
    return SingleStream(
        p90_ms=percentile(recorder.end_to_end, 90),
        queries=queries,
        duration_s=recorder.wall_s,
        min_queries=settings.min_queries,
        min_duration_s=settings.min_duration_s,
        valid=single_stream_valid(
            queries, recorder.wall_s, settings.min_queries, settings.min_duration_s
        ),
    )


def _bare_comparison(recorder: _Recorder, tolerance: float) -> BareComparison:
    ratio = bootstrap_median_ratio(recorder.bare, recorder.invoke)
    return BareComparison(
        bare_invoke=summarize(recorder.bare),
        invoke_ratio=ratio.estimate,
        invoke_ratio_low=ratio.low,
        invoke_ratio_high=ratio.high,
        end_to_end_ratio=float(np.median(recorder.end_to_end) / np.median(recorder.bare)),
        tolerance=tolerance,
        matches_bare=ratio.low <= 1 + tolerance and ratio.high >= 1 - tolerance,
    )


def bench_configuration(
    bundle_path: Path,
    backend: str,
    threads: int,
    inputs: BenchInputs,
    settings: BenchSettings,
    *,
    budget_p95_ms: float | None = None,
    progress: Progress | None = None,
) -> ConfigResult:
    """Measure one configuration; see the module docstring for what and how."""
    gc.collect()  # the previous configuration's runtime goes before the peak-RSS mark resets
    reset = _reset_peak_rss()
    inputs.reset()
    started = time.perf_counter()
    bundle = read_bundle(bundle_path)
    load_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    classifier = Classifier(bundle, backend=backend, threads=threads)
    init_ms = (time.perf_counter() - started) * 1e3
    manifest = bundle.manifest

    frame = inputs.next()
    started = time.perf_counter()
    classifier.classify(frame.image)
    first_ms = (frame.decode_ms or 0.0) + (time.perf_counter() - started) * 1e3
    bare = BareInvoke(
        classifier.backend.name, bundle.model_bytes, threads, classifier.preprocessor(frame.image)
    )
    recorder = _Recorder(classifier, inputs)
    _measure(recorder, bare, settings, progress)
    if settings.accuracy:
        recorder.finish_accuracy()
    known = [ok for i, ok in recorder.correct.items() if inputs.truth_of(i) in manifest.labels]
    peak_rss = _peak_rss_mb(reset)
    xnnpack = bare.xnnpack
    classifier.backend.close()

    e2e = summarize(recorder.end_to_end)
    wall = recorder.wall_s
    contract = manifest.preprocessing
    return ConfigResult(
        bundle=bundle_path.name,
        bundle_name=manifest.name,
        bundle_version=manifest.version,
        bundle_sha256=bundle.sha256,
        format=manifest.model.format,
        precision=manifest.model.precision,
        input_size=f"{contract.width}x{contract.height}",
        backend=backend,
        threads=threads,
        xnnpack=xnnpack,
        load_ms=load_ms,
        init_ms=init_ms,
        first_inference_ms=first_ms,
        warmup=settings.warmup,
        runs=len(recorder.end_to_end),
        duration_s=wall,
        stages=StageBreakdown(
            decode=summarize(recorder.decode) if recorder.decode else None,
            preprocess=summarize(recorder.preprocess),
            invoke=summarize(recorder.invoke),
            postprocess=summarize(recorder.postprocess),
            end_to_end=e2e,
        ),
        bare=_bare_comparison(recorder, settings.tolerance),
        throughput_fps=len(recorder.end_to_end) / wall if wall > 0 else 0.0,
        cpu_percent=100.0 * recorder.cpu_s / wall if wall > 0 else 0.0,
        peak_rss_mb=peak_rss,
        accuracy=sum(known) / len(known) if known else None,
        accuracy_images=len(known),
        budget_p95_ms=budget_p95_ms,
        budget_pass=None if budget_p95_ms is None else e2e.p95 <= budget_p95_ms,
        single_stream=_single_stream(recorder, settings),
        samples=Samples(
            end_to_end=[round(v, 4) for v in recorder.end_to_end],
            invoke=[round(v, 4) for v in recorder.invoke],
            bare_invoke=[round(v, 4) for v in recorder.bare],
        ),
    )
