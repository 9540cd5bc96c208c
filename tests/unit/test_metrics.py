"""The device's metrics: recent-window quantiles, the JSON snapshot, and the runtime's own metrics.

The exposition itself is prometheus_client's; these tests read it back with
prometheus_client's parser and check what edgefleet puts in it.
"""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.metrics import (
    DEFAULT_LATENCY_BUCKETS_S,
    STAGES,
    MetricsRegistry,
    RecentWindow,
    RuntimeMetrics,
    series_name,
)
from edgefleet.testing import FakeClock


def value(registry: MetricsRegistry, name: str, /, **labels: str) -> float:
    """A sample's value as ``/metrics`` has it (fails on a series that is not there)."""
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {series_name(name, labels)}"
    return found


# --- recent windows -------------------------------------------------------------


def test_quantiles_interpolate_like_numpy() -> None:
    window = RecentWindow()
    for observed in range(1, 101):
        window.observe(float(observed))
    assert window.quantile(0.5) == pytest.approx(50.5)
    assert window.quantile(0.95) == pytest.approx(95.05)
    assert window.quantile(0.99) == pytest.approx(99.01)
    assert window.quantile(0.0) == 1.0
    assert window.quantile(1.0) == 100.0

    data = np.random.default_rng(7).gamma(2.0, 4.0, 500)
    other = RecentWindow()
    for observed in data:
        other.observe(float(observed))
    assert other.quantiles([0.5, 0.95, 0.99]) == pytest.approx(
        list(np.percentile(data, [50, 95, 99]))
    )


def test_window_edge_cases() -> None:
    window = RecentWindow(size=3)
    assert window.quantile(0.5) is None
    assert len(window) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        window.quantile(1.5)
    with pytest.raises(ValueError, match="at least 1"):
        RecentWindow(size=0)
    for observed in (5.0, 1.0, 2.0, 3.0):
        window.observe(observed)
    assert len(window) == 3
    assert window.quantile(1.0) == 3.0  # 5.0 was the oldest and is gone


def test_histogram_buckets_cover_everything_and_quantiles_the_recent_window() -> None:
    registry = MetricsRegistry()
    family = registry.histogram(
        "edgefleet_test_seconds", "Test latency.", buckets=(1, 5, 10), window_size=10
    )
    hist = family.labels()
    for observed in range(1, 101):
        hist.observe(float(observed))
    assert value(registry, "edgefleet_test_seconds_count") == 100
    assert value(registry, "edgefleet_test_seconds_bucket", le="5.0") == 5
    assert value(registry, "edgefleet_test_seconds_sum") == 5050
    assert hist.quantiles([0.0, 1.0]) == [91.0, 100.0]  # only the last 10
    with pytest.raises(ValueError, match="NaN"):
        hist.observe(math.nan)
    assert value(registry, "edgefleet_test_seconds_count") == 100  # NaN never reached the sum
    with pytest.raises(ValueError, match="takes labels"):
        family.labels(stage="x")
    with pytest.raises(ValueError, match="at least 1"):
        registry.histogram("edgefleet_other_seconds", "Other.", window_size=0)


def test_labelled_series_keep_separate_windows_and_are_thread_safe() -> None:
    registry = MetricsRegistry()
    family = registry.histogram("edgefleet_work_seconds", "Work.", ("stage",), window_size=100_000)

    def work(stage: str, observed: float) -> None:
        for _ in range(2000):
            family.labels(stage=stage).observe(observed)

    threads = [
        threading.Thread(target=work, args=(stage, observed))
        for stage, observed in (("a", 1.0), ("b", 2.0))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    histograms = registry.snapshot()["histograms"]
    assert histograms['edgefleet_work_seconds{stage="a"}'] == {
        "count": 8000,
        "sum": 8000.0,
        "p50": 1.0,
        "p95": 1.0,
        "p99": 1.0,
    }
    assert histograms['edgefleet_work_seconds{stage="b"}']["count"] == 8000
    assert histograms['edgefleet_work_seconds{stage="b"}']["p50"] == 2.0


# --- snapshot -------------------------------------------------------------------


def test_snapshot_names_series_as_metrics_writes_them() -> None:
    registry = MetricsRegistry()
    paths = Gauge("edgefleet_paths", "Paths.", ["path", "kind"], registry=registry)
    paths.labels(path='a\\b"c\nd', kind="x").set(1)
    events = Counter("edgefleet_events_total", "Events.", ["kind"], registry=registry)
    events.labels(kind="a").inc(2)
    text = registry.render_prometheus()
    snapshot = registry.snapshot()
    gauge_series = 'edgefleet_paths{kind="x",path="a\\\\b\\"c\\nd"}'
    assert f"{gauge_series} 1.0\n" in text  # labels sorted and escaped the same way
    assert snapshot["gauges"] == {gauge_series: 1.0}
    assert 'edgefleet_events_total{kind="a"} 2.0\n' in text
    assert snapshot["counters"] == {'edgefleet_events_total{kind="a"}': 2.0}  # no _created
    assert "edgefleet_events_created" in text
    assert series_name("x", {}) == "x"


def test_metrics_stay_on_their_own_registry() -> None:
    first, second = RuntimeMetrics(), RuntimeMetrics()  # two devices in one process
    first.frames.inc(3)
    assert value(first.registry, "edgefleet_frames_total") == 3
    assert value(second.registry, "edgefleet_frames_total") == 0
    assert REGISTRY.get_sample_value("edgefleet_frames_total") is None


# --- runtime metrics ------------------------------------------------------------


def test_runtime_metrics_render_every_family_in_base_units() -> None:
    clock = FakeClock(1000.0)
    metrics = RuntimeMetrics(clock=clock)
    metrics.observe_stages(
        capture_wait_ms=0.2, preprocess_ms=1.5, invoke_ms=4.0, postprocess_ms=0.1, end_to_end_ms=6
    )
    metrics.record_prediction(clock.now, uncertain=True, staleness_ms=12.0)
    metrics.set_active_bundle("tiny", "1.0.0", "ab" * 32)
    families = {
        family.name: family
        for family in text_string_to_metric_families(metrics.registry.render_prometheus())
    }
    ours = {
        name: family.type
        for name, family in families.items()
        if name.startswith("edgefleet_") and not name.endswith("_created")
    }
    assert ours == {
        "edgefleet_stage_latency_seconds": "histogram",
        "edgefleet_staleness_seconds": "histogram",
        "edgefleet_frames": "counter",  # the parser names a counter family without _total
        "edgefleet_frames_dropped": "counter",
        "edgefleet_frames_corrupt": "counter",
        "edgefleet_source_reconnects": "counter",
        "edgefleet_inference_errors": "counter",
        "edgefleet_predictions_uncertain": "counter",
        "edgefleet_predictions_per_second": "gauge",
        "edgefleet_active_bundle_info": "gauge",
        "edgefleet_last_frame_age_seconds": "gauge",
    }
    assert "process_resident_memory_bytes" in families  # prometheus_client's process metrics
    latency = families["edgefleet_stage_latency_seconds"]
    assert {s.labels["stage"] for s in latency.samples} == set(STAGES)
    buckets = [
        float(s.labels["le"])
        for s in latency.samples
        if s.name.endswith("_bucket") and s.labels["stage"] == "invoke"
    ]
    assert buckets == [*DEFAULT_LATENCY_BUCKETS_S, math.inf]

    registry = metrics.registry
    bucket = "edgefleet_stage_latency_seconds_bucket"
    assert value(registry, bucket, stage="invoke", le="0.002") == 0
    assert value(registry, bucket, stage="invoke", le="0.005") == 1  # 4 ms
    assert value(
        registry, "edgefleet_stage_latency_seconds_sum", stage="preprocess"
    ) == pytest.approx(0.0015)
    assert value(registry, "edgefleet_frames_total") == 1
    assert value(registry, "edgefleet_predictions_uncertain_total") == 1
    assert value(registry, "edgefleet_staleness_seconds_bucket", le="0.01") == 0
    assert value(registry, "edgefleet_staleness_seconds_bucket", le="0.02") == 1  # 12 ms
    assert value(registry, "edgefleet_last_frame_age_seconds") == pytest.approx(0.012)


def test_counter_totals_follow_the_capture_layer_and_never_decrease() -> None:
    metrics = RuntimeMetrics()
    registry = metrics.registry

    def dropped_corrupt() -> tuple[float, float]:
        return (
            value(registry, "edgefleet_frames_dropped_total"),
            value(registry, "edgefleet_frames_corrupt_total"),
        )

    metrics.set_counter_totals(dropped=5, corrupt=1, reconnects=0)
    assert dropped_corrupt() == (5, 1)
    metrics.set_counter_totals(dropped=7)  # the others are left alone
    assert dropped_corrupt() == (7, 1)
    metrics.set_counter_totals(dropped=7, corrupt=1, reconnects=2)
    assert dropped_corrupt() == (7, 1)
    assert value(registry, "edgefleet_source_reconnects_total") == 2
    # A lower total means the capture layer restarted its count: keep counting up from it.
    metrics.set_counter_totals(dropped=3)
    assert dropped_corrupt()[0] == 10
    metrics.set_counter_totals(dropped=4)
    assert dropped_corrupt()[0] == 11
    metrics.set_counter_totals(dropped=0)
    assert dropped_corrupt()[0] == 11


def test_prediction_rate_over_a_sliding_window() -> None:
    clock = FakeClock(100.0)
    metrics = RuntimeMetrics(fps_window_s=2.0, clock=clock)
    registry = metrics.registry
    rate = "edgefleet_predictions_per_second"
    assert value(registry, rate) == 0.0
    for i in range(10):  # 10 per second for one second
        metrics.record_prediction(100.0 + i * 0.1, uncertain=False, staleness_ms=5.0)
    clock.now = 101.0
    assert value(registry, rate) == pytest.approx(10.0)  # rate over the time so far
    for i in range(40):  # then 20 per second for two seconds
        metrics.record_prediction(101.025 + i * 0.05, uncertain=False, staleness_ms=5.0)
    clock.now = 103.0
    assert metrics.predictions_per_second(103.0) == pytest.approx(20.0)
    clock.now = 104.0  # nothing for a second: half the window is empty
    assert value(registry, rate) == pytest.approx(10.0)
    clock.now = 110.0
    assert value(registry, rate) == 0.0
    assert value(registry, "edgefleet_frames_total") == 50


def test_active_bundle_series_is_replaced() -> None:
    metrics = RuntimeMetrics()
    info = "edgefleet_active_bundle_info"

    def series() -> list[tuple[dict[str, str], float]]:
        families = text_string_to_metric_families(metrics.registry.render_prometheus())
        return [(s.labels, s.value) for f in families if f.name == info for s in f.samples]

    assert series() == []  # nothing classifies yet
    metrics.set_active_bundle("tiny", "1.0.0", "aa" * 32)
    metrics.set_active_bundle("tiny", "1.1.0", "bb" * 32)
    assert series() == [({"name": "tiny", "version": "1.1.0", "sha256": "bb" * 32}, 1.0)]
    assert metrics.active_bundle == ("tiny", "1.1.0", "bb" * 32)


def test_last_frame_age_tracks_the_newest_frame() -> None:
    clock = FakeClock(50.0)
    metrics = RuntimeMetrics(clock=clock)
    age = "edgefleet_last_frame_age_seconds"
    assert math.isnan(value(metrics.registry, age))
    metrics.record_frame(49.0)
    assert value(metrics.registry, age) == 1.0
    metrics.record_prediction(50.0, uncertain=False, staleness_ms=2000.0)  # an older frame
    assert value(metrics.registry, age) == 1.0
    clock.now = 53.5
    assert value(metrics.registry, age) == 4.5


def test_snapshot_is_json_ready_in_seconds() -> None:
    clock = FakeClock(1000.0)
    metrics = RuntimeMetrics(clock=clock)
    for invoke_ms in (1.0, 2.0, 3.0, 4.0):
        metrics.observe_stages(0.1, 0.5, invoke_ms, 0.1, invoke_ms + 1)
    metrics.inference_errors.inc()
    metrics.set_active_bundle("tiny", "1.0.0", "ab" * 32)
    snapshot = metrics.registry.snapshot()
    json.dumps(snapshot, allow_nan=False)
    invoke = snapshot["histograms"]['edgefleet_stage_latency_seconds{stage="invoke"}']
    assert invoke == pytest.approx(
        {"count": 4, "sum": 0.010, "p50": 0.0025, "p95": 0.00385, "p99": 0.00397}
    )
    assert snapshot["histograms"]["edgefleet_staleness_seconds"] == {
        "count": 0,
        "sum": 0.0,
        "p50": None,
        "p95": None,
        "p99": None,
    }
    assert snapshot["counters"]["edgefleet_inference_errors_total"] == 1.0
    assert snapshot["gauges"]["edgefleet_last_frame_age_seconds"] is None  # NaN -> null
    assert snapshot["gauges"]["edgefleet_predictions_per_second"] == 0.0
    bundle = f'edgefleet_active_bundle_info{{name="tiny",sha256="{"ab" * 32}",version="1.0.0"}}'
    assert snapshot["gauges"][bundle] == 1.0
    assert not [name for section in snapshot.values() for name in section if "_created" in name]
