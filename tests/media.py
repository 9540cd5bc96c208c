"""Real media for tests: videos written by OpenCV's VideoWriter, bundles made by the packaging code."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from converter.packaging import assemble_bundle
from converter.synthetic import CLASSES, draw_frame
from edge_runtime.bundle import Bundle, Compatibility, Postprocessing, Preprocessing
from tests.models import LABELS, SIZE


def write_video(path: Path, frames: int = 60, fps: float = 30.0, size: int = 96) -> Path:
    """An MJPG .avi of synthetic conveyor frames, cycling through the classes."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for index in range(frames):
        writer.write(draw_frame(CLASSES[index % len(CLASSES)], index, size, size))
    writer.release()
    return path


def make_bundle(
    path: Path,
    model: bytes,
    model_format: str = "tflite",
    version: str = "1.0.0",
    softmax: bool = False,
    *,
    min_runtime_version: str | None = None,
) -> Bundle:
    """A complete bundle (runtime-read specs, golden vectors) for a tiny test model;
    ``min_runtime_version``: the runtime it says it needs (default: this one)."""
    frames = [(draw_frame(label, 1), label) for label in CLASSES[:2]]
    return assemble_bundle(
        path,
        name="tiny-classifier",
        version=version,
        model=model,
        model_format=model_format,
        precision="fp32",
        preprocessing=Preprocessing(height=SIZE, width=SIZE, mean=(0, 0, 0), std=(255, 255, 255)),
        labels=LABELS,
        postprocessing=Postprocessing(apply_softmax=softmax, top_k=3),
        golden_frames=frames,
        golden_atol=1e-4,
        compatibility=None
        if min_runtime_version is None
        else Compatibility(min_runtime_version=min_runtime_version),
    )


def frame(seed: int = 0) -> np.ndarray:
    return draw_frame(CLASSES[seed % 6], seed)


def make_bad_golden_bundle(
    path: Path, model: bytes, model_format: str = "tflite", version: str = "9.0.0"
) -> Bundle:
    """A bundle whose golden expectations are wrong: its smoke test must fail."""
    from edge_runtime.bundle import GoldenSet, GoldenVector, build_bundle, parse_bundle

    good = make_bundle(path, model, model_format, version)
    golden = good.manifest.golden
    assert golden is not None
    vectors = [
        GoldenVector(input=v.input, expected=list(reversed(v.expected)), label=v.label)
        for v in golden.vectors
    ]
    manifest = good.manifest.model_copy(
        update={"golden": GoldenSet(atol=golden.atol, vectors=vectors), "files": {}}
    )
    members = {name: data for name, data in good.members.items() if name != "manifest.json"}
    data = build_bundle(manifest, members)
    path.write_bytes(data)
    return parse_bundle(data)
