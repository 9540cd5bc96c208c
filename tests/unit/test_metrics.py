"""Metric primitives, the Prometheus text rendering and the runtime's own metrics."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from edge_runtime.metrics import (
    DEFAULT_LATENCY_BUCKETS_MS,
    STAGES,
    Counter,
    Gauge,
    Histogram,
    MetricsRegistry,
    RuntimeMetrics,
    format_value,
)
from tests.prom_text import ExpositionError, parse, value_of


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- primitives ---------------------------------------------------------------


def test_histogram_counts_each_observation_in_its_inclusive_bucket() -> None:
    hist = Histogram(buckets=(1, 5, 10))
    for value in (0.5, 1, 3, 5, 7, 100):
        hist.observe(value)
    assert hist.count == 6
    assert hist.sum == pytest.approx(116.5)
    assert hist.cumulative_buckets() == [(1.0, 2), (5.0, 4), (10.0, 5), (math.inf, 6)]


def test_histogram_renders_cumulative_le_lines() -> None:
    registry = MetricsRegistry()
    hist = registry.histogram("edgefleet_test_ms", "Test latency.", buckets=(1, 5, 10))
    for value in (0.5, 1, 3, 5, 7, 100):
        hist.observe(value)
    assert registry.render_prometheus() == (
        "# HELP edgefleet_test_ms Test latency.\n"
        "# TYPE edgefleet_test_ms histogram\n"
        'edgefleet_test_ms_bucket{le="1.0"} 2.0\n'
        'edgefleet_test_ms_bucket{le="5.0"} 4.0\n'
        'edgefleet_test_ms_bucket{le="10.0"} 5.0\n'
        'edgefleet_test_ms_bucket{le="+Inf"} 6.0\n'
        "edgefleet_test_ms_sum 116.5\n"
        "edgefleet_test_ms_count 6.0\n"
    )


def test_quantiles_interpolate_like_numpy() -> None:
    hist = Histogram()
    for value in range(1, 101):
        hist.observe(float(value))
    assert hist.quantile(0.5) == pytest.approx(50.5)
    assert hist.quantile(0.95) == pytest.approx(95.05)
    assert hist.quantile(0.99) == pytest.approx(99.01)
    assert hist.quantile(0.0) == 1.0
    assert hist.quantile(1.0) == 100.0

    data = np.random.default_rng(7).gamma(2.0, 4.0, 500)
    other = Histogram()
    for value in data:
        other.observe(float(value))
    expected = np.percentile(data, [50, 95, 99])
    assert other.quantiles([0.5, 0.95, 0.99]) == pytest.approx(list(expected))


def test_quantiles_come_from_the_recent_reservoir_only() -> None:
    hist = Histogram(reservoir_size=10)
    for value in range(1, 101):
        hist.observe(float(value))
    assert hist.count == 100  # buckets and count cover everything ...
    assert hist.quantile(0.0) == 91.0  # ... quantiles only the last 10
    assert hist.quantile(1.0) == 100.0


def test_histogram_edge_cases() -> None:
    hist = Histogram()
    assert hist.quantile(0.5) is None
    assert hist.buckets == tuple(float(b) for b in DEFAULT_LATENCY_BUCKETS_MS)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hist.quantile(1.5)
    with pytest.raises(ValueError, match="NaN"):
        hist.observe(math.nan)
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram(buckets=(1, 1, 2))
    with pytest.raises(ValueError, match="finite"):
        Histogram(buckets=(1, math.nan))
    with pytest.raises(ValueError, match="finite"):
        Histogram(buckets=())
    with pytest.raises(ValueError, match="reservoir_size"):
        Histogram(reservoir_size=0)
    assert Histogram(buckets=(1, 2, math.inf)).buckets == (1.0, 2.0)  # +Inf is implicit


def test_counter_and_gauge() -> None:
    counter = Counter()
    counter.inc()
    counter.inc(2.5)
    assert counter.value == 3.5
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1)
    gauge = Gauge()
    gauge.set(4)
    gauge.inc(-1.5)
    assert gauge.value == 2.5
    readings = iter([1.0, 2.0])
    computed = Gauge(callback=lambda: next(readings))
    assert (computed.value, computed.value) == (1.0, 2.0)
    with pytest.raises(ValueError, match="callback"):
        computed.set(3)


def test_primitives_are_thread_safe() -> None:
    counter, hist = Counter(), Histogram(buckets=(1, 2))

    def work() -> None:
        for _ in range(2000):
            counter.inc()
            hist.observe(1.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value == 16000
    assert hist.count == 16000
    assert hist.cumulative_buckets() == [(1.0, 0), (2.0, 16000), (math.inf, 16000)]


def test_format_value() -> None:
    assert [format_value(v) for v in (5, 0.5, 2500, math.inf, -math.inf, math.nan)] == [
        "5.0",
        "0.5",
        "2500.0",
        "+Inf",
        "-Inf",
        "NaN",
    ]


# --- registry -----------------------------------------------------------------


def test_label_values_and_help_are_escaped() -> None:
    registry = MetricsRegistry()
    family = registry.gauge_family(
        "edgefleet_paths", 'Help with \\ and\nnewline "as is".', ["path"]
    )
    family.labels(path='a\\b"c\nd').set(1)
    text = registry.render_prometheus()
    assert 'edgefleet_paths{path="a\\\\b\\"c\\nd"} 1.0\n' in text
    assert '# HELP edgefleet_paths Help with \\\\ and\\nnewline "as is".\n' in text
    families = parse(text)
    assert families["edgefleet_paths"].help == 'Help with \\ and\nnewline "as is".'
    assert value_of(families, "edgefleet_paths", path='a\\b"c\nd') == 1.0


def test_constant_labels_come_first_and_label_sets_are_checked() -> None:
    registry = MetricsRegistry()
    family = registry.counter_family(
        "edgefleet_events_total", "Events.", ["kind"], const_labels={"device": "cam-1"}
    )
    family.labels(kind="b").inc(2)
    family.labels(kind="a").inc()
    lines = registry.render_prometheus().splitlines()
    assert lines[2:] == [
        'edgefleet_events_total{device="cam-1",kind="a"} 1.0',
        'edgefleet_events_total{device="cam-1",kind="b"} 2.0',
    ]
    with pytest.raises(ValueError, match="takes labels"):
        family.labels(other="x")
    with pytest.raises(ValueError, match=r"use \.labels\(\)"):
        family.only.inc()
    family.remove(kind="a")
    assert 'kind="a"' not in registry.render_prometheus()


def test_registry_rejects_bad_names_and_duplicates() -> None:
    registry = MetricsRegistry()
    registry.counter("edgefleet_x_total", "X.")
    with pytest.raises(ValueError, match="already registered"):
        registry.gauge("edgefleet_x_total", "X again.")
    with pytest.raises(ValueError, match="must start with 'edgefleet_'"):
        registry.counter("other_total", "Not ours.")
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.counter("edgefleet-x", "Dash.")
    with pytest.raises(ValueError, match="invalid label name"):
        registry.counter_family("edgefleet_y_total", "Y.", ["bad-label"])
    with pytest.raises(ValueError, match="reserved label 'le'"):
        registry.histogram_family("edgefleet_z_ms", "Z.", ["le"])
    with pytest.raises(ValueError, match="repeat"):
        registry.counter_family("edgefleet_w_total", "W.", ["a"], const_labels={"a": "1"})
    assert [f.name for f in registry.families()] == ["edgefleet_x_total"]
    assert registry.get("edgefleet_x_total").kind == "counter"


def test_parser_catches_broken_expositions() -> None:
    good = (
        "# HELP edgefleet_h_ms H.\n# TYPE edgefleet_h_ms histogram\n"
        'edgefleet_h_ms_bucket{le="1.0"} 2.0\nedgefleet_h_ms_bucket{le="+Inf"} 3.0\n'
        "edgefleet_h_ms_sum 4.0\nedgefleet_h_ms_count 3.0\n"
    )
    parse(good)
    for broken in (
        good.replace('le="1.0"} 2.0', 'le="1.0"} 4.0'),  # not cumulative
        good.replace("_count 3.0", "_count 5.0"),  # +Inf != count
        good.replace("# TYPE edgefleet_h_ms histogram\n", ""),  # no TYPE
        good.rstrip("\n"),  # no final newline
        good.replace('le="1.0"', 'le="1.0",x="a\\tb"'),  # bad escape
        good.replace('le="1.0"}', 'le="1.0'),  # unterminated labels
        good.replace("_sum 4.0", "_sum four"),  # bad value
        good + 'edgefleet_h_ms_bucket{le="+Inf"} 3.0\n',  # duplicate series
    ):
        with pytest.raises(ExpositionError):
            parse(broken)


# --- runtime metrics ------------------------------------------------------------


def test_runtime_metrics_render_parses_with_every_family() -> None:
    clock = FakeClock()
    metrics = RuntimeMetrics(clock=clock)
    metrics.observe_stages(
        capture_wait_ms=0.2, preprocess_ms=1.5, invoke_ms=4.0, postprocess_ms=0.1, end_to_end_ms=6
    )
    metrics.record_prediction(clock.now, uncertain=True, staleness_ms=12.0)
    metrics.set_active_bundle("tiny", "1.0.0", "ab" * 32)
    families = parse(metrics.registry.render_prometheus())
    assert {name: family.type for name, family in families.items()} == {
        "edgefleet_stage_latency_ms": "histogram",
        "edgefleet_staleness_ms": "histogram",
        "edgefleet_frames_total": "counter",
        "edgefleet_frames_dropped_total": "counter",
        "edgefleet_frames_corrupt_total": "counter",
        "edgefleet_source_reconnects_total": "counter",
        "edgefleet_inference_errors_total": "counter",
        "edgefleet_predictions_uncertain_total": "counter",
        "edgefleet_fps": "gauge",
        "edgefleet_active_bundle_info": "gauge",
        "edgefleet_last_frame_age_seconds": "gauge",
    }
    stages = {s.labels["stage"] for s in families["edgefleet_stage_latency_ms"].samples}
    assert stages == set(STAGES)
    bucket = "edgefleet_stage_latency_ms_bucket"
    assert value_of(families, bucket, stage="invoke", le="2.0") == 0
    assert value_of(families, bucket, stage="invoke", le="5.0") == 1
    assert value_of(families, "edgefleet_stage_latency_ms_sum", stage="preprocess") == 1.5
    assert value_of(families, "edgefleet_frames_total") == 1
    assert value_of(families, "edgefleet_predictions_uncertain_total") == 1
    assert value_of(families, "edgefleet_staleness_ms_bucket", le="20.0") == 1
    assert value_of(families, "edgefleet_last_frame_age_seconds") == pytest.approx(0.012)


def test_counter_totals_follow_the_capture_layer_and_never_decrease() -> None:
    metrics = RuntimeMetrics()
    metrics.set_counter_totals(dropped=5, corrupt=1, reconnects=0)
    assert (metrics.frames_dropped.value, metrics.frames_corrupt.value) == (5, 1)
    metrics.set_counter_totals(dropped=7)  # the others are left alone
    assert (metrics.frames_dropped.value, metrics.frames_corrupt.value) == (7, 1)
    metrics.set_counter_totals(dropped=7, corrupt=1, reconnects=2)
    assert metrics.frames_dropped.value == 7
    assert metrics.source_reconnects.value == 2
    # A lower total means the capture layer restarted its count: keep counting up from it.
    metrics.set_counter_totals(dropped=3)
    assert metrics.frames_dropped.value == 10
    metrics.set_counter_totals(dropped=4)
    assert metrics.frames_dropped.value == 11
    metrics.set_counter_totals(dropped=0)
    assert metrics.frames_dropped.value == 11


def test_fps_over_a_sliding_window() -> None:
    clock = FakeClock(100.0)
    metrics = RuntimeMetrics(fps_window_s=2.0, clock=clock)
    assert metrics.fps.value == 0.0
    for i in range(10):  # 10 fps for one second
        metrics.record_prediction(100.0 + i * 0.1, uncertain=False, staleness_ms=5.0)
    clock.now = 101.0
    assert metrics.fps.value == pytest.approx(10.0)  # rate over the time so far
    for i in range(40):  # then 20 fps for two seconds
        metrics.record_prediction(101.025 + i * 0.05, uncertain=False, staleness_ms=5.0)
    clock.now = 103.0
    assert metrics.predictions_per_second(103.0) == pytest.approx(20.0)
    clock.now = 104.0  # nothing for a second: half the window is empty
    assert metrics.fps.value == pytest.approx(10.0)
    clock.now = 110.0
    assert metrics.fps.value == 0.0
    assert metrics.frames.value == 50


def test_active_bundle_label_set_is_replaced() -> None:
    metrics = RuntimeMetrics()
    metrics.set_active_bundle("tiny", "1.0.0", "aa" * 32)
    metrics.set_active_bundle("tiny", "1.1.0", "bb" * 32)
    families = parse(metrics.registry.render_prometheus())
    samples = families["edgefleet_active_bundle_info"].samples
    assert [(s.labels, s.value) for s in samples] == [
        ({"name": "tiny", "version": "1.1.0", "sha256": "bb" * 32}, 1.0)
    ]
    assert metrics.active_bundle == ("tiny", "1.1.0", "bb" * 32)


def test_last_frame_age_tracks_the_newest_frame() -> None:
    clock = FakeClock(50.0)
    metrics = RuntimeMetrics(clock=clock)
    assert math.isnan(metrics.last_frame_age_seconds.value)
    metrics.record_frame(49.0)
    assert metrics.last_frame_age_seconds.value == 1.0
    metrics.record_prediction(50.0, uncertain=False, staleness_ms=2000.0)  # an older frame
    assert metrics.last_frame_age_seconds.value == 1.0
    clock.now = 53.5
    assert metrics.last_frame_age_seconds.value == 4.5


def test_snapshot_is_json_ready() -> None:
    clock = FakeClock()
    metrics = RuntimeMetrics(clock=clock)
    for invoke in (1.0, 2.0, 3.0, 4.0):
        metrics.observe_stages(0.1, 0.5, invoke, 0.1, invoke + 1)
    metrics.inference_errors.inc()
    snapshot = metrics.registry.snapshot()
    json.dumps(snapshot, allow_nan=False)
    invoke = snapshot["histograms"]['edgefleet_stage_latency_ms{stage="invoke"}']
    assert invoke == pytest.approx({"count": 4, "sum": 10.0, "p50": 2.5, "p95": 3.85, "p99": 3.97})
    assert snapshot["histograms"]["edgefleet_staleness_ms"]["p50"] is None
    assert snapshot["counters"]["edgefleet_inference_errors_total"] == 1.0
    assert snapshot["gauges"]["edgefleet_last_frame_age_seconds"] is None  # NaN -> null
    assert snapshot["gauges"]["edgefleet_fps"] == 0.0
