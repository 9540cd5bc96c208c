"""`edgefleet demo --fast` as a user runs it: every step it claims happens, and its bundle is real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier


@pytest.mark.slow
def test_fast_demo_runs_the_path_that_exists(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    (workdir / "stale").mkdir(parents=True)  # a previous run's leftovers are cleaned
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet", "demo", "--fast", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "issue #8 and not built yet" in out  # it says plainly what it is not
    assert "gate passed" in out
    assert "golden vectors reproduced on litert" in out
    assert "refused: tampered.efb: member 'model.tflite' has sha256" in out
    assert not (workdir / "stale").exists()

    bundle = read_bundle(workdir / "conveyor-demo-1.0.0.efb")
    quality = bundle.manifest.quality
    assert quality is not None and quality.dataset.num_images == 72
    assert quality.accuracy > 0.6  # trained, not chance (1/6)
    assert quality.top1_agreement == 1.0  # fp32 TFLite agrees with Keras
    assert bundle.manifest.golden is not None and len(bundle.manifest.golden.vectors) == 4
    assert Classifier(bundle).replay_golden().vectors == 4
