"""Synthetic data, labelled folders and parity figures (pure parts of the converter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.dataset import LabelledFolder
from converter.errors import DatasetError
from converter.parity import compare_scores, confusion_matrix
from converter.synthetic import CLASSES, draw_frame, write_dataset
from edge_runtime.bundle import DatasetRef, QualityReport

REF = DatasetRef(name="t", sha256="0" * 64, num_images=4)


def test_frames_are_deterministic_and_class_dependent() -> None:
    a = draw_frame("glass", 3)
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, draw_frame("glass", 3))
    assert not np.array_equal(a, draw_frame("glass", 4))
    # paper is bright, the belt is dark: the class shows in simple statistics
    assert draw_frame("paper", 1).mean() > draw_frame("trash", 1).mean()
    with pytest.raises(DatasetError, match="unknown synthetic class 'wood'"):
        draw_frame("wood", 0)


def test_written_dataset_scans_and_balances(tmp_path: Path) -> None:
    written = write_dataset(tmp_path, per_class_train=3, per_class_val=2, size=32)
    assert (written.train, written.val) == (18, 12)
    train = LabelledFolder.scan(tmp_path / "train")
    assert train.labels == list(CLASSES)
    assert len(train.items) == 18
    subset = train.balanced(7)
    counts = np.bincount([label for _, label in subset.items], minlength=6)
    assert counts.sum() == 7 and counts.max() - counts.min() <= 1
    assert train.sha256() == LabelledFolder.scan(tmp_path / "train").sha256()
    val = LabelledFolder.scan(tmp_path / "val", labels=list(CLASSES))
    assert val.sha256() != train.sha256()


def test_folder_errors_name_the_problem(tmp_path: Path) -> None:
    write_dataset(tmp_path, per_class_train=1, per_class_val=0, size=16)
    with pytest.raises(DatasetError, match=r"missing \['wood'\]; unexpected \['trash'\]"):
        LabelledFolder.scan(tmp_path / "train", labels=[*CLASSES[:5], "wood"])
    with pytest.raises(DatasetError, match="holds no images"):
        LabelledFolder.scan(tmp_path / "val")
    with pytest.raises(DatasetError, match="not a folder"):
        LabelledFolder.scan(tmp_path / "absent")


def test_undecodable_images_are_skipped_and_counted_or_fatal(tmp_path: Path) -> None:
    write_dataset(tmp_path, per_class_train=2, per_class_val=0, size=16)
    (tmp_path / "train" / "glass" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    folder = LabelledFolder.scan(tmp_path / "train")
    frames = list(folder.frames())
    assert len(frames) == 12 and [p.name for p in folder.skipped] == ["broken.jpg"]
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        list(LabelledFolder.scan(tmp_path / "train").frames(strict=True))


def test_parity_figures() -> None:
    y = np.array([0, 1, 1, 2])
    float_scores = np.eye(3, dtype=np.float32)[[0, 1, 1, 2]]
    converted = float_scores.copy()
    converted[2] = [0.1, 0.3, 0.6]  # one answer changes, from right to wrong
    report = compare_scores(float_scores, converted, y, ["a", "b", "c"], REF, max_accuracy_drop=1.0)
    assert report.float_accuracy == 1.0 and report.accuracy == 0.75
    assert report.top1_agreement == 0.75 and report.accuracy_drop_points == 25.0
    assert report.passed is False
    assert report.per_class[1].accuracy == 0.5 and report.per_class[1].support == 2
    assert report.confusion == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert report.confusion_float == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert report.class_distribution == [0.25, 0.25, 0.5]
    assert report.kl_divergence > 0 and 0 < report.cosine_similarity < 1
    same = compare_scores(float_scores, float_scores, y, ["a", "b", "c"], REF)
    assert same.passed and same.kl_divergence == pytest.approx(0, abs=1e-9)
    assert same.cosine_similarity == pytest.approx(1.0)


def test_a_drop_of_exactly_the_limit_passes_and_one_photo_more_does_not() -> None:
    # 400 photos, float right on 321 (0.8025): 4 photos fewer is exactly 1.00 point, which
    # (0.8025 - 0.7925) * 100 makes 1.0000000000000009 in floating point
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    float_pred = y.copy()
    float_pred[:79] = (y[:79] + 1) % 3  # 321 right
    float_scores = np.eye(3, dtype=np.float32)[float_pred]

    def converted_with(extra_wrong: int) -> QualityReport:
        pred = float_pred.copy()
        pred[100 : 100 + extra_wrong] = (y[100 : 100 + extra_wrong] + 1) % 3
        scores = np.eye(3, dtype=np.float32)[pred]
        return compare_scores(
            float_scores, scores, y, ["a", "b", "c"], REF, min_agreement=0.9, max_accuracy_drop=1.0
        )

    exact = converted_with(4)
    assert exact.accuracy_drop_points == 1.0 and exact.passed
    over = converted_with(5)
    assert over.accuracy_drop_points == 1.25 and not over.passed


def test_confusion_matrix_counts() -> None:
    assert confusion_matrix(np.array([0, 0, 1]), np.array([1, 0, 1]), 2) == [[1, 1], [0, 1]]
