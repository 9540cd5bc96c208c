"""Activation equalisation: give every channel of a tensor the int8 levels its range allows.

An int8 activation tensor has one scale for all its channels (per-tensor), set
by the channels with the widest range. A channel whose values stay far below
that range is rounded on a few levels only: after a ReLU6 whose range is 0..6
a channel that never passes 0.5 gets 21 of 256 levels. Cross-layer
equalisation (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", 2019; Meller et al., 2019) rescales such
channels and undoes the scale in the next layer, so that the float model
computes the same function while the int8 one rounds each channel on more
levels.

Here a channel ``c`` of the output of a convolution ``A`` (any convolution,
depthwise or not) is multiplied by ``k_c >= 1`` (``A``'s weights and bias of
that output channel), and the convolution ``B`` that is the tensor's only
consumer divides its weights of input channel ``c`` by ``k_c``. Where ``B``
is a depthwise convolution, neither layer loses any weight precision (both
are quantised per output channel and a channel's weights are scaled
together, and so is its scale): only the activation in between changes, each
channel's range growing to near the tensor's. Where ``B`` is an ordinary
convolution (MobileNet's depthwise -> 1x1 projection), its weights of the
scaled channels become coarser on the grid its other input channels set, so
the scale is capped (``conv_scale``, 1.5 by default).

The activation between them must commute with the scale: none and ReLU do
for any ``k``; ReLU6 (``Clip(0, 6)``) does only while ``k_c`` times the
channel's value stays below 6, so ``k_c <= 6 / (margin * max_c)`` with
``max_c`` the channel's largest value over the calibration images and a
margin for images brighter than those. Frames whose channel goes past
``6 / k_c`` are the only ones on which the float model changes; the parity
gate measures the result against the original float model either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from converter.errors import QuantizationError
from converter.probes import onnx_probe, tflite_probe

__all__ = [
    "EqualisationSummary",
    "channel_scales",
    "equalise_onnx",
    "equalise_tflite",
]

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

DEFAULT_MARGIN = 1.1
"""Headroom above the calibration maximum kept below a ReLU6's clip."""
MAX_SCALE = 64.0
"""No channel is scaled by more than this (a channel that is almost always zero)."""
CONV_SCALE = 1.5
"""No channel that feeds an ordinary convolution is scaled by more than this: that
convolution's weights of the channel shrink by as much, on a weight grid set by its other
input channels, and lose precision (measured on MobileNetV2 0.5/128: 1.5 and 2 lowered the
int8 output error, 4 and 16 gained less)."""


@dataclass(frozen=True)
class EqualisationSummary:
    """What equalisation did to one model."""

    pairs: int
    """Producer -> depthwise pairs equalised."""
    channels: int
    """Channels in those tensors."""
    scaled: int
    """Channels scaled by more than 1.05."""
    median_scale: float
    """Median scale over the scaled channels (1.0 when none was)."""
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "channels": self.channels,
            "scaled": self.scaled,
            "median_scale": round(self.median_scale, 3),
            "images": self.images,
        }


def channel_scales(
    maxima: F64, limit: float | None, *, margin: float = DEFAULT_MARGIN, cap: float = MAX_SCALE
) -> F64:
    """Each channel's scale ``k_c >= 1``: its calibration maximum ``maxima[c]`` (largest
    absolute value) brought up to the tensor's largest channel, and kept ``margin`` below
    the activation's clip ``limit`` (``None``: an activation that commutes with any scale)."""
    maxima = np.asarray(maxima, dtype=np.float64)
    if maxima.size == 0:
        return maxima
    top = float(maxima.max())
    target = top if limit is None else min(top, limit / margin)
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.where(maxima > 1e-12, target / maxima, 1.0)
    result: F64 = np.clip(np.nan_to_num(scales, nan=1.0, posinf=1.0), 1.0, min(cap, MAX_SCALE))
    return result


def _summary(scales: list[F64], images: int) -> EqualisationSummary:
    every = np.concatenate(scales) if scales else np.zeros(0)
    scaled = every[every > 1.05]
    return EqualisationSummary(
        pairs=len(scales),
        channels=int(every.size),
        scaled=int(scaled.size),
        median_scale=float(np.median(scaled)) if scaled.size else 1.0,
        images=images,
    )


# --- TFLite -------------------------------------------------------------------------------

_TFLITE_ACTIVATION_LIMITS: dict[int, float | None] = {0: None, 1: None, 3: 6.0}
"""TFLite fused activations that commute with a positive scale (up to a clip): NONE, RELU,
RELU6 (RELU_N1_TO_1 and the others do not)."""


def _tflite_array(model: Any, tensor: Any) -> F64 | None:
    data = model.buffers[tensor.buffer].data
    if data is None:
        return None
    flat = np.frombuffer(bytes(data), dtype=np.float32).astype(np.float64)
    result: F64 = flat.reshape([int(v) for v in tensor.shape])
    return result


def _tflite_store(model: Any, tensor: Any, value: F64) -> None:
    model.buffers[tensor.buffer].data = np.frombuffer(
        value.astype(np.float32).tobytes(), dtype=np.uint8
    )


def _tflite_pairs(
    model: Any, interpreter: Any, *, into_convolutions: bool
) -> list[tuple[dict[str, Any], dict[str, Any], float | None]]:
    """Every (convolution, depthwise convolution it alone feeds, activation clip) that can be
    equalised: constant weights and bias, an activation that commutes with a scale, no
    buffer shared with another tensor."""
    subgraph = model.subgraphs[0]
    ops = interpreter._get_ops_details()
    consumers: dict[int, list[dict[str, Any]]] = {}
    for op in ops:
        for index in op["inputs"]:
            consumers.setdefault(int(index), []).append(op)
    outputs = {int(i) for i in subgraph.outputs}
    buffer_uses: dict[int, int] = {}
    for tensor in subgraph.tensors:
        buffer_uses[int(tensor.buffer)] = buffer_uses.get(int(tensor.buffer), 0) + 1
    consumers_kinds = (
        ("DEPTHWISE_CONV_2D", "CONV_2D") if into_convolutions else ("DEPTHWISE_CONV_2D",)
    )
    pairs = []
    for op in ops:
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(op["inputs"]) < 2:
            continue
        out = int(op["outputs"][0])
        users = consumers.get(out, [])
        if out in outputs or len(users) != 1:
            continue
        user = users[0]
        if user["op_name"] not in consumers_kinds or int(user["inputs"][0]) != out:
            continue
        options = subgraph.operators[int(op["index"])].builtinOptions
        activation = int(options.fusedActivationFunction)
        if activation not in _TFLITE_ACTIVATION_LIMITS:
            continue
        tensors = [subgraph.tensors[int(i)] for i in _tflite_weights(op)]
        tensors.append(subgraph.tensors[int(user["inputs"][1])])
        if any(model.buffers[t.buffer].data is None for t in tensors):
            continue
        if any(buffer_uses[int(t.buffer)] != 1 for t in tensors):
            continue  # a buffer another tensor shares: scaling it would change that one
        pairs.append((op, user, _TFLITE_ACTIVATION_LIMITS[activation]))
    return pairs


def _tflite_weights(op: dict[str, Any]) -> list[int]:
    """The op's weight tensor and, where it has one, its bias tensor."""
    inputs = [int(i) for i in op["inputs"]]
    return inputs[1:3] if len(inputs) > 2 and inputs[2] >= 0 else inputs[1:2]


def _tflite_scale(model: Any, op: dict[str, Any], user: dict[str, Any], scales: F64) -> bool:
    """Scale ``op``'s output channels by ``scales`` and undo it in ``user``'s weights."""
    subgraph = model.subgraphs[0]
    own = [subgraph.tensors[i] for i in _tflite_weights(op)]
    weight, bias = own[0], (own[1] if len(own) > 1 else None)
    depthwise = subgraph.tensors[int(user["inputs"][1])]
    w, d = _tflite_array(model, weight), _tflite_array(model, depthwise)
    b = _tflite_array(model, bias) if bias is not None else None
    if w is None or d is None or (bias is not None and (b is None or b.shape != scales.shape)):
        return False
    if d.shape[-1] % scales.size:
        return False
    # CONV_2D weights are [cout, kh, kw, cin]; DEPTHWISE_CONV_2D's [1, kh, kw, cout]
    w = w * scales[:, None, None, None] if op["op_name"] == "CONV_2D" else w * scales
    if user["op_name"] == "CONV_2D":  # [cout, kh, kw, cin]: its input channels
        if d.shape[-1] != scales.size:
            return False
        d = d / scales
    else:  # depthwise [1, kh, kw, cin * multiplier]
        d = d / np.repeat(scales, d.shape[-1] // scales.size)
    _tflite_store(model, weight, w)
    if bias is not None and b is not None:
        _tflite_store(model, bias, b * scales)
    _tflite_store(model, depthwise, d)
    return True


def equalise_tflite(
    float_model: bytes,
    samples: Iterable[npt.NDArray[np.float32]],
    *,
    margin: float = DEFAULT_MARGIN,
    conv_scale: float = CONV_SCALE,
) -> tuple[bytes, EqualisationSummary]:
    """The float TFLite model with the channels between every convolution and the depthwise
    convolution it feeds equalised (see the module's docstring)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_model))
    interpreter = tflite_probe(float_model)
    pairs = _tflite_pairs(model, interpreter, into_convolutions=conv_scale > 1.0)
    if not pairs:
        return float_model, _summary([], 0)
    maxima: dict[int, F64] = {}
    input_index = interpreter.get_input_details()[0]["index"]
    images = 0
    for sample in samples:
        interpreter.set_tensor(input_index, sample)
        interpreter.invoke()
        for op, _, _ in pairs:
            out = int(op["outputs"][0])
            value = np.abs(np.asarray(interpreter.get_tensor(out), dtype=np.float64))
            top = value.reshape(-1, value.shape[-1]).max(axis=0)
            maxima[out] = np.maximum(maxima[out], top) if out in maxima else top
        images += 1
    if not images:
        raise QuantizationError("equalisation needs calibration images")
    used = []
    for op, user, limit in pairs:
        cap = MAX_SCALE if user["op_name"] == "DEPTHWISE_CONV_2D" else conv_scale
        scales = channel_scales(maxima[int(op["outputs"][0])], limit, margin=margin, cap=cap)
        if _tflite_scale(model, op, user, scales):
            used.append(scales)
    summary = _summary(used, images)
    log.info("activation equalisation: %s", summary.to_dict())
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), summary


# --- ONNX ---------------------------------------------------------------------------------


def _onnx_constant(model: Any, name: str) -> F64 | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init).astype(np.float64)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(attribute.t).astype(np.float64)
    return None


def _onnx_limit(model: Any, node: Any) -> tuple[bool, float | None]:
    """Whether activation ``node`` commutes with a positive scale, and its upper clip."""
    import onnx

    if node.op_type == "Relu":
        return True, None
    if node.op_type != "Clip":
        return False, None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    low: float | None = attrs.get("min")
    high: float | None = attrs.get("max")
    if len(node.input) > 1 and node.input[1]:
        value = _onnx_constant(model, node.input[1])
        if value is None:
            return False, None
        low = float(value)
    if len(node.input) > 2 and node.input[2]:
        value = _onnx_constant(model, node.input[2])
        if value is None:
            return False, None
        high = float(value)
    if low is None or low != 0.0:
        return False, None  # a lower clip other than 0 does not commute with a scale
    return True, (None if high is None else float(high))


def _onnx_pairs(model: Any, *, into_convolutions: bool) -> list[tuple[Any, Any, str, float | None]]:
    """Every (``Conv``, depthwise ``Conv`` it alone feeds, tensor between them, clip) that can
    be equalised: constant weights and bias used by no other node, and between them nothing
    or one ``Relu`` / ``Clip(0, c)``."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def only_user(name: str) -> Any | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in outputs else None

    def group(node: Any) -> int:
        return next((int(a.i) for a in node.attribute if a.name == "group"), 1)

    pairs = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        tensor = node.output[0]
        user = only_user(tensor)
        limit: float | None = None
        if user is not None and user.op_type in ("Relu", "Clip"):
            commutes, limit = _onnx_limit(model, user)
            tensor = user.output[0]
            user = only_user(tensor) if commutes else None
        if user is None or user.op_type != "Conv" or user.input[0] != tensor:
            continue
        weights = [n for n in node.input[1:3] if n] + [user.input[1]]
        if any(name not in initializers or len(consumers.get(name, [])) != 1 for name in weights):
            continue  # not constant, or shared with another node (scaling it would change that)
        depthwise = numpy_helper.to_array(initializers[user.input[1]])
        channels = numpy_helper.to_array(initializers[node.input[1]]).shape[0]
        is_depthwise = depthwise.ndim == 4 and depthwise.shape[1] == 1 and group(user) == channels
        is_conv = depthwise.ndim == 4 and group(user) == 1 and depthwise.shape[1] == channels
        if not (is_depthwise or (into_convolutions and is_conv)):
            continue
        pairs.append((node, user, tensor, limit))
    return pairs


def _onnx_maxima(
    model: Any, wanted: list[str], samples: Iterable[npt.NDArray[np.float32]]
) -> tuple[dict[str, F64], int]:
    """Each channel's largest absolute value of the NCHW tensors ``wanted`` over ``samples``."""
    session, input_name = onnx_probe(model, wanted)
    maxima: dict[str, F64] = {}
    images = 0
    for sample in samples:
        for name, value in zip(wanted, session.run(wanted, {input_name: sample}), strict=True):
            v = np.abs(np.asarray(value, dtype=np.float64))
            top = np.moveaxis(v, 1, -1).reshape(-1, v.shape[1]).max(axis=0)
            maxima[name] = np.maximum(maxima[name], top) if name in maxima else top
        images += 1
    if not images:
        raise QuantizationError("equalisation needs calibration images")
    return maxima, images


def equalise_onnx(
    model: Any,
    samples: Iterable[npt.NDArray[np.float32]],
    *,
    margin: float = DEFAULT_MARGIN,
    conv_scale: float = CONV_SCALE,
) -> tuple[Any, EqualisationSummary]:
    """The float ONNX model (a ``ModelProto``, changed in place and returned) with the
    channels between every ``Conv`` (optionally through a ``Relu`` or ``Clip(0, c)``) and the
    depthwise ``Conv`` it feeds equalised."""
    from onnx import numpy_helper

    pairs = _onnx_pairs(model, into_convolutions=conv_scale > 1.0)
    if not pairs:
        return model, _summary([], 0)
    maxima, images = _onnx_maxima(model, sorted({tensor for _, _, tensor, _ in pairs}), samples)
    initializers = {init.name: init for init in model.graph.initializer}
    used = []
    for node, user, tensor, limit in pairs:
        d_init = initializers[user.input[1]]
        d = numpy_helper.to_array(d_init).astype(np.float64)  # [cout * m, 1 or cin, kh, kw]
        cap = MAX_SCALE if d.shape[1] == 1 else conv_scale  # depthwise: [c * m, 1, kh, kw]
        scales = channel_scales(maxima[tensor], limit, margin=margin, cap=cap)
        w_init = initializers[node.input[1]]
        w = numpy_helper.to_array(w_init).astype(np.float64)  # [cout, cin/g, kh, kw]
        changes = [(w_init, w * scales[:, None, None, None])]
        if len(node.input) > 2 and node.input[2]:
            b_init = initializers[node.input[2]]
            b = numpy_helper.to_array(b_init).astype(np.float64)
            if b.shape != scales.shape:
                continue
            changes.append((b_init, b * scales))
        if d.shape[1] == scales.size and d.shape[1] != 1:  # an ordinary Conv: input channels
            d_scales = scales[None, :, None, None]
        elif d.shape[1] == 1 and d.shape[0] % scales.size == 0:  # depthwise
            d_scales = np.repeat(scales, d.shape[0] // scales.size)[:, None, None, None]
        else:
            continue
        for init, value in (*changes, (d_init, d / d_scales)):
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), init.name))
        used.append(scales)
    summary = _summary(used, images)
    log.info("activation equalisation: %s", summary.to_dict())
    return model, summary
