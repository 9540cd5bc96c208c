"""Assemble a bundle from a converted model: tensor specs read by the runtime, golden vectors, report.

Tensor specs are read from the model by the same backend the device runs,
and golden-vector expectations are computed by running the draft bundle
through ``edge_runtime.classifier.Classifier`` on the frames exactly as they
are stored: what the bundle promises is what the runtime produced.

Golden frames are stored small (:func:`golden_frame_to_store`): cropped to
the region the preprocessing reads where that changes no input bit, and
downscaled when they are far larger than the model's input.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from converter.errors import ConversionError
from edge_runtime import __version__
from edge_runtime.backends import create_backend
from edge_runtime.bundle import (
    Bundle,
    Compatibility,
    GoldenSet,
    GoldenVector,
    ManifestSpec,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    Provenance,
    QualityReport,
    build_bundle,
    encode_frame_png,
    parse_bundle,
    write_bundle,
)
from edge_runtime.bundle.compat import runtime_too_old
from edge_runtime.bundle.fields import required_runtime
from edge_runtime.bundle.manifest import FloatFallback
from edge_runtime.classifier import Classifier
from edge_runtime.preprocess import crop_box

__all__ = ["assemble_bundle", "golden_frame_to_store"]

GOLDEN_MAX_SCALE = 2.0
"""A stored golden frame's read region is at most this many times the model input per side."""


def golden_frame_to_store(
    frame: npt.NDArray[np.uint8], contract: Preprocessing
) -> npt.NDArray[np.uint8]:
    """The golden frame as the bundle stores it: only what the preprocessing reads, not too big.

    1. ``center-crop``: the preprocessing reads a centred box of ``crop_fraction``
       of the largest centred region with the model's aspect ratio. That region
       (for a square model, the centred square whose side is the shorter side)
       is kept, placed so that cropping the kept frame gives the very same box
       of pixels: the model input is bit-identical. When the rounding of some
       size makes that impossible, the frame is kept whole. ``stretch`` and
       ``letterbox`` read the whole frame, which is kept.
    2. When the region read is more than :data:`GOLDEN_MAX_SCALE` times the
       model input on a side (a 1080p camera frame for a 224 model), the kept
       frame is downscaled with ``cv2.INTER_AREA`` until it no longer is. That
       changes the input, which is fine: expected scores are always computed
       on the stored frame.
    """
    if contract.resize == "center-crop":
        frame = _crop_losslessly(frame, contract)
    height, width = frame.shape[:2]
    if contract.resize == "center-crop":
        box = crop_box(height, width, contract)
        read_h, read_w = box.height, box.width
    else:
        read_h, read_w = height, width
    scale = min(
        GOLDEN_MAX_SCALE * contract.height / read_h, GOLDEN_MAX_SCALE * contract.width / read_w
    )
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frame = np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return np.ascontiguousarray(frame)


def _crop_losslessly(
    frame: npt.NDArray[np.uint8], contract: Preprocessing
) -> npt.NDArray[np.uint8]:
    """The smallest region whose centre-crop is the frame's centre-crop, pixel for pixel.

    That is the largest centred region with the model's aspect ratio, give or
    take a pixel on a side where rounding a non-square aspect ratio needs it
    (for a square model it always is the centred square of the shorter side);
    the frame itself when no such region exists.
    """
    height, width = frame.shape[:2]
    wanted = crop_box(height, width, contract)
    region = crop_box(height, width, contract.model_copy(update={"crop_fraction": 1.0}))
    best: tuple[int, int, int, int, int] | None = None  # area, top, left, height, width
    for grow_h, grow_w in itertools.product((0, -1, 1), repeat=2):
        kept_h, kept_w = region.height + grow_h, region.width + grow_w
        if not (0 < kept_h <= height and 0 < kept_w <= width):
            continue
        inner = crop_box(kept_h, kept_w, contract)
        top, left = wanted.top - inner.top, wanted.left - inner.left
        if (
            (inner.height, inner.width) == (wanted.height, wanted.width)
            and 0 <= top <= height - kept_h
            and 0 <= left <= width - kept_w
            and (best is None or kept_h * kept_w < best[0])
        ):
            best = (kept_h * kept_w, top, left, kept_h, kept_w)
    if best is None:
        return frame
    _, top, left, kept_h, kept_w = best
    return frame[top : top + kept_h, left : left + kept_w]


def assemble_bundle(
    path: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    model: bytes,
    model_format: str,
    precision: str,
    preprocessing: Preprocessing,
    labels: list[str],
    postprocessing: Postprocessing,
    golden_frames: Sequence[tuple[npt.NDArray[np.uint8], str | None]],
    golden_atol: float,
    quality: QualityReport | None = None,
    provenance: Provenance | None = None,
    compatibility: Compatibility | None = None,
    description: str = "",
    float_fallback: FloatFallback | None = None,
) -> Bundle:
    """Write a complete bundle to ``path`` (atomically) and return it."""
    backend = create_backend("auto", model_format, model)
    model_spec = ModelSpec(
        file=f"model.{model_format}",
        format=model_format,
        precision=precision,
        inputs=backend.inputs,
        outputs=backend.outputs,
        float_fallback=float_fallback,
    )
    stored = [golden_frame_to_store(frame, preprocessing) for frame, _ in golden_frames]
    members = {model_spec.file: model}
    members.update({f"golden/{i:03d}.png": encode_frame_png(f) for i, f in enumerate(stored)})
    fields = {
        "name": name,
        "version": version,
        "description": description,
        "model": model_spec,
        "preprocessing": preprocessing,
        "labels": labels,
        "postprocessing": postprocessing,
        "quality": quality,
        "provenance": provenance or Provenance(created_by=f"edgefleet {__version__}"),
        "compatibility": compatibility or Compatibility(),
    }
    draft_members = {model_spec.file: model}
    draft = parse_bundle(build_bundle(ManifestSpec(**fields), draft_members))
    classifier = Classifier(draft)
    vectors = []
    for i, (frame, (_, label)) in enumerate(zip(stored, golden_frames, strict=True)):
        scores = classifier.scores(frame)  # the stored frame, as the device will replay it
        if not np.all(np.isfinite(scores)):
            raise ConversionError(
                f"the converted model outputs non-finite scores for golden frame {i}; "
                "refusing to pack a broken model"
            )
        expected = [round(float(s), 6) for s in scores]
        vectors.append(GoldenVector(input=f"golden/{i:03d}.png", expected=expected, label=label))
    golden = GoldenSet(atol=golden_atol, vectors=vectors) if vectors else None
    manifest = _needing_its_runtime(ManifestSpec(**fields, golden=golden))
    return write_bundle(path, manifest, members)


def _needing_its_runtime(manifest: ManifestSpec) -> ManifestSpec:
    """``manifest`` with ``min_runtime_version`` raised to the oldest runtime that reads every
    field it carries (:func:`~edge_runtime.bundle.fields.required_runtime`), if it said less."""
    needed = required_runtime(manifest)
    declared = manifest.compatibility.min_runtime_version
    if not runtime_too_old(needed, declared):
        return manifest
    compatibility = manifest.compatibility.model_copy(update={"min_runtime_version": needed})
    return manifest.model_copy(update={"compatibility": compatibility})
