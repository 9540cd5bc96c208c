"""The converter on tiny real models trained in seconds on generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from converter.convert import ConvertOptions, convert, gate_error
from converter.errors import ConversionError, DatasetError, ModelLoadError, UnsupportedModelError
from converter.quantize import quantize_onnx_int8, quantize_tflite
from converter.source import load_source_model
from edge_runtime.backends import create_backend
from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier

EDGEFLEET = [sys.executable, "-m", "edgefleet"]
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
NORM = {"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5), "interpolation": "area"}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root, .keras model): the tiny reference CNN trained on a small synthetic set."""
    from converter.dataset import LabelledFolder
    from converter.reference import train_reference
    from converter.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, per_class_train=40, per_class_val=12, size=64)
    train = LabelledFolder.scan(root / "train")
    model = train_reference(
        train, LabelledFolder.scan(root / "val", train.labels), arch="tiny", size=48, epochs=8
    )
    assert model.val_accuracy is not None and model.val_accuracy > 0.5, (
        "the tiny model did not learn"
    )
    path = root / "tiny.keras"
    model.model.save(path)
    return root, path


def tiny_job(root: Path, model_path: Path, out: Path, **changes: Any) -> ConvertOptions:
    """Both formats of the tiny model, calibrated on 60 training images, checked on val."""
    return ConvertOptions(
        model=model_path,
        out=out,
        parity=root / "val",
        calibration=root / "train",
        formats=("tflite", "onnx"),
        preprocessing=NORM,
        calibration_samples=60,
        **changes,
    )


def samples_for(root: Path, count: int = 24):
    from converter.dataset import LabelledFolder
    from converter.reference import REFERENCE_PREPROCESSING, load_tensors

    x, _ = load_tensors(
        LabelledFolder.scan(root / "val").balanced(count), REFERENCE_PREPROCESSING(48)
    )
    return lambda: (x[i : i + 1] for i in range(len(x)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "io_type", "dtypes"),
    [
        ("fp16", "int8", ("float32", "float32")),
        ("dynamic-int8", "int8", ("float32", "float32")),
        ("int8", "int8", ("int8", "int8")),
        ("int8", "uint8", ("uint8", "uint8")),
        ("int8", "float32", ("float32", "float32")),
    ],
)
def test_tflite_precisions_and_io_types(
    trained: tuple[Path, Path], precision: str, io_type: str, dtypes: tuple[str, str]
) -> None:
    root, model_path = trained
    fp32 = load_source_model(model_path).tflite_fp32()
    quantized = quantize_tflite(
        fp32, precision, samples=samples_for(root), io_type=io_type, input_range=(-1.0, 1.0)
    )
    backend = create_backend("litert", "tflite", quantized)
    assert (backend.inputs[0].dtype, backend.outputs[0].dtype) == dtypes
    assert len(quantized) < len(fp32)
    if dtypes[0] != "float32":
        q = backend.inputs[0].quantization
        assert q is not None  # the exact input range [-1, 1] replaced the calibrated one
        low, high = (
            q.scale[0] * (np.iinfo(dtypes[0]).min - q.zero_point[0]),
            q.scale[0] * (np.iinfo(dtypes[0]).max - q.zero_point[0]),
        )
        assert low == pytest.approx(-1.0, abs=0.01) and high == pytest.approx(1.0, abs=0.01)


@pytest.mark.slow
def test_onnx_int8_is_static_qdq_per_channel(trained: tuple[Path, Path]) -> None:
    root, model_path = trained
    float_model = load_source_model(model_path).onnx_fp32()
    quantized = onnx.load_model_from_string(quantize_onnx_int8(float_model, samples_for(root)))
    ops = {node.op_type for node in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    initializers = {init.name: init for init in quantized.graph.initializer}
    per_channel = [
        node
        for node in quantized.graph.node
        if node.op_type == "DequantizeLinear"
        and node.input[1] in initializers
        and len(onnx.numpy_helper.to_array(initializers[node.input[1]]).shape) == 1
        and onnx.numpy_helper.to_array(initializers[node.input[1]]).size > 1
    ]
    assert per_channel, "weights should carry one scale per output channel"


@pytest.mark.slow
def test_convert_writes_checked_bundles(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, model_path = trained
    options = tiny_job(
        root,
        model_path,
        tmp_path / "out",
        precisions=("fp32", "int8"),
        max_accuracy_drop=100,
        min_agreement=0.0,
        version="2.1.0",
    )
    results = convert(options)
    assert [(r.format, r.precision) for r in results] == [
        ("tflite", "fp32"),
        ("tflite", "int8"),
        ("onnx", "fp32"),
        ("onnx", "int8"),
    ]
    assert gate_error(results, options) is None
    for result in results:
        assert result.bundle_path is not None and result.report_path.exists()
        bundle = read_bundle(result.bundle_path)
        manifest = bundle.manifest
        assert manifest.version == "2.1.0" and manifest.model.precision == result.precision
        assert manifest.quality is not None and manifest.quality.dataset.num_images == 72
        assert manifest.preprocessing.mean == (127.5, 127.5, 127.5)
        assert manifest.provenance.calibration_data_sha256 is not None
        assert manifest.golden is not None and len(manifest.golden.vectors) == 3
        assert {v.label for v in manifest.golden.vectors} == set(manifest.labels[:3])
        assert (
            Classifier(bundle).replay_golden().vectors == 3
        )  # the device smoke test reproduces them
    fp32, int8 = results[0], results[1]
    assert fp32.report.top1_agreement == 1.0 and fp32.report.accuracy_drop_points == 0.0
    # each quantised model timed against its fp32 one; fp32 is the reference itself
    assert [r.vs_fp32_p50 is None for r in results] == [True, False, True, False]
    assert all(0.0 < (r.vs_fp32_p50 or 1.0) < 100.0 for r in results)
    assert read_bundle(int8.bundle_path).manifest.model.inputs[0].dtype == "int8"
    html = fp32.report_path.read_text()
    assert html.count("<table class='cm'>") == 2 and "Per-class accuracy" in html
    assert not list((tmp_path / "out").glob(".*"))  # no drafts or temp files left behind
    again = convert(options)  # same inputs, same bytes
    assert [r.bundle_id for r in again] == [r.bundle_id for r in results]


@pytest.mark.slow
def test_gate_failure_writes_no_bundle_and_names_classes(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    root, model_path = trained
    command = [
        *EDGEFLEET,
        "convert",
        str(model_path),
        "--parity",
        str(root / "val"),
        "--out",
        str(tmp_path),
        "--formats",
        "tflite",
        "--precision",
        "fp32",
        "--mean",
        "127.5",
        "--std",
        "127.5",
        "--max-accuracy-drop",
        "-50",  # demands a 50-point gain: cannot pass
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "parity gate failed" in result.stderr and "classes that suffered: " in result.stderr
    assert "no bundle written" in result.stderr
    assert not list(tmp_path.glob("*.efb")) and list(tmp_path.glob("*.report.html"))
    kept = subprocess.run(
        [*command, "--keep-failed", "--json", "--golden-count", "5"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert kept.returncode == 3
    summary = json.loads(kept.stdout)
    assert summary[0]["passed"] is False and Path(summary[0]["bundle"]).exists()
    golden = read_bundle(summary[0]["bundle"]).manifest.golden
    assert golden is not None and len(golden.vectors) == 5


@pytest.mark.slow
def test_savedmodel_and_onnx_sources(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import keras

    root, model_path = trained
    saved = tmp_path / "savedmodel"
    keras.models.load_model(model_path).export(str(saved), verbose=False)
    results = convert(
        ConvertOptions(
            model=saved,
            out=tmp_path / "a",
            parity=root / "val",
            formats=("tflite", "onnx"),
            precisions=("fp32",),
            preprocessing=NORM,
        )
    )
    assert all(r.passed for r in results) and len(results) == 2
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(load_source_model(model_path).onnx_fp32())
    onnx_results = convert(
        ConvertOptions(
            model=onnx_path,
            out=tmp_path / "b",
            parity=root / "val",
            calibration=root / "train",
            formats=("onnx",),
            precisions=("int8",),
            preprocessing=NORM,
            calibration_samples=30,
            max_accuracy_drop=100,
            min_agreement=0,
        )
    )
    assert onnx_results[0].bundle_path is not None
    with pytest.raises(
        UnsupportedModelError, match="TFLite output needs a Keras or SavedModel source"
    ):
        convert(
            ConvertOptions(
                model=onnx_path,
                out=tmp_path / "c",
                parity=root / "val",
                formats=("tflite",),
                precisions=("fp32",),
                preprocessing=NORM,
            )
        )


@pytest.mark.slow
def test_rescaling_layer_gives_the_preprocessing(
    tmp_path: Path, trained: tuple[Path, Path]
) -> None:
    import keras

    root, _ = trained
    inputs = keras.Input((48, 48, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(6, activation="softmax")(x))
    path = tmp_path / "raw.keras"
    model.save(path)
    results = convert(
        ConvertOptions(
            model=path,
            out=tmp_path / "o",
            parity=root / "val",
            formats=("tflite",),
            precisions=("fp32",),
        )
    )
    manifest = read_bundle(results[0].bundle_path).manifest
    assert (manifest.preprocessing.mean, manifest.preprocessing.std) == ((0, 0, 0), (1, 1, 1))


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    from converter.synthetic import write_dataset

    corrupt = tmp_path / "broken.keras"
    corrupt.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ModelLoadError, match=r"broken\.keras"):
        load_source_model(corrupt)
    (tmp_path / "model.pt").write_bytes(b"torch")
    with pytest.raises(ModelLoadError, match="unsupported model file"):
        load_source_model(tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="not a SavedModel"):
        load_source_model(tmp_path)
    write_dataset(tmp_path / "data", per_class_train=1, per_class_val=1, size=16)
    with pytest.raises(ConversionError, match="int8 needs calibration images"):
        convert(
            ConvertOptions(
                model=corrupt,
                out=tmp_path / "o",
                parity=tmp_path / "data" / "val",
                precisions=("int8",),
            )
        )
    with pytest.raises(DatasetError, match="missing"):
        from converter.dataset import LabelledFolder

        LabelledFolder.scan(tmp_path / "data" / "val", labels=["a", "b"])


@pytest.mark.slow
def test_normalisation_must_be_known(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, model_path = trained
    with pytest.raises(ConversionError, match="does not say how its input is normalised"):
        convert(
            ConvertOptions(
                model=model_path,
                out=tmp_path,
                parity=root / "val",
                formats=("tflite",),
                precisions=("fp32",),
            )
        )
    with pytest.raises(ConversionError, match="input is 48x48"):
        convert(
            ConvertOptions(
                model=model_path,
                out=tmp_path,
                parity=root / "val",
                formats=("tflite",),
                precisions=("fp32",),
                preprocessing={**NORM, "height": 64},
            )
        )


def _solid_frames(root: Path, values_by_class: dict[str, list[int]]) -> None:
    import cv2

    for label, values in values_by_class.items():
        (root / label).mkdir(parents=True)
        for i, value in enumerate(values):
            frame = np.full((16, 16, 3), value, dtype=np.uint8)
            cv2.imwrite(str(root / label / f"{i}.png"), frame)


def test_a_model_too_sensitive_for_int8_input_rounding_is_named(tmp_path: Path) -> None:
    """A model whose answer flips when its input moves by half an int8 step: the gate
    failure says that the float model itself loses agreement to input rounding."""
    import keras

    inputs = keras.Input((16, 16, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(6)
    logits = dense(pooled)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    # class "a" when the mean is above the value of pixel 129.75, "b" below
    threshold = (129.75 - 127.5) / 127.5
    kernel = np.zeros((3, 6), dtype=np.float32)
    kernel[:, 0], kernel[:, 1] = 1e4, -1e4
    bias = np.zeros(6, dtype=np.float32)
    bias[0], bias[1] = -3e4 * threshold, 3e4 * threshold
    dense.set_weights([kernel, bias])
    model_path = tmp_path / "sensitive.keras"
    model.save(model_path)
    # Every pixel lies half-way between two levels of the exact range's int8 grid and
    # rounds down by half a step (up would push pixel 255 off the grid): pixel 130 is
    # above the threshold ("a") in float but lands on the level of pixel 129.5, below
    # it ("b"); 126, 129 and 131 keep their answer.
    data = tmp_path / "data"
    _solid_frames(
        data,
        {"a": [130, 130, 131], "b": [129, 129, 126], **{c: [60, 200] for c in "cdef"}},
    )
    options = ConvertOptions(
        model=model_path,
        out=tmp_path / "out",
        parity=data,
        calibration=data,
        formats=("tflite",),
        precisions=("int8",),
        preprocessing=NORM,
        calibration_samples=12,
        min_agreement=0.99,
    )
    results = convert(options)
    floor = results[0].input_rounding_agreement
    assert floor is not None and floor == pytest.approx(1 - 2 / 14)
    assert results[0].to_dict()["input_rounding_agreement"] == floor
    error = gate_error(results, options)
    assert (
        error is not None
        and "keeps only 85.71% of its answers when its input is rounded" in str(error)
    )


def test_percentile_ranges_let_rare_outliers_saturate() -> None:
    """One huge value among 300k: min/max stretches the range to it, percentile does not."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from converter.quantize import percentile_ranges
    from converter.reference import export_tflite_fp32

    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(3, 1, use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3) * 2.0])
    float_model = export_tflite_fp32(model, 32)
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(100)]
    batches[7][0, 3, 3, 1] = 40.0  # the outlier

    interpreter = Interpreter(model_content=float_model)
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]
    seen = []
    for batch in batches:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
        interpreter.invoke()
        seen.append(interpreter.get_tensor(output["index"]))
    ranges = {output["name"]: {"min": np.float32(np.min(seen)), "max": np.float32(np.max(seen))}}
    assert ranges[output["name"]]["max"] == pytest.approx(80.0)

    narrowed = percentile_ranges(float_model, lambda: iter(batches), ranges)[output["name"]]
    assert narrowed["min"] <= -1.9 and narrowed["min"] >= ranges[output["name"]]["min"]
    assert 1.9 <= narrowed["max"] <= 2.2  # the doubled uniform values, not the outlier
    kept_all = percentile_ranges(float_model, lambda: iter(batches), ranges, percentile=100.0)
    assert kept_all[output["name"]]["max"] == pytest.approx(80.0)


def test_mse_ranges_clip_the_outlier_and_keep_the_relu_floor() -> None:
    """From the same histograms, the MSE range weighs the lone outlier's clipping error
    against every other value's rounding error: narrower than min/max, wider than the
    percentile cut (clipping 80 to 2 costs more than the coarser steps), and a ReLU
    output's range starts at zero."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from converter.quantize import percentile_ranges
    from converter.reference import export_tflite_fp32

    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(3, 1, use_bias=False)
    scaled = conv(inputs)
    model = keras.Model(inputs, [scaled, keras.layers.ReLU()(scaled)])
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3) * 2.0])
    float_model = export_tflite_fp32(model, 32)
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(100)]
    batches[7][0, 3, 3, 1] = 40.0  # the outlier

    interpreter = Interpreter(model_content=float_model)
    interpreter.allocate_tensors()
    outputs = interpreter.get_output_details()
    seen: dict[str, list[Any]] = {o["name"]: [] for o in outputs}
    for batch in batches:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
        interpreter.invoke()
        for o in outputs:
            seen[o["name"]].append(interpreter.get_tensor(o["index"]))
    ranges = {
        name: {"min": np.float32(np.min(v)), "max": np.float32(np.max(v))}
        for name, v in seen.items()
    }
    relu = next(name for name, r in ranges.items() if r["min"] == 0.0)
    plain = next(name for name in ranges if name != relu)
    assert ranges[plain]["max"] == pytest.approx(80.0)

    chosen = percentile_ranges(float_model, lambda: iter(batches), ranges, cut="mse")
    cut = percentile_ranges(float_model, lambda: iter(batches), ranges)
    for name in (plain, relu):
        assert cut[name]["max"] + 10.0 < chosen[name]["max"] < ranges[name]["max"] - 10.0
    assert -2.05 <= chosen[plain]["min"] <= -1.8
    assert chosen[relu]["min"] == 0.0

    def measured_mse(low: float, high: float) -> float:
        values = np.concatenate([np.ravel(v) for v in seen[plain]]).astype(np.float64)
        scale = (high - low) / 255
        zero_point = np.rint(-128 - low / scale)
        q = np.clip(np.rint(values / scale) + zero_point, -128, 127)
        return float(np.mean(((q - zero_point) * scale - values) ** 2))

    best = measured_mse(float(chosen[plain]["min"]), float(chosen[plain]["max"]))
    assert best < measured_mse(float(ranges[plain]["min"]), float(ranges[plain]["max"]))
    assert best < measured_mse(float(cut[plain]["min"]), float(cut[plain]["max"]))


def test_mse_calibration_converts_through_the_job(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    root, model_path = trained
    options = tiny_job(
        root,
        model_path,
        tmp_path / "out",
        precisions=("int8",),
        tflite_calibration="mse",
        onnx_calibration="mse",
    )
    results = convert(options)
    assert [r.passed for r in results] == [True, True], [r.to_dict() for r in results]
    assert all(r.report.top1_agreement and r.report.top1_agreement >= 0.98 for r in results)


def test_percentile_calibration_converts_through_the_job(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    root, model_path = trained
    options = tiny_job(
        root,
        model_path,
        tmp_path / "out",
        precisions=("int8",),
        tflite_calibration="percentile",
        onnx_calibration="percentile",
    )
    results = convert(options)
    assert [r.passed for r in results] == [True, True], [r.to_dict() for r in results]
    assert all(r.report.top1_agreement and r.report.top1_agreement >= 0.98 for r in results)


@pytest.mark.slow
def test_train_reference_cli_with_int8_noise_saves_the_plain_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = subprocess.run(
        [*EDGEFLEET, "convert", "make-dataset", str(data), "--train", "12", "--val", "4"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "tiny.keras"
    command = [*EDGEFLEET, "convert", "train-reference", str(data), "--out", str(out)]
    command += ["--arch", "tiny", "--size", "32", "--epochs", "2"]
    refused = subprocess.run(
        [*command, "--quant-noise", "-1"], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert refused.returncode == 2 and "--quant-noise" in refused.stderr
    assert not out.exists()
    trained = subprocess.run(
        [*command, "--quant-noise", "1.5"], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "basic recipe with int8 noise of 1.5 steps" in trained.stdout
    # a pipe gets one progress line per epoch instead of a live bar
    assert "epoch 1/2: loss" in trained.stderr and "epoch 2/2: loss" in trained.stderr
    import keras

    model = keras.models.load_model(out)
    names = [layer.name for layer in model.layers]
    assert not [name for name in names if "qnoise" in name]
