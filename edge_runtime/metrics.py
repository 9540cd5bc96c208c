"""The device's metrics: prometheus_client for ``/metrics``, plus what it lacks.

Every metric lives on a per-instance :class:`MetricsRegistry` (a
``prometheus_client.CollectorRegistry``, never the process-global default
one), so several runtimes in one process (the fleet simulator, tests) keep
their own figures. ``prometheus_client`` writes the exposition format; this
module adds the two things it has no notion of:

- the most recent observations of each histogram series
  (:class:`RecentWindow`), for the p50/p95/p99 that the device's telemetry,
  ``/stats`` and the fleet server's quality gate read (Prometheus itself
  computes quantiles from the buckets, over a time range, on its side);
- :meth:`MetricsRegistry.snapshot`, every series as JSON-friendly values.

Names follow Prometheus conventions: base units (seconds), ``_total`` on
counters. The pipeline measures in milliseconds; :class:`RuntimeMetrics`
converts at this boundary.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "DEFAULT_LATENCY_BUCKETS_S",
    "DEFAULT_WINDOW_SIZE",
    "SNAPSHOT_QUANTILES",
    "STAGES",
    "CameraMetrics",
    "MetricsRegistry",
    "RecentHistogram",
    "RecentHistogramFamily",
    "RecentWindow",
    "RuntimeMetrics",
    "series_name",
]

DEFAULT_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""From half a millisecond (a tiny int8 model) to 2.5 s (a stalled camera)."""
DEFAULT_WINDOW_SIZE = 2048
"""Observations each histogram series keeps for its recent quantiles."""
SNAPSHOT_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
STAGES = ("capture_wait", "preprocess", "invoke", "postprocess", "end_to_end")

_WindowKey = tuple[str, tuple[tuple[str, str], ...]]


def series_name(name: str, labels: Mapping[str, str]) -> str:
    """A series as ``/metrics`` writes it: ``name{a="x",b="y"}``, labels sorted (``name`` bare)."""
    if not labels:
        return name
    inner = ",".join(f'{key}="{_escape_label_value(labels[key])}"' for key in sorted(labels))
    return f"{name}{{{inner}}}"


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _window_key(name: str, labels: Mapping[str, str]) -> _WindowKey:
    return name, tuple(sorted(labels.items()))


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


class RecentWindow:
    """The last ``size`` observations of a series, for quantiles of recent behaviour."""

    def __init__(self, size: int = DEFAULT_WINDOW_SIZE) -> None:
        if size < 1:
            raise ValueError(f"a recent window holds at least 1 observation, got {size}")
        self._lock = threading.Lock()
        self._values: deque[float] = deque(maxlen=size)

    def observe(self, value: float) -> None:
        """Keep ``value``, forgetting the oldest one when the window is full."""
        with self._lock:
            self._values.append(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the window; ``None`` while it is empty."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """Several quantiles from one consistent copy of the window.

        Linear interpolation between closest ranks (numpy's default method).
        """
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValueError(f"quantiles must lie in [0, 1], got {list(qs)}")
        with self._lock:
            data = sorted(self._values)
        if not data:
            return [None for _ in qs]
        return [_interpolate(data, q) for q in qs]


def _interpolate(data: list[float], q: float) -> float:
    position = q * (len(data) - 1)
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


class RecentHistogram:
    """One histogram series: Prometheus buckets, and its most recent observations."""

    def __init__(self, series: Histogram, window: RecentWindow) -> None:
        self._series = series
        self.window = window

    def observe(self, value: float) -> None:
        """Record one observation (NaN is refused: it would poison the sum)."""
        if math.isnan(value):
            raise ValueError("cannot observe NaN")
        self._series.observe(value)
        self.window.observe(value)

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """Quantiles of the recent observations (see :meth:`RecentWindow.quantiles`)."""
        return self.window.quantiles(qs)


class RecentHistogramFamily:
    """A histogram with label names whose every series keeps a :class:`RecentWindow`."""

    def __init__(
        self,
        name: str,
        histogram: Histogram,
        labelnames: Sequence[str],
        windows: _Windows,
        window_size: int,
    ) -> None:
        self.name = name
        self.labelnames = tuple(labelnames)
        self._histogram = histogram
        self._windows = windows
        self._window_size = window_size
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], RecentHistogram] = {}
        RecentWindow(window_size)  # a bad size fails here, at registration

    def labels(self, **values: str) -> RecentHistogram:
        """The series for these label values (none for a histogram without labels)."""
        if set(values) != set(self.labelnames):
            raise ValueError(
                f"{self.name} takes labels {sorted(self.labelnames)}, got {sorted(values)}"
            )
        key = tuple(str(values[name]) for name in self.labelnames)
        with self._lock:
            found = self._series.get(key)
            if found is None:
                labels = dict(zip(self.labelnames, key, strict=True))
                child = self._histogram.labels(**labels) if self.labelnames else self._histogram
                window = self._windows.add(_window_key(self.name, labels), self._window_size)
                found = self._series[key] = RecentHistogram(child, window)
            return found


class _Windows:
    """Series -> recent window, shared by a registry and its histogram families."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[_WindowKey, RecentWindow] = {}

    def add(self, key: _WindowKey, size: int) -> RecentWindow:
        with self._lock:
            return self._by_key.setdefault(key, RecentWindow(size))

    def get(self, key: _WindowKey) -> RecentWindow | None:
        with self._lock:
            return self._by_key.get(key)


class MetricsRegistry(CollectorRegistry):
    """A ``prometheus_client`` registry that also keeps recent windows and gives a JSON snapshot.

    Register counters and gauges on it the ``prometheus_client`` way
    (``Counter(..., registry=registry)``); histograms whose quantiles the
    snapshot should carry through :meth:`histogram`.
    """

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self._windows = _Windows()

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS_S,
        window_size: int = DEFAULT_WINDOW_SIZE,
    ) -> RecentHistogramFamily:
        """Register a histogram whose series each keep their ``window_size`` latest observations."""
        histogram = Histogram(name, documentation, labelnames, registry=self, buckets=buckets)
        return RecentHistogramFamily(name, histogram, labelnames, self._windows, window_size)

    def render_prometheus(self) -> str:
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self).decode("utf-8")

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every series as JSON-friendly values, for telemetry and ``/stats``.

        ``{"counters": {series: value}, "gauges": {series: value},
        "histograms": {series: {"count", "sum", "p50", "p95", "p99"}}}`` where
        ``series`` is the name as ``/metrics`` writes it, labels included
        (``edgefleet_stage_latency_seconds{stage="invoke"}``). Quantiles are
        those of the series' recent window (``None`` for a histogram
        registered without one, or before any observation); non-finite numbers
        are ``None``. ``_created`` timestamps are left out.
        """
        result: dict[str, dict[str, Any]] = {"counters": {}, "gauges": {}, "histograms": {}}
        for family in self.collect():
            if family.type == "histogram":
                result["histograms"].update(self._histogram_summaries(family))
            elif family.type == "counter":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        name = series_name(sample.name, sample.labels)
                        result["counters"][name] = _json_number(sample.value)
            elif family.type in {"gauge", "info", "unknown"}:
                for sample in family.samples:
                    name = series_name(sample.name, sample.labels)
                    result["gauges"][name] = _json_number(sample.value)
        return result

    def _histogram_summaries(self, family: Metric) -> dict[str, dict[str, Any]]:
        summaries: dict[str, dict[str, Any]] = {}
        for sample in family.samples:
            kind = sample.name[len(family.name) :]
            if kind not in {"_count", "_sum"}:
                continue
            labels = dict(sample.labels)
            entry = summaries.setdefault(series_name(family.name, labels), {})
            if kind == "_count":
                entry["count"] = int(sample.value)
                window = self._windows.get(_window_key(family.name, labels))
                qs = [q for _, q in SNAPSHOT_QUANTILES]
                values = window.quantiles(qs) if window is not None else [None for _ in qs]
                entry.update(zip((key for key, _ in SNAPSHOT_QUANTILES), values, strict=True))
            else:
                entry["sum"] = _json_number(sample.value)
        return summaries


class _ActiveBundleCollector:
    """``edgefleet_active_bundle_info``: one series naming the bundle classifying now, or none."""

    NAME = "edgefleet_active_bundle_info"
    HELP = "The model bundle classifying frames (value 1)."
    LABELS = ("name", "version", "sha256")

    def __init__(self, active: Callable[[], tuple[str, str, str] | None]) -> None:
        self._active = active

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=self.LABELS)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=self.LABELS)
        active = self._active()  # one read of one tuple: a swap is seen whole or not at all
        if active is not None:
            family.add_metric(list(active), 1.0)
        return [family]


class CameraMetrics:
    """Per-camera series of a multi-camera device (label ``camera``), registered on first use."""

    def __init__(self, reg: MetricsRegistry) -> None:
        self.predictions = Counter(
            "edgefleet_camera_predictions_total",
            "Frames classified, per camera of a multi-camera device.",
            ("camera",),
            registry=reg,
        )
        self.frames_dropped = Counter(
            "edgefleet_camera_frames_dropped_total",
            "Frames a camera's capture replaced before the classifier took them, per camera.",
            ("camera",),
            registry=reg,
        )
        self.source_reconnects = Counter(
            "edgefleet_camera_source_reconnects_total",
            "Times a camera's frame source was reopened, per camera.",
            ("camera",),
            registry=reg,
        )
        self.staleness = reg.histogram(
            "edgefleet_camera_staleness_seconds",
            "Age of a frame when its prediction was ready, per camera of a multi-camera device.",
            ("camera",),
        )


class RuntimeMetrics:
    """The device pipeline's metrics, registered on one registry, with the updates it makes.

    ``clock`` (monotonic seconds) is what the prediction-rate and frame-age
    gauges compare against when scraped; tests pass a fake one. The
    registry also carries ``prometheus_client``'s ``process_*`` metrics (CPU,
    memory, open files) of this process.
    """

    def __init__(
        self,
        registry: MetricsRegistry | None = None,
        *,
        fps_window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fps_window_s <= 0:
            raise ValueError(f"fps_window_s must be positive, got {fps_window_s}")
        self.registry = registry if registry is not None else MetricsRegistry()
        self.fps_window_s = fps_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._predictions: deque[float] = deque()
        self._first_prediction: float | None = None
        self._last_frame: float | None = None
        self._totals: dict[str, float] = {}
        self.active_bundle: tuple[str, str, str] | None = None

        reg = self.registry
        self.stage_latency = reg.histogram(
            "edgefleet_stage_latency_seconds",
            "Time spent in each pipeline stage per frame, in seconds.",
            ("stage",),
        )
        self._stages = {stage: self.stage_latency.labels(stage=stage) for stage in STAGES}
        self.staleness = reg.histogram(
            "edgefleet_staleness_seconds",
            "Age of a frame when its prediction was ready (capture to prediction), in seconds.",
        ).labels()
        self.frames = Counter("edgefleet_frames_total", "Frames classified.", registry=reg)
        self.frames_dropped = Counter(
            "edgefleet_frames_dropped_total",
            "Frames the capture replaced before the classifier took them.",
            registry=reg,
        )
        self.frames_corrupt = Counter(
            "edgefleet_frames_corrupt_total",
            "Frames the source delivered unreadable.",
            registry=reg,
        )
        self.source_reconnects = Counter(
            "edgefleet_source_reconnects_total",
            "Times the frame source was reopened.",
            registry=reg,
        )
        self.inference_errors = Counter(
            "edgefleet_inference_errors_total",
            "Frames whose classification raised an error.",
            registry=reg,
        )
        self.predictions_uncertain = Counter(
            "edgefleet_predictions_uncertain_total",
            "Predictions under the bundle's confidence threshold.",
            registry=reg,
        )
        self.prediction_rate = Gauge(
            "edgefleet_predictions_per_second",
            "Predictions per second over the recent window.",
            registry=reg,
        )
        self.prediction_rate.set_function(lambda: self.predictions_per_second(self._clock()))
        self.last_frame_age_seconds = Gauge(
            "edgefleet_last_frame_age_seconds",
            "Seconds since the newest frame was captured (NaN before the first).",
            registry=reg,
        )
        self.last_frame_age_seconds.set_function(lambda: self.last_frame_age(self._clock()))
        self._cameras: CameraMetrics | None = None
        reg.register(_ActiveBundleCollector(lambda: self.active_bundle))
        ProcessCollector(registry=reg)

    def observe_stages(
        self,
        capture_wait_ms: float,
        preprocess_ms: float,
        invoke_ms: float,
        postprocess_ms: float,
        end_to_end_ms: float,
    ) -> None:
        """Record one frame's per-stage latencies (milliseconds, exported in seconds)."""
        stages = self._stages
        stages["capture_wait"].observe(capture_wait_ms / 1e3)
        stages["preprocess"].observe(preprocess_ms / 1e3)
        stages["invoke"].observe(invoke_ms / 1e3)
        stages["postprocess"].observe(postprocess_ms / 1e3)
        stages["end_to_end"].observe(end_to_end_ms / 1e3)

    def record_prediction(self, now_monotonic: float, uncertain: bool, staleness_ms: float) -> None:
        """Count one prediction made at ``now_monotonic`` for a frame ``staleness_ms`` old."""
        self.frames.inc()
        if uncertain:
            self.predictions_uncertain.inc()
        self.staleness.observe(staleness_ms / 1e3)
        with self._lock:
            if self._first_prediction is None:
                self._first_prediction = now_monotonic
            self._predictions.append(now_monotonic)
            self._prune(now_monotonic)
        self.record_frame(now_monotonic - staleness_ms / 1e3)

    def record_frame(self, captured_monotonic: float) -> None:
        """Note that a frame captured at ``captured_monotonic`` arrived (ages never go back)."""
        with self._lock:
            if self._last_frame is None or captured_monotonic > self._last_frame:
                self._last_frame = captured_monotonic

    def last_frame_age(self, now_monotonic: float) -> float:
        """Seconds since the newest frame was captured; NaN before the first frame."""
        with self._lock:
            last = self._last_frame
        return math.nan if last is None else max(0.0, now_monotonic - last)

    def predictions_per_second(self, now_monotonic: float) -> float:
        """Predictions in the last ``fps_window_s`` seconds, per second.

        Until a whole window has passed since the first prediction, the rate is
        over the time elapsed so far, so it is right from the start.
        """
        with self._lock:
            self._prune(now_monotonic)
            if self._first_prediction is None or not self._predictions:
                return 0.0
            elapsed = min(self.fps_window_s, now_monotonic - self._first_prediction)
            return len(self._predictions) / elapsed if elapsed > 0 else 0.0

    def _prune(self, now: float) -> None:
        horizon = now - self.fps_window_s
        while self._predictions and self._predictions[0] <= horizon:
            self._predictions.popleft()

    def set_active_bundle(self, name: str, version: str, sha256: str) -> None:
        """Publish the bundle now classifying; the previous bundle's series disappears."""
        self.active_bundle = (name, version, sha256)

    def set_counter_totals(
        self,
        *,
        dropped: float | None = None,
        corrupt: float | None = None,
        reconnects: float | None = None,
        camera: str | None = None,
    ) -> None:
        """Bring the exported counters up to the capture layer's own running totals.

        The counters never decrease: a total lower than the previous one means
        the capture layer restarted its count, and the new total is added on top.
        With ``camera`` (a multi-camera device), the totals are that camera's:
        they add to the device's counters and to the camera's own series.
        """
        updates: Iterable[tuple[str, float | None, list[Counter]]] = (
            ("dropped", dropped, [self.frames_dropped]),
            ("corrupt", corrupt, [self.frames_corrupt]),
            ("reconnects", reconnects, [self.source_reconnects]),
        )
        if camera is not None:
            cameras = self.cameras
            updates = (
                (
                    "dropped",
                    dropped,
                    [self.frames_dropped, cameras.frames_dropped.labels(camera)],
                ),
                ("corrupt", corrupt, [self.frames_corrupt]),
                (
                    "reconnects",
                    reconnects,
                    [self.source_reconnects, cameras.source_reconnects.labels(camera)],
                ),
            )
        with self._lock:
            for key, total, counters in updates:
                if total is None:
                    continue
                slot = key if camera is None else f"{camera}/{key}"
                previous = self._totals.get(slot, 0.0)
                delta = total - previous if total >= previous else total
                self._totals[slot] = total
                if delta > 0:
                    for counter in counters:
                        counter.inc(delta)

    def record_camera_prediction(self, camera: str, staleness_ms: float) -> None:
        """One prediction of ``camera`` (multi-camera devices), ``staleness_ms`` after its capture."""
        cameras = self.cameras
        cameras.predictions.labels(camera).inc()
        cameras.staleness.labels(camera=camera).observe(staleness_ms / 1e3)

    @property
    def cameras(self) -> CameraMetrics:
        """The per-camera series (registered on the first call)."""
        with self._lock:
            if self._cameras is None:
                self._cameras = CameraMetrics(self.registry)
            return self._cameras
