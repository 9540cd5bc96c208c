"""Float models run with their intermediate tensors readable, for the passes that gather
per-channel statistics before calibration (bias correction, AdaRound, equalisation) and for
the sensitivity analysis."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["onnx_probe", "tflite_probe"]


def tflite_probe(model: bytes, *, keep_all: bool = True) -> Any:
    """A LiteRT interpreter (allocated, 1 thread, built-in kernels) that keeps every
    intermediate tensor readable after ``invoke`` when ``keep_all``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging"
        interpreter = Interpreter(
            model_content=model,
            experimental_preserve_all_tensors=keep_all,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            num_threads=1,
        )
    interpreter.allocate_tensors()
    return interpreter


def onnx_probe(model: Any, wanted: list[str], *, threads: int = 1) -> tuple[Any, str]:
    """An ONNX Runtime session of ``model`` (a ``ModelProto``, left unchanged) that also
    outputs the float tensors ``wanted`` (no graph optimisation, ``threads`` threads; 0:
    ONNX Runtime's default), and the name of the model's input."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in wanted:
        if name not in existing:
            probe.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # an int8 model's QDQ pairs warn; nothing to act on
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session, str(model.graph.input[0].name)
