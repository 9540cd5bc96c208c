"""The device loop for real: OpenCV-decoded video, real models, HTTP metrics, a real broker, hot swap."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier
from edge_runtime.config import parse_config
from edge_runtime.device import DeviceRuntime
from tests.media import make_bundle, write_video
from tests.models import slow_onnx_model


@pytest.fixture
def bundle_path(tmp_path: Path, tflite_model: bytes) -> Path:
    path = tmp_path / "tiny-1.0.0.efb"
    make_bundle(path, tflite_model)
    return path


def config_text(bundle: Path, source: str, extra: str = "") -> str:
    return f"device_id: cam-1\nbundle: {bundle}\nsource:\n{source}\nmetrics:\n  port: 0\n{extra}"


def test_video_file_every_frame_predicted_or_dropped(tmp_path: Path, bundle_path: Path) -> None:
    video = write_video(tmp_path / "conveyor.avi", frames=45)
    out = tmp_path / "predictions.jsonl"
    config = parse_config(
        config_text(
            bundle_path,
            f"  type: video\n  uri: {video}\n  realtime: false",
            f"outputs:\n  jsonl:\n    path: {out}\n",
        )
    )
    summary = DeviceRuntime(config).run(threading.Event())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.frames_captured == 45
    assert len(lines) == summary.stats.predictions > 0
    assert summary.stats.predictions + summary.frames_dropped == 45  # nothing lost silently
    ids = [line["frame_id"] for line in lines]
    assert ids == sorted(ids) and ids[-1] == 44  # the last frame is never lost
    bundle = read_bundle(bundle_path)
    assert {line["bundle_sha256"] for line in lines} == {bundle.sha256}
    assert all(line["latency_ms"] >= line["inference_ms"] > 0 for line in lines)


def test_metrics_and_health_over_http(tmp_path: Path, bundle_path: Path) -> None:
    config = parse_config(
        config_text(bundle_path, "  type: synthetic\n  fps: 50\n  width: 64\n  height: 48")
    )
    runtime = DeviceRuntime(config)
    stop = threading.Event()
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(summary=runtime.run(stop)))
    thread.start()
    try:
        assert runtime.status_server is not None
        deadline = time.monotonic() + 10
        while not runtime.status_server.running and time.monotonic() < deadline:
            time.sleep(0.05)
        url = runtime.status_server.url
        time.sleep(1.0)
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        samples = {
            sample.name: sample.labels
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if sample.labels.get("stage") in {None, "invoke"}
        }
        assert "edgefleet_stage_latency_seconds_count" in samples
        bundle = samples["edgefleet_active_bundle_info"]
        assert (bundle["name"], bundle["version"]) == ("tiny-classifier", "1.0.0")
        health = json.loads(urllib.request.urlopen(f"{url}/healthz", timeout=5).read())
        assert health["status"] == "ok"
        stats = json.dumps(json.loads(urllib.request.urlopen(f"{url}/stats", timeout=5).read()))
        assert '"device_id": "cam-1"' in stats and read_bundle(bundle_path).id in stats
    finally:
        stop.set()
        thread.join(timeout=10)
    summary = result["summary"]
    assert summary.stats.predictions > 5  # type: ignore[attr-defined]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/healthz", timeout=1)


@pytest.mark.broker
def test_predictions_and_availability_on_a_real_broker(mosquitto: int, bundle_path: Path) -> None:
    received: list[tuple[str, bytes, bool]] = []
    subscriber = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="test-subscriber"
    )
    subscriber.on_message = lambda _c, _u, msg: received.append(
        (msg.topic, msg.payload, msg.retain)
    )
    subscriber.connect("127.0.0.1", mosquitto)
    subscriber.subscribe("edgefleet/devices/cam-1/#", qos=1)
    subscriber.loop_start()
    try:
        config = parse_config(
            config_text(
                bundle_path,
                "  type: synthetic\n  fps: 30\n  width: 64\n  height: 48",
                f"mqtt:\n  port: {mosquitto}\noutputs:\n  mqtt:\n    qos: 1\n",
            )
        )
        runtime = DeviceRuntime(config)
        assert runtime.mqtt is not None
        stop = threading.Event()
        thread = threading.Thread(target=runtime.run, args=(stop,))
        thread.start()
        assert runtime.mqtt.wait_connected(10)
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and sum(t.endswith("/predictions") for t, _, _ in received) < 10
        ):
            time.sleep(0.1)
        stop.set()
        thread.join(timeout=10)
        time.sleep(0.5)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    predictions = [
        json.loads(p) for t, p, _ in received if t == "edgefleet/devices/cam-1/predictions"
    ]
    assert len(predictions) >= 10
    assert {p["device_id"] for p in predictions} == {"cam-1"}
    assert predictions[0]["bundle_sha256"] == read_bundle(bundle_path).sha256
    availability = [p for t, p, _ in received if t == "edgefleet/devices/cam-1/availability"]
    assert availability[0] == b"online" and availability[-1] == b"offline"


def test_hot_swap_between_frames(tmp_path: Path, tflite_model: bytes, onnx_model: bytes) -> None:
    v1 = make_bundle(tmp_path / "v1.efb", tflite_model, "tflite", "1.0.0")
    v2 = make_bundle(tmp_path / "v2.efb", onnx_model, "onnx", "2.0.0", softmax=True)
    out = tmp_path / "p.jsonl"
    config = parse_config(
        config_text(
            tmp_path / "v1.efb",
            "  type: synthetic\n  fps: 100\n  width: 64\n  height: 48",
            f"outputs:\n  jsonl:\n    path: {out}\n",
        )
    )
    runtime = DeviceRuntime(config)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.5)
        loaded = threading.Event()
        runtime.model.load_in_background(v2, on_done=lambda c, e: loaded.set())
        assert loaded.wait(10)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=10)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    versions = [line["bundle_version"] for line in lines]
    switch = versions.index("2.0.0")
    assert (
        switch > 0 and set(versions[:switch]) == {"1.0.0"} and set(versions[switch:]) == {"2.0.0"}
    )
    assert lines[switch]["bundle_sha256"] == v2.sha256
    # the frame after the last v1 answer is answered by v2: no gap beyond frames dropped by the camera
    ids = [line["frame_id"] for line in lines]
    assert ids == sorted(ids)
    assert runtime.model.swaps == 2  # the initial bundle, then v2
    assert Classifier(v1).bundle.sha256 == v1.sha256


def test_slow_model_drops_frames_instead_of_queueing(tmp_path: Path) -> None:
    slow = make_bundle(tmp_path / "slow.efb", slow_onnx_model(), "onnx", softmax=True)
    out = tmp_path / "p.jsonl"
    config = parse_config(
        config_text(
            tmp_path / "slow.efb",
            "  type: synthetic\n  fps: 30\n  width: 64\n  height: 48",
            f"outputs:\n  jsonl:\n    path: {out}\n",
        )
    )
    summary = DeviceRuntime(config).run(threading.Event(), duration_s=3.0)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    inference = np.median([line["inference_ms"] for line in lines])
    assert inference > 33, "the test model must be slower than the 30 fps camera"
    assert summary.frames_dropped > 0
    staleness = [line["latency_ms"] for line in lines]
    # no queue: answers at the end are not staler than at the start
    assert np.median(staleness[-5:]) < np.median(staleness[:5]) + inference
    assert slow.manifest.model.format == "onnx"
