"""Edge-runtime targets (issue #4), each measured side by side with its reference in one run.

    .venv/bin/python benchmarks/runtime_targets.py --int8 M-int8.efb --fp32 M-fp32.efb [--threads 2]

1. overhead: our per-frame path (contract preprocessing, backend invoke,
   postprocessing, the prediction record as JSON) vs a bare loop
   (cv2.resize + dtype cast + set_tensor/invoke/get_tensor) on the same int8
   bundle, frames and threads; blocks of the two alternate so that machine
   noise hits both. Target: p50 ratio <= 1.10.
2. int8 vs fp32 p50 on LiteRT, same frames and threads. Target: <= 0.6.
3. steady-state RSS of `edgefleet device run` with the int8 bundle, a looping
   30 fps video file and MQTT predictions to a local Mosquitto. Target: <= 150 MB.
4. staleness: a 30 fps video file and a model slower than 33 ms (--slow, or
   a generated ONNX model of about 50 ms): capture-to-prediction p99 vs inference
   p50, and the dropped-frame count. Target: p99 < 2 x inference.

Prints medians and ratios and writes benchmarks/reports/runtime-targets.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier
from edge_runtime.prediction import Prediction


def frames(count: int = 64) -> list[np.ndarray]:
    from converter.synthetic import CLASSES, draw_frame

    return [draw_frame(CLASSES[i % 6], i, 480, 640) for i in range(count)]


def ours_once(classifier: Classifier, frame: np.ndarray, index: int) -> float:
    started = time.perf_counter()
    result = classifier.classify(frame)
    manifest = classifier.bundle.manifest
    Prediction(
        device_id="bench",
        frame_id=index,
        captured_at=time.time(),
        label=result.answer.label,
        confidence=result.answer.confidence,
        top_k=result.answer.top_k,
        uncertain=result.answer.uncertain,
        latency_ms=result.total_ms,
        inference_ms=result.total_ms,
        bundle_name=manifest.name,
        bundle_version=manifest.version,
        bundle_sha256=classifier.bundle.sha256,
    ).to_json()
    return (time.perf_counter() - started) * 1e3


class BareLoop:
    """The reference: cv2.resize (the bundle's interpolation) + dtype cast + set_tensor/invoke/get_tensor."""

    def __init__(self, model: bytes, threads: int, interpolation: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=model, num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        self.input_index = detail["index"]
        self.dtype = detail["dtype"]
        self.size = (int(detail["shape"][2]), int(detail["shape"][1]))
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.interpolation = interpolation

    def once(self, frame: np.ndarray) -> float:
        started = time.perf_counter()
        tensor = cv2.resize(frame, self.size, interpolation=self.interpolation).astype(self.dtype)[
            np.newaxis
        ]
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        self.interpreter.get_tensor(self.output_index)
        return (time.perf_counter() - started) * 1e3


def overhead(int8_path: Path, threads: int, rounds: int) -> dict[str, float]:
    bundle = read_bundle(int8_path)
    classifier = Classifier(bundle, backend="litert", threads=threads)
    interpolation = {
        "nearest": cv2.INTER_NEAREST,
        "linear": cv2.INTER_LINEAR,
        "area": cv2.INTER_AREA,
        "cubic": cv2.INTER_CUBIC,
    }
    bare_loop = BareLoop(
        bundle.model_bytes, threads, interpolation[bundle.manifest.preprocessing.interpolation]
    )
    data = frames()
    ours, bare = [], []
    for i in range(10):  # warm-up
        ours_once(classifier, data[i], i)
        bare_loop.once(data[i])
    for block in range(rounds):
        for frame in data[:16]:
            bare.append(bare_loop.once(frame))
        for i, frame in enumerate(data[:16]):
            ours.append(ours_once(classifier, frame, block * 16 + i))
    return {
        "ours_p50_ms": float(np.median(ours)),
        "bare_p50_ms": float(np.median(bare)),
        "ratio": float(np.median(ours) / np.median(bare)),
        "samples": len(ours),
    }


def int8_vs_fp32(int8_path: Path, fp32_path: Path, threads: int, rounds: int) -> dict[str, float]:
    """Invoke p50 (what a bare loop measures) and whole-frame p50, int8 against fp32."""
    q = Classifier(read_bundle(int8_path), backend="litert", threads=threads)
    f = Classifier(read_bundle(fp32_path), backend="litert", threads=threads)
    data = frames()
    for frame in data[:5]:
        q.classify(frame)
        f.classify(frame)
    int8_runs, fp32_runs = [], []
    for _ in range(rounds):
        int8_runs += [q.classify(frame) for frame in data[:16]]
        fp32_runs += [f.classify(frame) for frame in data[:16]]
    int8_invoke = float(np.median([r.invoke_ms for r in int8_runs]))
    fp32_invoke = float(np.median([r.invoke_ms for r in fp32_runs]))
    int8_total = float(np.median([r.total_ms for r in int8_runs]))
    fp32_total = float(np.median([r.total_ms for r in fp32_runs]))
    return {
        "int8_invoke_p50_ms": int8_invoke,
        "fp32_invoke_p50_ms": fp32_invoke,
        "ratio": int8_invoke / fp32_invoke,
        "int8_frame_p50_ms": int8_total,
        "fp32_frame_p50_ms": fp32_total,
        "frame_ratio": int8_total / fp32_total,
    }


def write_video(path: Path, seconds: float = 4.0, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for frame in frames(int(seconds * fps)):
        writer.write(frame)
    writer.release()
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_of_device(
    int8_path: Path, threads: int, seconds: float, work: Path
) -> dict[str, float | str]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    (work / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen(
        [mosquitto, "-c", str(work / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    video = write_video(work / "conveyor.avi")
    config = work / "device.yaml"
    config.write_text(
        f"device_id: bench-rss\nbundle: {int8_path}\nthreads: {threads}\n"
        f"source:\n  type: video\n  uri: {video}\n  loop: true\n  realtime: true\n"
        f"mqtt:\n  port: {port}\noutputs:\n  mqtt:\n    qos: 0\nmetrics:\n  port: 0\n"
    )
    device = subprocess.Popen(
        [sys.executable, "-m", "edgefleet", "device", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples = []
    try:
        time.sleep(3.0)  # warm-up: imports, model load, first frames
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and device.poll() is None:
            status = Path(f"/proc/{device.pid}/status").read_text()
            rss_kb = int(
                next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
            )
            samples.append(rss_kb / 1024)
            time.sleep(0.5)
    finally:
        device.send_signal(signal.SIGTERM)
        _, stderr = device.communicate(timeout=30)
        broker.terminate()
        broker.wait(timeout=10)
    summary = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return {
        "rss_median_mb": float(np.median(samples)),
        "rss_max_mb": float(np.max(samples)),
        "device_summary": summary,
    }


def staleness(model_path: Path, threads: int, seconds: float, work: Path) -> dict[str, float | int]:
    from edge_runtime.config import parse_config
    from edge_runtime.device import DeviceRuntime

    video = write_video(work / "stale.avi", seconds=seconds + 1)
    out = work / "stale.jsonl"
    config = parse_config(
        f"device_id: bench-stale\nbundle: {model_path}\nthreads: {threads}\n"
        f"source:\n  type: video\n  uri: {video}\n  realtime: true\n"
        f"outputs:\n  jsonl:\n    path: {out}\nmetrics:\n  enabled: false\n"
    )
    summary = DeviceRuntime(config).run(threading.Event(), duration_s=seconds)
    lines = [json.loads(line) for line in out.read_text().splitlines()][5:]  # skip warm-up
    inference = float(np.median([line["inference_ms"] for line in lines]))
    stale = [line["latency_ms"] for line in lines]
    return {
        "inference_p50_ms": inference,
        "staleness_p50_ms": float(np.median(stale)),
        "staleness_p99_ms": float(np.percentile(stale, 99)),
        "ratio_p99_to_inference": float(np.percentile(stale, 99) / inference),
        "frames_captured": summary.frames_captured,
        "frames_dropped": summary.frames_dropped,
        "predictions": summary.stats.predictions,
    }


def slow_bundle(work: Path) -> Path:
    """A real ONNX classifier built to take ~50 ms a frame here (slower than a 30 fps camera)."""
    from tests.media import make_bundle
    from tests.models import slow_onnx_model

    path = work / "slow.efb"
    make_bundle(path, slow_onnx_model(), "onnx", softmax=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--int8", type=Path, required=True, help="int8 TFLite MobileNetV2 224 bundle"
    )
    parser.add_argument(
        "--fp32", type=Path, required=True, help="fp32 TFLite bundle of the same model"
    )
    parser.add_argument(
        "--slow",
        type=Path,
        help="bundle slower than 33 ms for the staleness test (default: --fp32 on 1 thread)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12, help="alternating blocks of 16 frames")
    parser.add_argument(
        "--seconds", type=float, default=12.0, help="duration of the RSS and staleness runs"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        work = Path(tmp)
        results["overhead"] = overhead(args.int8, args.threads, args.rounds)
        results["int8_vs_fp32"] = int8_vs_fp32(args.int8, args.fp32, args.threads, args.rounds)
        results["rss"] = rss_of_device(args.int8, args.threads, args.seconds, work)
        results["staleness"] = staleness(args.slow or slow_bundle(work), 1, args.seconds, work)
    o, q, r, s = results["overhead"], results["int8_vs_fp32"], results["rss"], results["staleness"]
    rows = [
        (
            "end-to-end p50 / bare p50 (int8)",
            "<= 1.10",
            f"{o['ours_p50_ms']:.2f} / {o['bare_p50_ms']:.2f} ms = {o['ratio']:.3f}",
            o["ratio"] <= 1.10,
        ),
        (
            "int8 / fp32 invoke p50 (LiteRT)",
            "<= 0.60",
            f"{q['int8_invoke_p50_ms']:.2f} / {q['fp32_invoke_p50_ms']:.2f} ms = {q['ratio']:.3f} "
            f"(whole frame {q['frame_ratio']:.3f})",
            q["ratio"] <= 0.60,
        ),
        (
            "device RSS, int8 + capture + MQTT",
            "<= 150 MB",
            f"median {r['rss_median_mb']:.0f} MB, max {r['rss_max_mb']:.0f} MB",
            r["rss_max_mb"] <= 150,
        ),
        (
            "staleness p99 / inference p50 (30 fps)",
            "< 2.0",
            f"{s['staleness_p99_ms']:.1f} / {s['inference_p50_ms']:.1f} ms = {s['ratio_p99_to_inference']:.2f}",
            s["ratio_p99_to_inference"] < 2.0,
        ),
        (
            "frames dropped (30 fps, slow model)",
            "counted",
            f"{s['frames_dropped']} of {s['frames_captured']}",
            s["frames_dropped"] > 0,
        ),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"threads {args.threads}, bundles {args.int8.name} / {args.fp32.name}")
    for name, bound, measured, ok in rows:
        print(f"{name:{width}}  {bound:10}  {measured:40}  {'met' if ok else 'MISSED'}")
    report = ROOT / "benchmarks" / "reports" / "runtime-targets.json"
    report.write_text(json.dumps({"threads": args.threads, **results}, indent=2) + "\n")
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
