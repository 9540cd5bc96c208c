"""TFLite flatbuffers through LiteRT (``ai-edge-litert``), ``tflite-runtime`` or TensorFlow's ``tf.lite``.

All three expose the same ``Interpreter`` API; they differ only in the
package that provides it.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from edge_runtime.backends.base import Backend
from edge_runtime.bundle.manifest import Quantization, TensorSpec
from edge_runtime.errors import BackendError

__all__ = ["LiteRTBackend", "TFLiteRuntimeBackend", "TFLiteTensorFlowBackend"]


def _spec(detail: dict[str, Any]) -> TensorSpec:
    params = detail.get("quantization_parameters", {})
    scales = [float(s) for s in np.asarray(params.get("scales", []), dtype=np.float64).ravel()]
    zeros = [int(z) for z in np.asarray(params.get("zero_points", []), dtype=np.int64).ravel()]
    quant = None
    if scales and any(s > 0 for s in scales) and np.issubdtype(detail["dtype"], np.integer):
        axis = int(params.get("quantized_dimension", 0)) if len(scales) > 1 else None
        quant = Quantization(scale=scales, zero_point=zeros or [0] * len(scales), axis=axis)
    signature = detail.get("shape_signature")
    shape = [int(d) for d in (signature if signature is not None else detail["shape"])]
    return TensorSpec(
        name=str(detail["name"]),
        shape=shape,
        dtype=np.dtype(detail["dtype"]).name,
        quantization=quant,
    )


class _InterpreterBackend(Backend):
    formats: ClassVar[frozenset[str]] = frozenset({"tflite"})
    attribute: ClassVar[str] = "Interpreter"

    def __init__(self, model: bytes, threads: int = 1) -> None:
        try:
            interpreter_cls: Any = importlib.import_module(self.module)
            for attribute in self.attribute.split("."):
                interpreter_cls = getattr(interpreter_cls, attribute)
        except ImportError as exc:
            raise self.unavailable() from exc
        try:
            self._interpreter = interpreter_cls(model_content=model, num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"{self.name} cannot load the model: {exc}") from exc
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        self._input_index = int(inputs[0]["index"])
        self._output_indices = [int(d["index"]) for d in outputs]
        self.inputs = [_spec(d) for d in inputs]
        self.outputs = [_spec(d) for d in outputs]

    def invoke(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        try:
            self._interpreter.set_tensor(self._input_index, tensor)
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(i) for i in self._output_indices]
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"{self.name} failed to run the model: {exc}") from exc

    def close(self) -> None:
        self._interpreter = None


class LiteRTBackend(_InterpreterBackend):
    """Google's maintained TFLite runtime, ``ai_edge_litert.interpreter``."""

    name = "litert"
    package = "ai-edge-litert"
    module = "ai_edge_litert.interpreter"
    priority = 10


class TFLiteRuntimeBackend(_InterpreterBackend):
    """The legacy ``tflite_runtime`` wheel (2.14 is the last; it needs numpy < 2)."""

    name = "tflite-runtime"
    package = "tflite-runtime"
    module = "tflite_runtime.interpreter"
    priority = 20


class TFLiteTensorFlowBackend(_InterpreterBackend):
    """``tf.lite.Interpreter`` from full TensorFlow (workstations; never on a device install)."""

    name = "tf-lite"
    package = "tensorflow-cpu"
    module = "tensorflow"
    attribute = "lite.Interpreter"
    priority = 30
