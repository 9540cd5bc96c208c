"""What a shadow run costs the active model: the pipeline's p99 with shadow on and off, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/shadow_overhead.py [--seconds 10] [--rounds 3] [--rows 60]
        [--every-nth 5] [--cpu-budget 0.25] [--fps 30] [--out benchmarks/reports/shadow-overhead.json]

One process, the device's real parts: a synthetic 640x480 camera at
``--fps`` on its capture thread, the latest-frame slot, the
:class:`~edge_runtime.pipeline.Pipeline` with a real ONNX classifier (the
tests' deliberately slow model, ``--rows`` sets its cost; one thread, as on
the device), and for "on" a :class:`~edge_runtime.shadow.ShadowRunner` with a
candidate of the same cost (another seed) as the pipeline's frame observer,
at the default budget (every 5th frame, 25% of a core) unless told
otherwise. Runs alternate ABBA (off, on, on, off) ``--rounds`` times;
each condition's figure is the median over its runs of the run's p99 of the
prediction's ``latency_ms`` (capture to answer ready), and of the invoke's
p99 (``inference_ms``). The first second of each run is left out. The
verdict is the on/off ratio of the pipeline p99 against the issue's target
of at most 1.10.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_runtime.classifier import Classifier
from edge_runtime.health import HealthState
from edge_runtime.metrics import MetricsRegistry, RuntimeMetrics
from edge_runtime.pipeline import ActiveModel, Pipeline
from edge_runtime.protocol.shadow import ShadowReport, ShadowRequest
from edge_runtime.shadow import ShadowRunner
from edge_runtime.sources import CaptureThread, LatestFrameSlot, create_source
from edge_runtime.sources.synthetic import SyntheticSourceConfig
from tests.media import make_bundle
from tests.models import slow_onnx_model

TARGET = 1.10


def p(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(
    active: Classifier, candidate: Classifier | None, args: argparse.Namespace
) -> dict[str, Any]:
    """One run of ``args.seconds``: the pipeline's figures, and the shadow's when on."""
    slot = LatestFrameSlot()
    config = SyntheticSourceConfig(width=640, height=480, fps=args.fps)
    capture = CaptureThread(lambda: create_source(config), slot)
    reports: list[ShadowReport] = []
    runner = None
    if candidate is not None:
        request = ShadowRequest(
            bundle_sha256=candidate.bundle.sha256,
            every_nth=args.every_nth,
            cpu_budget=args.cpu_budget,
            window_s=3600.0,
        )
        runner = ShadowRunner("bench", candidate, request, reports.append)
    pipeline = Pipeline(
        "bench",
        capture=capture,
        slot=slot,
        model=ActiveModel(active),
        sinks=[],
        metrics=RuntimeMetrics(MetricsRegistry()),
        health=HealthState(),
        observers=[] if runner is None else [runner.observe],
    )
    capture.start()
    if runner is not None:
        runner.start()
    latency: list[float] = []
    invoke: list[float] = []
    started = time.monotonic()
    stop = threading.Event()
    try:
        while time.monotonic() - started < args.seconds:
            prediction = pipeline.step()
            if prediction is not None and time.monotonic() - started >= 1.0:
                latency.append(prediction.latency_ms)
                invoke.append(prediction.inference_ms)
    finally:
        stop.set()
        if runner is not None:
            runner.stop()
        capture.stop(timeout=2.0)
    figures: dict[str, Any] = {
        "shadow": candidate is not None,
        "predictions": len(latency),
        "dropped_frames": slot.dropped,
        "pipeline_p50_ms": p(latency, 50),
        "pipeline_p99_ms": p(latency, 99),
        "invoke_p50_ms": p(invoke, 50),
        "invoke_p99_ms": p(invoke, 99),
    }
    if runner is not None:
        window = runner.flush()
        figures.update(
            offered=window.offered,
            compared=window.compared,
            skipped_budget=window.skipped_budget,
            skipped_busy=window.skipped_busy,
            candidate_ms=window.candidate_ms,
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds (4 runs each)")
    parser.add_argument("--rows", type=int, default=60, help="the slow model's cost knob")
    parser.add_argument("--every-nth", type=int, default=5)
    parser.add_argument("--cpu-budget", type=float, default=0.25)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        make_bundle(base / "a.efb", slow_onnx_model(rows=args.rows, seed=11), "onnx", "1.0.0", True)
        make_bundle(base / "b.efb", slow_onnx_model(rows=args.rows, seed=12), "onnx", "2.0.0", True)
        from edge_runtime.bundle import read_bundle

        active = Classifier(read_bundle(base / "a.efb"), backend="onnxruntime", threads=1)
        candidate = Classifier(read_bundle(base / "b.efb"), backend="onnxruntime", threads=1)
        runs: list[dict[str, Any]] = []
        for round_index in range(args.rounds):
            for shadow in (False, True, True, False):
                figures = run(active, candidate if shadow else None, args)
                figures["round"] = round_index
                figures["load_avg"] = os.getloadavg()[0]
                runs.append(figures)
                print(
                    f"round {round_index + 1} shadow {'on ' if shadow else 'off'}: "
                    f"{figures['predictions']} predictions, pipeline p50/p99 "
                    f"{figures['pipeline_p50_ms']:.2f}/{figures['pipeline_p99_ms']:.2f} ms, "
                    f"invoke p99 {figures['invoke_p99_ms']:.2f} ms"
                    + (
                        f"; shadow compared {figures['compared']} of {figures['offered']} "
                        f"offered ({figures['skipped_budget']} budget, "
                        f"{figures['skipped_busy']} busy), {figures['candidate_ms']:.2f} ms each"
                        if shadow
                        else ""
                    )
                    + f" (load {figures['load_avg']:.1f})",
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for name, shadow in (("off", False), ("on", True)):
        mine = [r for r in runs if r["shadow"] is shadow]
        summary[name] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("pipeline_p50_ms", "pipeline_p99_ms", "invoke_p99_ms", "predictions")
        }
    ratio = summary["on"]["pipeline_p99_ms"] / summary["off"]["pipeline_p99_ms"]
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(
        f"median pipeline p99: off {summary['off']['pipeline_p99_ms']:.2f} ms, "
        f"on {summary['on']['pipeline_p99_ms']:.2f} ms: x{ratio:.3f} "
        f"(target <= x{TARGET:.2f}: {verdict}); invoke p99 off "
        f"{summary['off']['invoke_p99_ms']:.2f} ms, on {summary['on']['invoke_p99_ms']:.2f} ms"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "settings": {k: str(v) for k, v in vars(args).items()},
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "runs": runs,
                    "summary": summary,
                    "ratio": ratio,
                    "target": TARGET,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
