"""The parity photos on which the converted model's answer differs from the float model's.

These are what an engineer looks at first, so the report shows each one: a
small thumbnail (JPEG, embedded as a data URI: the report stays one
self-contained file), the true class, and both answers with their
confidences.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["Disagreement", "find_disagreements", "thumbnail_data_uri"]

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly row, without the thumbnail."""
        return {
            "index": self.index,
            "true": self.true_label,
            "float": self.float_label,
            "float_confidence": round(self.float_confidence, 4),
            "converted": self.label,
            "confidence": round(self.confidence, 4),
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
            )
        )
    return rows
