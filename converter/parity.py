"""The parity figures: how far a converted model's answers are from the float model's.

Pure: arrays of class scores in, a :class:`QualityReport` out. The converter
feeds it scores that both models produced from the same frames through
``edge_runtime``'s preprocessing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_runtime.bundle import ClassQuality, DatasetRef, QualityReport
from edge_runtime.confidence_histogram import confidence_counts, confidence_shares

__all__ = ["compare_scores", "confusion_matrix"]

Scores = npt.NDArray[np.float32]


def confusion_matrix(
    y_true: npt.NDArray[np.int64], y_pred: npt.NDArray[np.int64], classes: int
) -> list[list[int]]:
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    rows: list[list[int]] = matrix.tolist()
    return rows


def _normalised(scores: Scores) -> npt.NDArray[np.float64]:
    clipped = np.clip(scores.astype(np.float64), 1e-12, None)
    result: npt.NDArray[np.float64] = clipped / clipped.sum(axis=1, keepdims=True)
    return result


def compare_scores(
    float_scores: Scores,
    scores: Scores,
    y_true: npt.NDArray[np.int64],
    labels: list[str],
    dataset: DatasetRef,
    *,
    max_accuracy_drop: float = 1.0,
    min_agreement: float = 0.98,
) -> QualityReport:
    """Accuracy, agreement, per-class figures, confusions and output divergence; gate verdict."""
    if float_scores.shape != scores.shape or len(scores) != len(y_true) or len(y_true) == 0:
        raise ValueError("float scores, converted scores and labels must be non-empty and aligned")
    classes = len(labels)
    float_pred = np.argmax(float_scores, axis=1)
    pred = np.argmax(scores, axis=1)
    float_acc = float(np.mean(float_pred == y_true))
    acc = float(np.mean(pred == y_true))
    agreement = float(np.mean(float_pred == pred))
    # in whole photos, so that a drop of exactly the limit (4 photos of 400 against 1.0
    # point) is not refused for the float rounding of (0.8025 - 0.7925) * 100
    drop = float(np.sum(float_pred == y_true) - np.sum(pred == y_true)) * 100.0 / len(y_true)
    dot = np.sum(float_scores * scores, axis=1)
    norms = np.linalg.norm(float_scores, axis=1) * np.linalg.norm(scores, axis=1)
    cosine = float(np.mean(np.where(norms > 0, dot / np.where(norms > 0, norms, 1), 0.0)))
    p, q = _normalised(float_scores), _normalised(scores)
    kl = float(np.mean(np.sum(p * np.log(p / q), axis=1)))
    per_class = []
    for k, label in enumerate(labels):
        mask = y_true == k
        support = int(mask.sum())
        per_class.append(
            ClassQuality(
                label=label,
                support=support,
                float_accuracy=float(np.mean(float_pred[mask] == k)) if support else None,
                accuracy=float(np.mean(pred[mask] == k)) if support else 0.0,
            )
        )
    distribution = np.bincount(pred, minlength=classes) / len(pred)
    top1 = np.max(scores, axis=1)
    histogram = confidence_shares(confidence_counts(float(c) for c in top1))
    return QualityReport(
        dataset=dataset,
        float_accuracy=float_acc,
        accuracy=acc,
        top1_agreement=agreement,
        accuracy_drop_points=round(drop, 4),
        cosine_similarity=min(1.0, max(0.0, cosine)),
        kl_divergence=max(0.0, kl),
        per_class=per_class,
        confusion_float=confusion_matrix(y_true, float_pred, classes),
        confusion=confusion_matrix(y_true, pred, classes),
        class_distribution=[float(v) for v in distribution],
        mean_confidence=float(np.mean(top1)),
        confidence_histogram=histogram,
        passed=drop <= max_accuracy_drop + 1e-9 and agreement >= min_agreement - 1e-12,
        thresholds={"max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement},
    )
