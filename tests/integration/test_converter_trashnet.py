"""The converter on real photos: TrashNet from ../shared (or EDGEFLEET_TRASHNET); skipped where absent."""

from __future__ import annotations

from pathlib import Path

from converter.convert import ConvertOptions, convert
from edge_runtime.bundle import read_bundle
from tests.trashnet import TRASHNET, needs_trashnet

pytestmark = needs_trashnet


def test_int8_conversion_of_a_model_trained_on_trashnet(tmp_path: Path) -> None:
    from converter.dataset import LabelledFolder
    from converter.reference import train_reference

    train = LabelledFolder.scan(TRASHNET / "train")
    trained = train_reference(train.balanced(600, seed=1), None, arch="tiny", size=64, epochs=6)
    model_path = tmp_path / "trashnet-tiny.keras"
    trained.model.save(model_path)
    results = convert(
        ConvertOptions(
            model=model_path,
            out=tmp_path / "out",
            parity=TRASHNET / "val",
            calibration=TRASHNET / "train",
            formats=("tflite", "onnx"),
            precisions=("int8",),
            calibration_samples=100,
            preprocessing={"mean": (127.5,) * 3, "std": (127.5,) * 3, "interpolation": "area"},
            max_accuracy_drop=100,
            min_agreement=0,
        )
    )
    assert [(r.format, r.precision) for r in results] == [("tflite", "int8"), ("onnx", "int8")]
    for result in results:
        report = result.report
        assert report.dataset.num_images == 328
        assert (
            report.float_accuracy is not None and report.float_accuracy > 0.3
        )  # learned something (chance is ~0.17)
        assert report.top1_agreement is not None and report.top1_agreement >= 0.9, (
            report.top1_agreement
        )
        assert abs(report.accuracy_drop_points or 0.0) <= 5.0
        manifest = read_bundle(result.bundle_path).manifest
        assert manifest.provenance.parity_data_sha256 == report.dataset.sha256
        assert sum(row.support for row in report.per_class) == 328
