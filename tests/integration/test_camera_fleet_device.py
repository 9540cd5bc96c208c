"""A camera that is its own fleet device takes its own bundle, in the box's process.

A real fleet server (SQLite registry, TUF, chunk server) on Mosquitto and one
real device process with two cameras: belt-1 shares the box's identity
(``line-3-box``), belt-2 has a ``fleet:`` section and is the fleet device
``line-3-belt-2`` (its own MQTT connection, update agent, store and model).
A rollout to ``line-3-belt-2`` changes belt-2's model only: belt-1 keeps v1,
both keep classifying, each identity reports its own bundle to the server.
Then a bad bundle (NaN on belt-2's black frames) rolled out to belt-2 is
rolled back on belt-2 only, by belt-2's own probation.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from edge_runtime.camera_fleet import CameraFleetDevice
from edge_runtime.update import UpdatePhase
from edgefleet.testing import RunningDevice, json_lines
from edgefleet.testing.broker import free_port, wait_for_port
from edgefleet.testing.device import wait_for
from edgefleet.testing.fleet import LocalFleet
from fleet_server.broker_auth import SERVER_USERNAME, BrokerAuth, hash_password
from fleet_server.quality_gate import GateThresholds
from fleet_server.records import TargetSelector
from fleet_server.rollout_spec import WaveSpec
from tests.integration.test_camera_probation import dark_blind_onnx_model
from tests.media import make_bundle
from tests.models import tiny_onnx_model
from tests.mqtt_login import login
from tests.services import require_mosquitto

pytestmark = pytest.mark.broker

GATE = GateThresholds(
    min_samples=20, min_shift_samples=10_000, max_latency_ratio=10.0, max_budget_ratio=None
)
COLOURED = {"type": "fake-camera", "fps": 30, "colors": [[40, 200, 120], [90, 90, 200]]}
BLACK = {"type": "fake-camera", "fps": 30, "colors": [[0, 0, 0]]}
ENDED = {"completed", "aborted", "rolled-back"}
SERVER_PASSWORD = "server-secret-for-the-test"


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: int) -> Iterator[LocalFleet]:
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True)
    make_bundle(tmp_path / "v2.efb", tiny_onnx_model(scale=40.0, seed=8), "onnx", "2.0.0", True)
    make_bundle(tmp_path / "v3.efb", dark_blind_onnx_model(), "onnx", "3.0.0", True)
    with LocalFleet(tmp_path / "fleet", mosquitto, tick_s=0.2, client_id="fleet-server") as fleet:
        for name in ("v1", "v2", "v3"):
            fleet.release(name, tmp_path / f"{name}.efb")
        fleet.provision("line-3-box", tags=("line3",))
        fleet.provision("line-3-belt-2", tags=("line3",))
        fleet.start()
        yield fleet


def lines(path: Path) -> list[dict[str, Any]]:
    return json_lines(path)  # the device may be half-way through writing the last line


def test_a_camera_of_its_own_takes_its_own_bundle_and_rolls_back_alone(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    assert fleet.server is not None and fleet.registry is not None
    server, registry = fleet.server, fleet.registry
    v1, v2, v3 = (fleet.bundles[name] for name in ("v1", "v2", "v3"))
    device = fleet.start_device(
        "line-3-box",
        bundle="v1",
        source=None,
        cameras=[
            {"id": "belt-1", "source": COLOURED},
            {"id": "belt-2", "source": BLACK, "fleet": {"device_id": "line-3-belt-2"}},
        ],
        outputs={"jsonl": {"path": str(tmp_path / "{camera}.jsonl")}},
        mqtt={"telemetry_interval_s": 0.5},
        health={"max_frame_age_s": 1.0, "startup_grace_s": 2.0},
        update={"probation_s": 1.0, "probation_min_predictions": 10, "smoke_latency_runs": 3},
    )
    belt_2 = device.runtime.fleet_cameras["belt-2"]
    assert isinstance(belt_2, CameraFleetDevice)
    # its own store, beside the box's
    assert belt_2.agent.store.root == Path(device.config.store) / "cameras" / "belt-2"
    fleet.wait_for(lambda: fleet.active() == {"line-3-box": v1.sha256, "line-3-belt-2": v1.sha256})

    def rollout(bundle_sha: str, previous: str, device_id: str = "line-3-belt-2") -> int:
        created = server.create_rollout(
            bundle_sha,
            TargetSelector.devices([device_id]),
            [WaveSpec(percent=100, device_timeout_s=60, health_window_s=1.0, gate=GATE)],
            previous_sha256=previous,
        )
        wait_for(
            lambda: registry.rollout(created).status in ENDED,
            60,
            message=lambda: (
                f"rollout {registry.rollout(created).status}; belt-2:"
                f" {belt_2.agent.state.phase.value} {belt_2.agent.refusals};"
                f" {[t.message for t in registry.timeline(rollout_id=created, limit=50)]}"
            ),
        )
        return created

    good = rollout(v2.sha256, v1.sha256)
    timeline = [t.message for t in registry.timeline(rollout_id=good, limit=500)]
    assert registry.rollout(good).status == "completed", timeline
    fleet.wait_for(lambda: fleet.active() == {"line-3-box": v1.sha256, "line-3-belt-2": v2.sha256})
    assert device.agent.state.active is not None
    assert device.agent.state.active.sha256 == v1.sha256  # the box's agent never saw it
    assert [e for e in device.agent.state.history if e.bundle == v2.sha256] == []
    assert belt_2.agent.state.phase == UpdatePhase.COMMITTED

    # both keep classifying, each with its own bundle and under its own identity
    counts = {c: len(lines(tmp_path / f"{c}.jsonl")) for c in ("belt-1", "belt-2")}
    device.wait_for(
        lambda: all(len(lines(tmp_path / f"{c}.jsonl")) > counts[c] + 10 for c in counts)
    )
    last_1, last_2 = (lines(tmp_path / f"{c}.jsonl")[-1] for c in ("belt-1", "belt-2"))
    assert (last_1["device_id"], last_1["camera_id"]) == ("line-3-box", "belt-1")
    assert last_1["bundle_sha256"] == v1.sha256
    assert (last_2["device_id"], last_2["camera_id"]) == ("line-3-belt-2", "belt-2")
    assert last_2["bundle_sha256"] == v2.sha256
    assert {p["bundle_sha256"] for p in lines(tmp_path / "belt-1.jsonl")} == {v1.sha256}

    # one /metrics and /healthz for the box, naming the camera device
    metrics = generate_latest(device.runtime.registry).decode()
    assert f'bundle_sha256="{v2.sha256}",bundle_version="2.0.0",camera="belt-2"' in metrics
    assert 'edgefleet_camera_fleet_connected{camera="belt-2",device_id="line-3-belt-2"} 1.0' in (
        metrics
    )
    assert 'edgefleet_camera_predictions_total{camera="belt-2"}' in metrics
    details = device.runtime.health.evaluate().details["fleet_devices"]
    assert details["belt-2"]["device_id"] == "line-3-belt-2"
    assert details["belt-2"]["update_phase"] == "committed"
    # belt-2 is online under its own id, and its telemetry is its own camera's alone
    assert registry.device("line-3-belt-2").availability == "online"
    _, snapshot = registry.telemetry("line-3-belt-2", limit=1)[0]
    assert snapshot["device_id"] == "line-3-belt-2" and snapshot["bundle"] == v2.sha256
    assert snapshot["info"]["camera"] == "belt-2" and snapshot["info"]["box"] == "line-3-box"
    _, box_snapshot = registry.telemetry("line-3-box", limit=1)[0]
    assert box_snapshot["bundle"] == v1.sha256

    bad = rollout(v3.sha256, v2.sha256)
    assert registry.rollout(bad).status != "completed"
    device.wait_for(lambda: belt_2.agent.state.phase == UpdatePhase.ROLLED_BACK, timeout=30)
    (ended,) = [
        e
        for e in belt_2.agent.state.history
        if e.bundle == v3.sha256 and e.to_state == UpdatePhase.ROLLED_BACK
    ]
    assert ended.from_state == UpdatePhase.PROBATION
    assert "NaN/inf output" in ended.reason, ended.reason
    assert belt_2.agent.state.active is not None
    assert belt_2.agent.state.active.sha256 == v2.sha256
    count = len(lines(tmp_path / "belt-2.jsonl"))
    device.wait_for(lambda: len(lines(tmp_path / "belt-2.jsonl")) > count + 10)
    assert lines(tmp_path / "belt-2.jsonl")[-1]["bundle_sha256"] == v2.sha256
    # belt-1 and the box never moved
    assert [e for e in device.agent.state.history if e.bundle == v3.sha256] == []
    assert device.agent.state.active.sha256 == v1.sha256
    assert {p["bundle_sha256"] for p in lines(tmp_path / "belt-1.jsonl")} == {v1.sha256}
    fleet.wait_for(lambda: fleet.active() == {"line-3-box": v1.sha256, "line-3-belt-2": v2.sha256})

    # the other way round: v3 to the box (fine on belt-1's colours) leaves belt-2 alone, and
    # the box's probation judges belt-1 only (belt-2's stream is not the box's to wait for)
    boxed = rollout(v3.sha256, v1.sha256, "line-3-box")
    entries = registry.timeline(rollout_id=boxed, limit=500)
    assert registry.rollout(boxed).status == "completed", [t.message for t in entries]
    (committed,) = [
        t
        for t in entries
        if t.kind == "device-event" and t.data and t.data.get("to") == "committed"
    ]
    assert committed.device_id == "line-3-box" and committed.data is not None
    assert [f["camera"] for f in committed.data["probation"]] == ["belt-1"]
    fleet.wait_for(lambda: fleet.active() == {"line-3-box": v3.sha256, "line-3-belt-2": v2.sha256})
    assert belt_2.model.current is not None and belt_2.model.current.bundle.sha256 == v2.sha256
    count = len(lines(tmp_path / "belt-2.jsonl"))
    device.wait_for(lambda: len(lines(tmp_path / "belt-2.jsonl")) > count + 10)
    assert {p["bundle_sha256"] for p in lines(tmp_path / "belt-2.jsonl")[count:]} == {v2.sha256}


@pytest.fixture
def secured_mosquitto(tmp_path: Path) -> Iterator[tuple[int, int, BrokerAuth]]:
    """Mosquitto with the fleet's generated password and ACL files: (device port, server port, auth)."""
    binary = require_mosquitto()
    auth = BrokerAuth(tmp_path / "broker", server_password=SERVER_PASSWORD)
    auth.write({"line-3-box": hash_password("box-secret"), "line-3-belt-2": hash_password("belt")})
    port, server_port = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    as_root = "user root\n" if os.geteuid() == 0 else ""  # root Mosquitto would drop to 'mosquitto'
    conf.write_text(
        auth.mosquitto_conf(port, "127.0.0.1", server_port=server_port)
        + "persistence false\n"
        + as_root
    )
    with (tmp_path / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_for_port(port)
        wait_for_port(server_port)
        yield port, server_port, auth
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("inference", ["round-robin", "per-camera"])
def test_each_identity_logs_in_as_itself_and_publishes_only_under_its_own_topics(
    tmp_path: Path, secured_mosquitto: tuple[int, int, BrokerAuth], inference: str
) -> None:
    """The broker's ACL (``devices/%u/#``) holds per camera device: each connection has its user.

    With either inference mode: the camera device's model is its own in both."""
    port, server_port, _auth = secured_mosquitto
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True)
    repo = LocalFleet(tmp_path / "fleet", port, fleet_server=False)  # its root.json only
    spy, accepted = login(server_port, SERVER_USERNAME, SERVER_PASSWORD, "spy")
    assert accepted
    seen: list[tuple[str, bytes]] = []
    spy.on_message = lambda _c, _u, message: seen.append((message.topic, bytes(message.payload)))
    spy.subscribe("edgefleet/devices/#", qos=1)
    mqtt = {"host": "127.0.0.1", "port": port, "username": "line-3-box", "password": "box-secret"}
    device = RunningDevice(
        {
            "device_id": "line-3-box",
            "store": str(tmp_path / "store"),
            "bundle": str(tmp_path / "v1.efb"),
            "cameras": [
                {"id": "belt-1", "source": COLOURED},
                {
                    "id": "belt-2",
                    "source": COLOURED,
                    "fleet": {"device_id": "line-3-belt-2", "password": "belt"},
                },
            ],
            "inference": inference,
            "outputs": {"mqtt": {}},
            "mqtt": mqtt,
            "metrics": {"enabled": False},
            "update": {"trusted_root": str(repo.root_file)},
        }
    )

    def published(device_id: str, leaf: str) -> list[bytes]:
        return [p for t, p in list(seen) if t == f"edgefleet/devices/{device_id}/{leaf}"]

    try:
        device.wait_for(
            lambda: all(
                len(published(d, "predictions")) > 5 and published(d, "availability")
                for d in ("line-3-box", "line-3-belt-2")
            )
        )
        for device_id, camera in (("line-3-box", "belt-1"), ("line-3-belt-2", "belt-2")):
            answers = [json.loads(p) for p in published(device_id, "predictions")]
            assert {(a["device_id"], a["camera_id"]) for a in answers} == {(device_id, camera)}
            assert published(device_id, "availability")[-1] == b"online"
            assert published(device_id, "state"), device_id  # each agent reports its own state
        metrics = generate_latest(device.runtime.registry).decode()
        assert (
            'edgefleet_camera_fleet_connected{camera="belt-2",device_id="line-3-belt-2"} 1.0'
            in (metrics)
        )
    finally:
        device.close()
        spy.loop_stop()
        spy.disconnect()
    # offline at stop, on its own topic (its user may write there only)
    assert published("line-3-belt-2", "availability")[-1] == b"offline"
