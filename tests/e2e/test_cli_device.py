"""`edgefleet device classify` and `edgefleet device run` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from converter.synthetic import write_dataset
from tests.media import make_bundle, write_video

EDGEFLEET = [sys.executable, "-m", "edgefleet"]
ENV = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}


@pytest.fixture
def bundle_path(tmp_path: Path, tflite_model: bytes) -> Path:
    path = tmp_path / "tiny.efb"
    make_bundle(path, tflite_model)
    return path


def test_classify_image_folder_and_video(tmp_path: Path, bundle_path: Path) -> None:
    write_dataset(tmp_path / "data", per_class_train=2, per_class_val=0, size=64)
    (tmp_path / "data" / "train" / "glass" / "broken.png").write_bytes(b"not a png")
    result = subprocess.run(
        [
            *EDGEFLEET,
            "device",
            "classify",
            "--bundle",
            str(bundle_path),
            str(tmp_path / "data" / "train"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "12 frames with tiny-classifier 1.0.0 on litert" in result.stdout
    assert "accuracy" in result.stdout and "on 12 labelled images" in result.stdout
    assert "skipping" in result.stderr and "broken.png" in result.stderr

    image = tmp_path / "one.png"
    cv2.imwrite(
        str(image), cv2.imread(str(next((tmp_path / "data" / "train" / "metal").glob("*.png"))))
    )
    one = subprocess.run(
        [*EDGEFLEET, "device", "classify", "--json", "--bundle", str(bundle_path), str(image)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    record = json.loads(one.stdout)
    assert record["frame"] == "one.png" and len(record["top_k"]) == 3

    video = write_video(tmp_path / "v.avi", frames=10)
    lines = subprocess.run(
        [*EDGEFLEET, "device", "classify", "--json", "--bundle", str(bundle_path), str(video)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    ).stdout.splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [f"v.avi#{i}" for i in range(10)]


def test_classify_refuses_a_missing_bundle(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    result = subprocess.run(
        [
            *EDGEFLEET,
            "device",
            "classify",
            "--bundle",
            str(tmp_path / "none.efb"),
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 1 and "cannot read bundle" in result.stderr


def test_run_with_a_bad_config_names_field_and_line(tmp_path: Path) -> None:
    config = tmp_path / "device.yaml"
    config.write_text("device_id: cam-1\nsource:\n  type: synthetic\n  fsp: 10\n")
    result = subprocess.run(
        [*EDGEFLEET, "device", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 1
    assert "line 4: source.fsp: Extra inputs are not permitted" in result.stderr


def test_run_until_sigterm(tmp_path: Path, bundle_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    config = tmp_path / "device.yaml"
    config.write_text(
        f"device_id: cam-9\nbundle: {bundle_path}\nsource:\n  type: synthetic\n  fps: 20\n"
        f"outputs:\n  jsonl:\n    path: {out}\nmetrics:\n  port: 0\n"
    )
    process = subprocess.Popen(
        [*EDGEFLEET, "device", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not out.exists() or len(out.read_text().splitlines()) < 5
    ):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "received SIGTERM; stopping" in stderr
    assert "cam-9:" in stderr and "predictions in" in stderr
    assert all(json.loads(line)["device_id"] == "cam-9" for line in out.read_text().splitlines())
