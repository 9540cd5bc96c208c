"""AdaRound and activation equalisation (issue #19): the pure core, and each on real TFLite
and ONNX models run by the real runtimes and quantised by the real quantisers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from converter.adaround import (
    adaround_onnx,
    adaround_rows,
    adaround_tflite,
    conv_patches,
    rounding_objective,
    same_pads,
)
from converter.equalise import channel_scales, equalise_onnx, equalise_tflite
from converter.quantize import OnnxInt8Quantizer, TfliteInt8Quantizer

# --- the pure core ------------------------------------------------------------------------


def test_adaround_never_loses_to_nearest_and_wins_on_correlated_inputs() -> None:
    rng = np.random.default_rng(0)
    n, rows = 24, 40
    # strongly correlated inputs: rounding errors of neighbouring weights can cancel
    basis = rng.normal(size=(n, 4))
    moments = basis @ basis.T + 0.05 * np.eye(n)
    x = rng.uniform(-127, 127, size=(rows, n))
    x[:, 0] = 127.0  # each row's largest weight, exactly on its level
    q = adaround_rows(x, moments).astype(np.float64)
    nearest = np.clip(np.rint(x), -127, 127)
    chosen = rounding_objective(q, x, moments)
    base = rounding_objective(nearest, x, moments)
    assert np.all(chosen <= base + 1e-9)
    assert np.median(chosen / base) < 0.5  # not a marginal gain: the objective halves
    assert np.all(np.abs(q - x) < 1.0)  # every weight on the level below or above it
    assert np.all(q[:, 0] == 127)  # the scale-setting weight keeps its level


def test_adaround_keeps_weights_already_on_a_level() -> None:
    x = np.array([[3.0, -5.0, 127.0], [0.0, 1.0, -2.0]])
    q = adaround_rows(x, np.eye(3))
    assert np.array_equal(q, x.astype(np.int64))


def test_conv_patches_reproduce_a_strided_padded_convolution() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(9, 7, 3))
    weights = rng.normal(size=(5, 3, 3, 3))  # [cout, kh, kw, cin]
    pads = same_pads((9, 7), (3, 3), (2, 2), (1, 1))
    patches = conv_patches(image, (3, 3), (2, 2), (1, 1), pads)
    fast = patches.reshape(patches.shape[0], -1) @ weights.reshape(5, -1).T
    top, left, bottom, right = pads
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)))
    slow = [
        np.einsum("hwc,ohwc->o", padded[i : i + 3, j : j + 3], weights)
        for i in range(0, padded.shape[0] - 2, 2)
        for j in range(0, padded.shape[1] - 2, 2)
    ]
    assert pads == (1, 1, 1, 1)  # TensorFlow's SAME for 9x7, k 3, stride 2
    assert np.allclose(fast, np.asarray(slow))


def test_channel_scales_fill_the_range_below_the_clip() -> None:
    maxima = np.array([6.0, 3.0, 0.5, 0.0])
    scales = channel_scales(maxima, 6.0, margin=1.2)
    assert np.allclose(scales, [1.0, 5.0 / 3.0, 10.0, 1.0])
    assert np.all(maxima * scales <= 6.0 / 1.2 + 1e-9) or maxima[0] * scales[0] == 6.0
    # no clip: every channel up to the largest one
    assert np.allclose(channel_scales(np.array([4.0, 1.0]), None), [1.0, 4.0])


# --- real models --------------------------------------------------------------------------


def _keras_tflite() -> bytes:
    """Conv 3x3/2 + ReLU6 -> depthwise 3x3 + ReLU6 -> conv 1x1 -> pool -> dense (float TFLite),
    with one conv channel scaled down (it uses a few int8 levels only) and its depthwise
    weights scaled up by as much."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(12, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4)(x)
    model = keras.Model(inputs, outputs)
    conv = model.layers[1]
    w, b = conv.get_weights()
    w[..., 0] *= 0.02
    b[0] = 0.01
    conv.set_weights([w, b])
    depthwise = model.layers[2]
    d, db = depthwise.get_weights()
    d[..., 0, :] *= 50.0  # and the depthwise layer makes it up again (as training leaves it)
    depthwise.set_weights([d, db])
    return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def _samples(count: int, seed: int, shape: tuple[int, ...] = (1, 16, 16, 3)) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, shape).astype(np.float32) for _ in range(count)]


def _tflite_run(model: bytes, samples: list[Any]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for sample in samples:
        value = sample
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            value = np.clip(np.rint(sample / scale + zero), -128, 127).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"]).astype(np.float64)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            result = (result - zero) * scale
        results.append(result[0])
    return np.asarray(results)


def _tflite_weights(model: bytes, dtype: Any) -> list[np.ndarray]:
    """The model's constant conv / depthwise / dense weight tensors of ``dtype``, in op order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            detail = interpreter.get_tensor_details()[op["inputs"][1]]
            if detail["dtype"] == dtype:
                found.append(interpreter.get_tensor(detail["index"]))
    return found


def _on_grid(weights: np.ndarray, axis: int) -> np.ndarray:
    reduce = tuple(i for i in range(weights.ndim) if i != axis % weights.ndim)
    scale = np.max(np.abs(weights), axis=reduce, keepdims=True) / 127.0
    return weights / scale


def test_tflite_adaround_weights_are_the_integers_the_quantiser_writes() -> None:
    float_model = _keras_tflite()
    calibration = _samples(16, 0)
    rounded, summary = adaround_tflite(float_model, calibration, iterations=150)
    assert summary.images == 16
    kinds = {layer.kind for layer in summary.layers}
    assert {"conv", "depthwise"} <= kinds  # the dense layer has too few images (16 < 4 x 12)
    assert sum(layer.changed for layer in summary.layers) > 0
    assert all(layer.error_ratio <= 1.0 for layer in summary.layers)
    assert min(layer.error_ratio for layer in summary.layers) < 0.99  # random inputs: small gain
    int8_model = TfliteInt8Quantizer(
        rounded, lambda: iter(calibration), input_range=(-1.0, 1.0)
    ).quantize()
    floats = _tflite_weights(rounded, np.float32)
    ints = _tflite_weights(int8_model, np.int8)
    assert len(ints) == len(floats) == 4
    for float_weights, int_weights in zip(floats[:3], ints[:3], strict=True):
        axis = 3 if float_weights.shape[0] == 1 else 0  # depthwise [1, kh, kw, c]
        levels = _on_grid(float_weights, axis)
        assert np.abs(levels - np.rint(levels)).max() < 1e-3  # exactly on a level
        assert np.array_equal(np.rint(levels).astype(np.int8), int_weights)


def test_tflite_equalisation_keeps_the_float_model_and_lowers_the_int8_error() -> None:
    float_model = _keras_tflite()
    calibration = _samples(32, 0)
    held_out = _samples(32, 1)
    equalised, summary = equalise_tflite(float_model, calibration, margin=1.1)
    # conv -> depthwise, and depthwise -> the 1x1 conv (its scales capped)
    assert summary.pairs == 2 and summary.scaled >= 1 and summary.median_scale > 1.0
    assert np.allclose(
        _tflite_run(equalised, held_out), _tflite_run(float_model, held_out), atol=1e-4
    )

    def int8_error(model: bytes) -> float:
        int8 = TfliteInt8Quantizer(model, lambda: iter(calibration), input_range=(-1.0, 1.0))
        reference = _tflite_run(float_model, held_out)
        return float(np.mean((_tflite_run(int8.quantize(), held_out) - reference) ** 2))

    assert int8_error(equalised) < 0.5 * int8_error(float_model)  # measured: 6x lower


def _onnx_model(clip_low: float = 0.0, shared: bool = False) -> Any:
    """NCHW Conv 3x3/2 -> Clip(low, 6) -> depthwise Conv 3x3 -> Conv 1x1 (float ONNX), one
    conv channel scaled down."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    conv = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    conv[0] *= 0.02
    bias = rng.normal(scale=0.1, size=8).astype(np.float32)
    bias[0] = 0.01
    depthwise = rng.normal(size=(8, 1, 3, 3)).astype(np.float32)
    project = rng.normal(size=(4, 8, 1, 1)).astype(np.float32)
    depthwise[0] *= 50.0  # and the depthwise layer makes it up again
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1], name="conv"
        ),
        helper.make_node("Clip", ["c", "low", "high"], ["r"], name="clip"),
        helper.make_node("Conv", ["r", "dw"], ["d"], group=8, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Conv", ["d", "pw"], ["y"], name="pw"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]
    if shared:  # the first conv's weights read by another node too
        nodes.append(helper.make_node("Identity", ["w"], ["w_copy"], name="copy"))
        outputs.append(helper.make_tensor_value_info("w_copy", TensorProto.FLOAT, [8, 3, 3, 3]))
    graph = helper.make_graph(
        nodes,
        "pair",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        outputs,
        initializer=[
            numpy_helper.from_array(conv, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.array(clip_low, dtype=np.float32), "low"),
            numpy_helper.from_array(np.array(6.0, dtype=np.float32), "high"),
            numpy_helper.from_array(depthwise, "dw"),
            numpy_helper.from_array(project, "pw"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _onnx_run(model: Any, samples: list[Any]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["y"], {"x": s})[0] for s in samples])


def test_onnx_equalisation_keeps_the_float_model_and_lowers_the_int8_error() -> None:
    import onnx
    from onnx import numpy_helper

    calibration = _samples(32, 0, (1, 3, 16, 16))
    held_out = _samples(32, 1, (1, 3, 16, 16))
    original = _onnx_model()
    equalised, summary = equalise_onnx(_onnx_model(), calibration, margin=1.1)
    assert summary.pairs == 2 and summary.scaled >= 1 and summary.median_scale > 1.0
    before = {i.name: numpy_helper.to_array(i) for i in original.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in equalised.graph.initializer}
    # the 1x1 conv's input channels shrink by at most the cap (1.5), some by it exactly
    shrink = (after["pw"] / before["pw"])[0, :, 0, 0]
    assert np.all(shrink >= 1 / 1.5 - 1e-6) and np.all(shrink <= 1 + 1e-6)
    assert np.isclose(shrink.min(), 1 / 1.5, atol=1e-6)
    # the depthwise conv's channel 0 (the small one) is scaled by far more
    assert (after["dw"] / before["dw"])[0].max() < 0.1
    assert np.allclose(_onnx_run(equalised, held_out), _onnx_run(original, held_out), atol=1e-4)

    def int8_error(model: Any) -> float:
        with OnnxInt8Quantizer(model.SerializeToString(), lambda: iter(calibration)) as q:
            quantised = onnx.load_model_from_string(q.quantize())
        reference = _onnx_run(original, held_out)
        return float(np.mean((_onnx_run(quantised, held_out) - reference) ** 2))

    assert int8_error(equalised) < 0.5 * int8_error(original)  # measured: 3.7x lower


@pytest.mark.parametrize("case", ["clip-below-zero", "shared-weights"])
def test_onnx_equalisation_leaves_pairs_a_scale_would_change(case: str) -> None:
    from onnx import numpy_helper

    model = _onnx_model(clip_low=-1.0) if case == "clip-below-zero" else _onnx_model(shared=True)
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    result, summary = equalise_onnx(model, _samples(4, 0, (1, 3, 16, 16)))
    after = {i.name: numpy_helper.to_array(i) for i in result.graph.initializer}
    assert summary.pairs == 1  # only depthwise -> 1x1 conv, where nothing is in the way
    for name in ("w", "b"):  # the first conv is left as it was
        assert np.array_equal(after[name], before[name]), name
    assert not np.array_equal(after["pw"], before["pw"])


def test_onnx_adaround_weights_are_the_integers_the_quantiser_writes() -> None:
    import onnx
    from onnx import numpy_helper

    calibration = _samples(16, 0, (1, 3, 16, 16))
    rounded, summary = adaround_onnx(_onnx_model(), calibration, iterations=150)
    assert {layer.kind for layer in summary.layers} == {"conv", "depthwise"}
    assert sum(layer.changed for layer in summary.layers) > 0
    weights = {i.name: numpy_helper.to_array(i) for i in rounded.graph.initializer}
    with OnnxInt8Quantizer(rounded.SerializeToString(), lambda: iter(calibration)) as q:
        quantised = onnx.load_model_from_string(q.quantize())
    ints = {
        i.name: numpy_helper.to_array(i)
        for i in quantised.graph.initializer
        if i.data_type == onnx.TensorProto.INT8
    }
    for name in ("w", "dw", "pw"):
        levels = _on_grid(weights[name], 0)
        assert np.abs(levels - np.rint(levels)).max() < 1e-3
        stored = next(v for k, v in ints.items() if k.startswith(name) and v.shape == levels.shape)
        assert np.array_equal(np.rint(levels).astype(np.int8), stored), name
