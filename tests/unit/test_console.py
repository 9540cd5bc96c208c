"""The console's pure parts and its page cache: health, the versions a device ran, telemetry
series, one build per change; and its reads on real SQLite and PostgreSQL registries."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet_server.console.figures import (
    device_health,
    latest_figures,
    telemetry_series,
    version_runs,
)
from fleet_server.console.page_cache import PageCache
from fleet_server.records import DeviceInfo, TimelineItem
from fleet_server.registry import Registry
from fleet_server.registry.console_views import ConsoleViews

A, B, C = "a" * 64, "b" * 64, "c" * 64
NOW = 1_800_000_000.0


def device(**changes: object) -> DeviceInfo:
    base = DeviceInfo(
        id="cam-1",
        tags=("line1",),
        profile=None,
        origin="provisioned",
        pinned_bundle=None,
        registered_at=NOW - 100,
        last_seen=NOW - 1,
        availability="online",
        phase="idle",
        active_bundle=A,
        active_name="m",
        active_version="1.0.0",
        last_good_bundle=A,
        target_bundle=None,
        target_assignment=None,
        runtime_version="0.1.0",
        state_updated_at=NOW - 1,
        has_credentials=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def snapshot(
    frames: float, uncertain: float, errors: float = 0, bundle: str = A
) -> dict[str, object]:
    return {
        "bundle": bundle,
        "metrics": {
            "counters": {
                "edgefleet_frames_total": frames,
                "edgefleet_predictions_uncertain_total": uncertain,
                "edgefleet_inference_errors_total": errors,
            },
            "gauges": {"edgefleet_predictions_per_second": 30.0},
            "histograms": {'edgefleet_stage_latency_seconds{stage="invoke"}': {"p95": 0.002}},
        },
        "quality": {
            "mean_confidence": 0.7,
            "class_counts": {"glass": int(frames) // 2, "paper": int(frames) // 2},
        },
    }


def test_health_names_the_first_problem() -> None:
    ok = latest_figures(NOW, snapshot(100, 1))
    assert device_health(device(), ok, NOW).status == "ok"
    assert (
        device_health(device(last_seen=None, availability="unknown"), None, NOW).status == "unknown"
    )
    assert device_health(device(availability="offline"), ok, NOW).status == "offline"
    back = device_health(device(phase="rolled-back", last_event_reason="golden vector 0"), ok, NOW)
    assert back.status == "rolled-back" and "golden vector 0" in back.reason
    assert device_health(device(phase="downloading"), ok, NOW).status == "updating"
    assert device_health(device(last_seen=NOW - 301), ok, NOW).status == "silent"
    failing = latest_figures(NOW, snapshot(100, 1, errors=5))
    assert failing.error_rate == pytest.approx(5 / 105)
    assert device_health(device(), failing, NOW).status == "errors"


def event(
    at: float, bundle: str, to: str, reason: str = "", rollout: int | None = 1
) -> TimelineItem:
    return TimelineItem(
        id=int(at),
        at=at,
        kind="device-event",
        message=f"-> {to}",
        rollout_id=rollout,
        device_id="cam-1",
        data={"bundle": bundle, "to": to, "reason": reason},
    )


def test_versions_a_device_ran_with_when_and_why_each_ended() -> None:
    events = [
        event(10, B, "downloading"),
        event(11, B, "activating"),
        event(12, B, "probation"),
        event(13, B, "committed"),
        event(20, C, "smoke-testing", rollout=2),
        event(21, C, "rolled-back", "smoke test failed: golden vector 0", rollout=2),  # never ran
        event(30, C, "activating", rollout=3),
        event(35, C, "rolled-back", "latency over budget", rollout=3),
    ]
    runs = version_runs(events, active=B, previous_of={1: A, 3: B})
    assert [(r.bundle, r.started_at, r.ended_at, r.ended_because) for r in runs] == [
        (A, None, 11, f"replaced by {B[:12]}"),
        (B, 11, 30, f"replaced by {C[:12]}"),
        (C, 30, 35, "rolled back: latency over budget"),
        (B, 35, None, None),
    ]
    # a device never updated: its installed bundle, still running
    assert [(r.bundle, r.ended_at) for r in version_runs([], A, {})] == [(A, None)]


def test_telemetry_series_reads_uncertain_shares_between_snapshots() -> None:
    rows = [(NOW, snapshot(100, 10)), (NOW + 1, snapshot(200, 30)), (NOW + 2, snapshot(50, 5))]
    points = telemetry_series(rows)
    assert [p["uncertain_rate"] for p in points] == [None, pytest.approx(0.2), None]
    assert points[0]["latency_p95_ms"] == pytest.approx(2.0)
    assert {p["bundle"] for p in points} == {A}


def test_a_page_is_built_once_per_change_and_at_most_once_per_min_age() -> None:
    clock = [0.0]
    stamp = ["s1"]
    cache = PageCache(min_age_s=1.0, clock=lambda: clock[0])
    built = []

    def build() -> dict[str, object]:
        built.append(stamp[0])
        return {"n": len(built), "pad": "x" * 4000}

    first = cache.get("fleet", lambda: stamp[0], build)
    assert first.etag == '"s1"' and first.gzipped is not None
    clock[0] = 5.0
    assert cache.get("fleet", lambda: stamp[0], build) is first  # same stamp: no build
    stamp[0] = "s2"
    clock[0] = 5.5  # built 5.5 s ago: the new stamp builds
    second = cache.get("fleet", lambda: stamp[0], build)
    assert second.etag == '"s2"' and built == ["s1", "s2"]
    stamp[0] = "s3"
    clock[0] = 5.9  # younger than min_age: the last build serves, however the stamp moved
    assert cache.get("fleet", lambda: stamp[0], build) is second
    assert cache.builds == 2


def test_stamps_move_with_what_pages_show(database_url: str) -> None:
    """On SQLite and PostgreSQL: the stamps, the overview and a device's page."""
    with Registry.open(database_url) as registry:
        views = ConsoleViews(registry)
        registry.provision_device("cam-1", tags=["line1"])
        registry.provision_device("cam-2", tags=["line2"])
        fleet, one = views.stamp("fleet"), views.stamp("device", "cam-1")
        assert views.stamp("fleet") == fleet
        registry.record_telemetry("cam-1", snapshot(100, 1))
        registry.record_telemetry("cam-1", snapshot(200, 3))
        assert views.stamp("fleet") != fleet and views.stamp("device", "cam-1") != one
        page = views.fleet(NOW)
        assert page["by_version"] == {"none": 2} and page["tags"] == ["line1", "line2"]
        first, second = page["devices"]
        assert first["figures"]["uncertain_rate"] == pytest.approx(0.015)  # the newest snapshot
        assert second["figures"] is None and second["tags"] == ["line2"]
        device = views.device("cam-1", NOW)
        assert [p["uncertain_rate"] for p in device["series"]] == [None, pytest.approx(0.02)]
        assert device["class_shares"] == {A: {"glass": 0.5, "paper": 0.5}}
        assert [e["kind"] for e in device["events"]] == ["device-provisioned"]
        with pytest.raises(ValueError, match="no console page"):
            views.stamp("nothing")
