"""A device on the line: outputs that hang or die, several cameras in one process, OPC UA, real HTTP clients."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from asyncua.client.client import Client
from prometheus_client.parser import text_string_to_metric_families

from edgefleet.testing import PluginDeclarations, RunningDevice, json_lines
from tests.media import make_bundle
from tests.models import slow_onnx_model

RELEASE = threading.Event()
"""Opens the hung plug-in's gate at the end of a test (so its thread ends)."""


class HangingSorter:
    """An output plug-in whose PLC stops answering: every emit blocks until the test ends."""

    def emit(self, prediction: dict[str, Any]) -> None:
        RELEASE.wait()


class ExitingSorter:
    """An output plug-in that calls sys.exit on its first prediction (its thread dies)."""

    def emit(self, prediction: dict[str, Any]) -> None:
        raise SystemExit("sorter driver gave up")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def url_of(device: RunningDevice) -> str:
    """The device's status endpoint, once it serves."""
    server = device.runtime.status_server
    assert server is not None
    device.wait_for(lambda: server.running)
    return server.url


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def lines(path: Path) -> list[dict[str, Any]]:
    return json_lines(path)  # the device may be half-way through writing the last line


@pytest.fixture
def sorters(plugin_declarations: PluginDeclarations) -> None:
    plugin_declarations.declare("edgefleet.outputs", "hanging", f"{__name__}:HangingSorter")
    plugin_declarations.declare("edgefleet.outputs", "exiting", f"{__name__}:ExitingSorter")
    RELEASE.clear()


@pytest.fixture
def bundle(tmp_path: Path, onnx_model: bytes) -> Path:
    path = tmp_path / "tiny.efb"
    make_bundle(path, onnx_model, "onnx", softmax=True)
    return path


def test_a_hung_sorter_never_stalls_classification_and_shows_in_metrics_and_healthz(
    sorters: None, bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "p.jsonl"
    device = RunningDevice(
        {
            "device_id": "line-3",
            "bundle": bundle,
            "source": {"type": "fake-camera", "fps": 60},
            "outputs": {
                "plugins": ["hanging"],
                "jsonl": {"path": out},
                "queue_size": 8,
                "stall_s": 0.5,
            },
            "metrics": {"port": 0},
        }
    )
    try:
        device.wait_for(lambda: len(lines(out)) >= 60, timeout=60)  # the line keeps classifying
        status_url = url_of(device)
        device.wait_for(lambda: "delivering one prediction" in get(f"{status_url}/healthz")[1])
        status, body = get(f"{status_url}/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok"  # a hung output warns; frames still flow
        assert any("'hanging'" in w for w in health["details"]["warnings"])
        outputs = {o["output"]: o for o in health["details"]["outputs"]}
        assert outputs["hanging"]["dropped"] > 0 and outputs["hanging"]["delivered"] == 0
        assert outputs["hanging"]["alive"] is True and outputs["jsonl"]["delivered"] >= 60
        found = samples(get(f"{status_url}/metrics")[1])
        hanging = (("camera", ""), ("output", "hanging"))
        assert found[("edgefleet_output_dropped_total", hanging)] > 0
        assert found[("edgefleet_output_queue_depth", hanging)] == 8
        assert found[("edgefleet_output_delivered_total", hanging)] == 0
        assert found[("edgefleet_output_dropped_total", (("camera", ""), ("output", "jsonl")))] == 0
    finally:
        RELEASE.set()
        summary = device.close()
    assert summary is not None and summary.outputs_dropped > 0


def test_a_dead_output_thread_makes_the_device_unhealthy(sorters: None, bundle: Path) -> None:
    device = RunningDevice(
        {
            "device_id": "line-3",
            "bundle": bundle,
            "source": {"type": "fake-camera", "fps": 30},
            "outputs": {"plugins": ["exiting"]},
            "metrics": {"port": 0},
        }
    )
    try:
        status_url = url_of(device)
        device.wait_for(lambda: get(f"{status_url}/healthz")[0] == 503)
        reasons = json.loads(get(f"{status_url}/healthz")[1])["reasons"]
        assert any("'exiting' thread died" in r and "sorter driver gave up" in r for r in reasons)
    finally:
        device.close()


def test_four_cameras_in_one_process_share_the_model_fairly_with_their_own_outputs(
    tmp_path: Path,
) -> None:
    slow = tmp_path / "slow.efb"
    make_bundle(slow, slow_onnx_model(), "onnx", softmax=True)  # slower than 4 cameras x 30 fps
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/edgefleet/"
    cameras = [f"belt-{i}" for i in range(1, 5)]
    device = RunningDevice(
        {
            "device_id": "line-3-box",
            "bundle": slow,
            "cameras": [
                {"id": camera, "source": {"type": "fake-camera", "fps": 30}} for camera in cameras
            ],
            "outputs": {
                "jsonl": {"path": str(tmp_path / "{camera}.jsonl")},
                "opcua": {"server": {"endpoint": endpoint, "security": ["None"]}},
            },
            "metrics": {"port": 0},
        }
    )
    try:
        device.wait_for(
            lambda: all(len(lines(tmp_path / f"{c}.jsonl")) >= 10 for c in cameras), timeout=90
        )
        status_url = url_of(device)
        found = samples(get(f"{status_url}/metrics")[1])
        stats = json.loads(get(f"{status_url}/stats")[1])

        async def read_frame_ids() -> dict[str, int]:
            async with Client(endpoint, timeout=5) as client:
                ns = await client.get_namespace_index("urn:edgefleet:line")
                return {
                    c: await client.get_node(f"ns={ns};s={c}.FrameId").read_value() for c in cameras
                }

        frame_ids = asyncio.run(read_frame_ids())
    finally:
        summary = device.close()
    assert summary is not None and summary.cameras == 4
    counts = {c: len(lines(tmp_path / f"{c}.jsonl")) for c in cameras}
    for camera in cameras:  # each record names the box and its camera
        written = lines(tmp_path / f"{camera}.jsonl")
        assert {(p["device_id"], p["camera_id"]) for p in written} == {("line-3-box", camera)}
    assert max(counts.values()) - min(counts.values()) <= 2, counts  # round-robin: none starved
    assert summary.frames_dropped > 0  # the model cannot keep up: each camera drops its own
    assert all(frame_ids[c] > 0 for c in cameras)
    for camera in cameras:
        assert found[("edgefleet_camera_predictions_total", (("camera", camera),))] > 0
        assert ("edgefleet_camera_frames_dropped_total", (("camera", camera),)) in found
        assert (
            found[("edgefleet_output_thread_alive", (("camera", camera), ("output", "opcua")))] == 1
        )
    assert [c["id"] for c in stats["info"]["cameras"]] == cameras


def test_single_and_multi_camera_configs_are_checked() -> None:
    from edge_runtime.config import parse_config
    from edge_runtime.errors import ConfigError

    base = "device_id: box\nmetrics: {enabled: false}\n"
    source = "source: {type: fake-camera}\n"
    cameras = "cameras:\n  - {id: a, source: {type: fake-camera}}\n"
    with pytest.raises(ConfigError, match="either source"):
        parse_config(base + source + cameras)
    with pytest.raises(ConfigError, match="either source"):
        parse_config(base)
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config(base + cameras + "  - {id: a, source: {type: fake-camera}}\n")
    with pytest.raises(ConfigError, match="one OPC UA server"):
        parse_config(
            base
            + "cameras:\n  - id: a\n    source: {type: fake-camera}\n"
            + "    outputs: {opcua: {server: {security: ['None']}}}\n"
        )
    assert [c.id for c in parse_config(base + source).camera_list()] == ["box"]


def test_silent_cameras_make_a_multi_camera_device_unhealthy_and_are_named(bundle: Path) -> None:
    device = RunningDevice(
        {
            "device_id": "line-3-box",
            "bundle": bundle,
            "cameras": [
                {"id": "belt-1", "source": {"type": "fake-camera", "fps": 20}},
                {"id": "belt-2", "source": {"type": "fake-camera", "fps": 20, "frames": 10}},
                {"id": "belt-3", "source": {"type": "fake-camera", "refuse_opens": 1000}},
            ],
            "health": {"max_frame_age_s": 1, "startup_grace_s": 2},
            "metrics": {"port": 0},
        }
    )
    try:
        status_url = url_of(device)
        device.wait_for(lambda: get(f"{status_url}/healthz")[0] == 503)
        device.wait_for(lambda: "belt-2" in get(f"{status_url}/healthz")[1])
        device.wait_for(lambda: "belt-3" in get(f"{status_url}/healthz")[1])
        reasons = json.loads(get(f"{status_url}/healthz")[1])["reasons"]
        assert any(r.startswith("camera belt-2: no frame for") for r in reasons), reasons
        assert any(r.startswith("camera belt-3: no frame received yet") for r in reasons), reasons
        assert not any("belt-1" in r for r in reasons)
        belt_1 = ("edgefleet_camera_predictions_total", (("camera", "belt-1"),))
        device.wait_for(
            lambda: samples(get(f"{status_url}/metrics")[1])[belt_1] > 30
        )  # still served
    finally:
        device.close()


def test_per_camera_inference_gives_each_camera_its_own_interpreter_and_follows_swaps(
    tmp_path: Path, onnx_model: bytes
) -> None:
    from edge_runtime.bundle import read_bundle
    from edge_runtime.classifier import Classifier

    v1, v2 = tmp_path / "v1.efb", tmp_path / "v2.efb"
    make_bundle(v1, onnx_model, "onnx", "1.0.0", softmax=True)
    make_bundle(v2, onnx_model, "onnx", "2.0.0", softmax=True)
    cameras = ["belt-1", "belt-2"]
    device = RunningDevice(
        {
            "device_id": "line-3-box",
            "bundle": v1,
            "inference": "per-camera",
            "cameras": [
                {"id": camera, "source": {"type": "fake-camera", "fps": 30}} for camera in cameras
            ],
            "outputs": {"jsonl": {"path": str(tmp_path / "{camera}.jsonl")}},
            "metrics": {"enabled": False},
        }
    )
    try:
        device.wait_for(lambda: all(len(lines(tmp_path / f"{c}.jsonl")) >= 5 for c in cameras))
        models = [camera.model for camera in device.runtime.cameras]
        own = [model.current for model in models]
        assert own[0] is not own[1] and device.runtime.model.current not in own
        device.runtime.model.swap(Classifier(read_bundle(v2)))
        device.wait_for(
            lambda: all(
                any(p["bundle_version"] == "2.0.0" for p in lines(tmp_path / f"{c}.jsonl"))
                for c in cameras
            )
        )
    finally:
        summary = device.close()
    assert summary is not None and summary.stats.inference_errors == 0
    for camera in cameras:
        versions = [p["bundle_version"] for p in lines(tmp_path / f"{camera}.jsonl")]
        switch = versions.index("2.0.0")
        assert set(versions[:switch]) == {"1.0.0"} and set(versions[switch:]) == {"2.0.0"}
