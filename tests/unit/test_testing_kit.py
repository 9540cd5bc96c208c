"""The public test kit, edgefleet.testing: each part does what docs/testing.md says."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.config import parse_config
from edge_runtime.errors import SourceError, SourceUnavailableError
from edge_runtime.outputs import load_plugin
from edge_runtime.plugins import installed_names
from edge_runtime.sources import CaptureThread, ReconnectPolicy, create_source
from edgefleet.testing import (
    FakeCamera,
    FakeCameraConfig,
    FakeClock,
    PluginDeclarations,
    declared_plugins,
    sample_prediction,
    wait_for,
)
from edgefleet.testing.broker import LocalBroker, LocalBrokerError, free_port

# --- FakeClock ----------------------------------------------------------------------


def test_fake_clock_moves_only_when_told(fake_clock: FakeClock) -> None:
    assert fake_clock() == fake_clock.now == 1_800_000_000.0
    time.sleep(0.01)
    assert fake_clock() == 1_800_000_000.0
    assert fake_clock.advance(2.5) == 1_800_000_002.5
    fake_clock.sleep(0.5)
    assert fake_clock() == 1_800_000_003.0
    fake_clock.now = 10.0  # a jump back is explicit
    assert fake_clock() == 10.0
    with pytest.raises(ValueError, match="zero or more"):
        fake_clock.advance(-1)


# --- FakeCamera ---------------------------------------------------------------------


def test_fake_camera_frames_are_known_and_it_ends_after_its_count() -> None:
    camera = FakeCamera(FakeCameraConfig(width=5, height=3, frames=4))
    assert camera.finite and camera.native_fps is None
    with camera:
        frames = [camera.read() for _ in range(5)]
    assert frames[4] is None
    for k, frame in enumerate(frames[:4]):
        assert frame is not None and frame.shape == (3, 5, 3) and frame.dtype == np.uint8
        np.testing.assert_array_equal(frame, camera.frame(k))
    assert len({frame.tobytes() for frame in frames[:4] if frame is not None}) == 4
    assert camera.delivered == 4 and not camera.is_open


def test_fake_camera_colors_cycle() -> None:
    camera = FakeCamera(FakeCameraConfig(width=2, height=2, colors=[(0, 0, 255), (0, 255, 0)]))
    with camera:
        reds = [camera.read() for _ in range(3)]
    assert [tuple(int(c) for c in f[0, 0]) for f in reds if f is not None] == [
        (0, 0, 255),
        (0, 255, 0),
        (0, 0, 255),
    ]


def test_fake_camera_refuses_opens_then_drops_each_connection() -> None:
    camera = FakeCamera(FakeCameraConfig(refuse_opens=2, drop_after=3))
    for attempt in (1, 2):
        with pytest.raises(
            SourceUnavailableError, match=f"connection refused \\(attempt {attempt}\\)"
        ):
            camera.open()
    camera.open()
    assert all(camera.read() is not None for _ in range(3))
    with pytest.raises(SourceError, match="stream lost"):
        camera.read()
    with pytest.raises(SourceError, match="not open"):
        camera.read()
    camera.open()  # a reconnect gets a fresh connection; frame numbers go on
    first = camera.read()
    assert first is not None
    np.testing.assert_array_equal(first, camera.frame(3))
    assert len(camera.opens) == 4


def test_fake_camera_is_paced_at_its_fps() -> None:
    with FakeCamera(FakeCameraConfig(fps=50.0, frames=11)) as camera:
        start = time.monotonic()
        while camera.read() is not None:
            pass
    assert time.monotonic() - start >= 0.18  # the 11th frame is due 0.2 s after the first


def test_fake_camera_is_a_declared_source_a_device_config_names() -> None:
    assert "fake-camera" in installed_names("edgefleet.sources")
    config = parse_config(
        "device_id: cam-1\nsource:\n  type: fake-camera\n  width: 8\n  drop_after: 2\n"
    )
    source = create_source(config.source)
    assert isinstance(source, FakeCamera)
    assert source.config == FakeCameraConfig(width=8, drop_after=2)


def test_fake_camera_reconnects_through_the_real_capture_thread() -> None:
    camera = FakeCamera(FakeCameraConfig(width=4, height=4, refuse_opens=1, drop_after=5))
    capture = CaptureThread(
        camera, policy=ReconnectPolicy(initial_s=0.01, max_s=0.02, multiplier=2.0, jitter=0.0)
    )
    capture.start()
    try:
        wait_for(lambda: capture.produced >= 12, 5)
    finally:
        assert capture.stop(timeout=2)
    assert capture.reconnects >= 3  # one refusal, then a drop every 5 frames
    assert "fake camera 4x4" in str(capture.last_error)


# --- plug-in declarations and predictions ---------------------------------------------


def test_declared_plugins_are_found_only_while_active(tmp_path: Path) -> None:
    (tmp_path / "echo_out.py").write_text(
        "seen = []\ndef emit(prediction):\n    seen.append(prediction['label'])\n"
    )
    with declared_plugins(tmp_path, {"edgefleet.outputs": {"echo": "echo_out:emit"}}) as made:
        assert isinstance(made, PluginDeclarations)
        sink = load_plugin("echo")
        sink.emit(sample_prediction(label="metal"))
        assert sys.modules["echo_out"].seen == ["metal"]
    assert "echo" not in installed_names("edgefleet.outputs")
    assert "echo_out" not in sys.modules
    with pytest.raises(ValueError, match="module:attribute"):
        made.declare("edgefleet.outputs", "bad", "no colon")


def test_sample_prediction_is_a_real_prediction_with_overrides() -> None:
    prediction = sample_prediction(label="trash", confidence=0.4, uncertain=True)
    data = json.loads(prediction.to_json())
    assert (data["label"], data["confidence"], data["uncertain"]) == ("trash", 0.4, True)
    assert data["device_id"] == "cam-1" and len(data["bundle_sha256"]) == 64
    with pytest.raises(TypeError):
        sample_prediction(colour="red")


# --- brokers ------------------------------------------------------------------------


def round_trip(port: int) -> bytes:
    """Publish one retained message and read it back with a second client."""
    got: list[bytes] = []
    clients = []
    for name in ("kit-pub", "kit-sub"):
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=name)
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients.append(client)
    publisher, subscriber = clients
    try:
        publisher.publish("kit/probe", b"hello", qos=1, retain=True).wait_for_publish(5)
        subscriber.on_message = lambda _c, _u, msg: got.append(msg.payload)
        subscriber.subscribe("kit/probe", qos=1)
        wait_for(lambda: got, 5, message="no message came back")
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()
    return got[0]


@pytest.mark.broker
def test_embedded_broker_fixture_carries_messages(mqtt_broker: LocalBroker) -> None:
    assert mqtt_broker.kind == "amqtt" and mqtt_broker.running
    assert mqtt_broker.url == f"mqtt://127.0.0.1:{mqtt_broker.port}"
    assert round_trip(mqtt_broker.port) == b"hello"


@pytest.mark.broker
def test_mosquitto_stops_and_starts_on_the_same_port(mosquitto_broker: LocalBroker) -> None:
    port = mosquitto_broker.port
    assert round_trip(port) == b"hello"
    mosquitto_broker.stop()
    assert not mosquitto_broker.running
    with pytest.raises(OSError):
        mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2).connect("127.0.0.1", port)
    mosquitto_broker.start()
    assert mosquitto_broker.port == port
    assert round_trip(port) == b"hello"  # persistence off: a fresh broker, retained again


@pytest.mark.broker
def test_a_broker_on_a_taken_port_fails_clearly() -> None:
    port = free_port()
    with LocalBroker.amqtt(port) as first, pytest.raises(LocalBrokerError, match=str(port)):
        LocalBroker.amqtt(port=first.port)


# --- the documentation ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_docs_show_the_tested_output_plugin_example_verbatim() -> None:
    example = (ROOT / "tests" / "integration" / "test_output_plugin_example.py").read_text()
    assert f"```python\n{example}```" in (ROOT / "docs" / "testing.md").read_text()


def test_the_pytest_plugin_is_declared_for_pytest() -> None:
    assert "edgefleet" in installed_names("pytest11")  # how our own tests get fake_clock & co.
