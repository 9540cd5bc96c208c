"""The rollout coordinator with plain values: a registry, a list for the actions, no MQTT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edge_runtime.bundle import Bundle, parse_bundle
from edgefleet.testing import FakeClock
from fleet_server.coordinator import RolloutCoordinator
from fleet_server.quality_figures import GateThresholds, QualityFigures, WaveTelemetry
from fleet_server.records import TargetSelector
from fleet_server.registry import Registry
from fleet_server.rollout_plan import Action, Assign
from fleet_server.rollout_spec import WaveSpec

HEALTHY = QualityFigures(
    predictions=1000, errors=0, latency_p95_ms=20.0, mean_confidence=0.8, class_counts={"a": 600}
)


@pytest.fixture
def bundle(registry: Registry, make_bundle: Callable[..., bytes]) -> Bundle:
    made = parse_bundle(make_bundle(version="2.0.0"))
    registry.import_bundle(made)
    return made


def committed(device_id: str, sha256: str, at: float) -> dict[str, Any]:
    return {
        "protocol": 1,
        "device_id": device_id,
        "state": "committed",
        "active": {"bundle": sha256},
        "updated_at": at,
    }


def test_reports_the_clock_and_plain_telemetry_drive_a_rollout_to_completion(
    registry: Registry, bundle: Bundle, clock: FakeClock
) -> None:
    for name in ("cam-1", "cam-2", "cam-3"):
        registry.provision_device(name, ["line-a"])
    sent: list[Action] = []
    coordinator = RolloutCoordinator(registry, sent.extend)
    gate = GateThresholds(min_samples=100)
    waves = [
        WaveSpec(devices=("cam-1",), health_window_s=30, gate=gate),
        WaveSpec(percent=100, health_window_s=0, gate=gate),
    ]
    rollout_id = coordinator.create(
        bundle.sha256, TargetSelector.tags(["line-a"]), waves, None, clock.now
    )
    assert sent == [Assign(device_ids=("cam-1",), bundle_sha=bundle.sha256)]

    stored = registry.record_state("cam-1", committed("cam-1", bundle.sha256, clock.now))
    assert stored is not None
    coordinator.device_stored(stored, clock.now)
    coordinator.save()
    assert {d.device_id: d.status for d in registry.wave_devices(rollout_id)}["cam-1"] == (
        "committed"
    )
    coordinator.tick(clock.now)  # settles the canary: watched for 30 s from its commit
    assert coordinator.due_gates(clock.now) == []  # the health window runs: nothing to read
    clock.advance(30)
    (due,) = coordinator.due_gates(clock.now)
    assert (due.key, due.devices, due.bundle) == ((rollout_id, 0), ("cam-1",), bundle.sha256)
    coordinator.tick(clock.now, {})  # no figures: the gate cannot decide, nothing is sent
    assigned = [a for a in sent if isinstance(a, Assign)]
    assert len(assigned) == 1 and registry.waves(rollout_id)[0].status == "watching"
    assert "no telemetry from the new bundle yet" in str(sent[-1])  # the operator is told
    coordinator.tick(clock.now, {due.key: WaveTelemetry(new=HEALTHY)})
    assert [a for a in sent if isinstance(a, Assign)][1:] == [
        Assign(device_ids=("cam-2", "cam-3"), bundle_sha=bundle.sha256)
    ]
    assert [w.status for w in registry.waves(rollout_id)] == ["passed", "running"]

    for name in ("cam-2", "cam-3"):
        report = registry.record_state(name, committed(name, bundle.sha256, clock.now))
        assert report is not None
        coordinator.device_stored(report, clock.now)
    coordinator.tick(clock.now, {(rollout_id, 1): WaveTelemetry(new=HEALTHY)})
    assert registry.rollout(rollout_id).status == "completed"
    assert coordinator.plan(rollout_id) is None  # finished and settled: no longer followed
    kinds = [item.kind for item in registry.timeline(rollout_id=rollout_id, limit=200)]
    assert kinds.count("wave-passed") == 2 and kinds[-1] == "completed"


def test_a_batch_the_database_refused_is_saved_again_from_the_states(
    registry: Registry, bundle: Bundle, clock: FakeClock
) -> None:
    registry.provision_device("cam-1", ["line-a"])
    coordinator = RolloutCoordinator(registry, lambda _actions: None)
    rollout_id = coordinator.create(
        bundle.sha256, TargetSelector.tags(["line-a"]), [WaveSpec(percent=100)], None, clock.now
    )
    stored = registry.record_state("cam-1", committed("cam-1", bundle.sha256, clock.now))
    assert stored is not None
    with pytest.raises(RuntimeError, match="database went away"), coordinator.batch():
        coordinator.device_stored(stored, clock.now)
        raise RuntimeError("database went away")  # the transaction rolls back
    assert {d.device_id: d.status for d in registry.wave_devices(rollout_id)} == {"cam-1": "sent"}
    coordinator.save()  # the next save writes what the refused batch lost
    assert {d.device_id: d.status for d in registry.wave_devices(rollout_id)} == {
        "cam-1": "committed"
    }
    saved = registry.rollout_state(rollout_id)
    assert saved is not None and saved == coordinator.plan(rollout_id)
