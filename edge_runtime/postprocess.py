"""Raw model outputs -> class scores -> an answer (label, confidence, top-k, or 'uncertain')."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_runtime.bundle.manifest import Postprocessing, TensorSpec

__all__ = ["Answer", "Postprocessor", "dequantize", "softmax"]


def dequantize(raw: npt.NDArray[np.generic], spec: TensorSpec) -> npt.NDArray[np.float32]:
    """Float32 values of an output tensor (``scale * (q - zero_point)`` for a quantised one)."""
    values = np.asarray(raw, dtype=np.float32)
    quant = spec.quantization
    if quant is not None and len(quant.scale) == 1:
        values = (values - np.float32(quant.zero_point[0])) * np.float32(quant.scale[0])
    return values


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: npt.NDArray[np.float32] = exp / exp.sum(axis=-1, keepdims=True)
    return result


@dataclass(frozen=True)
class Answer:
    """What the classifier says about one frame."""

    label: str
    """The top class, or the uncertain label when its score is under the threshold."""
    confidence: float
    top_k: list[tuple[str, float]]
    uncertain: bool


class Postprocessor:
    """Applies the bundle's postprocessing contract to the scores output."""

    def __init__(self, contract: Postprocessing, labels: list[str], output: TensorSpec) -> None:
        self.contract = contract
        self.labels = labels
        self.output = output
        self._k = min(contract.top_k, len(labels))

    def scores(self, raw: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        """Class scores (one per label) for a single frame's raw output."""
        values = dequantize(raw, self.output).reshape(-1)
        if self.contract.apply_softmax:
            values = softmax(values)
        return values

    def answer(self, scores: npt.NDArray[np.float32]) -> Answer:
        """Label, confidence and top-k from class scores."""
        order = np.argsort(-scores, kind="stable")[: self._k]
        top = [(self.labels[i], float(scores[i])) for i in order]
        label, confidence = top[0]
        uncertain = not np.isfinite(confidence) or confidence < self.contract.confidence_threshold
        if uncertain:
            label = self.contract.uncertain_label
        return Answer(label=label, confidence=confidence, top_k=top, uncertain=uncertain)
