"""Telemetry over a real broker: a running device publishes snapshots the fleet server's reader accepts."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.config import parse_config
from edge_runtime.device import DeviceRuntime
from fleet_server.reports import parse_telemetry
from fleet_server.telemetry import device_figures, read_sample
from tests.media import make_bundle
from tests.models import LABELS, tiny_onnx_model


@pytest.mark.broker
def test_device_publishes_telemetry_the_server_reads(mosquitto: int, tmp_path: Path) -> None:
    bundle_path = tmp_path / "tiny-1.0.0.efb"
    bundle = make_bundle(bundle_path, tiny_onnx_model(), "onnx", "1.0.0", True)
    received: list[tuple[str, bytes, int, bool]] = []
    arrived = threading.Condition()

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with arrived:
            received.append((message.topic, message.payload, message.qos, message.retain))
            arrived.notify_all()

    subscriber = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="telemetry-reader"
    )
    subscriber.on_message = on_message
    subscriber.connect("127.0.0.1", mosquitto)
    subscriber.subscribe("edgefleet/devices/cam-1/telemetry", qos=1)
    subscriber.loop_start()
    config = parse_config(
        f"device_id: cam-1\nbundle: {bundle_path}\n"
        "source:\n  type: synthetic\n  fps: 30\n  width: 64\n  height: 48\n"
        f"metrics:\n  enabled: false\nmqtt:\n  port: {mosquitto}\n  telemetry_interval_s: 0.5\n"
    )
    runtime = DeviceRuntime(config)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,))
    thread.start()
    try:
        assert runtime.mqtt is not None and runtime.mqtt.wait_connected(10)
        with arrived:
            assert arrived.wait_for(lambda: len(received) >= 3, timeout=6), received
    finally:
        stop.set()
        thread.join(timeout=10)
        subscriber.loop_stop()
        subscriber.disconnect()
    assert not thread.is_alive()
    assert runtime.telemetry is not None and not runtime.telemetry.running

    assert all(qos == 0 and not retain for _, _, qos, retain in received)
    samples = []
    for index, (_, payload, _, _) in enumerate(received):
        snapshot = parse_telemetry(json.loads(payload), "cam-1")
        assert snapshot["bundle"] == bundle.sha256 and snapshot["protocol"] == 1
        samples.append(read_sample(snapshot, at=float(index)))
    last = samples[-1]
    assert last.frames is not None and last.frames > 0
    assert last.fps is not None and last.fps > 0
    assert last.latency_p95_ms is not None and last.latency_p95_ms > 0
    assert last.mean_confidence is not None and 0 < last.mean_confidence <= 1
    assert last.class_counts and set(last.class_counts) <= {*LABELS, "uncertain"}
    # one bundle served all along: its class counts match the frame counter (read a moment apart)
    assert abs(sum(last.class_counts.values()) - last.frames) <= 3
    figures = device_figures(samples)
    assert figures.predictions > 0 and sum(figures.class_counts.values()) > 0
