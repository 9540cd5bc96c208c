"""ONNX models through ONNX Runtime's CPU execution provider."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from edge_runtime.backends.base import Backend
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.errors import BackendError

__all__ = ["OnnxRuntimeBackend"]

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _spec(arg: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise BackendError(f"onnxruntime: tensor {arg.name!r} has unsupported type {arg.type}")
    return TensorSpec(name=arg.name, shape=shape, dtype=dtype)


class OnnxRuntimeBackend(Backend):
    """``onnxruntime.InferenceSession`` with a fixed intra-op thread count."""

    name = "onnxruntime"
    package = "onnxruntime"
    module = "onnxruntime"
    formats: ClassVar[frozenset[str]] = frozenset({"onnx"})
    priority = 10

    def __init__(self, model: bytes, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise self.unavailable() from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise BackendError(f"onnxruntime cannot load the model: {exc}") from exc
        self.inputs = [_spec(arg) for arg in self._session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self._session.get_outputs()]
        self._input_name = self.inputs[0].name
        self._output_names = [spec.name for spec in self.outputs]

    def invoke(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        try:
            results = self._session.run(self._output_names, {self._input_name: tensor})
        except Exception as exc:
            raise BackendError(f"onnxruntime failed to run the model: {exc}") from exc
        return [np.asarray(r) for r in results]
