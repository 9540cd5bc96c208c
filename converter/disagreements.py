"""The parity photos on which the converted model's answer differs from the float model's.

These are what an engineer looks at first, so the report shows each one: a
small thumbnail (JPEG, embedded as a data URI: the report stays one
self-contained file), the true class, and both answers with their
confidences, with the float model's runner-up: a photo on which the float
model's top two answers are within ``NEAR_TIE`` is a near tie, which any
rounding may swap (the report counts them, in the disagreements and in the
whole parity set).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "NEAR_TIE",
    "Disagreement",
    "find_disagreements",
    "near_tie_count",
    "thumbnail_data_uri",
    "top_two_margins",
]

NEAR_TIE = 0.02
"""Top-two score margin (as a fraction, 0.02 = 2 points) under which the float model's answer
is a near tie."""

THUMBNAIL_SIDE = 112
"""Longest side of a thumbnail, in pixels."""


@dataclass(frozen=True)
class Disagreement:
    """One photo the two models answer differently."""

    index: int
    """Position in the parity set (sorted file order)."""
    true_label: str
    float_label: str
    float_confidence: float
    label: str
    confidence: float
    thumbnail: str
    """``data:image/jpeg;base64,...`` (empty when not rendered)."""
    float_runner_up: str = ""
    """The float model's second answer."""
    float_margin: float = 1.0
    """The float model's top score minus its second."""

    @property
    def near_tie(self) -> bool:
        """Whether the float model's own answer was a near tie (top two within ``NEAR_TIE``)."""
        return self.float_margin < NEAR_TIE

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly row, without the thumbnail."""
        return {
            "index": self.index,
            "true": self.true_label,
            "float": self.float_label,
            "float_confidence": round(self.float_confidence, 4),
            "converted": self.label,
            "confidence": round(self.confidence, 4),
            "float_runner_up": self.float_runner_up,
            "float_margin": round(self.float_margin, 4),
        }


def thumbnail_data_uri(frame: npt.NDArray[np.uint8], side: int = THUMBNAIL_SIDE) -> str:
    """A BGR frame as a small JPEG data URI (longest side ``side`` pixels)."""
    height, width = frame.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frame = np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def top_two_margins(scores: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Each row's top score minus its second (1.0 for a single-class row)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        return np.ones(len(values), dtype=np.float64)
    top_two = np.sort(values, axis=1)[:, -2:]
    margins: npt.NDArray[np.float64] = top_two[:, 1] - top_two[:, 0]
    return margins


def near_tie_count(scores: npt.NDArray[np.floating[Any]], margin: float = NEAR_TIE) -> int:
    """How many rows have their top two scores within ``margin``."""
    return int(np.count_nonzero(top_two_margins(scores) < margin))


def find_disagreements(  # noqa: PLR0917 - aligned arrays, in the order compare_scores takes them
    frames: list[npt.NDArray[np.uint8]],
    y_true: npt.NDArray[np.int64],
    float_scores: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    labels: list[str],
    limit: int = 60,
) -> list[Disagreement]:
    """Every photo whose top-1 answers differ, in parity order; thumbnails for the first ``limit``."""
    if not (len(frames) == len(y_true) == len(float_scores) == len(scores)):
        raise ValueError("frames, labels and both score arrays must be aligned")
    float_pred = np.argmax(float_scores, axis=1)
    pred = np.argmax(scores, axis=1)
    margins = top_two_margins(float_scores)
    runner_up = np.argsort(float_scores, axis=1)[:, -2] if float_scores.shape[1] > 1 else float_pred
    rows = []
    for count, index in enumerate(np.flatnonzero(float_pred != pred)):
        i = int(index)
        rows.append(
            Disagreement(
                index=i,
                true_label=labels[int(y_true[i])],
                float_label=labels[int(float_pred[i])],
                float_confidence=float(float_scores[i, float_pred[i]]),
                label=labels[int(pred[i])],
                confidence=float(scores[i, pred[i]]),
                thumbnail=thumbnail_data_uri(frames[i]) if count < limit else "",
                float_runner_up=labels[int(runner_up[i])],
                float_margin=float(margins[i]),
            )
        )
    return rows
