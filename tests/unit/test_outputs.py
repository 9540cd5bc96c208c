"""Outputs: the prediction record, JSON lines, and plug-ins found through real entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.errors import OutputError
from edge_runtime.outputs import JsonLinesSink, MqttPredictionSink, load_plugin
from edge_runtime.prediction import Prediction
from edgefleet.testing import PluginDeclarations


def prediction(frame_id: int = 7) -> Prediction:
    return Prediction(
        device_id="cam-1",
        frame_id=frame_id,
        captured_at=1_800_000_000.5,
        label="glass",
        confidence=0.912345678,
        top_k=[("glass", 0.912345678), ("plastic", 0.05)],
        uncertain=False,
        latency_ms=12.34567,
        inference_ms=8.5,
        bundle_name="m",
        bundle_version="1.0.0",
        bundle_sha256="ab" * 32,
    )


def test_prediction_json_has_every_field() -> None:
    data = json.loads(prediction().to_json())
    assert data["frame_id"] == 7 and data["captured_at"] == 1_800_000_000.5
    assert data["label"] == "glass" and data["confidence"] == 0.912346
    assert data["top_k"] == [
        {"label": "glass", "score": 0.912346},
        {"label": "plastic", "score": 0.05},
    ]
    assert data["latency_ms"] == 12.346 and data["bundle_version"] == "1.0.0"
    assert data["bundle_sha256"] == "ab" * 32 and data["device_id"] == "cam-1"


def test_json_lines_file_appends(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    for i in range(2):
        sink = JsonLinesSink(str(path))
        sink.emit(prediction(i))
        sink.close()
    assert [json.loads(line)["frame_id"] for line in path.read_text().splitlines()] == [0, 1]
    with pytest.raises(OutputError, match="cannot open"):
        JsonLinesSink(str(tmp_path / "no" / "such" / "dir.jsonl"))


class RecordingPublisher:
    """A real implementation of the Publisher protocol that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos))


def test_mqtt_sink_thins_by_every_n() -> None:
    publisher = RecordingPublisher()
    sink = MqttPredictionSink(publisher, "edgefleet/devices/cam-1/predictions", qos=1, every_n=3)
    for i in range(7):
        sink.emit(prediction(i))
    assert [json.loads(p)["frame_id"] for _, p, _ in publisher.sent] == [0, 3, 6]
    assert {t for t, _, _ in publisher.sent} == {"edgefleet/devices/cam-1/predictions"}


@pytest.fixture
def installed_plugin(
    plugin_declarations: PluginDeclarations, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A real distribution on sys.path that declares edgefleet.outputs entry points (the test kit's)."""
    (plugin_declarations.folder / "sorter_plugin.py").write_text(
        "import json, os\n"
        "class Sorter:\n"
        "    def __init__(self):\n"
        "        self.path = os.environ['SORTER_LOG']\n"
        "    def emit(self, prediction):\n"
        "        open(self.path, 'a').write(prediction['label'] + '\\n')\n"
        "def broken():\n"
        "    pass\n"
    )
    plugin_declarations.declare("edgefleet.outputs", "sorter", "sorter_plugin:Sorter")
    plugin_declarations.declare("edgefleet.outputs", "missing", "sorter_plugin:nothing_here")
    log = tmp_path / "sorter.log"
    monkeypatch.setenv("SORTER_LOG", str(log))
    return log


def test_plugin_is_loaded_by_entry_point_name(installed_plugin: Path) -> None:
    sink = load_plugin("sorter")
    sink.emit(prediction())
    sink.emit(prediction())
    assert installed_plugin.read_text() == "glass\nglass\n"
    with pytest.raises(
        OutputError, match=r"no output plug-in named 'conveyor'.*installed: .*sorter"
    ):
        load_plugin("conveyor")
    with pytest.raises(OutputError, match="'missing' cannot be loaded"):
        load_plugin("missing")


def test_non_finite_numbers_become_null_instead_of_breaking_the_output() -> None:
    broken = Prediction(
        device_id="cam-1",
        frame_id=1,
        captured_at=1.0,
        label="uncertain",
        confidence=float("nan"),
        top_k=[("glass", float("nan"))],
        uncertain=True,
        latency_ms=1.0,
        inference_ms=float("inf"),
        bundle_name="m",
        bundle_version="1.0.0",
        bundle_sha256="ab" * 32,
    )
    data = json.loads(broken.to_json())
    assert (
        data["confidence"] is None
        and data["top_k"][0]["score"] is None
        and data["inference_ms"] is None
    )
