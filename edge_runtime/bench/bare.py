"""The reference loop: the runtime's own invoke on one fixed, already preprocessed tensor.

It is built straight from the runtime package (``Interpreter.invoke`` after a
single ``set_tensor``; ``InferenceSession.run`` on a fixed feed), without any
edgefleet code in the timed call, with the same thread count and session
options as the backend under test. Whatever our pipeline's invoke stage
costs beyond it is our overhead.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.backends import backend_class
from edge_runtime.errors import BackendError, BackendUnavailableError

__all__ = ["BareInvoke"]


class BareInvoke:
    """Times one bare runtime invoke at a time; also says whether XNNPACK is applied."""

    def __init__(
        self, backend: str, model: bytes, threads: int, tensor: npt.NDArray[np.generic]
    ) -> None:
        cls: Any = backend_class(backend)
        self.backend = backend
        self.xnnpack: bool | None = None
        self._tensor = tensor
        if "onnx" in cls.formats:
            self._call = self._onnx(model, threads, tensor)
        else:
            self._call = self._tflite(cls, model, threads, tensor)

    def _tflite(self, cls: Any, model: bytes, threads: int, tensor: npt.NDArray[np.generic]) -> Any:
        try:
            namespace: Any = importlib.import_module(cls.module)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"{self.backend}: {cls.package} is not installed"
            ) from exc
        for attribute in str(cls.attribute).split("."):
            namespace = getattr(namespace, attribute)
        interpreter = namespace(model_content=model, num_threads=threads)
        interpreter.allocate_tensors()
        interpreter.set_tensor(int(interpreter.get_input_details()[0]["index"]), tensor)
        try:
            ops = interpreter._get_ops_details()
            # the default delegate (XNNPACK) shows up as DELEGATE nodes in the execution plan
            self.xnnpack = any(op.get("op_name") == "DELEGATE" for op in ops)
        except (AttributeError, RuntimeError, ValueError):
            self.xnnpack = None
        self._interpreter = interpreter
        return interpreter.invoke

    def _onnx(self, model: bytes, threads: int, tensor: npt.NDArray[np.generic]) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError("onnxruntime is not installed") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendError(f"onnxruntime cannot load the model: {exc}") from exc
        feed = {session.get_inputs()[0].name: tensor}
        outputs = [o.name for o in session.get_outputs()]
        self._session = session

        def run() -> None:
            session.run(outputs, feed)

        return run

    def once(self) -> float:
        """One invoke; milliseconds."""
        started = time.perf_counter()
        self._call()
        return (time.perf_counter() - started) * 1e3
