"""A bundle made runnable: preprocessing, backend and postprocessing, with per-stage timings."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_runtime.backends import Backend, create_backend
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.bundle.model_bundle import Bundle
from edge_runtime.errors import BackendError, GoldenMismatchError
from edge_runtime.postprocess import Answer, Postprocessor
from edge_runtime.preprocess import Preprocessor

__all__ = ["Classification", "Classifier", "GoldenReport", "check_tensor_specs"]


@dataclass(frozen=True)
class Classification:
    """The answer for one frame and how long each stage took (milliseconds)."""

    answer: Answer
    scores: npt.NDArray[np.float32]
    preprocess_ms: float
    invoke_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        """Preprocess + invoke + postprocess."""
        return self.preprocess_ms + self.invoke_ms + self.postprocess_ms


@dataclass(frozen=True)
class GoldenReport:
    """Result of replaying a bundle's golden vectors: worst score error, top-1 agreement."""

    vectors: int
    max_abs_error: float
    top1_matches: int


def _same_spec(declared: TensorSpec, actual: TensorSpec) -> str | None:
    if declared.dtype != actual.dtype:
        return f"dtype {actual.dtype}, manifest says {declared.dtype}"
    if len(declared.shape) != len(actual.shape) or any(
        d != a and -1 not in (d, a) for d, a in zip(declared.shape, actual.shape, strict=True)
    ):
        return f"shape {actual.shape}, manifest says {declared.shape}"
    dq, aq = declared.quantization, actual.quantization
    if (dq is None) != (aq is None):
        return f"quantisation {aq}, manifest says {dq}"
    if (
        dq is not None
        and aq is not None
        and (
            dq.zero_point != aq.zero_point
            or not np.allclose(dq.scale, aq.scale, rtol=1e-6, atol=0.0)
        )
    ):
        return f"quantisation {aq.scale}/{aq.zero_point}, manifest says {dq.scale}/{dq.zero_point}"
    return None


def check_tensor_specs(bundle: Bundle, backend: Backend) -> None:
    """Raise :class:`BackendError` unless the runtime's tensors are the ones the manifest declares."""
    model = bundle.manifest.model
    for role, declared_list, actual_list in (
        ("input", model.inputs, backend.inputs),
        ("output", model.outputs, backend.outputs),
    ):
        if len(declared_list) != len(actual_list):
            raise BackendError(
                f"model has {len(actual_list)} {role}s, manifest declares {len(declared_list)}"
            )
        for declared, actual in zip(declared_list, actual_list, strict=True):
            problem = _same_spec(declared, actual)
            if problem is not None:
                raise BackendError(f"{role} {declared.name!r}: runtime reports {problem}")


class Classifier:
    """Runs one bundle on frames. Not thread-safe: one per thread, like the backend under it."""

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int = 1) -> None:
        manifest = bundle.manifest
        self.bundle = bundle
        self.backend = create_backend(backend, manifest.model.format, bundle.model_bytes, threads)
        check_tensor_specs(bundle, self.backend)
        self.preprocessor = Preprocessor(manifest.preprocessing, manifest.model.inputs[0])
        output = manifest.scores_output()
        self._output_index = manifest.model.outputs.index(output)
        self.postprocessor = Postprocessor(manifest.postprocessing, manifest.labels, output)

    def scores(self, frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Class scores for one BGR frame (dequantised; softmax applied per the contract)."""
        raw = self.backend.invoke(self.preprocessor(frame))[self._output_index]
        return self.postprocessor.scores(raw)

    def classify(self, frame: npt.NDArray[np.uint8]) -> Classification:
        """Classify one BGR frame, timing each stage."""
        t0 = time.perf_counter()
        tensor = self.preprocessor(frame)
        t1 = time.perf_counter()
        raw = self.backend.invoke(tensor)[self._output_index]
        t2 = time.perf_counter()
        scores = self.postprocessor.scores(raw)
        answer = self.postprocessor.answer(scores)
        t3 = time.perf_counter()
        return Classification(
            answer=answer,
            scores=scores,
            preprocess_ms=(t1 - t0) * 1e3,
            invoke_ms=(t2 - t1) * 1e3,
            postprocess_ms=(t3 - t2) * 1e3,
        )

    def replay_golden(self) -> GoldenReport:
        """Replay the bundle's golden vectors; raise :class:`GoldenMismatchError` on a miss."""
        golden = self.bundle.manifest.golden
        if golden is None:
            return GoldenReport(vectors=0, max_abs_error=0.0, top1_matches=0)
        worst = 0.0
        for index, (vector, frame) in enumerate(
            zip(golden.vectors, self.bundle.golden_frames(), strict=True)
        ):
            scores = self.scores(frame)
            expected = np.asarray(vector.expected, dtype=np.float32)
            if not np.all(np.isfinite(scores)):
                raise GoldenMismatchError(
                    f"golden vector {index} ({vector.input}): non-finite output"
                )
            error = float(np.max(np.abs(scores - expected)))
            worst = max(worst, error)
            if error > golden.atol:
                raise GoldenMismatchError(
                    f"golden vector {index} ({vector.input}): score error {error:.4g} "
                    f"exceeds tolerance {golden.atol:g}"
                )
            if int(np.argmax(scores)) != int(np.argmax(expected)):
                raise GoldenMismatchError(
                    f"golden vector {index} ({vector.input}): top-1 class differs"
                )
        return GoldenReport(
            vectors=len(golden.vectors), max_abs_error=worst, top1_matches=len(golden.vectors)
        )
