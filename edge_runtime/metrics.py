"""Thread-safe counters, gauges and histograms, rendered for Prometheus and as JSON.

No third-party client: a device install carries only what the runtime needs, so
the Prometheus text exposition format 0.0.4 is written here. Histograms keep
cumulative buckets for Prometheus and a bounded reservoir of the most recent
observations for the p50/p95/p99 that people and telemetry read.

Number formatting follows ``prometheus_client``: every sample value and every
``le`` bound is a Python float ``repr`` (``le="5.0"``, ``le="0.5"``,
``le="2500.0"``), with ``+Inf``, ``-Inf`` and ``NaN`` for the non-finite values.
"""

from __future__ import annotations

import math
import re
import threading
import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar, Generic, Literal, TypeVar

__all__ = [
    "DEFAULT_LATENCY_BUCKETS_MS",
    "DEFAULT_RESERVOIR_SIZE",
    "METRIC_PREFIX",
    "STAGES",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricFamily",
    "MetricsRegistry",
    "RuntimeMetrics",
    "format_value",
]

METRIC_PREFIX = "edgefleet_"
DEFAULT_LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500,
)  # fmt: skip
DEFAULT_RESERVOIR_SIZE = 2048
STAGES = ("capture_wait", "preprocess", "invoke", "postprocess", "end_to_end")

Kind = Literal["counter", "gauge", "histogram"]
_Labels = tuple[tuple[str, str], ...]
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def format_value(value: float) -> str:
    """A sample value or bucket bound as the exposition format writes it (``5.0``, ``+Inf``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _series(name: str, labels: _Labels) -> str:
    if not labels:
        return name
    inner = ",".join(f'{key}="{_escape_label_value(value)}"' for key, value in labels)
    return f"{name}{{{inner}}}"


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Metric(ABC):
    """One time series (or, for a histogram, one group of them) holding its own lock."""

    kind: ClassVar[Kind]

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    def _samples(self) -> list[tuple[str, _Labels, float]]:
        """(name suffix, extra labels, value) for each exposition line, read atomically."""

    @abstractmethod
    def _summary(self) -> Any:
        """The JSON-friendly value for :meth:`MetricsRegistry.snapshot`."""


class Counter(_Metric):
    """A value that only goes up (events since start)."""

    kind: ClassVar[Kind] = "counter"

    def __init__(self) -> None:
        super().__init__()
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (zero or more; a counter never decreases)."""
        if not amount >= 0:
            raise ValueError(f"a counter only goes up; cannot add {amount}")
        with self._lock:
            self._value += amount

    @property
    def value(self) -> float:
        """The current total."""
        with self._lock:
            return self._value

    def _samples(self) -> list[tuple[str, _Labels, float]]:
        return [("", (), self.value)]

    def _summary(self) -> float | None:
        return _json_number(self.value)


class Gauge(_Metric):
    """A value that goes up and down; with ``callback`` it is computed when read."""

    kind: ClassVar[Kind] = "gauge"

    def __init__(self, callback: Callable[[], float] | None = None) -> None:
        super().__init__()
        self._value = 0.0
        self._callback = callback

    def set(self, value: float) -> None:
        """Set the value (not allowed on a callback gauge)."""
        self._check_settable()
        with self._lock:
            self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (negative to subtract)."""
        self._check_settable()
        with self._lock:
            self._value += amount

    @property
    def value(self) -> float:
        """The current value (the callback's answer for a callback gauge)."""
        if self._callback is not None:
            return float(self._callback())
        with self._lock:
            return self._value

    def _check_settable(self) -> None:
        if self._callback is not None:
            raise ValueError("this gauge is computed by its callback and cannot be set")

    def _samples(self) -> list[tuple[str, _Labels, float]]:
        return [("", (), self.value)]

    def _summary(self) -> float | None:
        return _json_number(self.value)


class Histogram(_Metric):
    """Observations counted into fixed buckets, plus the most recent ones for quantiles.

    Buckets are upper bounds (``le``, inclusive); ``+Inf`` is always added.
    Quantiles are estimated from the last ``reservoir_size`` observations only,
    so they describe recent behaviour rather than the whole uptime.
    """

    kind: ClassVar[Kind] = "histogram"

    def __init__(
        self,
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS_MS,
        reservoir_size: int = DEFAULT_RESERVOIR_SIZE,
    ) -> None:
        super().__init__()
        bounds = [float(b) for b in buckets]
        if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
            bounds.pop()
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError(f"histogram buckets must be finite numbers, got {list(buckets)}")
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"histogram buckets must be strictly increasing, got {bounds}")
        if reservoir_size < 1:
            raise ValueError(f"reservoir_size must be at least 1, got {reservoir_size}")
        self.buckets: tuple[float, ...] = tuple(bounds)
        self._counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self._sum = 0.0
        self._count = 0
        self._recent: deque[float] = deque(maxlen=reservoir_size)

    def observe(self, value: float) -> None:
        """Record one observation (NaN is refused: it would poison the sum)."""
        if math.isnan(value):
            raise ValueError("cannot observe NaN")
        with self._lock:
            self._counts[bisect_left(self.buckets, value)] += 1
            self._sum += value
            self._count += 1
            self._recent.append(value)

    @property
    def count(self) -> int:
        """Number of observations since start."""
        with self._lock:
            return self._count

    @property
    def sum(self) -> float:
        """Sum of all observations since start."""
        with self._lock:
            return self._sum

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` for every bound, ending with ``(inf, count)``."""
        with self._lock:
            counts = list(self._counts)
        running, result = 0, []
        for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
            running += n
            result.append((bound, running))
        return result

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the recent observations; ``None`` before any."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """Several quantiles from one consistent copy of the reservoir."""
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValueError(f"quantiles must lie in [0, 1], got {list(qs)}")
        with self._lock:
            data = sorted(self._recent)
        if not data:
            return [None for _ in qs]
        return [_interpolate(data, q) for q in qs]

    def _samples(self) -> list[tuple[str, _Labels, float]]:
        with self._lock:
            counts, total, count = list(self._counts), self._sum, self._count
        samples: list[tuple[str, _Labels, float]] = []
        running = 0
        for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
            running += n
            samples.append(("_bucket", (("le", format_value(bound)),), float(running)))
        samples.append(("_sum", (), total))
        samples.append(("_count", (), float(count)))
        return samples

    def _summary(self) -> dict[str, float | int | None]:
        with self._lock:
            total, count = self._sum, self._count
        p50, p95, p99 = self.quantiles([0.5, 0.95, 0.99])
        return {"count": count, "sum": _json_number(total), "p50": p50, "p95": p95, "p99": p99}


def _interpolate(data: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(data) - 1)
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


M = TypeVar("M", bound=_Metric)


class MetricFamily(Generic[M]):
    """A named metric with HELP text, constant labels and one child per label-value set.

    A family without label names has exactly one child, :attr:`only`.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        kind: Kind,
        factory: Callable[[], M],
        labelnames: Sequence[str] = (),
        *,
        const_labels: Mapping[str, str] | None = None,
    ) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        const = dict(const_labels or {})
        for label in (*labelnames, *const):
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} on {name}")
            if kind == "histogram" and label == "le":
                raise ValueError(f"histogram {name} cannot use the reserved label 'le'")
        if len({*labelnames, *const}) != len(labelnames) + len(const):
            raise ValueError(f"label names repeat on {name}: {list(labelnames)} + {list(const)}")
        self.name = name
        self.documentation = documentation
        self.kind: Kind = kind
        self.labelnames: tuple[str, ...] = tuple(labelnames)
        self.const_labels: _Labels = tuple((k, str(v)) for k, v in const.items())
        self._factory = factory
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], M] = {}
        if not self.labelnames:
            self._children[()] = factory()

    @property
    def only(self) -> M:
        """The single child of a family without label names."""
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}; use .labels()")
        return self._children[()]

    def _key(self, values: Mapping[str, object]) -> tuple[str, ...]:
        if set(values) != set(self.labelnames):
            raise ValueError(
                f"{self.name} takes labels {sorted(self.labelnames)}, got {sorted(values)}"
            )
        return tuple(str(values[name]) for name in self.labelnames)

    def labels(self, **values: str) -> M:
        """The child for these label values, created on first use."""
        key = self._key(values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._factory()
            return child

    def replace(self, values: Mapping[str, str], setup: Callable[[M], None] | None = None) -> M:
        """Make this label set the family's only child (for info metrics), atomically.

        ``setup`` runs on the fresh child before any reader can see it.
        """
        key = self._key(values)
        child = self._factory()
        if setup is not None:
            setup(child)
        with self._lock:
            self._children = {key: child}
        return child

    def remove(self, **values: str) -> None:
        """Drop the child for these label values, if there is one."""
        key = self._key(values)
        with self._lock:
            self._children.pop(key, None)

    def children(self) -> list[tuple[_Labels, M]]:
        """``(labels, child)`` for each child, labels including the constant ones, sorted."""
        with self._lock:
            items = sorted(self._children.items(), key=lambda item: item[0])
        return [
            (self.const_labels + tuple(zip(self.labelnames, key, strict=True)), child)
            for key, child in items
        ]

    def render(self) -> list[str]:
        """The exposition-format lines for this family (HELP, TYPE, samples)."""
        lines = [
            f"# HELP {self.name} {_escape_help(self.documentation)}",
            f"# TYPE {self.name} {self.kind}",
        ]
        for labels, child in self.children():
            for suffix, extra, value in child._samples():
                lines.append(f"{_series(self.name + suffix, labels + extra)} {format_value(value)}")
        return lines


class MetricsRegistry:
    """Creates and holds the process's metrics by name and renders them all.

    Names must start with ``edgefleet_`` and are unique within a registry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, MetricFamily[Any]] = {}

    def _register(self, family: MetricFamily[M]) -> MetricFamily[M]:
        if not family.name.startswith(METRIC_PREFIX):
            raise ValueError(f"metric name {family.name!r} must start with {METRIC_PREFIX!r}")
        with self._lock:
            if family.name in self._families:
                raise ValueError(f"metric {family.name!r} is already registered")
            self._families[family.name] = family
        return family

    def counter_family(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        const_labels: Mapping[str, str] | None = None,
    ) -> MetricFamily[Counter]:
        """Register a counter family with these label names."""
        return self._register(
            MetricFamily(
                name, documentation, "counter", Counter, labelnames, const_labels=const_labels
            )
        )

    def gauge_family(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        const_labels: Mapping[str, str] | None = None,
    ) -> MetricFamily[Gauge]:
        """Register a gauge family with these label names."""
        return self._register(
            MetricFamily(name, documentation, "gauge", Gauge, labelnames, const_labels=const_labels)
        )

    def histogram_family(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        const_labels: Mapping[str, str] | None = None,
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS_MS,
        reservoir_size: int = DEFAULT_RESERVOIR_SIZE,
    ) -> MetricFamily[Histogram]:
        """Register a histogram family; every child shares the buckets."""
        Histogram(buckets, reservoir_size)  # validate once, here, with a clear error

        def factory() -> Histogram:
            return Histogram(buckets, reservoir_size)

        return self._register(
            MetricFamily(
                name, documentation, "histogram", factory, labelnames, const_labels=const_labels
            )
        )

    def counter(
        self, name: str, documentation: str, *, const_labels: Mapping[str, str] | None = None
    ) -> Counter:
        """Register an unlabelled counter."""
        return self.counter_family(name, documentation, const_labels=const_labels).only

    def gauge(
        self,
        name: str,
        documentation: str,
        *,
        const_labels: Mapping[str, str] | None = None,
        callback: Callable[[], float] | None = None,
    ) -> Gauge:
        """Register an unlabelled gauge; with ``callback`` its value is computed at each read."""
        family = MetricFamily(
            name, documentation, "gauge", lambda: Gauge(callback), const_labels=const_labels
        )
        return self._register(family).only

    def histogram(
        self,
        name: str,
        documentation: str,
        *,
        const_labels: Mapping[str, str] | None = None,
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS_MS,
        reservoir_size: int = DEFAULT_RESERVOIR_SIZE,
    ) -> Histogram:
        """Register an unlabelled histogram."""
        return self.histogram_family(
            name,
            documentation,
            const_labels=const_labels,
            buckets=buckets,
            reservoir_size=reservoir_size,
        ).only

    def get(self, name: str) -> MetricFamily[Any]:
        """The family registered under ``name`` (``KeyError`` when there is none)."""
        with self._lock:
            return self._families[name]

    def families(self) -> list[MetricFamily[Any]]:
        """Every family, in registration order."""
        with self._lock:
            return list(self._families.values())

    def render_prometheus(self) -> str:
        """All metrics in the Prometheus text exposition format 0.0.4."""
        lines: list[str] = []
        for family in self.families():
            lines.extend(family.render())
        return "\n".join(lines) + "\n"

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """All metrics as JSON-friendly values, for telemetry and ``/stats``.

        ``{"counters": {series: value}, "gauges": {series: value},
        "histograms": {series: {"count", "sum", "p50", "p95", "p99"}}}`` where
        ``series`` is the name as ``/metrics`` writes it, labels included
        (``edgefleet_stage_latency_ms{stage="invoke"}``). Non-finite numbers and
        quantiles of empty histograms are ``None``.
        """
        result: dict[str, dict[str, Any]] = {"counters": {}, "gauges": {}, "histograms": {}}
        for family in self.families():
            section = result[f"{family.kind}s"]
            for labels, child in family.children():
                section[_series(family.name, labels)] = child._summary()
        return result


class RuntimeMetrics:
    """The device pipeline's metrics, registered on one registry, with the updates it makes.

    ``clock`` (monotonic seconds) is what the fps and frame-age gauges compare
    against when scraped; tests pass a fake one.
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
        self.stage_latency_ms = reg.histogram_family(
            "edgefleet_stage_latency_ms",
            "Time spent in each pipeline stage per frame, in milliseconds.",
            ("stage",),
        )
        self._stages = {stage: self.stage_latency_ms.labels(stage=stage) for stage in STAGES}
        self.staleness_ms = reg.histogram(
            "edgefleet_staleness_ms",
            "Age of a frame when its prediction was ready (capture to prediction), in milliseconds.",
        )
        self.frames = reg.counter("edgefleet_frames_total", "Frames classified.")
        self.frames_dropped = reg.counter(
            "edgefleet_frames_dropped_total",
            "Frames the capture replaced before the classifier took them.",
        )
        self.frames_corrupt = reg.counter(
            "edgefleet_frames_corrupt_total", "Frames the source delivered unreadable."
        )
        self.source_reconnects = reg.counter(
            "edgefleet_source_reconnects_total", "Times the frame source was reopened."
        )
        self.inference_errors = reg.counter(
            "edgefleet_inference_errors_total", "Frames whose classification raised an error."
        )
        self.predictions_uncertain = reg.counter(
            "edgefleet_predictions_uncertain_total",
            "Predictions under the bundle's confidence threshold.",
        )
        self.fps = reg.gauge(
            "edgefleet_fps",
            "Predictions per second over the recent window.",
            callback=lambda: self.predictions_per_second(self._clock()),
        )
        self.active_bundle_info = reg.gauge_family(
            "edgefleet_active_bundle_info",
            "The model bundle classifying frames (value 1).",
            ("name", "version", "sha256"),
        )
        self.last_frame_age_seconds = reg.gauge(
            "edgefleet_last_frame_age_seconds",
            "Seconds since the newest frame was captured (NaN before the first).",
            callback=lambda: self.last_frame_age(self._clock()),
        )

    def observe_stages(
        self,
        capture_wait_ms: float,
        preprocess_ms: float,
        invoke_ms: float,
        postprocess_ms: float,
        end_to_end_ms: float,
    ) -> None:
        """Record one frame's per-stage latencies (milliseconds)."""
        stages = self._stages
        stages["capture_wait"].observe(capture_wait_ms)
        stages["preprocess"].observe(preprocess_ms)
        stages["invoke"].observe(invoke_ms)
        stages["postprocess"].observe(postprocess_ms)
        stages["end_to_end"].observe(end_to_end_ms)

    def record_prediction(self, now_monotonic: float, uncertain: bool, staleness_ms: float) -> None:
        """Count one prediction made at ``now_monotonic`` for a frame ``staleness_ms`` old."""
        self.frames.inc()
        if uncertain:
            self.predictions_uncertain.inc()
        self.staleness_ms.observe(staleness_ms)
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
        self.active_bundle_info.replace(
            {"name": name, "version": version, "sha256": sha256}, lambda g: g.set(1)
        )
        self.active_bundle = (name, version, sha256)

    def set_counter_totals(
        self,
        *,
        dropped: float | None = None,
        corrupt: float | None = None,
        reconnects: float | None = None,
    ) -> None:
        """Bring the exported counters up to the capture layer's own running totals.

        The counters never decrease: a total lower than the previous one means
        the capture layer restarted its count, and the new total is added on top.
        """
        updates: Iterable[tuple[str, float | None, Counter]] = (
            ("dropped", dropped, self.frames_dropped),
            ("corrupt", corrupt, self.frames_corrupt),
            ("reconnects", reconnects, self.source_reconnects),
        )
        with self._lock:
            for key, total, counter in updates:
                if total is None:
                    continue
                previous = self._totals.get(key, 0.0)
                delta = total - previous if total >= previous else total
                self._totals[key] = total
                if delta > 0:
                    counter.inc(delta)
