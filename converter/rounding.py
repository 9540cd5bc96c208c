"""Better rounding before any fallback: bias correction, on the TFLite and the ONNX path.

Rounding a layer's weights to int8 shifts the mean of its output: with
``W_q = W + dW``, ``E[W_q x] = W E[x] + dW E[x]``. Bias correction (Nagel et
al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", 2019; AIMET's empirical variant) subtracts ``dW E[x]`` from the
float bias before the quantiser runs, with ``E[x]`` the per-channel mean of the
layer's input over calibration images and ``dW`` computed exactly as both
quantisers round weights (symmetric, per output channel, ``scale = max|w| /
127``, round to nearest even, clip to [-127, 127]). The quantiser then
rounds the very same weights, and the corrected bias (int32) cancels the
shift on average.

Corrected: TFLite ``CONV_2D``, ``DEPTHWISE_CONV_2D`` and ``FULLY_CONNECTED``
with a bias tensor; ONNX ``Conv`` (a bias is added where it has none).
ONNX ``MatMul``/``Gemm`` are left as they are (ONNX Runtime's per-channel
axis for them differs by version).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from converter.errors import QuantizationError
from converter.probes import onnx_probe, tflite_probe

__all__ = ["Rounding", "bias_correct_onnx", "bias_correct_tflite", "weight_rounding_error"]

log = logging.getLogger(__name__)

Rounding = Literal["nearest", "bias-correction", "adaround"]
"""How weights are rounded: plain round-to-nearest, with bias correction after it, or
AdaRound (:mod:`converter.adaround`: each weight up or down for the layer's output)."""


def weight_rounding_error(weights: npt.NDArray[np.float32], axis: int) -> npt.NDArray[np.float64]:
    """``dW = dequant(quant(W)) - W`` for symmetric per-channel int8 along ``axis``."""
    w = weights.astype(np.float64)
    reduce = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    bound = np.maximum(np.max(np.abs(w), axis=reduce, keepdims=True), 1e-9)
    scale = bound / 127.0
    q = np.clip(np.rint(w / scale), -127, 127)
    result: npt.NDArray[np.float64] = q * scale - w
    return result


# --- TFLite -------------------------------------------------------------------------------

_TFLITE_LINEAR = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _tflite_shifts(
    kind: str, weights: npt.NDArray[np.float32], mean: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64] | None:
    if kind == "CONV_2D" and weights.ndim == 4 and weights.shape[3] == mean.size:
        d = weight_rounding_error(weights, axis=0)  # [cout, kh, kw, cin]
        result: npt.NDArray[np.float64] = np.einsum("ohwc,c->o", d, mean)
        return result
    if kind == "DEPTHWISE_CONV_2D" and weights.ndim == 4:
        d = weight_rounding_error(weights, axis=3)  # [1, kh, kw, cin * multiplier]
        channels = weights.shape[3]
        if channels % mean.size:
            return None
        multiplier = channels // mean.size
        source = np.arange(channels) // multiplier
        result = d.sum(axis=(0, 1, 2)) * mean[source]
        return result
    if kind == "FULLY_CONNECTED" and weights.ndim == 2 and weights.shape[1] == mean.size:
        d = weight_rounding_error(weights, axis=0)  # [out, in]
        result = d @ mean
        return result
    return None


def bias_correct_tflite(float_model: bytes, samples: Iterable[npt.NDArray[np.float32]]) -> bytes:
    """The float TFLite model with every linear layer's bias corrected for int8 weight rounding."""
    from ai_edge_litert.tools import flatbuffer_utils

    interpreter = tflite_probe(float_model)
    layers = [
        (str(op["op_name"]), [int(i) for i in op["inputs"]])
        for op in interpreter._get_ops_details()
        if op["op_name"] in _TFLITE_LINEAR and len(op["inputs"]) >= 3 and op["inputs"][2] >= 0
    ]
    if not layers:
        return float_model
    wanted = sorted({inputs[0] for _, inputs in layers})
    sums: dict[int, npt.NDArray[np.float64]] = {}
    counts: dict[int, int] = {}
    input_index = interpreter.get_input_details()[0]["index"]
    images = 0
    for sample in samples:
        interpreter.set_tensor(input_index, sample)
        interpreter.invoke()
        for index in wanted:
            value = np.asarray(interpreter.get_tensor(index), dtype=np.float64)
            flat = value.reshape(-1, value.shape[-1])
            sums[index] = sums.get(index, 0.0) + flat.sum(axis=0)
            counts[index] = counts.get(index, 0) + flat.shape[0]
        images += 1
    if not images:
        raise QuantizationError("bias correction needs calibration images")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_model))
    subgraph = model.subgraphs[0]
    corrected = 0
    for kind, inputs in layers:
        mean = sums[inputs[0]] / counts[inputs[0]]
        weight_tensor, bias_tensor = subgraph.tensors[inputs[1]], subgraph.tensors[inputs[2]]
        weight_buffer = model.buffers[weight_tensor.buffer].data
        bias_buffer = model.buffers[bias_tensor.buffer].data
        if weight_buffer is None or bias_buffer is None:
            continue  # weights computed at run time (not a constant)
        weights = np.frombuffer(bytes(weight_buffer), dtype=np.float32).reshape(weight_tensor.shape)
        bias = np.frombuffer(bytes(bias_buffer), dtype=np.float32)
        shift = _tflite_shifts(kind, weights, mean)
        if shift is None or shift.shape != bias.shape:
            continue
        new_bias = (bias.astype(np.float64) - shift).astype(np.float32)
        model.buffers[bias_tensor.buffer].data = np.frombuffer(new_bias.tobytes(), dtype=np.uint8)
        corrected += 1
    log.info("bias correction: %d TFLite layers corrected on %d images", corrected, images)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# --- ONNX ---------------------------------------------------------------------------------


def _onnx_channel_means(
    model: Any, wanted: list[str], samples: Iterable[npt.NDArray[np.float32]]
) -> tuple[dict[str, npt.NDArray[np.float64]], int]:
    """Per-channel means of the NCHW tensors ``wanted`` over ``samples`` (and the image count)."""
    session, input_name = onnx_probe(model, wanted)
    sums: dict[str, npt.NDArray[np.float64]] = {}
    counts: dict[str, int] = {}
    images = 0
    for sample in samples:
        for name, value in zip(wanted, session.run(wanted, {input_name: sample}), strict=True):
            v = np.asarray(value, dtype=np.float64)
            flat = np.moveaxis(v, 1, -1).reshape(-1, v.shape[1])
            sums[name] = sums.get(name, 0.0) + flat.sum(axis=0)
            counts[name] = counts.get(name, 0) + flat.shape[0]
        images += 1
    if not images:
        raise QuantizationError("bias correction needs calibration images")
    return {name: sums[name] / counts[name] for name in wanted}, images


def bias_correct_onnx(model: Any, samples: Iterable[npt.NDArray[np.float32]]) -> Any:
    """The float ONNX model (a ``ModelProto``, changed in place and returned) with every
    ``Conv``'s bias corrected for int8 weight rounding."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    convs = [
        node
        for node in graph.node
        if node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in initializers
    ]
    if not convs:
        return model
    means, images = _onnx_channel_means(model, sorted({node.input[0] for node in convs}), samples)
    corrected = 0
    for node in convs:
        mean = means[node.input[0]]
        weights = numpy_helper.to_array(initializers[node.input[1]])  # [cout, cin/g, kh, kw]
        if weights.ndim != 4:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        cout, cin_g = weights.shape[0], weights.shape[1]
        if cin_g * group != mean.size or cout % group:
            continue
        d = weight_rounding_error(weights, axis=0)
        per_group = cout // group
        source = (np.arange(cout) // per_group)[:, None] * cin_g + np.arange(cin_g)[None, :]
        shift = np.einsum("ochw,oc->o", d, mean[source])
        if len(node.input) >= 3 and node.input[2] in initializers:
            init = initializers[node.input[2]]
            bias = numpy_helper.to_array(init).astype(np.float64)
            init.CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32), init.name))
        elif len(node.input) < 3 or not node.input[2]:
            name = f"{node.name or node.output[0]}_bias_corrected"
            graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = name
        else:
            continue
        corrected += 1
    log.info("bias correction: %d ONNX Conv layers corrected on %d images", corrected, images)
    return model
