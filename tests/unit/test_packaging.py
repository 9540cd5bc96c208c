"""Packaging promises: a device install carries no TensorFlow and no server packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "tf2onnx",
    "tf-keras",
    "fastapi",
    "sqlalchemy",
    "amqtt",
}


def test_extras_are_declared_as_the_design_says() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) >= {"device", "device-litert", "convert", "server", "test", "all"}

    def expanded(name: str) -> str:
        """An extra's requirements with the project's own nested extras spelled out."""
        parts = []
        for requirement in extras[name]:
            if requirement.startswith("edgefleet["):
                nested = requirement[len("edgefleet[") : requirement.index("]")].split(",")
                parts.extend(expanded(n.strip()) for n in nested)
            else:
                parts.append(requirement)
        return " ".join(parts)

    device = expanded("device")
    assert "onnxruntime" not in expanded("device-litert")
    for needed in (
        "numpy",
        "opencv-python-headless",
        "ai-edge-litert",
        "onnxruntime",
        "paho-mqtt",
        "tuf",
        "pydantic",
        "pyyaml",
        "prometheus-client",
    ):
        assert needed in device, needed
    assert "tensorflow" not in device
    assert any(dep.startswith("tensorflow-cpu") for dep in extras["convert"])
    assert project["requires-python"] == ">=3.10"


@pytest.mark.slow
def test_device_install_resolves_without_tensorflow(tmp_path: Path) -> None:
    """Ask pip what `pip install '.[device]'` would install on a clean machine."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            f"{ROOT}[device]",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"ai-edge-litert", "onnxruntime", "opencv-python-headless", "paho-mqtt", "tuf"} <= names
    assert not names & HEAVY, sorted(names & HEAVY)
