"""The fleet server driving staged rollouts to 20 real device agents on Mosquitto.

Each device is a real DeviceRuntime with a tiny real ONNX model, its update
agent and telemetry; the server is the real FleetServer with a SQLite
registry, the TUF repository (online keys only) and the chunk server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.testing import RunningDevice
from edgefleet.testing.fleet import LocalFleet
from fleet_server.quality_gate import GateThresholds
from fleet_server.records import TargetSelector
from fleet_server.rollout_spec import WaveSpec
from tests.media import make_bad_golden_bundle, make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICES = 20
GATE = GateThresholds(
    min_samples=20, min_shift_samples=10_000, max_latency_ratio=10.0, max_budget_ratio=None
)


Setup = LocalFleet
"""The ``setup`` fixture: the kit's local fleet with the fleet server, started, devices on v1."""


def start_camera(fleet: LocalFleet, index: int) -> RunningDevice:
    """Device ``cam-NN``: v1 at start, a 10 fps synthetic source, telemetry every 0.5 s."""
    return fleet.start_device(
        f"cam-{index:02d}",
        bundle="v1",
        source={"type": "synthetic", "fps": 10, "width": 64, "height": 48},
        mqtt={"telemetry_interval_s": 0.5},
        # the device's own confidence check at a quarter of the old bundle's: "dull" below
        # must pass it on every device so that only the fleet's quality gate sees it (at
        # half, 176 of 596 five-frame stretches of its synthetic-frame confidences were
        # under the floor: a canary sometimes failed it itself)
        update={
            "probation_s": 1,
            "probation_min_predictions": 5,
            "smoke_latency_runs": 3,
            "min_confidence_ratio": 0.25,
        },
    )


@pytest.fixture
def setup(request: pytest.FixtureRequest, tmp_path: Path, mosquitto: int) -> Iterator[Setup]:
    offline: tuple[int, ...] = getattr(request, "param", ())
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", softmax=True)
    make_bundle(
        tmp_path / "v2.efb", tiny_onnx_model(scale=40.0, seed=8), "onnx", "2.0.0", softmax=True
    )
    make_bad_golden_bundle(
        tmp_path / "bad.efb", tiny_onnx_model(scale=40.0, seed=9), "onnx", "3.0.0"
    )
    # v1's weights, softer logits: the same classes at ~0.71 mean confidence (never under
    # 0.40 on the synthetic frames) instead of ~0.96; it passes every device check (smoke
    # test, probation at a quarter of the old confidence) and only the fleet's quality
    # gate can see it
    make_bundle(tmp_path / "dull.efb", tiny_onnx_model(scale=6.0), "onnx", "4.0.0", softmax=True)
    with LocalFleet(tmp_path / "fleet", mosquitto, tick_s=0.2, client_id="fleet-server") as fleet:
        for name in ("v1", "v2", "bad", "dull"):
            fleet.release(name, tmp_path / f"{name}.efb")
        for i in range(DEVICES):
            fleet.provision(f"cam-{i:02d}", tags=("line1",))
        fleet.start()
        for i in range(DEVICES):
            if i not in offline:
                start_camera(fleet, i)
        online = {f"cam-{i:02d}" for i in range(DEVICES) if i not in offline}
        v1 = fleet.bundles["v1"].sha256
        fleet.wait_for(
            lambda: all(v == v1 for k, v in fleet.active().items() if k in online), timeout=60
        )
        yield fleet


def waves() -> list[WaveSpec]:
    return [
        WaveSpec(count=2, device_timeout_s=60, health_window_s=1.5, gate=GATE),
        WaveSpec(percent=100, device_timeout_s=60, health_window_s=1.0, gate=GATE),
    ]


def test_staged_rollout_commits_on_every_device(setup: Setup) -> None:
    v1, v2 = setup.bundles["v1"], setup.bundles["v2"]
    rollout = setup.server.create_rollout(
        v2.sha256, TargetSelector.tags(["line1"]), waves(), previous_sha256=v1.sha256
    )
    setup.wait_for(
        lambda: setup.registry.rollout(rollout).status in {"completed", "aborted", "rolled-back"}
    )
    info = setup.registry.rollout(rollout)
    assert info.status == "completed", "\n".join(
        t.message
        for t in setup.registry.timeline(rollout_id=rollout, limit=1000)
        if "-> sent" not in t.message and "committed" not in t.message
    )
    setup.wait_for(lambda: all(v == v2.sha256 for v in setup.active().values()))
    statuses = {d.status for d in setup.registry.wave_devices(rollout)}
    assert statuses == {"committed"}
    kinds = [t.kind for t in setup.registry.timeline(rollout_id=rollout, limit=500)]
    assert "wave-passed" in kinds and "completed" in kinds


def test_failing_canary_aborts_and_rolls_back(setup: Setup) -> None:
    v1, bad = setup.bundles["v1"], setup.bundles["bad"]
    rollout = setup.server.create_rollout(
        bad.sha256, TargetSelector.tags(["line1"]), waves(), previous_sha256=v1.sha256
    )
    setup.wait_for(
        lambda: setup.registry.rollout(rollout).status in {"completed", "aborted", "rolled-back"}
    )
    assert setup.registry.rollout(rollout).status == "rolled-back"
    waves_seen = setup.registry.waves(rollout)
    assert waves_seen[0].status == "failed"
    assert all(w.started_at is None for w in waves_seen[1:])  # the rest never started
    setup.wait_for(lambda: all(v == v1.sha256 for v in setup.active().values()))
    canary = [d for d in setup.registry.wave_devices(rollout) if d.status != "pending"]
    assert len(canary) == 2


def test_canary_failing_the_quality_gate_on_telemetry_aborts_and_rolls_back(
    setup: Setup,
) -> None:
    v1, dull = setup.bundles["v1"], setup.bundles["dull"]
    everyone = [f"cam-{i:02d}" for i in range(DEVICES)]
    setup.wait_for(  # v1 telemetry to compare the canary against
        lambda: setup.registry.aggregate_telemetry(everyone).overall is not None, timeout=30
    )
    time.sleep(3)
    rollout = setup.server.create_rollout(
        dull.sha256, TargetSelector.tags(["line1"]), waves(), previous_sha256=v1.sha256
    )
    setup.wait_for(
        lambda: setup.registry.rollout(rollout).status in {"completed", "aborted", "rolled-back"}
    )
    info = setup.registry.rollout(rollout)
    why = "\n".join(
        [str(info.reason)]
        + [
            t.message
            for t in setup.registry.timeline(rollout_id=rollout, limit=1000)
            if "-> sent" not in t.message
        ]
    )
    assert info.status == "rolled-back", why
    assert info.reason is not None and "confidence" in info.reason, why
    canary, rest = setup.registry.waves(rollout)
    assert canary.status == "failed" and rest.started_at is None
    setup.wait_for(lambda: all(v == v1.sha256 for v in setup.active().values()))

    def canary_statuses() -> set[str]:
        statuses = {d.device_id: d.status for d in setup.registry.wave_devices(rollout)}
        return {statuses[d] for d in canary.device_ids}

    setup.wait_for(lambda: canary_statuses() == {"rolled-back"}, timeout=30)
    statuses = {d.device_id: d.status for d in setup.registry.wave_devices(rollout)}
    assert all(statuses[d] == "pending" for d in rest.device_ids)  # never sent
    kinds = [t.kind for t in setup.registry.timeline(rollout_id=rollout, limit=500)]
    assert "wave-failed" in kinds
    # every canary committed first (the device saw nothing wrong), then went back to v1
    committed = {
        t.device_id
        for t in setup.registry.timeline(rollout_id=rollout, limit=500)
        if t.kind == "device-committed"
    }
    assert committed >= set(canary.device_ids)


def test_server_restarted_mid_rollout_resumes_without_resending(setup: Setup) -> None:
    v1, v2 = setup.bundles["v1"], setup.bundles["v2"]
    spec = waves()
    spec[0] = spec[0].model_copy(update={"approval_before_next": True})
    rollout = setup.server.create_rollout(
        v2.sha256, TargetSelector.tags(["line1"]), spec, previous_sha256=v1.sha256
    )
    setup.wait_for(lambda: setup.registry.rollout(rollout).status == "awaiting-approval")
    before = setup.repo.assignments()
    restarted = setup.restart_server()  # the server goes down between waves, and comes back
    plan = restarted.plan(rollout)
    assert plan is not None and plan.status.value == "awaiting-approval"
    assert setup.repo.assignments() == before  # nothing re-sent on restart
    restarted.command(rollout, "approve")
    setup.wait_for(lambda: setup.registry.rollout(rollout).status == "completed")
    setup.wait_for(lambda: all(v == v2.sha256 for v in setup.active().values()))
    canary = [d.device_id for d in setup.registry.wave_devices(rollout) if d.wave_index == 0]
    after = setup.repo.assignments()
    assert len(canary) == 2
    for device_id in canary:
        assert after[f"devices/{device_id}"] == before[f"devices/{device_id}"]


@pytest.mark.parametrize("setup", [(DEVICES - 1,)], indirect=True)
def test_offline_device_converges_when_it_returns(setup: Setup) -> None:
    v1, v2 = setup.bundles["v1"], setup.bundles["v2"]
    spec = [
        WaveSpec(devices=("cam-00", "cam-01"), device_timeout_s=60, health_window_s=1.0, gate=GATE),
        WaveSpec(
            # 10 s: time enough for every online camera on a loaded machine; the offline one
            # times out (a 4 s timeout rolled the wave back when other work slowed the cameras)
            percent=100,
            success_threshold=0.9,
            device_timeout_s=10,
            health_window_s=1.0,
            gate=GATE,
        ),
    ]
    last = f"cam-{DEVICES - 1:02d}"  # offline, so in the last wave
    rollout = setup.server.create_rollout(
        v2.sha256, TargetSelector.tags(["line1"]), spec, previous_sha256=v1.sha256
    )
    setup.wait_for(
        lambda: setup.registry.rollout(rollout).status in {"completed", "aborted", "rolled-back"}
    )
    assert setup.registry.rollout(rollout).status == "completed"
    statuses = {d.device_id: d.status for d in setup.registry.wave_devices(rollout)}
    assert statuses[last] in {"timed-out", "sent"}  # it never reported while the rollout ran
    start_camera(setup, DEVICES - 1)  # back online: it converges from the retained assignment
    setup.wait_for(lambda: setup.registry.device(last).active_bundle == v2.sha256)

    def status_of_last() -> str:
        return {d.device_id: d.status for d in setup.registry.wave_devices(rollout)}[last]

    setup.wait_for(lambda: status_of_last() == "committed", timeout=20)  # followed after the end


def test_a_state_report_from_a_clock_a_year_ahead_freezes_nothing(setup: Setup) -> None:
    """Issue #15, item 3: reports are ordered by the device's sequence, never by its clock."""
    v1, v2 = setup.bundles["v1"], setup.bundles["v2"]
    year = 365 * 24 * 3600.0
    for device in setup.registry.devices():
        forged = {
            "protocol": 1,
            "device_id": device.id,
            "state": "idle",
            "active": {"bundle": v1.sha256, "name": "tiny-classifier", "version": "1.0.0"},
            "updated_at": time.time() + year,
        }
        setup.client.publish(
            f"edgefleet/devices/{device.id}/state", json.dumps(forged), qos=1
        ).wait_for_publish(5)
    setup.wait_for(
        lambda: all((d.clock_skew_s or 0) < -year / 2 for d in setup.registry.devices()), 20
    )
    rollout = setup.server.create_rollout(
        v2.sha256, TargetSelector.tags(["line1"]), waves(), previous_sha256=v1.sha256
    )
    setup.wait_for(
        lambda: setup.registry.rollout(rollout).status in {"completed", "aborted", "rolled-back"}
    )
    assert setup.registry.rollout(rollout).status == "completed"
    setup.wait_for(lambda: all(v == v2.sha256 for v in setup.active().values()))
    # the devices' own reports replaced the forged ones, and measured their clocks again
    assert all(abs(d.clock_skew_s or year) < 60 for d in setup.registry.devices())


def test_rolling_out_what_every_device_already_runs_completes_at_once(setup: Setup) -> None:
    """Issue #15, item 8: no device waits for a timeout, none is rolled back."""
    v1 = setup.bundles["v1"]
    rollout = setup.server.create_rollout(v1.sha256, TargetSelector.tags(["line1"]), waves())
    setup.wait_for(
        lambda: setup.registry.rollout(rollout).status in {"completed", "aborted", "rolled-back"},
        timeout=30,  # two health windows, well inside the 60 s device timeout
    )
    assert setup.registry.rollout(rollout).status == "completed"
    assert {d.status for d in setup.registry.wave_devices(rollout)} == {"committed"}
    assert all(v == v1.sha256 for v in setup.active().values())
