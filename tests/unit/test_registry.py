"""The fleet registry on SQLite (a WAL file) and on a real PostgreSQL server, same tests for both."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, text, update

from edge_runtime.bundle import (
    Bundle,
    Compatibility,
    DatasetRef,
    QualityReport,
    parse_bundle,
)
from edgefleet.testing import FakeClock
from fleet_server import db
from fleet_server.errors import (
    MalformedReportError,
    RegistryError,
    RegistryStorageError,
    RolloutError,
)
from fleet_server.quality_gate import QualityFigures, WaveTelemetry
from fleet_server.records import TargetSelector
from fleet_server.registry import Registry, TelemetryRetention, TimelineRetention
from fleet_server.rollout_plan import RolloutState, Step
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec
from fleet_server.statuses import DeviceStatus, RolloutStatus, WaveStatus
from fleet_server.telemetry import LATENCY_SERIES, quality_figures
from tests.models import LABELS


@pytest.fixture
def bundles(make_bundle: Callable[..., bytes]) -> list[Bundle]:
    """Three released versions; 1.1.0 carries a quality report and a latency budget."""
    quality = QualityReport(
        dataset=DatasetRef(name="trashnet-test", sha256="a" * 64, num_images=120),
        float_accuracy=0.91,
        accuracy=0.9,
        mean_confidence=0.82,
        class_distribution=[0.2, 0.2, 0.2, 0.2, 0.1, 0.1],
    )
    return [
        parse_bundle(make_bundle(version="1.0.0")),
        parse_bundle(
            make_bundle(
                version="1.1.0",
                quality=quality,
                compatibility=Compatibility(latency_budget_ms=25.0),
            )
        ),
        parse_bundle(make_bundle(version="1.2.0")),
    ]


def state(device_id: str, phase: str, updated_at: float, **fields: Any) -> dict[str, Any]:
    return {
        "protocol": 1,
        "device_id": device_id,
        "state": phase,
        "runtime_version": "0.1.0",
        "updated_at": updated_at,
        **fields,
    }


def event(
    device_id: str, bundle: str, from_: str, to: str, at: float, *, reason: str = ""
) -> dict[str, Any]:
    return {
        "protocol": 1,
        "device_id": device_id,
        "bundle": bundle,
        "assignment": 3,
        "from": from_,
        "to": to,
        "reason": reason,
        "at": at,
    }


def snapshot(
    frames: float,
    errors: float = 0.0,
    *,
    p95: float | None = 10.0,
    fps: float = 5.0,
    confidence: float | None = None,
    counts: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A telemetry payload shaped like the device's ``/stats``."""
    payload: dict[str, Any] = {
        "health": {"healthy": True},
        "metrics": {
            "counters": {
                "edgefleet_frames_total": frames,
                "edgefleet_inference_errors_total": errors,
                "edgefleet_predictions_uncertain_total": 0.0,
            },
            "gauges": {"edgefleet_predictions_per_second": fps},
            "histograms": {  # the device reports seconds; ``p95`` here is in milliseconds
                LATENCY_SERIES: {
                    "count": frames,
                    "sum": 1.0,
                    "p50": 0.005,
                    "p95": None if p95 is None else p95 / 1e3,
                    "p99": None,
                }
            },
        },
        "info": {},
    }
    if confidence is not None or counts is not None:
        payload["quality"] = {"mean_confidence": confidence, "class_counts": counts or {}}
    return payload


# --- bundles --------------------------------------------------------------------------


def test_import_bundle_is_idempotent_and_keeps_the_baseline(
    registry: Registry, bundles: list[Bundle], clock: FakeClock
) -> None:
    first = registry.import_bundle(bundles[1])
    clock.advance(60)
    again = registry.import_bundle(bundles[1])

    assert again == first
    assert first.released_at == clock.now - 60
    assert first.name == "tiny-classifier"
    assert (first.version, first.format, first.precision) == ("1.1.0", "onnx", "fp32")
    assert first.size == bundles[1].size
    assert first.labels == tuple(LABELS)
    assert first.baseline_accuracy == pytest.approx(0.9)
    assert first.baseline_mean_confidence == pytest.approx(0.82)
    assert first.baseline_class_distribution == pytest.approx(
        dict(zip(LABELS, [0.2, 0.2, 0.2, 0.2, 0.1, 0.1], strict=True))
    )
    assert first.latency_budget_ms == 25.0
    assert first.quality is not None
    assert first.quality["float_accuracy"] == pytest.approx(0.91)
    assert [b.sha256 for b in registry.bundles()] == [bundles[1].sha256]

    plain = registry.import_bundle(bundles[0])
    assert plain.quality is None and plain.baseline_accuracy is None
    assert registry.bundle(plain.sha256) == plain
    assert len(registry.bundles()) == 2
    with pytest.raises(RegistryError, match=r"unknown bundle 'f{64}'"):
        registry.bundle("f" * 64)


# --- devices --------------------------------------------------------------------------


def test_devices_are_provisioned_or_registered_on_first_contact(
    registry: Registry, bundles: list[Bundle]
) -> None:
    cam1 = registry.provision_device("cam-1", ["line-a", "north"], "rpi4-cpu")
    assert (cam1.origin, cam1.tags, cam1.profile, cam1.availability) == (
        "provisioned",
        ("line-a", "north"),
        "rpi4-cpu",
        "unknown",
    )
    with pytest.raises(RegistryError, match="'cam-1' is already provisioned"):
        registry.provision_device("cam-1")

    cam2 = registry.register_on_first_contact("cam-2")
    assert cam2.origin == "first-contact" and cam2.tags == ()
    assert registry.register_on_first_contact("cam-2") == cam2
    adopted = registry.provision_device("cam-2", ["line-a"], credentials_hash="argon2:x")
    assert adopted.origin == "provisioned" and adopted.has_credentials
    assert adopted.registered_at == cam2.registered_at
    assert registry.credentials_hash("cam-2") == "argon2:x"
    registry.provision_device("cam-3", ["south"])

    assert [d.id for d in registry.devices()] == ["cam-1", "cam-2", "cam-3"]
    assert [d.id for d in registry.devices(tags=["line-a"])] == ["cam-1", "cam-2"]
    assert [d.id for d in registry.devices_with_tags(["line-a", "north"])] == ["cam-1"]
    assert [d.id for d in registry.devices_with_tags(["north", "south"], match="any")] == [
        "cam-1",
        "cam-3",
    ]
    assert registry.groups() == {
        "line-a": ["cam-1", "cam-2"],
        "north": ["cam-1"],
        "south": ["cam-3"],
    }
    assert [d.id for d in registry.select_devices(TargetSelector.tags(["south"]))] == ["cam-3"]
    assert len(registry.select_devices(TargetSelector.everything())) == 3

    assert registry.set_tags("cam-3", ["north", "north"]).tags == ("north",)
    assert registry.set_tags("cam-3", ["south", "north"]).tags == ("north", "south")
    assert registry.groups()["north"] == ["cam-1", "cam-3"]

    sha = registry.import_bundle(bundles[0]).sha256
    assert registry.pin("cam-1", sha).pinned_bundle == sha
    assert registry.pin("cam-1", None).pinned_bundle is None
    with pytest.raises(RegistryError, match="unknown bundle"):
        registry.pin("cam-1", "e" * 64)
    with pytest.raises(RegistryError, match="unknown device 'cam-9'"):
        registry.device("cam-9")
    with pytest.raises(RegistryError, match="unknown device 'cam-9'"):
        registry.select_devices(TargetSelector.devices(["cam-1", "cam-9"]))
    with pytest.raises(RegistryError, match="device id 'bad/id' is not valid"):
        registry.provision_device("bad/id")
    with pytest.raises(RegistryError, match="tag '#' is not valid"):
        registry.set_tags("cam-1", ["#"])


def test_unknown_devices_are_refused_without_auto_registration(
    open_registry: Callable[..., Registry],
) -> None:
    registry = open_registry(auto_register=False)
    with pytest.raises(RegistryError, match="unknown device 'cam-7'"):
        registry.record_state("cam-7", state("cam-7", "idle", 1.0))
    with pytest.raises(RegistryError, match="unknown device 'cam-7'"):
        registry.record_telemetry("cam-7", snapshot(1))
    assert registry.devices() == []


# --- device reports -------------------------------------------------------------------


def test_reported_state_is_applied_in_order_and_checked(
    registry: Registry, clock: FakeClock
) -> None:
    a, b = "a" * 64, "b" * 64
    assert registry.record_state(
        "cam-1",
        state(
            "cam-1",
            "probation",
            100.0,
            sequence=5,
            epoch="e1",
            active={"bundle": b, "name": "m", "version": "1.1.0"},
            last_good={"bundle": a, "name": "m", "version": "1.0.0"},
            target={"bundle": b, "assignment": 7},
            future_field="ignored",
        ),
    )
    device = registry.device("cam-1")
    assert device.origin == "first-contact"
    assert (device.phase, device.active_bundle, device.active_version) == ("probation", b, "1.1.0")
    assert (device.last_good_bundle, device.target_bundle, device.target_assignment) == (a, b, 7)
    assert (device.runtime_version, device.state_updated_at) == ("0.1.0", 100.0)
    assert device.last_seen is None  # a retained state says nothing about presence

    # an older state arriving late (QoS 1 redelivery, a replica's copy) changes nothing
    older = state("cam-1", "downloading", 99.0, sequence=4, epoch="e1")
    assert not registry.record_state("cam-1", older)
    assert registry.device("cam-1").phase == "probation"
    newer = state("cam-1", "committed", 101.0, sequence=6, epoch="e1", active=None)
    assert registry.record_state("cam-1", newer)
    device = registry.device("cam-1")
    assert (device.phase, device.active_bundle, device.state_updated_at) == (
        "committed",
        None,
        101.0,
    )

    for payload, message in [
        (state("cam-2", "idle", 1.0), "names device 'cam-2'"),
        ({**state("cam-1", "idle", 1.0), "protocol": 2}, "uses protocol 2"),
        (state("cam-1", "napping", 1.0), "state: Input should be"),
        (state("cam-1", "idle", 1.0, target={"bundle": "xyz", "assignment": 1}), "target.bundle"),
        (state("cam-1", "idle", float("nan")), "updated_at"),
        ([1, 2], "not a JSON object"),
    ]:
        with pytest.raises(MalformedReportError, match=message):
            registry.record_state("cam-1", payload)

    assert registry.record_availability("cam-1", True)
    assert not registry.record_availability("cam-1", True)
    device = registry.device("cam-1")
    assert (device.availability, device.last_seen) == ("online", clock.now)
    clock.advance(30)
    assert registry.record_availability("cam-1", False)
    device = registry.device("cam-1")
    assert (device.availability, device.last_seen) == ("offline", clock.now - 30)
    kinds = [item.kind for item in registry.timeline(device_id="cam-1")]
    assert kinds == ["device-registered", "device-online", "device-offline"]


def test_events_reach_the_timeline_once_and_belong_to_their_rollout(
    registry: Registry, bundles: list[Bundle], clock: FakeClock
) -> None:
    old, new = (registry.import_bundle(b).sha256 for b in bundles[:2])
    registry.provision_device("cam-1", ["line-a"])
    registry.provision_device("cam-2", ["line-a"])
    rollout_id, _ = _start(registry, new, old, [("cam-1",)], clock.now)

    first = registry.record_event("cam-1", event("cam-1", new, "probation", "committed", 5.0))
    assert first is not None
    assert (first.rollout_id, first.device_id, first.kind) == (rollout_id, "cam-1", "device-event")
    assert first.message.startswith("probation -> committed (bundle ")
    assert first.data is not None and first.data["from"] == "probation"
    assert (
        registry.record_event("cam-1", event("cam-1", new, "probation", "committed", 5.0)) is None
    )
    assert registry.device("cam-1").last_seen == clock.now

    rolled_back = registry.record_event(
        "cam-1", event("cam-1", old, "activating", "rolled-back", 6.0, reason="latency over budget")
    )
    assert rolled_back is not None and rolled_back.rollout_id == rollout_id
    assert rolled_back.message.endswith(": latency over budget")
    outside = registry.record_event("cam-2", event("cam-2", new, "idle", "downloading", 7.0))
    assert outside is not None and outside.rollout_id is None  # cam-2 is in no wave
    refused = registry.record_event(
        "cam-2", {"protocol": 1, "kind": "refused", "reason": "replayed timestamp", "at": 8.0}
    )
    assert refused is not None and refused.kind == "device-refused"
    with pytest.raises(MalformedReportError, match="a transition needs bundle"):
        registry.record_event("cam-2", {"protocol": 1, "to": "idle", "at": 9.0})

    in_rollout = registry.timeline(rollout_id=rollout_id)
    assert [item.kind for item in in_rollout] == [
        "rollout-created",
        "wave-created",
        "wave-status",
        "rollout-status",
        "device-status",
        "started",
        "wave-started",
        "device-event",
        "device-event",
    ]
    assert [item.kind for item in registry.timeline(device_id="cam-2")] == [
        "device-provisioned",
        "device-event",
        "device-refused",
    ]
    everything = registry.timeline(limit=1000)
    assert registry.timeline(limit=2) == everything[-2:]
    page = registry.timeline(limit=3, after_id=everything[1].id)
    assert page == everything[2:5]
    note = registry.add_timeline("operator-note", "paused for lunch", rollout_id=rollout_id)
    assert registry.timeline(rollout_id=rollout_id)[-1] == note
    with pytest.raises(RegistryError, match="unknown rollout 999"):
        registry.add_timeline("operator-note", "x", rollout_id=999)
    with pytest.raises(RegistryError, match="limit must be"):
        registry.timeline(limit=0)


# --- telemetry ------------------------------------------------------------------------


def test_telemetry_is_kept_within_the_retention_bounds(
    open_registry: Callable[..., Registry], clock: FakeClock
) -> None:
    registry = open_registry(retention=TelemetryRetention(max_per_device=5, max_age_s=3600.0))
    start = clock.now
    for i in range(8):
        registry.record_telemetry("cam-1", snapshot(i * 10), at=start + i)
        registry.record_telemetry("cam-2", snapshot(i), at=start + i)
    kept = registry.telemetry("cam-1", limit=100)
    assert [at for at, _ in kept] == [start + i for i in range(3, 8)]
    assert kept[-1][1]["metrics"]["counters"]["edgefleet_frames_total"] == 70
    assert len(registry.telemetry("cam-2")) == 5
    assert registry.device("cam-1").last_seen == start + 7

    # a new snapshot drops the device's own expired ones; prune_telemetry drops everyone's
    registry.record_telemetry("cam-1", snapshot(80), at=start + 3600 + 4.5)
    assert [at for at, _ in registry.telemetry("cam-1")] == [
        start + 5,
        start + 6,
        start + 7,
        start + 3604.5,
    ]
    assert registry.prune_telemetry(now=start + 3600 + 6.5) == 2 + 4
    assert [at for at, _ in registry.telemetry("cam-1")] == [start + 7, start + 3604.5]
    assert [at for at, _ in registry.telemetry("cam-2")] == [start + 7]

    with pytest.raises(MalformedReportError, match="over the 2000-byte cap"):
        open_registry(max_telemetry_bytes=2000).record_telemetry("cam-1", {"x": "y" * 3000})
    with pytest.raises(MalformedReportError, match="not JSON-safe"):
        registry.record_telemetry("cam-1", {"fps": float("inf")})
    with pytest.raises(ValueError, match="max_per_device"):
        TelemetryRetention(max_per_device=0)


def test_telemetry_is_aggregated_per_device_and_per_wave(
    registry: Registry, bundles: list[Bundle], clock: FakeClock
) -> None:
    t0 = clock.now
    # before the window: the baseline counts are measured from
    registry.record_telemetry("cam-1", snapshot(1000, 0), at=t0 - 10)
    registry.record_telemetry(
        "cam-1",
        snapshot(1100, 1, p95=12.0, confidence=0.8, counts={"glass": 600, "paper": 500}),
        at=t0 + 10,
    )
    registry.record_telemetry(
        "cam-1",
        snapshot(1300, 2, p95=14.0, confidence=0.9, counts={"glass": 700, "paper": 600}),
        at=t0 + 30,
    )
    # cam-2 restarted in the window: its total fell from 500 to 40
    registry.record_telemetry("cam-2", snapshot(400, p95=20.0), at=t0 + 5)
    registry.record_telemetry("cam-2", snapshot(500, p95=30.0), at=t0 + 15)
    registry.record_telemetry("cam-2", snapshot(40, p95=40.0), at=t0 + 25)

    summary = registry.aggregate_telemetry(["cam-1", "cam-2", "cam-3"], since=t0)
    cam1 = summary.devices["cam-1"]
    assert (cam1.samples, cam1.first_at, cam1.last_at) == (2, t0 + 10, t0 + 30)
    assert (cam1.predictions, cam1.errors) == (300, 2)
    assert cam1.predictions_per_s == pytest.approx(300 / 40)
    assert cam1.error_rate == pytest.approx(2 / 302)
    assert cam1.latency_p95_ms == pytest.approx(13.0)
    assert cam1.mean_confidence == pytest.approx(0.85)
    # the baseline had no class counts: counting starts at the first snapshot that has them
    assert cam1.class_counts == {"glass": 100, "paper": 100}
    assert cam1.class_distribution == {"glass": 0.5, "paper": 0.5}

    cam2 = summary.devices["cam-2"]
    assert cam2.predictions == 100 + 40
    assert cam2.predictions_per_s == pytest.approx(140 / 20)
    assert cam2.latency_p95_ms == 30.0
    assert summary.devices["cam-3"].samples == 0

    overall = summary.overall
    assert overall is not None
    assert (overall.devices, overall.samples, overall.predictions) == (3, 5, 440)
    assert overall.predictions_per_s == pytest.approx(300 / 40 + 140 / 20)
    assert overall.latency_p95_ms == 30.0  # the highest device p95, as the quality gate combines
    assert overall.mean_confidence == pytest.approx(0.85)
    assert overall.error_rate == pytest.approx(2 / 442)
    gate_input = quality_figures(overall)
    assert gate_input.mean_confidence == pytest.approx(0.85)
    assert gate_input.model_copy(update={"mean_confidence": None}) == QualityFigures(
        predictions=440, errors=2, latency_p95_ms=30.0, class_counts={"glass": 100, "paper": 100}
    )

    # without a window start, a single snapshot counts from the device's start
    only_last = registry.aggregate_telemetry(["cam-1"], since=t0 + 20)
    assert only_last.devices["cam-1"].predictions == 200  # from the t0+10 baseline
    lone = registry.aggregate_telemetry(["cam-1"], until=t0 - 1).devices["cam-1"]
    assert (lone.predictions, lone.predictions_per_s) == (1000, 5.0)

    # per wave: the wave's devices since the planner started it
    sha = registry.import_bundle(bundles[0]).sha256
    _, started = _start(registry, sha, None, [("cam-2",)], t0 + 12)
    wave = started.waves[0]
    per_wave = registry.aggregate_telemetry(wave.devices, since=wave.started_at)
    assert per_wave.since == t0 + 12
    assert list(per_wave.devices) == ["cam-2"]
    assert per_wave.devices["cam-2"].predictions == 100 + 40


# --- assignments ----------------------------------------------------------------------


def test_assignments_only_move_forward(registry: Registry, bundles: list[Bundle]) -> None:
    v1, v2 = (registry.import_bundle(b).sha256 for b in bundles[:2])
    registry.provision_device("cam-1")
    first = registry.set_assignment("groups", "line-a", v1, 1)
    assert registry.set_assignment("groups", "line-a", v1, 1) == first
    registry.set_assignment("groups", "line-a", v2, 2)
    registry.set_assignment("devices", "cam-1", v1, 1)
    assert [(a.kind, a.name, a.bundle_sha256, a.version) for a in registry.assignments()] == [
        ("devices", "cam-1", v1, 1),
        ("groups", "line-a", v2, 2),
    ]
    with pytest.raises(RegistryError, match="at version 2; version 1"):
        registry.set_assignment("groups", "line-a", v1, 1)
    with pytest.raises(RegistryError, match="at version 2; version 2"):
        registry.set_assignment("groups", "line-a", v1, 2)
    with pytest.raises(RegistryError, match="unknown bundle"):
        registry.set_assignment("groups", "line-a", "c" * 64, 3)
    with pytest.raises(RegistryError, match="kind must be devices or groups"):
        registry.set_assignment("tags", "line-a", v1, 3)  # type: ignore[arg-type]
    assert registry.clear_assignment("devices", "cam-1")
    assert not registry.clear_assignment("devices", "cam-1")
    assert [a.name for a in registry.assignments()] == ["line-a"]
    assert [item.kind for item in registry.timeline(device_id="cam-1")][-2:] == [
        "assignment",
        "assignment-cleared",
    ]


# --- rollouts -------------------------------------------------------------------------


HEALTHY = QualityFigures(
    predictions=1000, errors=0, latency_p95_ms=20.0, mean_confidence=0.8, class_counts={"a": 600}
)


def _start(
    registry: Registry, new: str, old: str | None, waves: list[tuple[str, ...]], now: float
) -> tuple[int, RolloutState]:
    """A started rollout of ``new`` whose waves are exactly ``waves``, saved as the server does."""
    devices = tuple(TargetDevice(device_id=d) for wave in waves for d in wave)
    spec = RolloutSpec(
        bundle=new,
        previous_bundle=old,
        devices=devices,
        waves=tuple(WaveSpec(devices=wave) for wave in waves),
    )
    target = TargetSelector.devices([d.device_id for d in devices])
    rollout = registry.create_rollout(new, target, previous_sha256=old)
    step = RolloutState.create(spec, now).start(now)
    registry.save_rollout(rollout.id, step.state, events=step.events)
    return rollout.id, step.state


def _rollout_in_progress(
    registry: Registry, bundles: list[Bundle], now: float
) -> tuple[int, RolloutState]:
    """A rollout of 1.1.0 over 1.0.0 driven by the real planner, saved after every step:
    wave 1 (cam-1) passed, wave 2 (cam-2..4) under way; cam-5 is in no wave."""
    old, new = (registry.import_bundle(b).sha256 for b in bundles[:2])
    for i in range(1, 6):
        registry.provision_device(f"cam-{i}", ["line-a"])
    spec = RolloutSpec(
        bundle=new,
        previous_bundle=old,
        devices=tuple(TargetDevice(device_id=f"cam-{i}", tags=("line-a",)) for i in range(1, 5)),
        waves=(
            WaveSpec(devices=("cam-1",), health_window_s=0),
            WaveSpec(devices=("cam-2", "cam-3", "cam-4"), success_threshold=0.5),
        ),
    )
    rollout = registry.create_rollout(
        new, TargetSelector.tags(["line-a"]), {"seed": 3}, previous_sha256=old
    )
    saved: RolloutState | None = None

    def save(step: Step) -> RolloutState:
        nonlocal saved
        registry.save_rollout(rollout.id, step.state, before=saved, events=step.events)
        saved = step.state
        return step.state

    state = save(RolloutState.create(spec, now).start(now))
    state = save(state.device_report("cam-1", "committed", new, "", now))
    state = save(state.tick(now, {0: WaveTelemetry(new=HEALTHY)}))
    state = save(state.device_report("cam-2", "committed", new, "", now))
    state = save(state.device_report("cam-3", "downloading", None, "", now, target_sha=new))
    state = save(
        state.device_report(
            "cam-4", "rolled-back", old, "smoke test: golden vector 1", now, target_sha=new
        )
    )
    return rollout.id, state


def test_the_tables_project_the_planner_state(
    registry: Registry, bundles: list[Bundle], clock: FakeClock
) -> None:
    rollout_id, state = _rollout_in_progress(registry, bundles, clock.now)
    assert registry.rollout_state(rollout_id) == state
    rollout = registry.rollout(rollout_id)
    assert rollout.status == "running" and rollout.status is RolloutStatus.RUNNING
    assert rollout.target == TargetSelector.tags(["line-a"])
    assert rollout.settings == {"seed": 3}
    assert rollout.previous_sha256 == bundles[0].sha256

    waves = registry.waves(rollout_id)
    assert [(w.index, w.status, w.device_ids) for w in waves] == [
        (0, WaveStatus.PASSED, ("cam-1",)),
        (1, WaveStatus.RUNNING, ("cam-2", "cam-3", "cam-4")),
    ]
    assert waves[0].started_at == waves[0].finished_at == clock.now
    assert waves[1].finished_at is None
    statuses = {
        d.device_id: (d.wave_index, d.status, d.reason) for d in registry.wave_devices(rollout_id)
    }
    reason = state.devices["cam-4"].reason
    assert "golden vector 1" in reason
    assert statuses == {
        "cam-1": (0, DeviceStatus.COMMITTED, None),
        "cam-2": (1, DeviceStatus.COMMITTED, None),
        "cam-3": (1, DeviceStatus.IN_PROGRESS, None),
        "cam-4": (1, DeviceStatus.FAILED, reason),
    }
    canary_id = waves[0].id
    assert [d.device_id for d in registry.wave_devices(rollout_id, wave_id=canary_id)] == ["cam-1"]
    kinds = [item.kind for item in registry.timeline(rollout_id=rollout_id, limit=1000)]
    assert kinds[:5] == [
        "rollout-created",
        "wave-created",
        "wave-status",
        "wave-created",
        "rollout-status",
    ]
    assert {"started", "wave-started", "device-committed", "wave-passed", "device-failed"} <= set(
        kinds
    )
    assert kinds.count("device-status") == 8  # each of cam-1..4: sent, then its outcome

    # saving the same state again writes nothing; compared with the rows it repairs them
    entries = len(registry.timeline(rollout_id=rollout_id, limit=1000))
    registry.save_rollout(rollout_id, state, before=state)
    registry.save_rollout(rollout_id, state)
    assert len(registry.timeline(rollout_id=rollout_id, limit=1000)) == entries
    with registry.batch(), registry._transaction(write=True) as session:
        session.execute(
            update(db.WaveDevice).where(db.WaveDevice.device_id == "cam-2").values(status="pending")
        )
    registry.save_rollout(rollout_id, state, before=state)  # the diff sees no change
    assert {d.device_id: d.status for d in registry.wave_devices(rollout_id)}["cam-2"] == "pending"
    registry.save_rollout(rollout_id, state)  # without ``before`` the rows are compared
    assert {d.device_id: d.status for d in registry.wave_devices(rollout_id)}[
        "cam-2"
    ] == "committed"

    # a finished rollout's status never changes, whatever an older state says
    aborted = state.abort("wave 2 looks wrong", clock.now)
    registry.save_rollout(rollout_id, aborted.state, before=state, events=aborted.events)
    done = registry.rollout(rollout_id)
    assert (done.status, done.reason) == ("rolled-back", aborted.state.reason)
    registry.save_rollout(rollout_id, state, before=aborted.state)
    assert registry.rollout(rollout_id).status == "rolled-back"
    assert [r.id for r in registry.rollouts("rolled-back")] == [rollout_id]
    assert registry.rollouts(["running", RolloutStatus.PENDING]) == []
    assert registry.rollouts_with_devices(["rolled-back"], ["committed"]) == [rollout_id]

    with pytest.raises(RegistryError, match="rollout status 'finished'"):
        registry.rollouts("finished")
    with pytest.raises(RegistryError, match="device status 'done'"):
        registry.rollouts_with_devices(["running"], ["done"])
    with pytest.raises(RegistryError, match="unknown rollout 42"):
        registry.rollout(42)
    with pytest.raises(RegistryError, match="unknown rollout 42"):
        registry.save_rollout(42, state)
    with pytest.raises(RegistryError, match="unknown bundle"):
        registry.create_rollout("d" * 64, TargetSelector.everything())
    with pytest.raises(RolloutError, match="cannot roll back to itself"):
        registry.create_rollout(
            bundles[0].sha256, TargetSelector.everything(), previous_sha256=bundles[0].sha256
        )


def test_a_restarted_server_sees_everything_it_stored(
    open_registry: Callable[..., Registry], bundles: list[Bundle], clock: FakeClock
) -> None:
    before = open_registry()
    rollout_id, plan = _rollout_in_progress(before, bundles, clock.now)
    before.set_assignment("devices", "cam-1", bundles[1].sha256, 4)
    before.record_state("cam-2", state("cam-2", "committed", 50.0, sequence=9, epoch="ab"))
    before.record_telemetry("cam-2", snapshot(10), at=clock.now)
    expected = (
        before.bundles(),
        before.devices(),
        before.assignments(),
        before.rollouts(),
        before.waves(rollout_id),
        before.wave_devices(rollout_id),
        before.timeline(limit=1000),
        before.telemetry("cam-2"),
        before.rollout_state(rollout_id),
    )
    before.close()

    after = open_registry()
    assert (
        after.bundles(),
        after.devices(),
        after.assignments(),
        after.rollouts(),
        after.waves(rollout_id),
        after.wave_devices(rollout_id),
        after.timeline(limit=1000),
        after.telemetry("cam-2"),
        after.rollout_state(rollout_id),
    ) == expected
    # what a resuming rollout asks: who still needs the bundle, who must not get it again
    pending = [
        d.device_id
        for d in after.wave_devices(rollout_id)
        if d.status not in {"committed", "failed", "rolled-back", "timed-out"}
    ]
    assert pending == ["cam-3"]
    late = state("cam-2", "downloading", 49.0, sequence=8, epoch="ab")
    assert not after.record_state("cam-2", late)
    step = plan.device_report("cam-3", "committed", bundles[1].sha256, "", clock.now)
    after.save_rollout(rollout_id, step.state, events=step.events)
    assert {d.device_id: d.status for d in after.wave_devices(rollout_id)}["cam-3"] == "committed"


def test_a_device_clock_that_jumps_never_freezes_its_row(
    registry: Registry, clock: FakeClock
) -> None:
    """Issue #15, item 3: order by (epoch, sequence) or arrival, never by the device's clock."""
    year = 365 * 24 * 3600.0
    ahead = state("cam-1", "idle", clock.now + year, sequence=3, epoch="e1")
    assert registry.record_state("cam-1", ahead, fresh=True)
    assert registry.device("cam-1").clock_skew_s == -year
    back = state("cam-1", "downloading", clock.now - 2.5, sequence=4, epoch="e1")
    assert registry.record_state("cam-1", back, fresh=True)
    device = registry.device("cam-1")
    assert (device.phase, device.clock_skew_s, device.state_received_at) == (
        "downloading",
        2.5,
        clock.now,
    )
    # a retained copy is stored but measures nothing: it may be hours old
    clock.advance(3600)
    assert registry.record_state("cam-1", back)
    assert registry.device("cam-1").clock_skew_s == 2.5
    # the same report again (a retained replay after a reconnect) is taken, idempotently
    assert registry.record_state("cam-1", back)
    # a wiped store starts a new epoch at sequence 0: it is not older
    assert registry.record_state("cam-1", state("cam-1", "idle", 1.0, sequence=0, epoch="e2"))
    assert registry.device("cam-1").phase == "idle"
    # devices that send no sequence are taken in arrival order, whatever their clock says
    assert registry.record_state("cam-9", state("cam-9", "idle", clock.now + year))
    assert registry.record_state("cam-9", state("cam-9", "committed", 5.0))
    assert registry.device("cam-9").phase == "committed"
    for bad, message in [
        (state("cam-1", "idle", 1.0, sequence=-1), "sequence"),
        (state("cam-1", "idle", 1.0, sequence=2**63), "sequence"),
        (state("cam-1", "idle", 1.0, epoch="X" * 40), "epoch"),
    ]:
        with pytest.raises(MalformedReportError, match=message):
            registry.record_state("cam-1", bad)


def test_a_schema_v1_database_is_migrated_in_place(
    database_url: str, open_registry: Callable[..., Registry]
) -> None:
    first = open_registry()
    first.record_state("cam-1", state("cam-1", "committed", 10.0))
    first.close()
    engine = db.make_engine(database_url)
    with engine.begin() as connection:  # what a v1 server left: no ordering, skew or reason
        for column in (
            "state_sequence",
            "state_epoch",
            "state_received_at",
            "clock_skew_s",
            "last_event_reason",
        ):
            connection.exec_driver_sql(f"ALTER TABLE devices DROP COLUMN {column}")
        connection.execute(update(db.SchemaInfo).values(version=1))
    engine.dispose()
    migrated = open_registry()
    device = migrated.device("cam-1")
    assert (device.phase, device.state_updated_at, device.clock_skew_s) == ("committed", 10.0, None)
    assert migrated.record_state("cam-1", state("cam-1", "idle", 11.0, sequence=1, epoch="e"))
    engine = db.make_engine(database_url)
    with engine.connect() as connection:
        assert connection.execute(select(db.SchemaInfo.version)).scalar() == db.SCHEMA_VERSION == 4
    engine.dispose()


def test_a_database_of_another_schema_version_is_refused(
    database_url: str, open_registry: Callable[..., Registry]
) -> None:
    open_registry().close()
    engine = db.make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(update(db.SchemaInfo).values(version=99))
    engine.dispose()
    with pytest.raises(RegistryStorageError, match="holds schema version 99; this server uses"):
        Registry.open(database_url)


def test_concurrent_writers_do_not_lock_each_other_out(
    open_registry: Callable[..., Registry], bundles: list[Bundle]
) -> None:
    """Two server threads with their own engines (as two processes would) write at once."""
    first, second = open_registry(), open_registry()
    rollout_id, plan = _rollout_in_progress(first, bundles, 1000.0)
    new = bundles[1].sha256
    later = plan.device_report("cam-3", "committed", new, "", 1000.0).state
    rounds = 60
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(registry: Registry, name: str) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(rounds):
                registry.record_telemetry(name, snapshot(i), at=1000.0 + i)
                registry.record_state(name, state(name, "downloading", float(i)))
                registry.record_state("cam-3", state("cam-3", "downloading", float(i)))
                registry.record_event(name, event(name, "b" * 64, "idle", "downloading", float(i)))
                registry.save_rollout(rollout_id, later if i % 2 else plan)
                registry.add_timeline("note", f"{name} {i}", rollout_id=rollout_id)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(first, "cam-a")),
        threading.Thread(target=work, args=(second, "cam-b")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for name in ("cam-a", "cam-b"):
        assert len(first.telemetry(name, limit=1000)) == rounds
        assert first.device(name).state_updated_at == rounds - 1
        assert (
            len([e for e in first.timeline(device_id=name, limit=1000) if e.kind == "device-event"])
            == rounds
        )
    assert first.device("cam-3").state_updated_at == rounds - 1
    notes = [e for e in first.timeline(rollout_id=rollout_id, limit=1000) if e.kind == "note"]
    assert len(notes) == 2 * rounds


def test_sqlite_files_use_wal_and_foreign_keys(tmp_path: Any) -> None:
    engine = db.make_engine(db.sqlite_url(tmp_path / "fleet.db"))
    db.create_schema(engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    engine.dispose()
    with pytest.raises(RegistryStorageError, match="cannot open database"):
        Registry.open(db.sqlite_url(tmp_path / "missing" / "fleet.db"))
    with pytest.raises(RegistryError, match="not a database URL"):
        db.make_engine("not a url")
    with pytest.raises(RegistryError, match="cannot use database"):
        db.make_engine("nosuchdb://user:secret@host/db")


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    pytest.importorskip("psycopg", reason="psycopg (3) is not installed")
    engine = db.make_engine("postgresql://fleet:secret@127.0.0.1:1/fleet")
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    engine.dispose()


def test_telemetry_of_one_bundle_leaves_out_what_another_served(
    registry: Registry, clock: FakeClock
) -> None:
    t0 = clock.now
    old, new = "a" * 64, "b" * 64
    for i, (bundle, confidence) in enumerate([(old, 0.95), (old, 0.95), (new, 0.6), (new, 0.7)]):
        payload = snapshot(100.0 * (i + 1), confidence=confidence) | {"bundle": bundle}
        registry.record_telemetry("cam-1", payload, at=t0 + i)
    mixed = registry.aggregate_telemetry(["cam-1"], since=t0).overall
    only_new = registry.aggregate_telemetry(["cam-1"], since=t0, bundle=new).overall
    only_old = registry.aggregate_telemetry(["cam-1"], until=t0 + 1.5, bundle=old).overall
    assert mixed is not None and only_new is not None and only_old is not None
    assert only_new.mean_confidence == pytest.approx(0.65)
    assert only_old.mean_confidence == pytest.approx(0.95)
    assert mixed.mean_confidence is not None and mixed.mean_confidence > 0.7
    assert only_new.predictions == 100  # between its own two snapshots only
    nothing = registry.aggregate_telemetry(["cam-1"], bundle="c" * 64).overall
    assert nothing is not None and nothing.samples == 0 and nothing.mean_confidence is None


def test_rollouts_still_waiting_for_devices_are_found_in_one_query(
    registry: Registry, bundles: list[Bundle]
) -> None:
    rollout_id, _ = _rollout_in_progress(registry, bundles, 1000.0)  # cam-3 in progress
    assert registry.rollouts_with_devices(["running"], ["in-progress"]) == [rollout_id]
    assert registry.rollouts_with_devices(["running"], ["timed-out"]) == []
    assert registry.rollouts_with_devices(["completed"], ["in-progress"]) == []
    with pytest.raises(RegistryError):
        registry.rollouts_with_devices(["exploded"], ["sent"])


def test_the_server_broker_username_cannot_name_a_device(registry: Registry) -> None:
    """Issue #15, item 6: refused before anything is written, by provisioning or first contact."""
    with pytest.raises(RegistryError, match="'edgefleet-server' is reserved for the fleet server"):
        registry.provision_device("edgefleet-server", credentials_hash="x")
    with pytest.raises(RegistryError, match="reserved"):
        registry.record_state("edgefleet-server", state("edgefleet-server", "idle", 1.0))
    with pytest.raises(RegistryError, match="reserved"):
        registry.record_availability("edgefleet-server", True)
    assert registry.devices() == []
    assert registry.timeline() == []
    assert registry.provision_device("cam-1", credentials_hash="h").id == "cam-1"
    assert registry.credentials_hashes() == {"cam-1": "h"}


def test_the_timeline_is_kept_within_its_retention_bounds(
    open_registry: Callable[..., Registry], clock: FakeClock
) -> None:
    """Issue #15, item 10: a device flooding events cannot grow the database without bound."""
    registry = open_registry(
        timeline_retention=TimelineRetention(max_per_device=10, max_age_s=3600.0)
    )
    start = clock.now
    for i in range(30):  # each event unique (its own time), as a flooding device sends them
        registry.record_event("cam-1", event("cam-1", "b" * 64, "idle", "downloading", start + i))
    registry.record_event("cam-2", event("cam-2", "b" * 64, "idle", "downloading", start))
    registry.add_timeline("note", "an operator's note, about no device")
    assert len(registry.timeline(device_id="cam-1", limit=1000)) == 31  # registered + 30
    assert registry.prune(now=clock.now) == 21
    kept = registry.timeline(device_id="cam-1", limit=1000)
    assert len(kept) == 10 and kept[-1].data is not None and kept[-1].data["at"] == start + 29
    assert len(registry.timeline(device_id="cam-2", limit=1000)) == 2
    assert registry.prune(now=clock.now) == 0
    # everything older than an hour (by the server's clock) goes, the operator's note included
    clock.advance(3601)
    assert registry.prune(now=clock.now) == 10 + 2 + 1
    assert registry.timeline(limit=1000) == []
    with pytest.raises(ValueError, match="max_per_device must be at least 1"):
        TimelineRetention(max_per_device=0)
