"""The fallback on real runtimes: tiny models that int8 breaks in one known layer.

The head of each model (``tests/quant_models.py``) reads an always-zero
feature through a huge weight, so its int8 weights all round to zero but
one: full int8 fails the gate, and keeping the head in float fixes it (as
the converter does by default: these tests turn ``float_head`` off unless
they test it, so that the fallback has to find the head). The
conversions run the real LiteRT Quantizer and ONNX Runtime quantiser; the
bundles are loaded back and replayed by the device's own classifier.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converter.convert import (
    ConversionResult,
    ConvertOptions,
    convert,
    gate_error,
    selection_figure,
    selection_folder,
)
from converter.dataset import LabelledFolder
from converter.rounding import bias_correct_onnx, bias_correct_tflite, weight_rounding_error
from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier
from tests.quant_models import outlier_keras_model, outlier_onnx_model


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converter.synthetic import write_dataset

    folder = tmp_path_factory.mktemp("quant-data")
    write_dataset(folder, 10, 12, size=48, seed=1)
    return folder


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "outlier.onnx"
    path.write_bytes(outlier_onnx_model())
    return path


def _convert(model: Path, data: Path, out: Path, fmt: str, **options: object) -> ConversionResult:
    return convert(
        ConvertOptions(
            model=model,
            out=out,
            parity=data / "val",
            calibration=data / "train",
            formats=(fmt,),
            calibration_samples=24,
            preprocessing={"mean": (127.5,) * 3, "std": (127.5,) * 3},
            max_accuracy_drop=100.0,
            sensitivity_samples=12,
            # the classifier head is the layer int8 breaks here: in float by default
            **{"min_agreement": 0.95, "float_head": False, **options},  # type: ignore[arg-type]
        )
    )[0]


def _check_bundle(result: ConversionResult, expected_op: str) -> None:
    assert result.bundle_path is not None
    bundle = read_bundle(result.bundle_path)
    fallback = bundle.manifest.model.float_fallback
    assert fallback is not None
    assert any(expected_op in op for op in fallback.ops), fallback.ops
    assert 0 < fallback.float_mac_fraction <= 0.10
    classifier = Classifier(bundle)  # the device side loads the mixed model and replays it
    golden = classifier.replay_golden()  # raises when a vector is off by more than its tolerance
    assert golden.vectors > 0 and golden.top1_matches == golden.vectors, golden
    frame = np.full((48, 48, 3), 128, dtype=np.uint8)
    assert np.all(np.isfinite(classifier.scores(frame)))


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_float_head_by_default_passes_the_gate_without_fallback(
    data: Path, tmp_path: Path, fmt: str
) -> None:
    """The head int8 breaks here stays in float by default: full int8 passes, no fallback."""
    assert ConvertOptions(Path(), Path(), Path()).float_head  # the default
    if fmt == "tflite":
        path = tmp_path / "outlier.keras"
        outlier_keras_model().save(path)  # type: ignore[attr-defined]
    else:
        path = tmp_path / "outlier.onnx"
        path.write_bytes(outlier_onnx_model())

    def run(out: str, **options: object) -> ConversionResult:
        return _convert(path, data, tmp_path / out, fmt, fallback=False, **options)

    int8_head = run("int8-head", keep_failed=True)
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

    result = run("float-head", float_head=True)
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


def test_onnx_fallback_keeps_the_broken_head_in_float(
    data: Path, onnx_path: Path, tmp_path: Path
) -> None:
    off = _convert(onnx_path, data, tmp_path / "off", "onnx", fallback=False)
    assert not off.passed and off.bundle_path is None and off.fallback is None
    assert (off.report.top1_agreement or 0) < 0.9
    page = off.report_path.read_text()
    assert page.count("data:image/jpeg;base64,") == len(off.disagreements) > 0
    assert "Most sensitive ops" in page
    assert off.sensitivity is not None and off.sensitivity.ranked[0].op.kind == "Gemm"

    on = _convert(onnx_path, data, tmp_path / "on", "onnx")
    assert on.passed and on.fallback is not None and on.fallback.passed
    assert [op.kind for op in on.fallback.float_ops] == ["Gemm"]
    assert on.before_fallback is not None and on.before_fallback == off.report
    assert (on.report.top1_agreement or 0) >= 0.95
    _check_bundle(on, "head")
    report = on.to_report_dict()
    assert report["fallback"]["steps"][0]["action"] == "kept in float"
    # chosen on the train/ photos the calibration left out, not on the gate's val/ photos
    assert report["fallback"]["selection_set"].startswith("selection: ")
    assert report["fallback"]["selection_images"] == on.fallback.selection_images > 0
    first = report["fallback"]["steps"][0]["selection"]
    assert first["score_error"] < report["fallback"]["full_int8_selection"]["score_error"]
    assert report["fallback_candidates"][0]["kind"] == "Gemm"
    page = on.report_path.read_text()
    assert "Accuracy-aware fallback: gate passed" in page
    # the selection figures, per step and for full int8, and what preceded calibration
    assert f"Steps chosen on {on.fallback.selection_images} photos" in page
    assert f"{first['score_error']:.5f}" in page
    assert "Before calibration" in page and "activation equalisation" in page
    assert on.json_report_path is not None and on.json_report_path.is_file()


def test_tflite_fallback_keeps_the_broken_head_in_float(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "outlier.keras"
    outlier_keras_model().save(path)  # type: ignore[attr-defined]
    result = _convert(path, data, tmp_path / "out", "tflite")
    assert result.before_fallback is not None
    assert (result.before_fallback.top1_agreement or 0) < 0.9
    assert result.passed and result.fallback is not None
    assert "FULLY_CONNECTED" in [op.kind for op in result.fallback.float_ops]
    _check_bundle(result, "head")
    # where the time went, stage by stage, in the summary
    stages = result.to_dict()["stage_seconds"]
    expected = {"export", "prepare and calibrate", "evaluate", "sensitivity", "fallback"}
    expected |= {"time against fp32"}
    assert expected | {"fallback candidates"} == set(stages), stages
    assert all(seconds >= 0 for seconds in stages.values()) and stages["export"] > 0
    assert stages["fallback candidates"] <= stages["fallback"]
    # the int8 model timed against the fp32 one on this host (a ratio, either way)
    ratio = result.to_dict()["invoke_p50_vs_fp32"]
    assert ratio is not None and 0.0 < ratio == round(result.vs_fp32_p50 or 0, 3)
    # no depthwise convolution here: nothing to equalise, and the summary says so
    assert result.preparation == {
        "equalisation": {"pairs": 0, "channels": 0, "scaled": 0, "median_scale": 1.0, "images": 0},
        "rounding": "nearest",
        "float_head": None,
    }


def test_the_fallback_stops_at_the_mac_budget(data: Path, onnx_path: Path, tmp_path: Path) -> None:
    result = _convert(onnx_path, data, tmp_path / "out", "onnx", max_float_fraction=0.0)
    assert not result.passed and result.bundle_path is None
    assert result.fallback is not None and not result.fallback.passed
    assert result.fallback.candidates == []  # the head has MACs too: nothing fits in 0%
    assert result.fallback.stopped == "no candidate left that helps within the limits"
    assert "fallback tried 0 steps" in str(
        gate_error([result], ConvertOptions(Path(), Path(), Path()))
    )


def test_cli_falls_back_by_default_and_not_with_no_fallback(
    data: Path, onnx_path: Path, tmp_path: Path
) -> None:
    from edgefleet.cli import cli

    common = [
        "convert",
        str(onnx_path),
        "--parity",
        str(data / "val"),
        "--calibration",
        str(data / "train"),
        "--formats",
        "onnx",
        "--calibration-samples",
        "24",
        "--mean",
        "127.5",
        "--std",
        "127.5",
        "--min-agreement",
        "95",
        "--max-accuracy-drop",
        "100",
        "--no-float-head",
    ]
    runner = CliRunner()
    off = runner.invoke(cli, [*common, "--out", str(tmp_path / "off"), "--no-fallback"])
    assert off.exit_code == 3, off.output
    assert "no bundle written" in off.output
    on = runner.invoke(cli, [*common, "--out", str(tmp_path / "on")])
    assert on.exit_code == 0, on.output
    assert "fallback" in on.output and "kept in float Gemm" in on.output
    bad = runner.invoke(cli, [*common, "--out", str(tmp_path / "x"), "--max-float-fraction", "120"])
    assert bad.exit_code == 2 and "max-float-fraction" in bad.output
    # AdaRound and no equalisation, asked for on the command line, reach the conversion
    ada = runner.invoke(
        cli,
        [*common, "--out", str(tmp_path / "ada"), "--rounding", "adaround", "--no-equalise"],
    )
    assert ada.exit_code == 0, ada.output
    row = json.loads((tmp_path / "ada" / "outlier-1.0.0-onnx-int8.report.json").read_text())
    assert row["preparation"]["equalisation"] is None
    assert row["preparation"]["rounding"] == "adaround"
    assert row["preparation"]["adaround"]["layers"] == 1  # the conv (the head is a MatMul)
    assert row["preparation"]["adaround"]["images"] == 24


def test_onnx_bias_correction_cancels_the_mean_shift_of_weight_rounding() -> None:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load_model_from_string(outlier_onnx_model())
    # the conv alone, NCHW, no padding (so the per-channel shift is exact)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    del conv.attribute[:]
    conv.attribute.extend([onnx.helper.make_attribute("strides", [2, 2])])
    graph = onnx.helper.make_graph(
        [conv],
        "conv",
        [onnx.helper.make_tensor_value_info("nchw", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
        [onnx.helper.make_tensor_value_info("conv", onnx.TensorProto.FLOAT, None)],
        initializer=[i for i in model.graph.initializer if i.name in ("conv_w", "conv_b")],
    )
    float_model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    float_model.ir_version = 8
    rng = np.random.default_rng(0)
    samples = [rng.uniform(0.2, 1.0, (1, 3, 16, 16)).astype(np.float32) for _ in range(16)]

    def outputs(m: onnx.ModelProto, rounded: bool) -> np.ndarray:
        m = onnx.ModelProto.FromString(m.SerializeToString())
        for init in m.graph.initializer:
            if init.name == "conv_w" and rounded:
                w = numpy_helper.to_array(init)
                init.CopyFrom(
                    numpy_helper.from_array(
                        w + weight_rounding_error(w, 0).astype(np.float32), "conv_w"
                    )
                )
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {"nchw": s})[0] for s in samples])

    reference = outputs(float_model, rounded=False)
    plain = outputs(float_model, rounded=True).mean(axis=(0, 2, 3)) - reference.mean(axis=(0, 2, 3))
    corrected_model = bias_correct_onnx(
        onnx.ModelProto.FromString(float_model.SerializeToString()), samples
    )
    corrected = outputs(corrected_model, rounded=True).mean(axis=(0, 2, 3)) - reference.mean(
        axis=(0, 2, 3)
    )
    assert np.abs(plain).max() > 1e-3  # rounding did shift the means
    # float32 sums over 16 x 49 positions leave ~1e-4 (channel 7's bias is -1000)
    assert np.abs(corrected).max() < 0.2 * np.abs(plain).max()
    assert np.abs(corrected[:7]).max() < 0.05 * np.abs(plain[:7]).max()


def test_tflite_bias_correction_subtracts_the_rounding_shift() -> None:
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((8, 8, 3), batch_size=1), keras.layers.Conv2D(4, 3)])
    weights, bias = model.layers[0].get_weights()
    float_model = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(1)
    samples = [rng.uniform(0.0, 1.0, (1, 8, 8, 3)).astype(np.float32) for _ in range(8)]
    corrected = bias_correct_tflite(float_model, samples)
    mean = np.concatenate(samples).reshape(-1, 3).mean(axis=0)
    tflite_weights = weights.transpose(3, 0, 1, 2)  # [cout, kh, kw, cin]
    expected = bias - np.einsum("ohwc,c->o", weight_rounding_error(tflite_weights, 0), mean)
    interpreter = Interpreter(model_content=corrected)
    found = [
        interpreter.get_tensor(d["index"])
        for d in interpreter.get_tensor_details()
        if list(d["shape"]) == [4] and d["dtype"] == np.float32
    ]
    assert any(np.allclose(b, expected, atol=1e-6) for b in found), (found, expected)
    assert not np.allclose(expected, bias, atol=1e-6)


def test_onnx_candidate_error_matches_a_real_exclusion_where_the_quantiser_drops_a_clip() -> None:
    """ONNX Runtime's QDQ quantiser removes a Clip(0, 6) whose int8 range does its job; a
    candidate that keeps the Conv and its Clip in float must put the Clip back, as
    ``nodes_to_exclude`` does, or its unclipped output ruins the measurement."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converter.quantize import OnnxInt8Quantizer
    from converter.sensitivity import onnx_ops, onnx_output_error

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="clip"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=(4, 8, 1, 1)).astype(np.float32), "w2"),
            numpy_helper.from_array(np.array(0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6, np.float32), "hi"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = [rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(8)]
    with OnnxInt8Quantizer(model.SerializeToString(), lambda: iter(data)) as quantizer:
        full = quantizer.quantize()
        assert "Clip" not in {n.op_type for n in onnx.load_model_from_string(full).graph.node}
        prepared = quantizer.prepared_model()
        first = onnx_ops(prepared)[0]
        assert first.excluded == ("conv", "clip")
        measured = onnx_output_error(full, prepared, data)(list(first.excluded))
        real = quantizer.quantize(first.excluded)
        actual = onnx_output_error(real, prepared, data)([])
    assert measured == pytest.approx(actual, rel=0.25), (measured, actual)


def test_the_selection_set_is_balanced_deterministic_and_apart_from_calibration_and_parity(
    data: Path,
) -> None:
    train = LabelledFolder.scan(data / "train")
    parity = LabelledFolder.scan(data / "val")
    chosen = selection_folder(train, 24, 12, parity)
    assert chosen is not None and len(chosen.items) == 12
    calibration = {path for path, _ in train.balanced(24).items}
    assert not calibration & {path for path, _ in chosen.items}
    counts = np.bincount([label for _, label in chosen.items], minlength=len(train.labels))
    assert counts.max() - counts.min() <= 1  # class-balanced
    again = selection_folder(train, 24, 12, parity)
    assert again is not None and again.items == chosen.items
    # a calibration folder that is also the parity folder leaves nothing to choose on
    assert selection_folder(train, 24, 12, train) is None
    assert selection_folder(train, len(train.items), 12, parity) is None


def test_the_selection_figure_is_the_mean_score_distance_and_the_agreement() -> None:
    ref = np.array([[0.9, 0.1], [0.4, 0.6]], dtype=np.float32)
    got = np.array([[0.8, 0.2], [0.7, 0.3]], dtype=np.float32)
    figure = selection_figure(ref, got)
    assert figure.score_error == pytest.approx((0.1 + 0.3) / 2)
    assert figure.agreement == 0.5


def test_a_failed_fallback_keeps_its_last_model_with_keep_failed(
    data: Path, onnx_path: Path, tmp_path: Path
) -> None:
    result = _convert(
        onnx_path, data, tmp_path / "out", "onnx", min_agreement=1.01, keep_failed=True
    )
    assert result.fallback is not None and not result.fallback.passed
    assert result.bundle_path is not None  # full int8, as --keep-failed always wrote
    assert read_bundle(result.bundle_path).manifest.model.float_fallback is None
    last = result.fallback.bundle
    assert last is not None and last.name.endswith("-fallback.efb")
    recorded = read_bundle(last).manifest.model.float_fallback
    assert recorded is not None and any("head" in op for op in recorded.ops)
    assert result.to_dict()["fallback"]["bundle"] == str(last)
