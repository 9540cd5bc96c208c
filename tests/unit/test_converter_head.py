"""The classifier head kept in float: found in both formats' op lists (the conversion
with the head in float is tested in ``test_converter_fallback_models.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.head import classifier_head
from converter.sensitivity import (
    QuantOp,
    onnx_ops,
    onnx_output_names,
    tflite_ops,
    tflite_output_names,
)
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
