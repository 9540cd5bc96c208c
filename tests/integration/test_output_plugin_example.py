"""How to test an output plug-in with edgefleet's test kit (shown verbatim in docs/testing.md).

The plug-in under test drives a sorter: each confident prediction opens the
gate of its bin, anything uncertain goes to the reject gate. In your project
it lives in your package, and your pyproject.toml declares it:

    [project.entry-points."edgefleet.outputs"]
    sorter = "my_sorter:GateSorter"

Here the class sits in this file, and the tests declare it with the kit's
``plugin_declarations`` fixture, so edgefleet finds it exactly as it finds an
installed plug-in. The ``bundles`` fixture stands for your own model bundles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.outputs import load_plugin
from edgefleet.testing import PluginDeclarations, RunningDevice, sample_prediction
from edgefleet.testing.fleet import LocalFleet
from fleet_server.records import TargetSelector
from fleet_server.rollout_spec import WaveSpec
from tests.media import make_bundle
from tests.models import tiny_onnx_model

GATES = {"cardboard": 1, "glass": 2, "metal": 3, "paper": 4, "plastic": 5, "trash": 6}
REJECT = 0


class GateSorter:
    """The plug-in under test: one gate number per prediction, to the line ``SORTER_LINE`` names."""

    def __init__(self) -> None:
        line = Path(os.environ["SORTER_LINE"])
        self._line = line.open("a", encoding="utf-8", buffering=1)

    def emit(self, prediction: dict[str, Any]) -> None:
        gate = REJECT if prediction["uncertain"] else GATES.get(prediction["label"], REJECT)
        self._line.write(f"{gate}\n")

    def close(self) -> None:
        self._line.close()


def gate_for(prediction: dict[str, Any]) -> int:
    """What the sorter must have done for ``prediction`` (a JSON-lines record)."""
    return REJECT if prediction["uncertain"] else GATES[prediction["label"]]


@pytest.fixture
def sorter_line(
    plugin_declarations: PluginDeclarations, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Declare the plug-in as ``sorter``; its gate line is a file the test reads."""
    plugin_declarations.declare("edgefleet.outputs", "sorter", f"{__name__}:GateSorter")
    line = tmp_path / "gates.txt"
    monkeypatch.setenv("SORTER_LINE", str(line))
    return line


@pytest.fixture
def bundles(tmp_path: Path) -> dict[str, Path]:
    """Two versions of a tiny real classifier (in your project: the bundles you ship)."""
    for version, seed in (("1.0.0", 7), ("2.0.0", 8)):
        model = tiny_onnx_model(scale=40.0, seed=seed)
        make_bundle(tmp_path / f"{version}.efb", model, "onnx", version, softmax=True)
    return {"v1": tmp_path / "1.0.0.efb", "v2": tmp_path / "2.0.0.efb"}


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# 1. The plug-in alone, loaded the way the device loads it.


def test_the_sorter_opens_the_gate_of_each_confident_label(sorter_line: Path) -> None:
    sink = load_plugin("sorter")  # what `outputs: {plugins: [sorter]}` makes the device do
    sink.emit(sample_prediction(label="glass"))
    sink.emit(sample_prediction(label="metal", confidence=0.31, uncertain=True))
    sink.emit(sample_prediction(label="paper"))
    sink.close()
    assert read_lines(sorter_line) == ["2", "0", "4"]


# 2. In a real device loop: a fake camera, a real model, every output.


def test_the_sorter_acts_on_every_prediction_of_a_device(
    sorter_line: Path, bundles: dict[str, Path], tmp_path: Path
) -> None:
    predictions = tmp_path / "predictions.jsonl"
    device = RunningDevice(
        {
            "device_id": "line-3",
            "bundle": bundles["v1"],
            "store": tmp_path / "store",
            "source": {"type": "fake-camera", "fps": 100, "frames": 60},  # then the camera ends
            "outputs": {"plugins": ["sorter"], "jsonl": {"path": predictions}},
            "metrics": {"enabled": False},
        }
    )
    summary = device.finish(timeout=60)
    assert summary.stats.predictions > 0 and summary.stats.output_errors == 0
    made = [json.loads(line) for line in read_lines(predictions)]
    assert len(made) == summary.stats.predictions
    assert read_lines(sorter_line) == [str(gate_for(p)) for p in made]  # one gate per prediction


# 3. On a local fleet: the sorter keeps sorting while the fleet server rolls out v2.


def test_the_sorter_keeps_sorting_through_a_rollout(
    sorter_line: Path, bundles: dict[str, Path], local_fleet: LocalFleet, tmp_path: Path
) -> None:
    v1 = local_fleet.release("v1", bundles["v1"])
    v2 = local_fleet.release("v2", bundles["v2"])
    local_fleet.provision("line-3", tags=["line3"])
    local_fleet.start()
    predictions = tmp_path / "predictions.jsonl"
    device = local_fleet.start_device(
        "line-3",
        bundle="v1",
        outputs={"plugins": ["sorter"], "jsonl": {"path": str(predictions)}},
        update={"probation_s": 1, "probation_min_predictions": 5, "smoke_latency_runs": 3},
    )
    local_fleet.wait_for(lambda: local_fleet.active() == {"line-3": v1.sha256})
    assert local_fleet.server is not None
    local_fleet.server.create_rollout(
        v2.sha256,
        TargetSelector.tags(["line3"]),
        [WaveSpec(percent=100)],
        previous_sha256=v1.sha256,
    )
    local_fleet.wait_for(lambda: local_fleet.active() == {"line-3": v2.sha256})
    device.wait_for(lambda: any(v2.sha256 in line for line in read_lines(predictions)))
    device.close()
    made = [json.loads(line) for line in read_lines(predictions)]
    assert {p["bundle_version"] for p in made} == {"1.0.0", "2.0.0"}
    assert read_lines(sorter_line) == [str(gate_for(p)) for p in made]
