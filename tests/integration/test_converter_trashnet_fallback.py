"""The accuracy-aware fallback on real photos: a small TrashNet model trained in the test.

TrashNet comes from ../shared (or EDGEFLEET_TRASHNET); the tests skip where
it is absent. The gate is set one photo above what full int8 reaches, so the
fallback must keep ops in float to pass; without MAC or latency limits it
can always get there (the whole model in float agrees with itself).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.convert import ConvertOptions, convert
from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier
from tests.trashnet import TRASHNET, needs_trashnet

pytestmark = needs_trashnet


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converter.dataset import LabelledFolder
    from converter.reference import train_reference

    train = LabelledFolder.scan(TRASHNET / "train")
    trained = train_reference(train.balanced(300, seed=2), None, arch="tiny", size=48, epochs=4)
    path = tmp_path_factory.mktemp("trashnet") / "trashnet-tiny.keras"
    trained.model.save(path)
    return path


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_the_fallback_lifts_a_trashnet_model_over_a_gate_full_int8_misses(
    model_path: Path, tmp_path: Path, fmt: str
) -> None:
    def options(out: str, **kwargs: object) -> ConvertOptions:
        return ConvertOptions(
            model=model_path,
            out=tmp_path / out,
            parity=TRASHNET / "val",
            calibration=TRASHNET / "train",
            formats=(fmt,),
            calibration_samples=48,
            sensitivity_samples=16,
            preprocessing={"mean": (127.5,) * 3, "std": (127.5,) * 3, "interpolation": "area"},
            max_accuracy_drop=100.0,
            **kwargs,  # type: ignore[arg-type]
        )

    full = convert(options("full", min_agreement=0.0, fallback=False))[0]
    agreement = full.report.top1_agreement or 0.0
    assert full.sensitivity is not None and full.sensitivity.ranked
    # a small model trained for 4 epochs at 48x48: its int8 model disagrees on some photos
    # (if it ever agreed on all, the fallback would have nothing to do and the test nothing
    # to check, which must show as a failure, not a skip)
    assert len(full.disagreements) > 0 and agreement < 1.0, full.to_dict()
    one_more = agreement + 1.0 / full.report.dataset.num_images
    result = convert(
        options(
            "fallback",
            min_agreement=min(1.0, one_more - 1e-9),
            max_float_fraction=1.0,
            max_latency_ratio=100.0,
            max_fallback_steps=40,
        )
    )[0]
    assert result.fallback is not None and result.before_fallback is not None
    assert result.before_fallback.top1_agreement == full.report.top1_agreement
    assert result.fallback.steps and result.fallback.candidates
    # the steps were chosen on train/ photos that were not calibration photos, not on val/
    assert result.fallback.selection_set.startswith("selection: ")
    assert result.fallback.selection_images == 300
    assert result.fallback.baseline is not None
    kept = [s for s in result.fallback.steps if s.action == "kept in float"]
    assert all(s.selection is not None for s in kept)
    assert kept[-1].selection is not None
    assert kept[-1].selection.better_than(result.fallback.baseline)
    assert result.passed, result.fallback.to_dict()
    assert (result.report.top1_agreement or 0.0) > agreement
    assert result.bundle_path is not None
    bundle = read_bundle(result.bundle_path)
    recorded = bundle.manifest.model.float_fallback
    assert recorded is not None
    # the fallback's ops and the classifier head, which every int8 model keeps in float
    assert result.preparation is not None and result.preparation["float_head"] is not None
    head = set(result.preparation["float_head"]["excluded"])
    assert head and set(recorded.ops) == head | {
        m for op in result.fallback.float_ops for m in op.excluded
    }
    classifier = Classifier(bundle)  # LiteRT or ONNX Runtime runs the mixed model
    golden = classifier.replay_golden()
    assert golden.vectors and golden.top1_matches == golden.vectors
    assert np.isfinite(classifier.scores(np.zeros((64, 64, 3), np.uint8))).all()
    page = result.report_path.read_text()
    assert "Accuracy-aware fallback: gate passed" in page
    assert page.count("data:image/jpeg;base64,") == min(60, len(result.disagreements))
