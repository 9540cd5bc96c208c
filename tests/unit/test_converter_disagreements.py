"""The disagreeing photos: the float model's runner-up, its margin, and near ties counted."""

from __future__ import annotations

import numpy as np

from converter.disagreements import (
    NEAR_TIE,
    find_disagreements,
    near_tie_count,
    top_two_margins,
)
from converter.parity import compare_scores
from converter.report import render_report
from edge_runtime.bundle import DatasetRef

LABELS = ["glass", "metal", "paper"]


def test_top_two_margins_and_near_ties() -> None:
    scores = np.array([[0.5, 0.49, 0.01], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]], np.float32)
    np.testing.assert_allclose(top_two_margins(scores), [0.01, 0.85, 0.2], atol=1e-6)
    assert near_tie_count(scores) == 1
    assert near_tie_count(scores, margin=0.25) == 2
    assert top_two_margins(np.ones((2, 1))).tolist() == [1.0, 1.0]  # one class: never a tie


def test_disagreements_carry_the_float_runner_up_and_the_report_counts_near_ties() -> None:
    float_scores = np.array(
        [[0.50, 0.49, 0.01], [0.10, 0.20, 0.70], [0.80, 0.15, 0.05], [0.2, 0.7, 0.1]], np.float32
    )
    # the converted model swaps the near tie (photo 0) and gets photo 2 wrong by a mile
    scores = np.array(
        [[0.48, 0.51, 0.01], [0.10, 0.20, 0.70], [0.30, 0.60, 0.10], [0.2, 0.7, 0.1]], np.float32
    )
    y_true = np.array([0, 2, 0, 1])
    frames = [np.full((20, 30, 3), 60 * i, np.uint8) for i in range(4)]
    rows = find_disagreements(frames, y_true, float_scores, scores, LABELS)
    assert [row.index for row in rows] == [0, 2]
    tie, far = rows
    assert tie.near_tie and tie.float_runner_up == "metal"
    assert abs(tie.float_margin - 0.01) < 1e-6 and tie.float_margin < NEAR_TIE
    assert not far.near_tie and far.float_runner_up == "metal"
    assert abs(far.float_margin - 0.65) < 1e-6
    assert tie.to_dict()["float_runner_up"] == "metal" and tie.to_dict()["float_margin"] == 0.01

    report = compare_scores(
        float_scores,
        scores,
        y_true,
        LABELS,
        DatasetRef(name="t", sha256="0" * 64, num_images=4),
        max_accuracy_drop=1.0,
        min_agreement=0.98,
    )
    page = render_report(
        report, "t", LABELS, disagreements=rows, float_near_ties=near_tie_count(float_scores)
    )
    assert "Photos the two models answer differently: 2" in page
    assert "1 of them are near ties" in page
    assert "The float model answers 1 of the 4 photos that closely" in page
    assert "(then metal, 1.0 points behind) <span class='worse'>near tie</span>" in page
    assert "(then metal, 65.0 points behind)<br>" in page
