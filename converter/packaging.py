"""Assemble a bundle from a converted model: tensor specs read by the runtime, golden vectors, report.

Tensor specs are read from the model by the same backend the device runs,
and golden-vector expectations are computed by running the draft bundle
through ``edge_runtime.classifier.Classifier``: what the bundle promises is
what the runtime produced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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
from edge_runtime.classifier import Classifier

__all__ = ["assemble_bundle"]


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
) -> Bundle:
    """Write a complete bundle to ``path`` (atomically) and return it."""
    backend = create_backend("auto", model_format, model)
    model_spec = ModelSpec(
        file=f"model.{model_format}",
        format=model_format,
        precision=precision,
        inputs=backend.inputs,
        outputs=backend.outputs,
    )
    members = {model_spec.file: model}
    members.update(
        {f"golden/{i:03d}.png": encode_frame_png(f) for i, (f, _) in enumerate(golden_frames)}
    )
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
        "compatibility": compatibility or Compatibility(min_runtime_version=__version__),
    }
    draft_members = {model_spec.file: model}
    draft = parse_bundle(build_bundle(ManifestSpec(**fields), draft_members))
    classifier = Classifier(draft)
    vectors = []
    for i, (frame, label) in enumerate(golden_frames):
        scores = classifier.scores(frame)
        if not np.all(np.isfinite(scores)):
            raise ConversionError(
                f"the converted model outputs non-finite scores for golden frame {i}; "
                "refusing to pack a broken model"
            )
        expected = [round(float(s), 6) for s in scores]
        vectors.append(GoldenVector(input=f"golden/{i:03d}.png", expected=expected, label=label))
    golden = GoldenSet(atol=golden_atol, vectors=vectors) if vectors else None
    manifest = ManifestSpec(**fields, golden=golden)
    return write_bundle(path, manifest, members)
