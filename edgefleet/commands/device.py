"""``edgefleet device``: run the classifier on a camera box, or classify files once."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.table import Table

from edge_runtime.plugins import BACKENDS_GROUP, installed_names
from edgefleet.commands._console import make_console
from edgefleet.commands.device_doctor import doctor

__all__ = ["device"]

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_BACKENDS = ["auto", *installed_names(BACKENDS_GROUP)]
"""``auto`` and every declared backend (entry-point names: nothing is imported)."""


@click.group()
def device() -> None:
    """Run the classifier on a camera box, or classify images and videos once.

    `device run` is what the systemd unit starts: frames from the configured
    source, predictions to JSON lines / MQTT / plug-ins, Prometheus metrics
    and /healthz on a local port. `device classify` is a one-shot check of a
    bundle on an image, a folder or a video file. `device doctor` checks the
    box: installed packages against the lock, backends, XNNPACK, CPU features.
    """


device.add_command(doctor)


def _frames(path: Path) -> Any:
    """Yield (name, BGR frame) from an image, a folder of images (recursively) or a video."""
    import cv2

    from edge_runtime.errors import SourceError

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{path} holds no images")
        for file in files:
            frame = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if frame is None:
                click.secho(
                    f"warning: skipping {file}: not a decodable image", fg="yellow", err=True
                )
                continue
            yield str(file.relative_to(path)), frame
        return
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise SourceError(f"cannot decode image {path}")
        yield path.name, frame
        return
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"cannot open {path} as an image or a video")
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield f"{path.name}#{index}", frame
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise SourceError(f"{path} decoded no frames")


@device.command()
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Bundle (.efb) to run.",
)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(_BACKENDS),
    default="auto",
    show_default=True,
    help="Inference backend.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Interpreter threads.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per frame instead of a table."
)
def classify(bundle_path: Path, path: Path, backend: str, threads: int, as_json: bool) -> None:
    """Classify PATH (an image, a folder of images, or a video file) once with a bundle.

    For a folder whose sub-folders are named after the bundle's labels, the
    summary also gives the accuracy.
    """
    from edge_runtime.bundle import read_bundle
    from edge_runtime.classifier import Classifier

    bundle = read_bundle(bundle_path)
    classifier = Classifier(bundle, backend=backend, threads=threads)
    labels = bundle.manifest.labels
    console = make_console()
    table = Table("frame", "label", "confidence", "top-k", "ms", box=None, padding=(0, 2))
    latencies: list[float] = []
    counts: dict[str, int] = {}
    correct = labelled = 0
    for name, frame in _frames(path):
        result = classifier.classify(frame)
        answer = result.answer
        latencies.append(result.total_ms)
        counts[answer.label] = counts.get(answer.label, 0) + 1
        truth = name.split("/", 1)[0] if "/" in name else None
        if truth in labels:
            labelled += 1
            correct += answer.label == truth
        if as_json:
            record = {
                "frame": name,
                "label": answer.label,
                "confidence": round(answer.confidence, 6),
                "uncertain": answer.uncertain,
                "top_k": [{"label": k, "score": round(v, 6)} for k, v in answer.top_k],
                "inference_ms": round(result.total_ms, 3),
            }
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            top = ", ".join(f"{k} {v:.2f}" for k, v in answer.top_k)
            table.add_row(
                name, answer.label, f"{answer.confidence:.3f}", top, f"{result.total_ms:.2f}"
            )
    if as_json:
        return
    console.print(table)
    p50 = float(np.percentile(latencies, 50))
    summary = ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))
    console.print(
        f"{len(latencies)} frames with {bundle.manifest.name} {bundle.manifest.version} on "
        f"{classifier.backend.name} ({threads} thread{'s' if threads > 1 else ''}): {summary}; "
        f"p50 {p50:.2f} ms per frame"
        + (
            f"; accuracy {100 * correct / labelled:.1f}% on {labelled} labelled images"
            if labelled
            else ""
        )
    )


@device.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Device config (YAML); see devices/config/device.example.yaml.",
)
@click.option(
    "--max-frames", type=click.IntRange(1), default=None, help="Stop after this many predictions."
)
@click.option(
    "--duration",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop after this many seconds.",
)
def run(config_path: Path, max_frames: int | None, duration: float | None) -> None:
    """Run the device: capture, classify, publish, serve metrics, until stopped (Ctrl-C / SIGTERM).

    A bad config is reported with the field and line and nothing starts.
    """
    from edge_runtime.config import load_config
    from edge_runtime.device import DeviceRuntime

    config = load_config(config_path)
    runtime = DeviceRuntime(config)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        click.echo(f"received {signal.Signals(signum).name}; stopping", err=True)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    summary = runtime.run(stop, max_frames=max_frames, duration_s=duration)
    click.echo(summary, err=True)
