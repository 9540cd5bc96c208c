"""The registry's counts for ``/metrics`` (SQLite and PostgreSQL): right, and grouped in the database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event

from edge_runtime.bundle import Bundle, parse_bundle
from edgefleet.testing import FakeClock
from fleet_server.quality_gate import QualityFigures, WaveTelemetry
from fleet_server.records import TargetSelector
from fleet_server.registry import Registry
from fleet_server.rollout_plan import RolloutState, Step
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec

HEALTHY = QualityFigures(
    predictions=1000, errors=0, latency_p95_ms=20.0, mean_confidence=0.8, class_counts={"a": 600}
)
ERRING = HEALTHY.model_copy(update={"errors": 100})  # a 10% error rate: the gate fails it


@pytest.fixture
def registry(database_url: str, fake_clock: FakeClock) -> Iterator[Registry]:
    with Registry.open(database_url, clock=fake_clock) as opened:
        yield opened


@pytest.fixture
def bundles(make_bundle: Callable[..., bytes]) -> list[Bundle]:
    """1.0.0 and 1.1.0 of one model, and 1.1.0 again in another file (another sha256)."""
    return [
        parse_bundle(make_bundle(version="1.0.0")),
        parse_bundle(make_bundle(version="1.1.0")),
        parse_bundle(make_bundle(version="1.1.0", description="1.1.0 built again")),
    ]


def state(device_id: str, phase: str, active: str | None) -> dict[str, Any]:
    return {
        "protocol": 1,
        "device_id": device_id,
        "state": phase,
        "runtime_version": "0.1.0",
        "updated_at": 100.0,
        "active": None if active is None else {"bundle": active, "name": "m", "version": "x"},
    }


class Drive:
    """A rollout driven by the real planner, saved after every step as the server does."""

    def __init__(self, registry: Registry, new: str, old: str, waves: list[WaveSpec]) -> None:
        self.registry, self.new = registry, new
        devices = tuple(TargetDevice(device_id=d) for wave in waves for d in wave.devices)
        spec = RolloutSpec(bundle=new, previous_bundle=old, devices=devices, waves=tuple(waves))
        target = TargetSelector.devices([d.device_id for d in devices])
        self.id = registry.create_rollout(new, target, previous_sha256=old).id
        self.saved: RolloutState | None = None
        self.state = self.save(RolloutState.create(spec, 0.0).start(0.0))

    def save(self, step: Step) -> RolloutState:
        self.registry.save_rollout(self.id, step.state, before=self.saved, events=step.events)
        self.saved = self.state = step.state
        return step.state

    def commit(self, device_id: str, now: float) -> None:
        self.save(self.state.device_report(device_id, "committed", self.new, "", now))

    def tick(self, now: float, telemetry: dict[int, WaveTelemetry] | None = None) -> None:
        self.save(self.state.tick(now, telemetry or {}))


def test_an_empty_fleet_counts_zero(registry: Registry) -> None:
    counts = registry.fleet_counts()
    assert (counts.availability, counts.phases, counts.rollouts, counts.running) == ({}, {}, {}, {})
    assert counts.bundles == 0
    assert counts.gate_verdicts == {"passed": 0, "failed": 0, "undecided": 0, "timed-out": 0}


def test_devices_are_counted_by_availability_phase_and_catalogued_version(
    registry: Registry, bundles: list[Bundle]
) -> None:
    v1, v11, v11_again = (registry.import_bundle(b).sha256 for b in bundles)
    for i in range(1, 6):
        registry.provision_device(f"cam-{i}")
    registry.record_state("cam-1", state("cam-1", "committed", v1))
    registry.record_state("cam-2", state("cam-2", "probation", v11))
    registry.record_state("cam-3", state("cam-3", "committed", v11_again))
    registry.record_state("cam-4", state("cam-4", "idle", "f" * 64))  # not in the catalogue
    for device_id in ("cam-1", "cam-2", "cam-3"):
        registry.record_availability(device_id, True)
    registry.record_availability("cam-4", False)

    counts = registry.fleet_counts()
    assert counts.availability == {"online": 3, "offline": 1, "unknown": 1}
    assert counts.phases == {"committed": 2, "probation": 1, "idle": 1, None: 1}
    assert counts.bundles == 3
    # both files of 1.1.0 count as 1.1.0; the uncatalogued bundle adds no series
    assert counts.running == {("tiny-classifier", "1.0.0"): 1, ("tiny-classifier", "1.1.0"): 2}

    registry.record_state("cam-1", {**state("cam-1", "committed", None), "updated_at": 101.0})
    assert registry.fleet_counts().running == {
        ("tiny-classifier", "1.0.0"): 0,
        ("tiny-classifier", "1.1.0"): 2,
    }


def test_gate_verdicts_and_rollouts_are_counted_from_what_the_planner_recorded(
    registry: Registry, bundles: list[Bundle]
) -> None:
    old, new = (registry.import_bundle(b).sha256 for b in bundles[:2])
    for i in range(1, 6):
        registry.provision_device(f"cam-{i}")
    watched = {"health_window_s": 0.0}

    # passed, then undecided (said once however often the gate is asked)
    staged = Drive(
        registry,
        new,
        old,
        [WaveSpec(devices=("cam-1",), **watched), WaveSpec(devices=("cam-2",), **watched)],
    )
    staged.commit("cam-1", 1.0)
    staged.tick(2.0, {0: WaveTelemetry(new=HEALTHY)})
    staged.commit("cam-2", 3.0)
    staged.tick(4.0)
    staged.tick(5.0)
    # undecided, then failed at the gate timeout
    waiting = Drive(
        registry, new, old, [WaveSpec(devices=("cam-3",), gate_timeout_s=10, **watched)]
    )
    waiting.commit("cam-3", 1.0)
    waiting.tick(2.0)
    waiting.tick(20.0)
    # failed on its figures
    erring = Drive(registry, new, old, [WaveSpec(devices=("cam-4",), **watched)])
    erring.commit("cam-4", 1.0)
    erring.tick(2.0, {0: WaveTelemetry(new=ERRING)})
    # failed by its devices (the success threshold), not by the gate: no verdict
    refused = Drive(registry, new, old, [WaveSpec(devices=("cam-5",), **watched)])
    refused.save(
        refused.state.device_report("cam-5", "rolled-back", old, "smoke test", 1.0, target_sha=new)
    )
    refused.tick(2.0)
    assert registry.waves(refused.id)[0].status == "failed"

    counts = registry.fleet_counts()
    assert counts.gate_verdicts == {"passed": 1, "failed": 1, "undecided": 2, "timed-out": 1}
    assert counts.rollouts == {"running": 1, "rolled-back": 3}


def test_a_scrape_loads_no_rows_only_counts(registry: Registry, bundles: list[Bundle]) -> None:
    registry.import_bundle(bundles[0])
    for i in range(50):
        registry.provision_device(f"cam-{i}")
    statements: list[str] = []
    engine = registry._engine
    assert engine is not None

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.lower())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        registry.fleet_counts()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    queries = [s for s in statements if s.lstrip().startswith("select")]
    assert len(queries) == 6
    assert all("count(" in s for s in queries)
    assert all("group by" in s for s in queries if "from devices" in s)
