"""The drift watch running in the server: a pass over the fleet every interval, and /metrics.

:class:`DriftMonitor` runs :meth:`~fleet_server.registry.Registry.watch_drift`
every ``interval_s`` seconds in a supervised thread (a failed pass is logged
and the next one tries again; from three failed passes in a row on, until one
succeeds, the worker counts as down in ``/healthz``). With replicas, only the
leader of the rollouts judges the fleet (``leading``); the others only read
the thresholds each interval, so a replica whose database went away shows it
too. Statuses are upserts and each alert is recorded once (its dedupe key),
so a pass during a change of leader costs nothing twice. :class:`DriftCollector`
adds the drift series to the server's Prometheus registry, read from the
stored statuses at each scrape:

- ``edgefleet_server_drift_divergence{scope,name}``: Jensen-Shannon divergence
  (base 2) of the live class shares from the baseline's;
- ``edgefleet_server_drift_psi{scope,name}``: population stability index of them;
- ``edgefleet_server_drift_confidence_drop{scope,name}``: baseline mean
  confidence minus the live one;
- ``edgefleet_server_drift_confidence_divergence{scope,name}``: Jensen-Shannon
  divergence (base 2) of the live top-1 confidence histogram from the
  baseline's (bundles whose quality report has one);
- ``edgefleet_server_drifting{scope,name}``: 1 while the subject drifts, else 0;
- ``edgefleet_server_drifting_subjects{scope}``: how many drift now.

``scope`` is ``device`` or ``group`` (a tag); the series are bounded by the
fleet's devices and tags.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge_runtime.supervise import SupervisedThread, WorkerHealth
from fleet_server.drift import DriftThresholds
from fleet_server.drift_fleet import Change
from fleet_server.workers import DEFAULT_FAILURE_LIMIT, FailureStreak

if TYPE_CHECKING:
    from fleet_server.registry import Registry

__all__ = ["DEFAULT_DRIFT_INTERVAL_S", "DriftCollector", "DriftMonitor"]

log = logging.getLogger(__name__)

DEFAULT_DRIFT_INTERVAL_S = 60.0


class DriftMonitor:
    """Judges the fleet's drift every ``interval_s`` seconds (see the module)."""

    def __init__(
        self,
        registry: Registry,
        thresholds: DriftThresholds | None = None,
        *,
        interval_s: float = DEFAULT_DRIFT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        leading: Callable[[], bool] | None = None,
        failure_limit: int = DEFAULT_FAILURE_LIMIT,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"drift interval must be positive, got {interval_s}")
        self.registry = registry
        self.fixed = thresholds
        """Limits given here (tests); None: those the operator set, read at each pass."""
        self.thresholds = thresholds or DriftThresholds()
        """The limits of the last pass."""
        self.interval_s = interval_s
        self._clock = clock
        self._leading = leading
        """Whether this replica leads the rollouts (None: a lone server, always)."""
        self.streak = FailureStreak(failure_limit)
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self.passes = 0
        self.skipped = 0
        """Intervals this replica did not lead, so left the pass to the leader."""
        self.last_pass_s: float | None = None
        """How long the last pass took (seconds)."""
        self.last_pass_at: float | None = None
        """When the last pass ended (the clock's time, Unix seconds by default)."""

    def check(self, now: float | None = None) -> list[Change]:
        """One pass now; the changes it made."""
        started = time.perf_counter()
        self.thresholds = self.fixed or self.registry.drift_thresholds()
        changes = self.registry.watch_drift(self.thresholds, self._clock() if now is None else now)
        self.last_pass_s = time.perf_counter() - started
        self.last_pass_at = self._clock()
        self.passes += 1
        return changes

    def start(self) -> None:
        """Run a pass every ``interval_s`` seconds from now on, the first after one interval."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = SupervisedThread(self._loop, "drift-monitor")
        self._thread.start()
        log.info(
            "drift watched every %g s over %g s windows", self.interval_s, self.thresholds.window_s
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching (does nothing when not started)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.stop(timeout=timeout)

    def health(self) -> WorkerHealth:
        """The worker's health (alive, restarts, last error); down after failed passes in a row."""
        if self._thread is None:
            return WorkerHealth("drift-monitor", False, 0, "not started")
        return self.streak.judge(self._thread.health())

    def turn(self) -> bool:
        """The worker's turn: a pass when this replica leads, else a read of the thresholds (the
        database answers); whether a pass ran. Raises what the database raised."""
        if self._leading is None or self._leading():
            self.check()
            return True
        self.thresholds = self.fixed or self.registry.drift_thresholds()
        self.skipped += 1
        return False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.turn()
            except Exception as exc:  # the database is away: the next pass tries again
                self.streak.failed(exc)
                log.exception("drift pass failed")
            else:
                self.streak.passed()


class DriftCollector:
    """The drift series of ``/metrics`` (a ``prometheus_client`` custom collector)."""

    def __init__(self, registry: Registry, monitor: DriftMonitor | None = None) -> None:
        self._registry = registry
        self._monitor = monitor

    def collect(self) -> Iterable[Metric]:
        """Read the stored statuses into gauges."""
        labels = ["scope", "name"]
        divergence = GaugeMetricFamily(
            "edgefleet_server_drift_divergence",
            "Jensen-Shannon divergence (base 2) of the live class shares from the bundle's baseline.",
            labels=labels,
        )
        stability = GaugeMetricFamily(
            "edgefleet_server_drift_psi",
            "Population stability index of the live class shares against the bundle's baseline.",
            labels=labels,
        )
        drop = GaugeMetricFamily(
            "edgefleet_server_drift_confidence_drop",
            "The bundle's baseline mean confidence minus the live one.",
            labels=labels,
        )
        confidence = GaugeMetricFamily(
            "edgefleet_server_drift_confidence_divergence",
            "Jensen-Shannon divergence (base 2) of the live top-1 confidence histogram from the "
            "bundle's baseline.",
            labels=labels,
        )
        drifting = GaugeMetricFamily(
            "edgefleet_server_drifting",
            "1 while a device or group drifts from its bundle's baseline, else 0.",
            labels=labels,
        )
        counts = GaugeMetricFamily(
            "edgefleet_server_drifting_subjects",
            "Devices and groups drifting now, by scope.",
            labels=["scope"],
        )
        per_scope = {"device": 0, "group": 0}
        for status in self._registry.drift_statuses():
            key = [status.scope, status.name]
            for family, figure in (
                (divergence, "class_divergence"),
                (stability, "psi"),
                (drop, "confidence_drop"),
                (confidence, "confidence_divergence"),
            ):
                value = status.figures.get(figure)
                if isinstance(value, int | float):
                    family.add_metric(key, float(value))
            drifting.add_metric(key, 1.0 if status.drifting else 0.0)
            per_scope[status.scope] += int(status.drifting)
        for scope, count in per_scope.items():
            counts.add_metric([scope], count)
        return [divergence, stability, drop, confidence, drifting, counts, *self._passes()]

    def _passes(self) -> list[Metric]:
        """This replica's drift passes: how many, the last one's end, the interval (an alert on
        ``time() - last_pass > 3 * interval`` on the leader catches a monitor that stalled)."""
        monitor = self._monitor
        if monitor is None:
            return []
        passes = CounterMetricFamily(
            "edgefleet_server_drift_passes",
            "Drift passes this replica ran (the leading replica runs them; `POST /drift/check` "
            "runs one on whichever replica gets it).",
        )
        passes.add_metric([], monitor.passes)
        interval = GaugeMetricFamily(
            "edgefleet_server_drift_interval_seconds",
            "Seconds between two drift passes (`edgefleet serve --drift-interval`).",
        )
        interval.add_metric([], monitor.interval_s)
        families: list[Metric] = [passes, interval]
        if monitor.last_pass_at is not None:
            last = GaugeMetricFamily(
                "edgefleet_server_drift_last_pass_timestamp_seconds",
                "When this replica's last drift pass ended (Unix time).",
            )
            last.add_metric([], monitor.last_pass_at)
            families.append(last)
        return families
