"""The ML engineer's half of the demo: data, a conveyor video, trained versions, converted bundles.

Everything here goes through the public converter API as ``edgefleet
convert`` does: the synthetic conveyor set (or a labelled folder), the
reference CNN trained from scratch, int8 TFLite and ONNX bundles checked
against the float model with an HTML parity report each. The deliberately
bad version is real too: the next model packed with the previous version's
golden vectors (a stale golden file), which the device's smoke test refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from converter.convert import ConversionResult, ConvertOptions, convert, gate_error
from converter.dataset import LabelledFolder
from converter.reference import train_reference
from converter.synthetic import CLASSES, draw_frame, write_dataset
from edge_runtime.bundle import Bundle, GoldenSet, build_bundle, parse_bundle, read_bundle
from edge_runtime.classifier import Classifier
from edge_runtime.errors import EdgefleetError

__all__ = [
    "DataSet",
    "ModelVersion",
    "convert_version",
    "make_data",
    "make_stale_golden_bundle",
    "train_version",
    "write_conveyor_video",
]

log = logging.getLogger(__name__)

LATENCY_BUDGET_MS = 20.0
"""The line's budget for one invoke on the camera; the device's smoke test enforces it."""
MAX_ACCURACY_DROP = 3.0
MIN_AGREEMENT = 0.95


@dataclass(frozen=True)
class DataSet:
    """The labelled images every version is trained, calibrated and checked on."""

    root: Path
    train: LabelledFolder
    val: LabelledFolder
    generated: bool


@dataclass(frozen=True)
class ModelVersion:
    """One trained and converted version: its Keras file, its bundles and their parity results."""

    version: str
    epochs: int
    keras_path: Path
    val_accuracy: float
    results: list[ConversionResult]

    def result(self, fmt: str) -> ConversionResult:
        """The conversion result for ``fmt`` (tflite or onnx)."""
        return next(r for r in self.results if r.format == fmt)

    def bundle_path(self, fmt: str) -> Path:
        """The bundle written for ``fmt``."""
        path = self.result(fmt).bundle_path
        assert path is not None  # a failed gate raised in convert_version
        return path


def make_data(workdir: Path, data: Path | None, per_train: int, per_val: int, seed: int) -> DataSet:
    """Draw the synthetic conveyor set into ``workdir/data``, or scan the folder ``data``."""
    root = data
    if root is None:
        root = workdir / "data"
        write_dataset(root, per_train, per_val, size=128, seed=seed)
    train = LabelledFolder.scan(root / "train")
    val = LabelledFolder.scan(root / "val", labels=train.labels)
    return DataSet(root, train, val, generated=data is None)


def write_conveyor_video(path: Path, data: DataSet, seconds: float, fps: float, seed: int) -> int:
    """An MJPG video the cameras loop: items passing under the camera, each for a few frames.

    With the synthetic set the items are freshly drawn (seeds the training set
    never used); with a labelled folder they are its validation photos, in a
    seeded order. Returns the number of frames.
    """
    per_item = 4
    frames = int(seconds * fps)
    items = -(-frames // per_item)
    if data.generated:
        size = (128, 128)
        pictures = [
            draw_frame(CLASSES[(i * 5 + seed) % len(CLASSES)], 10_000 + seed * 7919 + i, *size)
            for i in range(items)  # 5 is coprime to 6: every class, not in a plain cycle
        ]
    else:
        size = (160, 120)
        decoded = [frame for _, frame, _ in data.val.frames()]
        if not decoded:
            raise EdgefleetError(f"{data.root / 'val'}: no image could be decoded for the video")
        order = np.random.default_rng(seed).permutation(len(decoded))
        pictures = [
            cv2.resize(decoded[order[i % len(order)]], size, interpolation=cv2.INTER_AREA)
            for i in range(items)
        ]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise EdgefleetError(f"OpenCV cannot write an MJPG video to {path}")
    try:
        for index in range(frames):
            writer.write(pictures[index // per_item])
    finally:
        writer.release()
    return frames


def train_version(
    data: DataSet,
    out: Path,
    *,
    size: int,
    epochs: int,
    seed: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> float:
    """Train the tiny reference CNN for ``epochs`` and save it to ``out``; returns val accuracy."""
    trained = train_reference(
        data.train, data.val, arch="tiny", size=size, epochs=epochs, seed=seed, on_epoch=on_epoch
    )
    trained.model.save(out)
    return float(trained.val_accuracy or 0.0)


def convert_version(
    data: DataSet,
    keras_path: Path,
    out: Path,
    version: str,
    *,
    calibration_samples: int,
    seed: int,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> list[ConversionResult]:
    """int8 TFLite and ONNX bundles of ``keras_path`` with parity reports, or the gate's error."""
    options = ConvertOptions(
        model=keras_path,
        out=out,
        parity=data.root / "val",
        calibration=data.root / "train",
        formats=("tflite", "onnx"),
        precisions=("int8",),
        labels=data.train.labels,
        preprocessing={
            "resize": "stretch",
            "interpolation": "area",
            "color_order": "rgb",
            "mean": (127.5, 127.5, 127.5),
            "std": (127.5, 127.5, 127.5),
        },
        calibration_samples=calibration_samples,
        max_accuracy_drop=MAX_ACCURACY_DROP,
        min_agreement=MIN_AGREEMENT,
        name="conveyor",
        version=version,
        latency_budget_ms=LATENCY_BUDGET_MS,
        seed=seed,
    )
    results = convert(options, progress)
    error = gate_error(results, options)
    if error is not None:
        raise error
    return results


def make_stale_golden_bundle(good: Path, stale_from: Path, out: Path, version: str) -> Bundle:
    """``good``'s model released as ``version`` with ``stale_from``'s golden vectors.

    A packaging mistake that signing cannot catch: the bundle is well formed
    and gets signed, but its golden vectors were recorded with another model,
    so the device's smoke test fails on them. When the two models happen to
    reproduce each other's vectors, the expectations are rotated by one class
    instead (a golden file whose class order is wrong); the smoke test is what
    decides either way.
    """
    model_bundle = read_bundle(good)
    stale = read_bundle(stale_from)
    golden = stale.manifest.golden
    if golden is None or model_bundle.manifest.golden is None:
        raise EdgefleetError(f"{good.name} and {stale_from.name} need golden vectors")
    members = {n: d for n, d in model_bundle.members.items() if n != "manifest.json"}
    for vector in model_bundle.manifest.golden.vectors:
        members.pop(vector.input, None)
    for vector in golden.vectors:
        members[vector.input] = stale.members[vector.input]

    def build(vectors: GoldenSet) -> bytes:
        manifest = model_bundle.manifest.model_copy(
            update={
                "version": version,
                "golden": vectors,
                "description": f"{model_bundle.manifest.description} "
                f"(packed with the golden vectors of {stale.manifest.version})",
                "files": {},
            }
        )
        return build_bundle(manifest, members)

    data = build(golden)
    if _reproduces(parse_bundle(data)):
        data = build(
            golden.model_copy(
                update={
                    "vectors": [
                        v.model_copy(update={"expected": v.expected[1:] + v.expected[:1]})
                        for v in golden.vectors
                    ]
                }
            )
        )
    out.write_bytes(data)
    return parse_bundle(data)


def _reproduces(bundle: Bundle) -> bool:
    try:
        Classifier(bundle).replay_golden()
    except EdgefleetError:
        return False
    return True
