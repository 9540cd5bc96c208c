"""The classifier head kept in float: found in both formats' op lists, and on by default.

The conversions run the real LiteRT Quantizer and ONNX Runtime quantiser on the
tiny model of ``tests/quant_models.py``, whose head int8 breaks (one huge
weight makes every other head weight round to zero): with the head in float,
as by default, full int8 passes the gate and no fallback runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.convert import ConversionResult, ConvertOptions, convert, gate_error
from converter.head import classifier_head
from converter.sensitivity import (
    QuantOp,
    onnx_ops,
    onnx_output_names,
    tflite_ops,
    tflite_output_names,
)
from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier
from tests.quant_models import outlier_keras_model, outlier_onnx_model


def _op(name: str, kind: str, inputs: tuple[str, ...], macs: int = 0) -> QuantOp:
    return QuantOp(name, kind, (name,), inputs, macs)


BODY = [
    _op("conv", "CONV_2D", ("image",), 10_000),
    _op("pool", "MEAN", ("conv",)),
]


def test_the_head_is_the_logits_layer_and_what_follows_it_to_the_output() -> None:
    ops = [*BODY, _op("fc", "FULLY_CONNECTED", ("pool",), 60), _op("sm", "SOFTMAX", ("fc",))]
    head = classifier_head(ops, ["sm"])
    assert head is not None
    assert [op.name for op in head.ops] == ["fc", "sm"]
    assert head.excluded == ("fc", "sm")
    assert head.macs == 60 and head.mac_fraction == pytest.approx(60 / 10_060)
    assert head.to_dict()["ops"] == ["FULLY_CONNECTED", "SOFTMAX"]
    # ONNX spells it MatMul -> Add -> Softmax
    onnx = [*BODY, _op("mm", "MatMul", ("pool",), 60), _op("b", "Add", ("mm",))]
    onnx.append(_op("s", "Softmax", ("b",)))
    found = classifier_head(onnx, ["s"])
    assert found is not None and [op.name for op in found.ops] == ["mm", "b", "s"]


def test_no_head_where_the_output_is_not_a_small_plain_dense_layer() -> None:
    fc = _op("fc", "FULLY_CONNECTED", ("pool",), 60)
    sm = _op("sm", "SOFTMAX", ("fc",))
    assert classifier_head([*BODY, fc, sm], ["sm", "pool"]) is None  # two outputs
    assert classifier_head([*BODY, fc, sm], ["missing"]) is None
    # a convolution makes the scores
    assert classifier_head([*BODY, _op("sm", "SOFTMAX", ("pool",))], ["sm"]) is None
    # the logits are read by something else as well
    other = _op("other", "SOFTMAX", ("fc",))
    assert classifier_head([*BODY, fc, sm, other], ["sm"]) is None
    # a dense layer with over 1% of the MACs is the model, not its head
    big = _op("fc", "FULLY_CONNECTED", ("pool",), 200)
    assert classifier_head([*BODY, big, sm], ["sm"]) is None
    assert classifier_head([*BODY, big, sm], ["sm"], max_mac_share=0.05) is not None
    assert classifier_head([], ["sm"]) is None


def test_the_head_of_real_tflite_and_onnx_models(tmp_path: Path) -> None:
    from converter.source import load_source_model

    path = tmp_path / "outlier.keras"
    outlier_keras_model().save(path)  # type: ignore[attr-defined]
    tflite = load_source_model(path).tflite_fp32()
    head = classifier_head(tflite_ops(tflite), tflite_output_names(tflite))
    assert head is not None
    assert [op.kind for op in head.ops] == ["FULLY_CONNECTED", "SOFTMAX"]
    assert head.macs == 8 * 6 and 0 < head.mac_fraction < 0.01
    import onnx as onnx_lib

    # shape-inferred, as the quantiser's pre-processed model is (the MACs need the shapes)
    inferred = onnx_lib.shape_inference.infer_shapes(
        onnx_lib.load_from_string(outlier_onnx_model())
    )
    onnx = inferred.SerializeToString()
    head = classifier_head(onnx_ops(onnx), onnx_output_names(onnx))
    assert head is not None and head.excluded == ("head", "head_bias")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converter.synthetic import write_dataset

    folder = tmp_path_factory.mktemp("head-data")
    write_dataset(folder, 10, 12, size=48, seed=1)
    return folder


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_float_head_by_default_passes_the_gate_without_fallback(
    data: Path, tmp_path: Path, fmt: str
) -> None:
    if fmt == "tflite":
        path = tmp_path / "outlier.keras"
        outlier_keras_model().save(path)  # type: ignore[attr-defined]
    else:
        path = tmp_path / "outlier.onnx"
        path.write_bytes(outlier_onnx_model())

    def run(out: str, **options: object) -> ConversionResult:
        return convert(
            ConvertOptions(
                model=path,
                out=tmp_path / out,
                parity=data / "val",
                calibration=data / "train",
                formats=(fmt,),
                calibration_samples=24,
                preprocessing={"mean": (127.5,) * 3, "std": (127.5,) * 3},
                max_accuracy_drop=100.0,
                min_agreement=0.95,
                fallback=False,
                **options,  # type: ignore[arg-type]
            )
        )[0]

    int8_head = run("int8-head", float_head=False, keep_failed=True)
    assert not int8_head.passed and int8_head.preparation is not None
    assert int8_head.preparation["float_head"] is None
    assert int8_head.bundle_path is not None
    int8_bundle = read_bundle(int8_head.bundle_path)
    assert int8_bundle.manifest.model.float_fallback is None
    # the gate's message counts the near ties among the disagreeing photos
    error = str(gate_error([int8_head], ConvertOptions(Path(), Path(), Path())))
    ties = sum(row.near_tie for row in int8_head.disagreements)
    assert (
        f"; {ties} of the {len(int8_head.disagreements)} disagreeing photos are near ties" in error
    )
    summary = int8_head.to_dict()
    assert summary["near_tie_disagreements"] == ties
    assert summary["float_near_ties"] == int8_head.float_near_ties is not None

    result = run("float-head")
    assert result.passed and result.fallback is None and result.preparation is not None
    head = result.preparation["float_head"]
    assert head is not None and 0 < head["mac_fraction"] < 0.01
    assert (result.report.top1_agreement or 0) > (int8_head.report.top1_agreement or 0)
    assert result.bundle_path is not None
    bundle = read_bundle(result.bundle_path)
    recorded = bundle.manifest.model.float_fallback
    assert recorded is not None and sorted(recorded.ops) == sorted(head["excluded"])
    assert recorded.float_mac_fraction == pytest.approx(head["mac_fraction"], abs=1e-6)
    assert bundle.manifest.model.outputs[0].dtype == "float32"
    if fmt == "tflite":  # int8 in, float scores out; int8 out without the float head
        assert bundle.manifest.model.inputs[0].dtype == "int8"
        assert int8_bundle.manifest.model.outputs[0].dtype == "int8"
    classifier = Classifier(bundle)
    golden = classifier.replay_golden()
    assert golden.vectors and golden.top1_matches == golden.vectors
    assert np.isfinite(classifier.scores(np.full((48, 48, 3), 128, np.uint8))).all()
    page = result.report_path.read_text()
    assert "classifier head (" in page and "kept in float" in page
