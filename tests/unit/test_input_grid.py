"""Every pixel value keeps an int8 level of its own at a quantised model's input.

Normalised with mean 127.5 and std 127.5, every pixel lies exactly half-way
between two levels of the exact input range's int8 grid: rounding decided by
float noise (the device's old table) or half to even (ONNX Runtime's
``QuantizeLinear``) put two pixel values on one level.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.input_grid import input_levels, snap_onnx_input
from edge_runtime.bundle.manifest import Preprocessing, Quantization, TensorSpec
from edge_runtime.preprocess import Preprocessor, half_way_down, quantize_half_way

SCALE = float(np.float32(2 / 255))  # what a quantiser stores for the range [-1, 1]


def test_half_way_values_all_go_up_whatever_the_float_noise() -> None:
    levels = input_levels([127.5] * 3, [127.5] * 3)[:, 0]
    q = quantize_half_way(levels, SCALE, -1)
    assert len(np.unique(q)) == 256
    np.testing.assert_array_equal(q, np.arange(256) - 128)
    # the old table, floor(x / scale + 0.5): float noise sends pixel 128 down onto 127
    old = np.floor(levels / SCALE + 0.5) - 1
    assert len(np.unique(old)) == 255


def test_values_off_the_half_way_point_round_to_nearest() -> None:
    values = np.array([0.26, 0.74, -0.26, -0.74, 0.5, -0.5, 1.5])
    np.testing.assert_array_equal(quantize_half_way(values, 1.0, 0), [0, 1, 0, -1, 1, 0, 2])
    np.testing.assert_array_equal(
        quantize_half_way(values, 1.0, 0, down=True), [0, 1, 0, -1, 0, -1, 1]
    )


def test_half_way_cases_go_down_where_up_would_leave_the_grid() -> None:
    levels = input_levels([127.5] * 3, [127.5] * 3)
    assert not half_way_down(levels, SCALE, -1, -128, 127)  # up: -128..127
    assert half_way_down(levels, SCALE, 0, -128, 127)  # up: pixel 255 on 128
    q = quantize_half_way(levels, SCALE, 0, down=True)
    assert q.min() == -128 and q.max() == 127


@pytest.mark.parametrize("zero_point", [0, -1])
def test_the_device_table_gives_each_pixel_its_own_level(zero_point: int) -> None:
    contract = Preprocessing(
        height=16, width=16, mean=(127.5,) * 3, std=(127.5,) * 3, interpolation="nearest"
    )
    spec = TensorSpec(
        name="image",
        shape=[1, 16, 16, 3],
        dtype="int8",
        quantization=Quantization(scale=[SCALE], zero_point=[zero_point]),
    )
    frame = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    tensor = Preprocessor(contract, spec)(frame)
    assert len(np.unique(tensor)) == 256
    np.testing.assert_array_equal(np.sort(tensor[0, :, :, 0].ravel()), np.arange(256) - 128)


def _quantize_model(zero_point: int) -> bytes:
    """NHWC float input -> Transpose -> QuantizeLinear: what tf2onnx and ONNX Runtime's
    QDQ quantiser make of a Keras model's first op."""
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("QuantizeLinear", ["nchw", "scale", "zero"], ["q"]),
        ],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 16, 16, 3])],
        [helper.make_tensor_value_info("q", TensorProto.INT8, [1, 3, 16, 16])],
        [
            numpy_helper.from_array(np.array(SCALE, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.array(zero_point, dtype=np.int8), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def _levels_used(model: bytes) -> int:
    levels = input_levels([127.5] * 3, [127.5] * 3).astype(np.float32)  # 256 x 3
    image = levels.reshape(16, 16, 3)[None]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (q,) = session.run(None, {"image": image})
    return len(np.unique(q[0, 0]))


@pytest.mark.parametrize("zero_point", [0, -1])
def test_onnx_input_offset_gives_each_pixel_its_own_level(zero_point: int) -> None:
    model = _quantize_model(zero_point)
    assert _levels_used(model) < 200  # half to even: pairs of pixels share a level
    levels = input_levels([127.5] * 3, [127.5] * 3)
    snapped, channels = snap_onnx_input(model, levels, channel_axis=3)
    assert channels == 3
    assert _levels_used(snapped) == 256
    onnx.checker.check_model(onnx.load_model_from_string(snapped))


def test_onnx_input_left_alone_without_half_way_values() -> None:
    model = _quantize_model(0)
    levels = input_levels([0.0] * 3, [1 / SCALE] * 3)  # pixel p -> exactly level p
    assert snap_onnx_input(model, levels, channel_axis=3) == (model, 0)
