"""The device config: the example parses; every mistake names its field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.config import load_config, parse_config
from edge_runtime.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "devices" / "config" / "device.example.yaml"

MINIMAL = """\
device_id: cam-1
source:
  type: synthetic
  fps: 10
"""


def test_example_config_parses() -> None:
    config = load_config(EXAMPLE)
    assert config.device_id == "line3-cam1"
    assert config.source.type == "video"
    assert config.mqtt is not None and config.mqtt.tls is not None
    assert config.outputs.jsonl is not None and config.metrics.port == 9108


def test_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.backend == "auto" and config.threads == 1
    assert config.mqtt is None and config.outputs.jsonl is None
    assert config.health.max_frame_age_s == 5.0


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (MINIMAL + "thread: 2\n", ["line 5", "thread", "Extra inputs are not permitted"]),
        (MINIMAL + "threads: many\n", ["line 5", "threads"]),
        (MINIMAL.replace("fps: 10", "fps: 10\n  colour: red"), ["line 5", "source.colour"]),
        (MINIMAL.replace("synthetic", "webcam"), ["line 2", "source", "webcam"]),
        (MINIMAL.replace("cam-1", "cam 1/../x"), ["line 1", "device_id"]),
        (MINIMAL + "metrics:\n  port: 99999\n", ["line 6", "metrics.port"]),
        ("device_id: [unclosed\n", ["line 1", "not valid YAML"]),
        ("- just\n- a list\n", ["YAML mapping"]),
        ("source:\n  type: synthetic\n", ["device_id", "Field required"]),
    ],
)
def test_errors_name_field_and_line(text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "device.yaml")
    message = str(caught.value)
    assert message.startswith("device.yaml")
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
