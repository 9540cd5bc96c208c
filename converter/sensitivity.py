"""Which quantised ops cost the most accuracy: per-op error attribution on both paths.

The float model and its int8 model run side by side on the same calibration
images with every intermediate tensor kept (LiteRT's
``experimental_preserve_all_tensors``; ONNX Runtime with every node output
made a graph output and no graph optimisation). For each op's output tensor
the int8 value (dequantised) is compared with the float one: its SQNR, and
the noise the op *adds*, its noise-to-signal ratio minus the largest one
among its inputs. An op that adds much noise is one whose own rounding
(weights, output range) hurts; keeping it in float removes that part.

Ops are named the way each quantiser excludes them: a TFLite op by its scope
(its output tensor names joined by ``;`` with a trailing ``;``, as the LiteRT
Quantizer matches recipes), an ONNX op by its node name
(``nodes_to_exclude``). MACs are counted per op from the float model's
weight and output shapes (convolutions, depthwise convolutions, fully
connected layers and matrix products; other ops count 0), so a fallback can
say what share of the model's arithmetic stays in float.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from converter.errors import QuantizationError
from converter.probes import onnx_probe, tflite_probe

__all__ = [
    "FloatCandidate",
    "OpSensitivity",
    "QuantOp",
    "SensitivityReport",
    "count_candidates",
    "measure_candidates",
    "onnx_ops",
    "onnx_output_error",
    "onnx_output_names",
    "onnx_tensor_errors",
    "rank_ops",
    "tflite_ops",
    "tflite_output_error",
    "tflite_output_names",
    "tflite_tensor_errors",
]

TensorErrors = dict[str, tuple[float, float]]
"""Tensor name -> (signal power, noise power), each summed over every value and image."""


@dataclass(frozen=True)
class QuantOp:
    """One op of the float model, as a quantiser can keep it in float."""

    name: str
    """The id the quantiser excludes it by (TFLite: op scope; ONNX: node name)."""
    kind: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    """Activation tensors it reads (not weights or other constants)."""
    macs: int = 0
    members: tuple[str, ...] = ()
    """Every id kept in float with it (an ONNX Conv with the Relu/Clip that follows it,
    which ONNX Runtime fuses); empty means just ``name``."""

    @property
    def excluded(self) -> tuple[str, ...]:
        """The ids to hand the quantiser to keep this op in float."""
        return self.members or (self.name,)


@dataclass(frozen=True)
class OpSensitivity:
    """One op's share of the int8 model's error on the measured images."""

    op: QuantOp
    sqnr_db: float
    """Signal-to-quantisation-noise ratio of the op's output in the int8 model (dB)."""
    added_noise: float
    """Noise power the op adds, relative to its output's signal power (NSR out minus the
    largest NSR of its inputs, at least 0)."""
    mac_share: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly row."""
        return {
            "op": self.op.name,
            "kind": self.op.kind,
            "excluded": list(self.op.excluded),
            "output": self.op.outputs[0] if self.op.outputs else None,
            "sqnr_db": None if math.isinf(self.sqnr_db) else round(self.sqnr_db, 2),
            "added_noise": round(self.added_noise, 6),
            "macs": self.op.macs,
            "mac_share": round(self.mac_share, 6),
        }


@dataclass
class SensitivityReport:
    """Every measured op, most sensitive first, and what it was measured on."""

    format: str
    images: int
    ranked: list[OpSensitivity] = field(default_factory=list)
    total_macs: int = 0

    def top(self, count: int) -> list[OpSensitivity]:
        """The ``count`` most sensitive ops."""
        return self.ranked[:count]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (every op, most sensitive first)."""
        return {
            "format": self.format,
            "images": self.images,
            "total_macs": self.total_macs,
            "method": "per-op output SQNR of the int8 model against float; ops ranked by the "
            "noise each adds (its output's noise-to-signal ratio minus its inputs' largest)",
            "ops": [row.to_dict() for row in self.ranked],
        }


@dataclass(frozen=True)
class FloatCandidate:
    """An op with the ops that read its output: kept in float together, the op's weights and
    its output stay unrounded. ``error_ratio``: the model's output error (squared error of
    the scores against float, on calibration images) with the group in float, over the full
    int8 model's; below 1 means keeping it in float helps."""

    op: QuantOp
    group: tuple[QuantOp, ...]
    error_ratio: float
    mac_share: float

    @property
    def gain(self) -> float:
        """Share of the output error that keeping the group in float removed."""
        return 1.0 - self.error_ratio

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly row."""
        return {
            "op": self.op.name,
            "kind": self.op.kind,
            "group": [op.name for op in self.group],
            "error_ratio": round(self.error_ratio, 5),
            "mac_share": round(self.mac_share, 6),
        }


def measure_candidates(
    ops: Sequence[QuantOp],
    output_error: Callable[[list[str]], float],
    *,
    max_float_fraction: float = 1.0,
    progress: Callable[[], None] | None = None,
) -> list[FloatCandidate]:
    """Keep one candidate at a time in float and measure the output error it leaves
    (``output_error(excluded ids)``); candidates that help most first.

    A candidate is each op with MACs, or that reads the model input (kept in
    float with its readers, a float model input is not rounded to int8 at
    all), with the ops that read its output; those whose MACs alone exceed
    ``max_float_fraction`` are not measured.
    """
    total = sum(op.macs for op in ops)
    readers: dict[str, list[QuantOp]] = {}
    for op in ops:
        for name in op.inputs:
            readers.setdefault(name, []).append(op)
    produced = {name for op in ops for name in op.outputs}
    base = output_error([])
    candidates = []
    for op in ops:
        reads_model_input = bool(set(op.inputs) - produced)
        if not op.macs and not reads_model_input:
            continue
        group = [op]
        for name in op.outputs:
            group.extend(r for r in readers.get(name, []) if r not in group)
        share = sum(member.macs for member in group) / total if total else 0.0
        if share > max_float_fraction:
            continue
        error = output_error([m for member in group for m in member.excluded])
        candidates.append(
            FloatCandidate(op, tuple(group), error / base if base > 0 else 1.0, share)
        )
        if progress is not None:
            progress()
    candidates.sort(key=lambda c: (c.error_ratio, c.mac_share, c.op.name))
    return candidates


def count_candidates(ops: Sequence[QuantOp]) -> int:
    """How many candidates :func:`measure_candidates` may measure (for a progress bar)."""
    produced = {name for op in ops for name in op.outputs}
    return sum(1 for op in ops if op.macs or set(op.inputs) - produced)


def rank_ops(
    ops: Sequence[QuantOp], errors: TensorErrors, fmt: str, images: int
) -> SensitivityReport:
    """Rank ``ops`` by the noise each adds, from ``errors`` measured on ``images`` images.

    Ops whose output was not measured (integer tensors, tensors the int8 model
    does not have) are left out; an input that was not measured counts as
    noise-free (the model input in float, a constant).
    """
    total = sum(op.macs for op in ops)

    def nsr(name: str) -> float:
        signal, noise = errors.get(name, (1.0, 0.0))
        return noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)

    rows = []
    for op in ops:
        measured = [name for name in op.outputs if name in errors]
        if not measured:
            continue
        out = max(nsr(name) for name in measured)
        before = max((nsr(name) for name in op.inputs), default=0.0)
        sqnr = (
            math.inf if out == 0 else -10.0 * math.log10(out) if math.isfinite(out) else -math.inf
        )
        rows.append(
            OpSensitivity(
                op=op,
                sqnr_db=sqnr,
                added_noise=max(0.0, out - before) if math.isfinite(out) else math.inf,
                mac_share=op.macs / total if total else 0.0,
            )
        )
    rows.sort(key=lambda row: (-row.added_noise, -row.op.macs, row.op.name))
    return SensitivityReport(format=fmt, images=images, ranked=rows, total_macs=total)


def _accumulate(errors: TensorErrors, name: str, reference: Any, value: Any) -> None:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(value, dtype=np.float64).ravel()
    if ref.shape != got.shape or ref.size == 0:
        return
    signal, noise = errors.get(name, (0.0, 0.0))
    errors[name] = (signal + float(np.sum(ref * ref)), noise + float(np.sum((got - ref) ** 2)))


# --- TFLite -------------------------------------------------------------------------------

_TFLITE_MACS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


def _tflite_interpreter(model: bytes, keep_all: bool) -> Any:
    return tflite_probe(model, keep_all=keep_all)


def tflite_ops(float_model: bytes) -> list[QuantOp]:
    """Every op of a float TFLite model, with its scope, activation inputs and MACs."""
    interpreter = _tflite_interpreter(float_model, keep_all=False)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops_details = interpreter._get_ops_details()
    produced = {i for op in ops_details for i in op["outputs"]}
    produced |= {d["index"] for d in interpreter.get_input_details()}
    ops = []
    for op in ops_details:
        outputs = [int(i) for i in op["outputs"] if i >= 0]
        names = tuple(str(details[i]["name"]) for i in outputs if details[i]["name"])
        if not names:
            continue
        inputs = tuple(str(details[i]["name"]) for i in op["inputs"] if i >= 0 and i in produced)
        macs = 0
        kind = str(op["op_name"])
        if kind in _TFLITE_MACS and len(op["inputs"]) > 1 and outputs:
            out = int(np.prod(details[outputs[0]]["shape"]))
            weights = [int(v) for v in details[op["inputs"][1]]["shape"]]
            if kind == "CONV_2D" and len(weights) == 4:
                macs = out * weights[1] * weights[2] * weights[3]
            elif kind == "DEPTHWISE_CONV_2D" and len(weights) == 4:
                macs = out * weights[1] * weights[2]
            elif kind == "FULLY_CONNECTED" and len(weights) == 2:
                macs = out * weights[1]
            elif kind == "TRANSPOSE_CONV":
                weights = [int(v) for v in details[op["inputs"][1]]["shape"]]
                macs = int(np.prod(details[op["inputs"][2]]["shape"])) * int(np.prod(weights[:3]))
        ops.append(QuantOp(";".join(names) + ";", kind, names, inputs, macs))
    return ops


def tflite_output_names(model: bytes) -> list[str]:
    """The names of a TFLite model's output tensors."""
    interpreter = _tflite_interpreter(model, keep_all=False)
    return [str(detail["name"]) for detail in interpreter.get_output_details()]


def onnx_output_names(model: bytes) -> list[str]:
    """The names of an ONNX model's outputs."""
    import onnx

    return [output.name for output in onnx.load_model_from_string(model).graph.output]


def _dequantized(interpreter: Any, detail: dict[str, Any]) -> npt.NDArray[np.float64]:
    value = np.asarray(interpreter.get_tensor(detail["index"]))
    if value.dtype in (np.int8, np.uint8, np.int16):
        params = detail["quantization_parameters"]
        scales = np.asarray(params["scales"], dtype=np.float64)
        zeros = np.asarray(params["zero_points"], dtype=np.float64)
        if scales.size == 1:
            result: npt.NDArray[np.float64] = (value.astype(np.float64) - zeros[0]) * scales[0]
            return result
        return np.full(value.shape, np.nan)  # per-channel activations: not compared
    return value.astype(np.float64)


def _set_input(interpreter: Any, sample: npt.NDArray[np.float32]) -> None:
    detail = interpreter.get_input_details()[0]
    value: npt.NDArray[Any] = sample
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        value = np.clip(np.round(sample / scale) + zero, info.min, info.max).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], value)


def tflite_tensor_errors(
    float_model: bytes, int8_model: bytes, samples: Iterable[npt.NDArray[np.float32]]
) -> tuple[TensorErrors, int]:
    """Per-tensor signal and noise of ``int8_model`` against ``float_model`` (and the image count).

    Tensors are matched by name; each int8 tensor is dequantised with its own
    scale and zero point.
    """
    reference = _tflite_interpreter(float_model, keep_all=True)
    target = _tflite_interpreter(int8_model, keep_all=True)
    produced_ref = {i for op in reference._get_ops_details() for i in op["outputs"]}
    by_name = {d["name"]: d for d in target.get_tensor_details() if d["name"]}
    pairs = [
        (d, by_name[d["name"]])
        for d in reference.get_tensor_details()
        if d["index"] in produced_ref and d["dtype"] == np.float32 and d["name"] in by_name
    ]
    input_detail = reference.get_input_details()[0]
    if input_detail["name"] in by_name:
        pairs.append((input_detail, by_name[input_detail["name"]]))
    if not pairs:
        raise QuantizationError("the int8 TFLite model shares no tensor name with the float one")
    errors: TensorErrors = {}
    images = 0
    for sample in samples:
        _set_input(reference, sample)
        reference.invoke()
        _set_input(target, sample)
        target.invoke()
        for ref_detail, got_detail in pairs:
            got = _dequantized(target, got_detail)
            if np.isnan(got).any():
                continue
            _accumulate(errors, ref_detail["name"], reference.get_tensor(ref_detail["index"]), got)
        images += 1
    return errors, images


# --- ONNX ---------------------------------------------------------------------------------


def onnx_ops(float_model: bytes) -> list[QuantOp]:
    """Every node of a float ONNX model (shape-inferred, e.g. pre-processed) with its MACs."""
    import onnx

    model = onnx.load_model_from_string(float_model)
    graph = model.graph
    constants = {init.name: list(init.dims) for init in graph.initializer}
    constants.update(
        {o: [] for node in graph.node if node.op_type == "Constant" for o in node.output}
    )
    shapes = {
        info.name: [d.dim_value if d.dim_value > 0 else 1 for d in info.type.tensor_type.shape.dim]
        for info in [*graph.value_info, *graph.output, *graph.input]
    }
    ops = []
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        inputs = tuple(name for name in node.input if name and name not in constants)
        macs = 0
        out_shape = shapes.get(node.output[0]) if node.output else None
        weights = constants.get(node.input[1]) if len(node.input) > 1 else None
        if out_shape and weights:
            out = int(np.prod(out_shape))
            if node.op_type == "Conv" and len(weights) == 4:
                macs = out * weights[1] * weights[2] * weights[3]
            elif node.op_type == "MatMul" and len(weights) == 2:
                macs = out * weights[0]
            elif node.op_type == "Gemm" and len(weights) == 2:
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                macs = out * weights[1 if trans_b else 0]
        ops.append(QuantOp(node.name, node.op_type, tuple(node.output), inputs, macs))
    return _fuse_activations(ops)


_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "Sigmoid", "HardSwish"}


def _fuse_activations(ops: list[QuantOp]) -> list[QuantOp]:
    """A Conv/MatMul/Gemm followed by its only reader, an activation, becomes one op (ONNX
    Runtime quantises the pair as one: no rounding between them)."""
    readers: dict[str, list[QuantOp]] = {}
    for op in ops:
        for name in op.inputs:
            readers.setdefault(name, []).append(op)
    fused: list[QuantOp] = []
    absorbed: set[str] = set()
    for op in ops:
        if op.name in absorbed:
            continue
        follower = readers.get(op.outputs[0], []) if len(op.outputs) == 1 else []
        if op.macs and len(follower) == 1 and follower[0].kind in _ACTIVATIONS:
            act = follower[0]
            absorbed.add(act.name)
            fused.append(
                QuantOp(
                    op.name,
                    f"{op.kind}+{act.kind}",
                    act.outputs,
                    op.inputs,
                    op.macs,
                    (op.name, act.name),
                )
            )
        else:
            fused.append(op)
    return fused


def _all_outputs_session(model: Any, wanted: Iterable[str]) -> tuple[Any, list[str]]:
    session, _ = onnx_probe(model, list(wanted))
    return session, [o.name for o in session.get_outputs()]


def onnx_tensor_errors(
    float_model: bytes, int8_model: bytes, samples: Iterable[npt.NDArray[np.float32]]
) -> tuple[TensorErrors, int]:
    """Per-tensor signal and noise of a QDQ ``int8_model`` against ``float_model``.

    A float tensor ``X`` that the int8 model quantises is compared through its
    dequantised copy (``X_DequantizeLinear_Output``, ONNX Runtime's name); one
    it does not is compared as the int8 model computes it.
    """
    import onnx

    reference = onnx.load_model_from_string(float_model)
    target = onnx.load_model_from_string(int8_model)
    float_types = {
        info.name
        for info in [*reference.graph.value_info, *reference.graph.output]
        if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    produced = [o for node in reference.graph.node for o in node.output if o in float_types]
    target_names = {o for node in target.graph.node for o in node.output}
    pairs: dict[str, str] = {}
    for name in produced:
        for candidate in (f"{name}_DequantizeLinear_Output", name):
            if candidate in target_names:
                pairs[name] = candidate
                break
    if not pairs:
        raise QuantizationError("the int8 ONNX model shares no tensor name with the float one")
    ref_session, ref_names = _all_outputs_session(reference, pairs)
    got_session, got_names = _all_outputs_session(target, pairs.values())
    input_name = reference.graph.input[0].name
    errors: TensorErrors = {}
    images = 0
    for sample in samples:
        ref_values = dict(
            zip(ref_names, ref_session.run(ref_names, {input_name: sample}), strict=True)
        )
        got_values = dict(
            zip(got_names, got_session.run(got_names, {input_name: sample}), strict=True)
        )
        for name, candidate in pairs.items():
            _accumulate(errors, name, ref_values[name], got_values[candidate])
        images += 1
    return errors, images


def _score_error(reference: npt.NDArray[np.float64], scores: npt.NDArray[np.float64]) -> float:
    return float(np.sum((scores - reference) ** 2))


def tflite_output_error(
    quantize: Callable[[list[str]], bytes],
    float_model: bytes,
    samples: Sequence[npt.NDArray[np.float32]],
) -> Callable[[list[str]], float]:
    """``excluded -> squared error of the output scores`` of the model ``quantize`` makes
    with those op scopes in float, against ``float_model``, on ``samples``."""
    reference = _tflite_scores(float_model, samples)

    def error(excluded: list[str]) -> float:
        return _score_error(reference, _tflite_scores(quantize(excluded), samples))

    return error


def _tflite_scores(
    model: bytes, samples: Sequence[npt.NDArray[np.float32]]
) -> npt.NDArray[np.float64]:
    from ai_edge_litert.interpreter import Interpreter

    # LiteRT's default delegate (XNNPACK), as the device runs the model: no tensor
    # needs keeping here, and it is 4-5x faster than the built-in kernels (measured on
    # MobileNetV2 1.0/224 int8: 32 invokes 0.10 s against 0.46 s)
    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]
    rows = []
    for sample in samples:
        _set_input(interpreter, sample)
        interpreter.invoke()
        rows.append(_dequantized(interpreter, output).ravel())
    return np.stack(rows)


def onnx_output_error(
    int8_model: bytes, float_model: bytes, samples: Sequence[npt.NDArray[np.float32]]
) -> Callable[[list[str]], float]:
    """``excluded nodes -> squared error of the output scores`` of the QDQ ``int8_model`` with
    those nodes computed in float, against ``float_model`` (pre-processed, the same node
    names), on ``samples``.

    Instead of quantising again for every candidate (seconds each), the QDQ graph
    is edited: an excluded node reads its float weights and bias again, and an
    edge between two excluded nodes skips its QuantizeLinear/DequantizeLinear,
    which is what ``nodes_to_exclude`` gives (the fallback itself re-quantises).
    """
    import onnx

    reference_model = onnx.load_model_from_string(float_model)
    target = onnx.load_model_from_string(int8_model)
    reference = _onnx_scores(reference_model, samples)
    float_nodes = {node.name: node for node in reference_model.graph.node}
    float_inits = {init.name: init for init in reference_model.graph.initializer}
    input_readers: dict[str, set[str]] = {
        graph_input.name: set() for graph_input in reference_model.graph.input
    }
    for node in reference_model.graph.node:
        for name in node.input:
            if name in input_readers:
                input_readers[name].add(node.name)

    def error(excluded: list[str]) -> float:
        model = onnx.ModelProto()
        model.CopyFrom(target)
        wanted = set(excluded)
        _restore_removed_activations(model, wanted, float_nodes, float_inits)
        produced_by_excluded = {
            out for node in model.graph.node if node.name in wanted for out in node.output
        }
        # a model input read only by excluded nodes is not quantised either
        produced_by_excluded |= {
            name for name, readers in input_readers.items() if readers and readers <= wanted
        }
        present = {init.name for init in model.graph.initializer}
        for node in model.graph.node:
            if node.name not in wanted or node.name not in float_nodes:
                continue
            original = float_nodes[node.name]
            for i, name in enumerate(original.input):
                if i >= len(node.input) or node.input[i] == name:
                    continue
                if name in float_inits:
                    node.input[i] = name
                    if name not in present:
                        model.graph.initializer.append(float_inits[name])
                        present.add(name)
                elif name in produced_by_excluded:
                    node.input[i] = name  # float edge: skip the Q/DQ pair
        return _score_error(reference, _onnx_scores(model, samples))

    return error


def _restore_removed_activations(
    model: Any, wanted: set[str], float_nodes: dict[str, Any], float_inits: dict[str, Any]
) -> None:
    """Put back the excluded Relu/Clip nodes that ONNX Runtime's QDQ quantiser removed.

    It drops an activation whose job the output's int8 range already does
    (a Clip(0, 6) before a [0, 6] range) and renames the producer's output to
    the activation's. Excluded, the activation would stay: so it is inserted
    again after its producer, and the producer's output gets its float name.
    """
    present = {node.name for node in model.graph.node}
    inits = {init.name for init in model.graph.initializer}
    for name in sorted(wanted - present):
        original = float_nodes.get(name)
        if original is None or not original.output or not original.input:
            continue
        position = next(
            (i for i, node in enumerate(model.graph.node) if original.output[0] in node.output),
            None,
        )
        if position is None:
            continue
        producer = model.graph.node[position]
        slot = list(producer.output).index(original.output[0])
        producer.output[slot] = original.input[0]
        restored = type(original)()
        restored.CopyFrom(original)
        nodes = list(model.graph.node)
        nodes.insert(position + 1, restored)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        for tensor in original.input[1:]:
            if tensor and tensor in float_inits and tensor not in inits:
                model.graph.initializer.append(float_inits[tensor])
                inits.add(tensor)


def _onnx_scores(model: Any, samples: Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float64]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    output = session.get_outputs()[0].name
    return np.stack(
        [np.asarray(session.run([output], {name: s})[0], dtype=np.float64).ravel() for s in samples]
    )
