"""Signed updates end to end on a real Mosquitto: release, assign, deliver, verify, smoke, probation.

A real TUF repository (fleet_server.trust), the real chunk server, and a real
device runtime with its update agent; predictions keep flowing throughout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.update import UpdatePhase
from edgefleet.testing import RunningDevice
from edgefleet.testing.fleet import LocalFleet
from fleet_server.chunk_server import ChunkServer
from fleet_server.publisher import publish_metadata
from tests.media import make_bad_golden_bundle, make_bundle
from tests.models import slow_onnx_model, tiny_onnx_model, tiny_tflite_model

pytestmark = pytest.mark.broker


@contextlib.contextmanager
def make_fleet(tmp_path: Path, port: int, big: bool = False) -> Iterator[LocalFleet]:
    """The kit's local fleet without the fleet server: keys, a repository with four released
    bundles and a chunk server on the broker at ``port``; ``fleet.assign`` signs directly."""
    with LocalFleet(tmp_path / "fleet", port, fleet_server=False, client_id="fleet-test") as fleet:
        made = {
            "v1": make_bundle(
                tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", softmax=True
            ),
            "v2": make_bundle(
                tmp_path / "v2.efb",
                tiny_onnx_model(scale=40.0, seed=8),
                "onnx",
                "2.0.0",
                softmax=True,
            ),
            "bad-golden": make_bad_golden_bundle(
                tmp_path / "bad.efb", tiny_tflite_model(), "tflite", "3.0.0"
            ),
            "collapse": make_bundle(
                tmp_path / "flat.efb",
                tiny_onnx_model(scale=0.001, seed=9),
                "onnx",
                "4.0.0",
                softmax=True,
            ),
            "too-new": make_bundle(
                tmp_path / "too-new.efb",
                tiny_onnx_model(scale=40.0, seed=8),
                "onnx",
                "6.0.0",
                softmax=True,
                min_runtime_version="99.0.0",
            ),
        }
        if big:  # a 12 MB bundle: slow enough to kill the device mid-download
            made["big"] = make_bundle(
                tmp_path / "big.efb",
                slow_onnx_model(rows=1, hidden=1000),
                "onnx",
                "5.0.0",
                softmax=True,
            )
        files = {
            "v1": "v1",
            "v2": "v2",
            "bad-golden": "bad",
            "collapse": "flat",
            "too-new": "too-new",
            "big": "big",
        }
        for name in made:
            fleet.release(name, tmp_path / f"{files[name]}.efb")
        fleet.start()
        yield fleet


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: int) -> Iterator[LocalFleet]:
    with make_fleet(tmp_path, mosquitto) as made:
        yield made


def device_config(
    fleet: LocalFleet, tmp_path: Path, probation_s: float = 1.5, store: Path | None = None
) -> str:
    """cam-1 on v1, a 30 fps synthetic source, predictions to ``tmp_path/predictions.jsonl``."""
    config = fleet.device_config(
        "cam-1",
        bundle="v1",
        store=str(store or tmp_path / "store"),
        source={"type": "synthetic", "fps": 30, "width": 64, "height": 48},
        outputs={"jsonl": {"path": str(tmp_path / "predictions.jsonl")}},
        metrics={"enabled": True, "port": 0},
        update={
            "probation_s": probation_s,
            "probation_min_predictions": 10,
            "smoke_latency_runs": 5,
            "window_timeout_s": 2,
        },
    )
    return yaml.safe_dump(config)


@pytest.fixture
def device(fleet: LocalFleet, tmp_path: Path) -> Iterator[RunningDevice]:
    running = RunningDevice(device_config(fleet, tmp_path))
    try:
        running.wait_for(running.connected)
        yield running
    finally:
        running.close()


def fleet_chunks(fleet: LocalFleet) -> ChunkServer:
    assert fleet.chunks is not None
    return fleet.chunks


def predictions(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]


MAX_GAP_S = 1.0
"""A stall, not a slow frame: 30 frames of the 30 fps source."""


def assert_no_gap(lines: list[dict]) -> None:
    """Predictions never stopped: no gap between two of them reaches :data:`MAX_GAP_S`.

    How short the swap gap is (the target is at most twice the frame
    interval) is measured side by side with the steady interval by
    ``benchmarks/update_targets.py`` and ``edgefleet bench swap``; asserting
    it here made the test fail on a loaded 2-core CI machine.
    """
    times = np.array([line["captured_at"] for line in lines])
    gaps = np.diff(times)
    steady = float(np.median(gaps))
    assert steady < 0.1, steady  # the device kept up with the source before and after
    assert gaps.max() < MAX_GAP_S, (gaps.max(), steady)


def test_update_is_delivered_verified_tested_and_committed(
    fleet: LocalFleet, device: RunningDevice, tmp_path: Path
) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    device.wait_for(lambda: len(predictions(tmp_path)) > 20)
    fleet.assign(v2, "cam-1")
    device.wait_for(lambda: device.agent.state.phase == UpdatePhase.COMMITTED)
    state = device.agent.state
    assert state.active is not None and state.active.sha256 == v2.sha256
    assert state.last_good is not None and state.last_good.sha256 == v2.sha256
    time.sleep(0.5)
    lines = predictions(tmp_path)
    hashes = [line["bundle_sha256"] for line in lines]
    switch = hashes.index(v2.sha256)
    assert set(hashes[:switch]) == {v1.sha256} and set(hashes[switch:]) == {v2.sha256}
    assert_no_gap(lines)
    phases = [e.to_state.value for e in state.history if e.bundle == v2.sha256]
    assert phases == [
        "downloading",
        "verifying",
        "staged",
        "smoke-testing",
        "activating",
        "probation",
        "committed",
    ], phases
    assert device.agent.store.has(v2.sha256)
    assert fleet_chunks(fleet).stats().bundles[v2.sha256].chunks_published >= 1


@pytest.mark.parametrize(
    ("bad", "words"),
    [("bad-golden", "golden vector"), ("collapse", "confidence")],
)
def test_a_bad_bundle_is_rolled_back_and_the_old_one_keeps_serving(
    fleet: LocalFleet, device: RunningDevice, tmp_path: Path, bad: str, words: str
) -> None:
    v1, broken = fleet.bundles["v1"], fleet.bundles[bad]
    device.wait_for(lambda: len(predictions(tmp_path)) > 30)  # the confidence baseline
    fleet.assign(broken, "cam-1")
    device.wait_for(lambda: device.agent.state.phase == UpdatePhase.ROLLED_BACK)
    state = device.agent.state
    assert state.active is not None and state.active.sha256 == v1.sha256
    reasons = " ".join(e.reason for e in state.history if e.to_state == UpdatePhase.ROLLED_BACK)
    assert words in reasons, reasons
    time.sleep(0.5)
    lines = predictions(tmp_path)
    assert lines[-1]["bundle_sha256"] == v1.sha256
    assert_no_gap(lines)


def test_a_bundle_for_a_newer_runtime_is_refused_with_the_version_it_needs(
    fleet: LocalFleet, device: RunningDevice, tmp_path: Path
) -> None:
    """The fleet server leaves a device with an older runtime out of a rollout; a bundle that
    reaches one anyway (signed straight to it here) is refused before its smoke test."""
    v1, too_new = fleet.bundles["v1"], fleet.bundles["too-new"]
    device.wait_for(lambda: len(predictions(tmp_path)) > 20)
    fleet.assign(too_new, "cam-1")
    device.wait_for(lambda: device.agent.state.phase == UpdatePhase.ROLLED_BACK)
    state = device.agent.state
    assert state.active is not None and state.active.sha256 == v1.sha256
    (refusal,) = [
        e
        for e in state.history
        if e.bundle == too_new.sha256 and e.to_state == UpdatePhase.ROLLED_BACK
    ]
    assert "needs edge_runtime >= 99.0.0; this runtime is 0.1.0" in refusal.reason, refusal
    phases = [e.to_state.value for e in state.history if e.bundle == too_new.sha256]
    assert "smoke-testing" not in phases and "staged" not in phases, phases
    time.sleep(0.3)
    assert predictions(tmp_path)[-1]["bundle_sha256"] == v1.sha256


def test_replayed_metadata_is_refused_and_reported(
    fleet: LocalFleet, device: RunningDevice, tmp_path: Path
) -> None:
    old = fleet.repo.published()
    fleet.assign(fleet.bundles["v2"], "cam-1")
    device.wait_for(lambda: device.agent.state.phase == UpdatePhase.COMMITTED)
    for suffix in ("timestamp", "snapshot", "assignments"):  # the attacker replays older metadata
        fleet.client.publish(
            f"edgefleet/tuf/{suffix}", old[suffix], qos=1, retain=True
        ).wait_for_publish(5)
    device.wait_for(lambda: bool(device.agent.refusals))
    assert any("older" in r or "replay" in r for r in device.agent.refusals), device.agent.refusals
    assert (
        device.agent.state.active is not None
        and device.agent.state.active.sha256 == fleet.bundles["v2"].sha256
    )


def test_killed_during_probation_boots_into_the_last_good_bundle(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    config = tmp_path / "device.yaml"
    config.write_text(device_config(fleet, tmp_path, probation_s=60))
    env = {**os.environ, "EDGEFLEET_LOG_LEVEL": "info"}
    command = [sys.executable, "-m", "edgefleet", "device", "run", "--config", str(config)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    states: list[dict] = []
    watcher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="watcher")
    watcher.on_message = lambda _c, _u, msg: (
        states.append(json.loads(msg.payload)) if msg.payload else None
    )
    watcher.connect("127.0.0.1", fleet.broker_port)
    watcher.subscribe("edgefleet/devices/cam-1/state", qos=1)
    watcher.loop_start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "predictions.jsonl").exists():
            time.sleep(0.1)
        fleet.assign(fleet.bundles["v2"], "cam-1")
        while time.monotonic() < deadline and not any(s["state"] == "probation" for s in states):
            time.sleep(0.05)
        assert any(s["state"] == "probation" for s in states), states[-3:]
        process.send_signal(signal.SIGKILL)  # power cut in probation
        process.wait(timeout=10)
        restarted = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            while time.monotonic() < deadline and not (
                states and states[-1]["state"] == "rolled-back"
            ):
                time.sleep(0.05)
            assert states[-1]["state"] == "rolled-back", states[-1]
            assert states[-1]["active"]["bundle"] == fleet.bundles["v1"].sha256
            before = len(predictions(tmp_path))
            time.sleep(1.5)
            after = predictions(tmp_path)
            assert len(after) > before and after[-1]["bundle_sha256"] == fleet.bundles["v1"].sha256
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        watcher.loop_stop()
        watcher.disconnect()


def test_metadata_republished_during_probation_does_not_disturb_it(
    fleet: LocalFleet, device: RunningDevice, tmp_path: Path
) -> None:
    v2 = fleet.bundles["v2"]
    device.wait_for(lambda: len(predictions(tmp_path)) > 20)
    fleet.assign(v2, "cam-1")
    device.wait_for(lambda: device.agent.state.phase == UpdatePhase.PROBATION)
    fleet.repo.snapshot_and_timestamp(fleet.keys.role("snapshot"), fleet.keys.role("timestamp"))
    publish_metadata(fleet.client, fleet.repo)  # new timestamp, same assignment
    device.wait_for(lambda: device.agent.state.phase == UpdatePhase.COMMITTED)
    assert device.agent.state.active is not None and device.agent.state.active.sha256 == v2.sha256
    assert not any(e.to_state == UpdatePhase.ROLLED_BACK for e in device.agent.state.history)


def test_update_over_the_embedded_amqtt_broker(tmp_path: Path, amqtt_broker: int) -> None:
    with make_fleet(tmp_path, amqtt_broker) as fleet:
        running = RunningDevice(device_config(fleet, tmp_path))
        try:
            running.wait_for(lambda: len(predictions(tmp_path)) > 10)
            fleet.assign(fleet.bundles["v2"], "cam-1")
            running.wait_for(lambda: running.agent.state.phase == UpdatePhase.COMMITTED)
            assert running.agent.state.active is not None
            assert running.agent.state.active.sha256 == fleet.bundles["v2"].sha256
        finally:
            running.close()


def test_killed_mid_download_resumes_after_restart(tmp_path: Path, mosquitto: int) -> None:
    with make_fleet(tmp_path, mosquitto, big=True) as fleet:
        big = fleet.bundles["big"]
        config = tmp_path / "device.yaml"
        config.write_text(device_config(fleet, tmp_path))
        command = [sys.executable, "-m", "edgefleet", "device", "run", "--config", str(config)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        downloads = tmp_path / "store" / "downloads"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (tmp_path / "predictions.jsonl").exists():
                time.sleep(0.05)
            fleet.assign(big, "cam-1")
            # wait until part of the bundle is on disk, then cut the power
            while time.monotonic() < deadline and not list(downloads.glob("*.chunks")):
                time.sleep(0.01)
            assert list(downloads.glob("*.chunks")), "the download never started"
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            assert not (tmp_path / "store" / "bundles" / f"{big.sha256}.efb").exists()
            served_before = fleet_chunks(fleet).stats().bundles[big.sha256].chunks_published
            restarted = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                state_file = tmp_path / "store" / "state.json"
                while time.monotonic() < deadline:
                    state = json.loads(state_file.read_text())
                    if state["phase"] == "committed" and state["active"]["sha256"] == big.sha256:
                        break
                    time.sleep(0.1)
                assert state["phase"] == "committed", state["phase"]
                chunks = -(-big.size // (256 * 1024))
                served = fleet_chunks(fleet).stats().bundles[big.sha256].chunks_published
                assert served < 2 * chunks, (
                    served_before,
                    served,
                    chunks,
                )  # resumed, not restarted from zero
            finally:
                restarted.send_signal(signal.SIGTERM)
                restarted.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()


FULL_DISK_BOOT = """
set -e
mount -t tmpfs -o size=2m tmpfs "$1"
"$2" -m edgefleet device run --config "$3" --max-frames 5
dd if=/dev/zero of="$1/filler" bs=4096 2>/dev/null || true
rm -f "$4"
"$2" -m edgefleet device run --config "$3" --max-frames 20
"""


def _private_mounts_work() -> bool:
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not _private_mounts_work(), reason="user+mount namespaces are not allowed")
def test_a_device_boots_and_classifies_on_a_full_disk(fleet: LocalFleet, tmp_path: Path) -> None:
    """Issue #15, item 7: the last good bundle serves; the state waits to be saved."""
    mount = tmp_path / "small"
    mount.mkdir()
    predictions = tmp_path / "predictions.jsonl"
    config = tmp_path / "device.yaml"
    config.write_text(device_config(fleet, tmp_path, store=mount / "store"))
    env = {**os.environ, "EDGEFLEET_LOG_LEVEL": "info"}
    script = ["unshare", "-Urm", "sh", "-c", FULL_DISK_BOOT, "sh"]
    done = subprocess.run(
        [*script, str(mount), sys.executable, str(config), str(predictions)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cannot persist the update state" in done.stderr
    assert "No space left on device" in done.stderr
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(lines) >= 20
    assert {line["bundle_sha256"] for line in lines} == {fleet.bundles["v1"].sha256}
