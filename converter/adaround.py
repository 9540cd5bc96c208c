"""AdaRound: choose each int8 weight's rounding (up or down) for the layer's output, not alone.

Rounding every weight to the nearest int8 level minimises each weight's own
error but not the layer's output error. AdaRound (Nagel et al., "Up or Down?
Adaptive Rounding for Post-Training Quantization", ICML 2020) chooses, for
each weight, the level below or above it so that the layer's output on
calibration inputs stays closest to the float one:

    min over h in {0, 1}:  E || (W_q - W) x ||^2,   W_q = s * (floor(W / s) + h)

For a linear layer this objective is a quadratic form in the rounding error
of each output channel, ``d C d^T`` with ``C = E[x x^T]`` the second moment of
the layer's input patches (one ``C`` for a convolution, one per channel for a
depthwise convolution), so the calibration images are walked once to gather
``C`` and the optimisation itself never touches them again. It follows the
paper's recipe (rectified sigmoid relaxation of ``h``, a regulariser
annealed from beta 20 to 2 that pushes every ``h`` to 0 or 1, Adam), then a
greedy pass flips any single weight whose flip still lowers the objective,
and keeps round-to-nearest for any channel where that does better.

The result is written back into the *float* model: every weight becomes
exactly ``q * s`` on the grid the quantiser will use (symmetric, per output
channel, ``s = max|w| / 127``; the largest weight keeps its level, so the
quantiser computes the same scale), so both quantisers, run unchanged,
produce exactly the chosen integers. Each layer's bias then absorbs the mean
shift the chosen rounding leaves (bias correction with the chosen ``dW``).

Rounded: TFLite ``CONV_2D``, ``DEPTHWISE_CONV_2D`` and ``FULLY_CONNECTED``;
ONNX ``Conv`` (plain and depthwise). Weights that are not constants, and
ONNX ``MatMul``/``Gemm``, keep round-to-nearest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from converter.errors import QuantizationError
from converter.probes import onnx_probe, tflite_probe

__all__ = [
    "AdaRoundSummary",
    "LayerRounding",
    "adaround_onnx",
    "adaround_rows",
    "adaround_tflite",
    "conv_patches",
    "rounding_objective",
]

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

_ZETA, _GAMMA = 1.1, -0.1
"""The rectified sigmoid's stretch (AdaRound's zeta and gamma)."""
_QMAX = 127


@dataclass(frozen=True)
class LayerRounding:
    """One layer's rounding: its output error relative to round-to-nearest."""

    layer: str
    kind: str
    weights: int
    changed: int
    """Weights rounded the other way than to the nearest level."""
    error_ratio: float
    """Output error (the objective on calibration inputs) over round-to-nearest's (< 1: better)."""


@dataclass(frozen=True)
class AdaRoundSummary:
    """What AdaRound did to one model."""

    layers: tuple[LayerRounding, ...]
    images: int

    def to_dict(self) -> dict[str, Any]:
        total = sum(layer.weights for layer in self.layers)
        return {
            "images": self.images,
            "layers": len(self.layers),
            "weights": total,
            "changed": sum(layer.changed for layer in self.layers),
            "median_error_ratio": float(np.median([x.error_ratio for x in self.layers]))
            if self.layers
            else 1.0,
        }


# --- the pure core ------------------------------------------------------------------------


def _per_row(moments: F64, rows: int) -> F64:
    return moments if moments.ndim == 3 else np.broadcast_to(moments, (rows, *moments.shape))


def _times(d: F64, moments: F64) -> F64:
    """``d @ C`` row by row (one shared ``C`` or one per row)."""
    if moments.ndim == 2:
        result: F64 = d @ moments
        return result
    result = np.einsum("rn,rnm->rm", d, moments)
    return result


def rounding_objective(q: F64, x: F64, moments: F64) -> F64:
    """Per row, ``(q - x) C (q - x)^T``: the output error (in weight-grid units squared)."""
    d = q - x
    result: F64 = np.einsum("rn,rn->r", _times(d, moments), d)
    return result


def adaround_rows(
    x: F64,
    moments: F64,
    *,
    iterations: int = 500,
    regularisation: float = 0.1,
    learning_rate: float = 0.02,
    sweeps: int = 4,
) -> npt.NDArray[np.int64]:
    """The integer levels (in ``[-127, 127]``) chosen for weights ``x`` given on their grid
    (``x = W / s``, one row per output channel) with input second moment ``moments``
    (``[n, n]`` shared, or ``[rows, n, n]`` one per row)."""
    x = np.asarray(x, dtype=np.float64)
    rows, n = x.shape
    moments = np.asarray(moments, dtype=np.float64)
    if moments.shape not in ((n, n), (rows, n, n)):
        raise QuantizationError(f"moments of shape {moments.shape} for weights {x.shape}")
    nearest = np.clip(np.rint(x), -_QMAX, _QMAX)
    low = np.floor(x)
    frac = x - low
    free = (frac > 1e-9) & (low + 1 <= _QMAX) & (low >= -_QMAX)
    if not free.any():
        return nearest.astype(np.int64)
    base = rounding_objective(nearest, x, moments)
    scale = 1.0 / np.maximum(base, 1e-30)[:, None]
    # the relaxation: h = clip(sigmoid(v) * (zeta - gamma) + gamma, 0, 1), starting at h = frac
    start = np.clip((frac - _GAMMA) / (_ZETA - _GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(start / (1 - start))
    m = np.zeros_like(v)
    s2 = np.zeros_like(v)
    warm = int(0.2 * iterations)
    for step in range(iterations):
        sig = 1.0 / (1.0 + np.exp(-v))
        stretched = sig * (_ZETA - _GAMMA) + _GAMMA
        h = np.clip(stretched, 0.0, 1.0)
        h = np.where(free, h, 0.0)
        grad_h = 2.0 * _times(low + h - x, moments) * scale
        if step >= warm:
            progress = (step - warm) / max(1, iterations - warm)
            beta = 20.0 + (2.0 - 20.0) * progress
            centred = 2.0 * h - 1.0
            grad_h += (
                regularisation
                / n
                * (-2.0 * beta * np.abs(centred) ** (beta - 1.0) * np.sign(centred))
            )
        inside = (stretched > 0.0) & (stretched < 1.0) & free
        grad_v = np.where(inside, grad_h * (_ZETA - _GAMMA) * sig * (1.0 - sig), 0.0)
        m = 0.9 * m + 0.1 * grad_v
        s2 = 0.999 * s2 + 0.001 * grad_v**2
        m_hat = m / (1 - 0.9 ** (step + 1))
        s_hat = s2 / (1 - 0.999 ** (step + 1))
        v -= learning_rate * m_hat / (np.sqrt(s_hat) + 1e-8)
    sig = 1.0 / (1.0 + np.exp(-v))
    h = np.where(free, (np.clip(sig * (_ZETA - _GAMMA) + _GAMMA, 0, 1) >= 0.5), False)
    q = low + h
    q = _greedy(q, x, low, free, moments, sweeps=sweeps)
    better = rounding_objective(q, x, moments) < base
    chosen = np.where(better[:, None], q, nearest)
    return np.clip(chosen, -_QMAX, _QMAX).astype(np.int64)


def _greedy(
    q: F64, x: F64, low: F64, free: npt.NDArray[np.bool_], moments: F64, *, sweeps: int
) -> F64:
    """Flip single weights (to the other of their two levels) while that lowers the objective."""
    q = q.copy()
    per_row = _per_row(moments, q.shape[0])
    g = _times(q - x, moments)  # the objective's half gradient, kept up to date
    rows = np.arange(q.shape[0])
    for _ in range(sweeps):
        flips = 0
        for i in range(q.shape[1]):
            can = free[:, i]
            if not can.any():
                continue
            delta = np.where(q[:, i] > low[:, i], -1.0, 1.0)
            diagonal = per_row[rows, i, i]
            change = 2.0 * delta * g[:, i] + delta * delta * diagonal
            take = can & (change < -1e-12)
            if not take.any():
                continue
            q[take, i] += delta[take]
            step = delta[take][:, None] * per_row[rows[take], i, :]
            g[take] += step
            flips += int(take.sum())
        if not flips:
            break
    return q


def round_weights(weights: F64, moments: F64, *, iterations: int) -> tuple[F64, int, float]:
    """``weights`` (``[rows, n]``) moved onto their chosen int8 levels; the number changed
    against round-to-nearest and the median output-error ratio over the rows."""
    bound = np.maximum(np.max(np.abs(weights), axis=1, keepdims=True), 1e-12)
    s = bound / _QMAX
    x = weights / s
    q = adaround_rows(x, moments, iterations=iterations).astype(np.float64)
    nearest = np.clip(np.rint(x), -_QMAX, _QMAX)
    base = rounding_objective(nearest, x, moments)
    chosen = rounding_objective(q, x, moments)
    ratios = chosen[base > 0] / base[base > 0]
    ratio = float(np.median(ratios)) if ratios.size else 1.0
    return q * s, int(np.sum(q != nearest)), ratio


# --- patches and moments ------------------------------------------------------------------


def conv_patches(
    image: npt.NDArray[Any],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    pads: tuple[int, int, int, int],
) -> F64:
    """The ``[positions, kh, kw, channels]`` input patches of one NHWC image (``[H, W, C]``),
    zero-padded by ``pads`` (top, left, bottom, right) as the convolution sees them."""
    top, left, bottom, right = pads
    padded = np.pad(np.asarray(image, dtype=np.float64), ((top, bottom), (left, right), (0, 0)))
    kh, kw = kernel
    dh, dw = dilations
    sh, sw = strides
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    out_h = (padded.shape[0] - span_h) // sh + 1
    out_w = (padded.shape[1] - span_w) // sw + 1
    rows = [
        padded[
            i * dh : i * dh + (out_h - 1) * sh + 1 : sh, j * dw : j * dw + (out_w - 1) * sw + 1 : sw
        ]
        for i in range(kh)
        for j in range(kw)
    ]
    stacked = np.stack(rows, axis=2)  # [out_h, out_w, kh * kw, C]
    return stacked.reshape(out_h * out_w, kh, kw, padded.shape[2])


def same_pads(
    size: tuple[int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
) -> tuple[int, int, int, int]:
    """TensorFlow's SAME padding (top, left, bottom, right)."""
    pads = []
    for extent, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        out = math.ceil(extent / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - extent, 0)
        pads.append((total // 2, total - total // 2))
    return pads[0][0], pads[1][0], pads[0][1], pads[1][1]


@dataclass
class _Layer:
    """One linear layer to round: how to get its patches, and its gathered moments."""

    name: str
    kind: str  # "conv", "depthwise", "dense"
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] | None = None  # None: SAME, computed from the input
    moments: F64 | None = None
    sums: F64 | None = None
    count: int = 0

    def add(self, value: npt.NDArray[Any]) -> None:
        """Accumulate one NHWC input (``[1, H, W, C]``, or ``[1, C]`` for a dense layer)."""
        if self.kind == "dense":
            flat = np.asarray(value, dtype=np.float64).reshape(-1, value.shape[-1])
            self._accumulate(flat.T @ flat, flat.sum(axis=0), flat.shape[0])
            return
        image = np.asarray(value)[0]
        pads = self.pads or same_pads(image.shape[:2], self.kernel, self.strides, self.dilations)
        patches = conv_patches(image, self.kernel, self.strides, self.dilations, pads)
        if self.kind == "conv":
            flat = patches.reshape(patches.shape[0], -1)
            self._accumulate(flat.T @ flat, flat.sum(axis=0), flat.shape[0])
        else:
            per_channel = patches.reshape(patches.shape[0], -1, patches.shape[3])
            self._accumulate(
                np.einsum("pic,pjc->cij", per_channel, per_channel),
                per_channel.sum(axis=0).T,
                per_channel.shape[0],
            )

    def _accumulate(self, moments: F64, sums: F64, count: int) -> None:
        self.moments = moments if self.moments is None else self.moments + moments
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += count


def _round_layer(
    layer: _Layer, weights2d: F64, channel_of_row: npt.NDArray[np.int64] | None, iterations: int
) -> tuple[F64, F64, LayerRounding] | None:
    """The layer's rounded weights (``[rows, n]``), its bias shift, and the record; None when
    the calibration inputs are too few to pin its ``n``-dimensional second moment down (a
    dense layer on fewer than ``4 n`` images: AdaRound would fit those images' noise)."""
    if layer.moments is None or layer.sums is None or layer.count < 4 * weights2d.shape[1]:
        return None
    moments = layer.moments / layer.count
    mean = layer.sums / layer.count
    if channel_of_row is not None:  # depthwise: the moments of each row's input channel
        moments = moments[channel_of_row]
        mean = mean[channel_of_row]
    n = weights2d.shape[1]
    # a little damping: directions no calibration input took must not decide anything
    trace = np.trace(moments, axis1=-2, axis2=-1) / n
    damp = 1e-6 * (trace[..., None, None] if moments.ndim == 3 else trace)
    moments = moments + damp * np.eye(n)
    rounded, changed, ratio = round_weights(weights2d, moments, iterations=iterations)
    delta = rounded - weights2d
    shift = np.einsum("rn,rn->r", delta, mean) if mean.ndim == 2 else delta @ mean
    record = LayerRounding(layer.name, layer.kind, int(weights2d.size), changed, ratio)
    return rounded, shift, record


# --- TFLite -------------------------------------------------------------------------------


def _tflite_layer(kind: str, shape: list[int], options: Any, name: str) -> _Layer | None:
    """The layer to round for one TFLite op (None: not one AdaRound handles)."""
    if kind == "FULLY_CONNECTED":
        return _Layer(name, "dense") if len(shape) == 2 else None
    if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(shape) != 4:
        return None
    valid = int(options.padding) == 1  # tflite Padding: SAME 0, VALID 1
    return _Layer(
        name,
        "conv" if kind == "CONV_2D" else "depthwise",
        kernel=(shape[1], shape[2]),
        strides=(int(options.strideH), int(options.strideW)),
        dilations=(int(options.dilationHFactor), int(options.dilationWFactor)),
        pads=(0, 0, 0, 0) if valid else None,
    )


def _tflite_round(
    model: Any, subgraph: Any, layer: _Layer, inputs: list[int], iterations: int
) -> LayerRounding | None:
    """Round one TFLite layer's weights in place (and correct its bias)."""
    weight_tensor = subgraph.tensors[inputs[1]]
    shape = [int(v) for v in weight_tensor.shape]
    weights = np.frombuffer(
        bytes(model.buffers[weight_tensor.buffer].data), dtype=np.float32
    ).astype(np.float64)
    channel_of_row = None
    if layer.kind == "depthwise":
        # [1, kh, kw, C * multiplier]: one row per output channel, its kh * kw taps
        rows = weights.reshape(-1, shape[3]).T
        channel_of_row = _depthwise_channels(layer, shape[3])
    else:
        rows = weights.reshape(shape[0], -1)
    result = _round_layer(layer, rows, channel_of_row, iterations)
    if result is None:
        return None
    rounded, shift, record = result
    new = rounded.T if layer.kind == "depthwise" else rounded
    model.buffers[weight_tensor.buffer].data = np.frombuffer(
        new.astype(np.float32).reshape(shape).tobytes(), dtype=np.uint8
    )
    if len(inputs) >= 3 and inputs[2] >= 0:
        bias_tensor = subgraph.tensors[inputs[2]]
        data = model.buffers[bias_tensor.buffer].data
        if data is not None:
            bias = np.frombuffer(bytes(data), dtype=np.float32).astype(np.float64)
            if bias.shape == shift.shape:
                model.buffers[bias_tensor.buffer].data = np.frombuffer(
                    (bias - shift).astype(np.float32).tobytes(), dtype=np.uint8
                )
    return record


def _depthwise_channels(layer: _Layer, rows: int) -> npt.NDArray[np.int64]:
    """Each depthwise output channel's input channel (``channel * multiplier + j``)."""
    channels = layer.moments.shape[0] if layer.moments is not None else rows
    result: npt.NDArray[np.int64] = np.arange(rows) // max(1, rows // max(1, channels))
    return result


def adaround_tflite(
    float_model: bytes,
    samples: Iterable[npt.NDArray[np.float32]],
    *,
    iterations: int = 500,
) -> tuple[bytes, AdaRoundSummary]:
    """The float TFLite model with every linear layer's weights on their AdaRound levels
    (and biases corrected for the mean shift those levels leave)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_model))
    subgraph = model.subgraphs[0]
    interpreter = tflite_probe(float_model)
    layers: list[tuple[_Layer, list[int]]] = []
    for op in interpreter._get_ops_details():
        inputs = [int(i) for i in op["inputs"]]
        if len(inputs) < 2:
            continue
        weight_tensor = subgraph.tensors[inputs[1]]
        if model.buffers[weight_tensor.buffer].data is None:
            continue  # weights computed at run time
        layer = _tflite_layer(
            str(op["op_name"]),
            [int(v) for v in weight_tensor.shape],
            subgraph.operators[int(op["index"])].builtinOptions,
            _tflite_name(weight_tensor),
        )
        if layer is not None:
            layers.append((layer, inputs))
    if not layers:
        return float_model, AdaRoundSummary((), 0)
    input_index = interpreter.get_input_details()[0]["index"]
    images = 0
    for sample in samples:
        interpreter.set_tensor(input_index, sample)
        interpreter.invoke()
        for layer, inputs in layers:
            layer.add(interpreter.get_tensor(inputs[0]))
        images += 1
    if not images:
        raise QuantizationError("AdaRound needs calibration images")
    records = [
        _tflite_round(model, subgraph, layer, inputs, iterations) for layer, inputs in layers
    ]
    summary = AdaRoundSummary(tuple(r for r in records if r is not None), images)
    log.info("AdaRound: %s", summary.to_dict())
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), summary


def _tflite_name(tensor: Any) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


# --- ONNX ---------------------------------------------------------------------------------


def _onnx_layer(node: Any, weights: npt.NDArray[Any]) -> _Layer | None:
    """The layer to round for one ONNX ``Conv`` (None: not one AdaRound handles)."""
    import onnx

    if weights.ndim != 4:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    group = int(attrs.get("group", 1))
    if group != 1 and weights.shape[1] != 1:
        return None  # grouped but not depthwise: left to round-to-nearest
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    pads: tuple[int, int, int, int] | None = None  # SAME_UPPER, as TensorFlow pads
    if auto_pad in (b"NOTSET", "NOTSET"):
        raw = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        pads = (raw[0], raw[1], raw[2], raw[3])
    elif auto_pad in (b"VALID", "VALID"):
        pads = (0, 0, 0, 0)
    elif auto_pad not in (b"SAME_UPPER", "SAME_UPPER"):
        return None
    strides = [int(v) for v in attrs.get("strides", [1, 1])]
    dilations = [int(v) for v in attrs.get("dilations", [1, 1])]
    return _Layer(
        node.name or node.output[0],
        "conv" if group == 1 else "depthwise",
        kernel=(int(weights.shape[2]), int(weights.shape[3])),
        strides=(strides[0], strides[1]),
        dilations=(dilations[0], dilations[1]),
        pads=pads,
    )


def _onnx_moments(
    model: Any, chosen: list[tuple[_Layer, Any]], samples: Iterable[npt.NDArray[np.float32]]
) -> int:
    """Walk the calibration images once, gathering each chosen layer's input moments."""
    wanted = sorted({node.input[0] for _, node in chosen})
    session, input_name = onnx_probe(model, wanted)
    images = 0
    for sample in samples:
        values = dict(zip(wanted, session.run(wanted, {input_name: sample}), strict=True))
        for layer, node in chosen:
            layer.add(np.moveaxis(np.asarray(values[node.input[0]]), 1, -1))  # NCHW -> NHWC
        images += 1
    if not images:
        raise QuantizationError("AdaRound needs calibration images")
    return images


def _onnx_round(
    model: Any, initializers: dict[str, Any], layer: _Layer, node: Any, iterations: int
) -> LayerRounding | None:
    """Round one ONNX ``Conv``'s weights in place (and correct or add its bias)."""
    from onnx import numpy_helper

    init = initializers[node.input[1]]
    weights = numpy_helper.to_array(init).astype(np.float64)  # [cout, cin/g, kh, kw]
    cout, kh, kw = weights.shape[0], weights.shape[2], weights.shape[3]
    channel_of_row = None
    if layer.kind == "depthwise":
        rows = weights.reshape(cout, -1)  # [C * m, kh * kw]
        channel_of_row = _depthwise_channels(layer, cout)
    else:
        rows = weights.transpose(0, 2, 3, 1).reshape(cout, -1)  # patch order kh, kw, cin
    result = _round_layer(layer, rows, channel_of_row, iterations)
    if result is None:
        return None
    rounded, shift, record = result
    if layer.kind == "depthwise":
        new = rounded.reshape(weights.shape)
    else:
        new = rounded.reshape(cout, kh, kw, weights.shape[1]).transpose(0, 3, 1, 2)
    init.CopyFrom(numpy_helper.from_array(new.astype(np.float32), init.name))
    if len(node.input) >= 3 and node.input[2] in initializers:
        bias_init = initializers[node.input[2]]
        bias = numpy_helper.to_array(bias_init).astype(np.float64)
        bias_init.CopyFrom(
            numpy_helper.from_array((bias - shift).astype(np.float32), bias_init.name)
        )
    elif len(node.input) < 3 or not node.input[2]:
        name = f"{node.name or node.output[0]}_bias_adaround"
        model.graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
    return record


def adaround_onnx(
    model: Any,
    samples: Iterable[npt.NDArray[np.float32]],
    *,
    iterations: int = 500,
) -> tuple[Any, AdaRoundSummary]:
    """The float ONNX model (a ``ModelProto``, changed in place and returned) with every
    ``Conv``'s weights on their AdaRound levels and its bias corrected."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    chosen: list[tuple[_Layer, Any]] = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        if uses.get(node.input[1], 0) != 1:
            continue  # weights another node shares
        layer = _onnx_layer(node, numpy_helper.to_array(initializers[node.input[1]]))
        if layer is not None:
            chosen.append((layer, node))
    if not chosen:
        return model, AdaRoundSummary((), 0)
    images = _onnx_moments(model, chosen, samples)
    records = [_onnx_round(model, initializers, layer, node, iterations) for layer, node in chosen]
    summary = AdaRoundSummary(tuple(r for r in records if r is not None), images)
    log.info("AdaRound: %s", summary.to_dict())
    return model, summary
