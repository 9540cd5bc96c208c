"""The fleet server's Prometheus ``/metrics``: the fleet's state, read at each scrape.

A ``prometheus_client`` custom collector on a per-instance registry (never
the process-global one): at each scrape it reads the registry's counts and
the server's own counters into a :class:`FleetState` of plain values, and
:func:`fleet_families` turns that into metric families. The fleet's figures
come from the database, so every replica reports the same fleet and a
restart loses nothing; the figures of the process's own work (reports,
batches, chunks) are its own. The registry also carries
``prometheus_client``'s ``process_*`` metrics of the server process.

Series of the fleet, the same on every replica (gauges unless said otherwise):

- ``edgefleet_server_devices{availability}``: devices online, offline and
  unknown (never seen), every availability present, zero included;
- ``edgefleet_server_devices_in_phase{phase}``: devices by the update phase
  they last reported (``unreported`` before their first state report);
- ``edgefleet_server_devices_running{bundle,version}``: devices by the bundle
  they report active, for every bundle name and version in the catalogue
  (zero included; bounded by the catalogue, never by what devices say);
- ``edgefleet_server_rollouts{status}``: rollouts by status, every status of
  :class:`~fleet_server.statuses.RolloutStatus`, zero included;
- ``edgefleet_server_bundles``: bundles imported;
- counter ``edgefleet_server_gate_verdicts_total{outcome}``: waves judged by
  their quality gate (``passed``, ``failed``, ``undecided``, ``timed-out``),
  counted from the rollouts' timelines;

and of this process's own work (each replica its share; Prometheus sums them):

- ``edgefleet_server_report_queue_depth``: device reports waiting for a batch;
- counters ``edgefleet_server_reports_received_total{kind}`` and
  ``edgefleet_server_reports_dropped_total{kind}`` (over a device's rate limit);
- histograms ``edgefleet_server_report_batch_duration_seconds``,
  ``edgefleet_server_report_batch_size_reports`` and
  ``edgefleet_server_report_wait_seconds`` (:mod:`fleet_server.instruments`);
- counters ``edgefleet_server_chunks_served_total``,
  ``edgefleet_server_chunk_bytes_served_total``,
  ``edgefleet_server_chunk_requests_total{result}`` (``accepted``,
  ``malformed``, ``dropped``) and ``edgefleet_server_chunk_errors_total``;
- ``edgefleet_server_worker_up{worker}`` (1 running, 0 not) and the counter
  ``edgefleet_server_worker_restarts_total{worker}``;
- ``edgefleet_server_build_info{version}``: always 1.

All the fleet's counts come from one read transaction of ``COUNT ... GROUP
BY`` queries (:meth:`~fleet_server.registry.Registry.fleet_counts`): a scrape
loads no device row, whatever the fleet's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from edge_runtime import __version__
from edge_runtime.supervise import WorkerHealth
from fleet_server.chunk_io import DeliveryStats
from fleet_server.inbox import REPORT_KINDS
from fleet_server.records import AVAILABILITIES
from fleet_server.registry import FleetCounts
from fleet_server.statuses import RolloutStatus

if TYPE_CHECKING:
    from fleet_server.server import FleetServer

__all__ = ["CONTENT_TYPE", "FleetMetrics", "FleetState", "fleet_families"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, as ``/metrics`` answers it."""

UNREPORTED_PHASE = "unreported"
"""The phase label of devices that have not reported a state yet."""


@dataclass(frozen=True)
class FleetState:
    """What ``/metrics`` reports, as plain values read at one scrape."""

    counts: FleetCounts
    """The fleet, counted by the database (the same on every replica)."""
    workers: Sequence[WorkerHealth]
    queue_depth: int
    """Device reports waiting in this process's inbox."""
    received: Mapping[str, int]
    """Report kind -> reports this process received."""
    dropped: Mapping[str, int]
    """Report kind -> reports this process dropped (over a device's rate limit)."""
    delivery: DeliveryStats
    """This process's chunk server's counters."""

    @classmethod
    def read(cls, server: FleetServer) -> FleetState:
        """The server's state now, from its registry, its inbox and its worker threads."""
        return cls(
            counts=server.registry.fleet_counts(),
            workers=list(server.health().values()),
            queue_depth=server.inbox.depth(),
            received=server.inbox.received(),
            dropped=dict(server.rate_limiter.dropped),
            delivery=server.chunks.stats(),
        )


def fleet_families(state: FleetState) -> list[Metric]:
    """The metric families for ``state``."""
    return [*_fleet(state.counts), *_work(state), *_server(state.workers)]


def _fleet(counts: FleetCounts) -> list[Metric]:
    devices = GaugeMetricFamily(
        "edgefleet_server_devices",
        "Devices by availability (unknown: never seen since provisioning).",
        labels=["availability"],
    )
    for availability in sorted({*AVAILABILITIES, *counts.availability}):
        devices.add_metric([availability], counts.availability.get(availability, 0))
    phases = GaugeMetricFamily(
        "edgefleet_server_devices_in_phase",
        f"Devices by the update phase they last reported ({UNREPORTED_PHASE}: none yet).",
        labels=["phase"],
    )
    by_phase: dict[str, int] = {}
    for phase, count in counts.phases.items():
        label = phase or UNREPORTED_PHASE
        by_phase[label] = by_phase.get(label, 0) + count
    for phase, count in sorted(by_phase.items()):
        phases.add_metric([phase], count)
    running = GaugeMetricFamily(
        "edgefleet_server_devices_running",
        "Devices by the catalogued bundle (name and version) they report active.",
        labels=["bundle", "version"],
    )
    for (name, version), count in sorted(counts.running.items()):
        running.add_metric([name, version], count)
    rollouts = GaugeMetricFamily(
        "edgefleet_server_rollouts", "Rollouts by status.", labels=["status"]
    )
    for status in sorted({*(s.value for s in RolloutStatus), *counts.rollouts}):
        rollouts.add_metric([status], counts.rollouts.get(status, 0))
    bundles = GaugeMetricFamily(
        "edgefleet_server_bundles", "Bundles imported into the registry.", value=counts.bundles
    )
    verdicts = CounterMetricFamily(
        "edgefleet_server_gate_verdicts",
        "Waves judged by their quality gate, by outcome (passed, failed, undecided: waiting"
        " for telemetry, timed-out: still undecided at the gate timeout, so failed).",
        labels=["outcome"],
    )
    for outcome, count in counts.gate_verdicts.items():
        verdicts.add_metric([outcome], count)
    return [devices, phases, running, rollouts, bundles, verdicts]


def _work(state: FleetState) -> list[Metric]:
    queue = GaugeMetricFamily(
        "edgefleet_server_report_queue_depth",
        "Device reports received and waiting for the server's next batch.",
        value=state.queue_depth,
    )
    received = CounterMetricFamily(
        "edgefleet_server_reports_received",
        "Device reports this server process received, by kind.",
        labels=["kind"],
    )
    dropped = CounterMetricFamily(
        "edgefleet_server_reports_dropped",
        "Device reports this server process dropped over a device's rate limit, by kind.",
        labels=["kind"],
    )
    for kind in sorted({*REPORT_KINDS, *state.received, *state.dropped}):
        received.add_metric([kind], state.received.get(kind, 0))
        dropped.add_metric([kind], state.dropped.get(kind, 0))
    delivery = state.delivery
    chunks = CounterMetricFamily(
        "edgefleet_server_chunks_served",
        "Bundle chunks this server process published to devices.",
        value=delivery.chunks_published,
    )
    chunk_bytes = CounterMetricFamily(
        "edgefleet_server_chunk_bytes_served",
        "Bytes of bundle chunks this server process published to devices.",
        value=delivery.bytes_published,
    )
    requests = CounterMetricFamily(
        "edgefleet_server_chunk_requests",
        "Chunk requests from devices: accepted, malformed (refused) or dropped (queue full).",
        labels=["result"],
    )
    requests.add_metric(["accepted"], delivery.requests)
    requests.add_metric(["malformed"], delivery.malformed)
    requests.add_metric(["dropped"], delivery.dropped)
    errors = CounterMetricFamily(
        "edgefleet_server_chunk_errors",
        "Errors serving bundle chunks (unreadable or changed bundle files, failed events).",
        value=delivery.errors,
    )
    return [queue, received, dropped, chunks, chunk_bytes, requests, errors]


def _server(workers: Sequence[WorkerHealth]) -> list[Metric]:
    up = GaugeMetricFamily(
        "edgefleet_server_worker_up",
        "Whether each worker thread of the server runs (1) or not (0).",
        labels=["worker"],
    )
    restarts = CounterMetricFamily(
        "edgefleet_server_worker_restarts",
        "Times each worker thread was restarted after an unexpected error.",
        labels=["worker"],
    )
    for worker in workers:
        up.add_metric([worker.name], 1.0 if worker.alive else 0.0)
        restarts.add_metric([worker.name], worker.restarts)
    build = GaugeMetricFamily(
        "edgefleet_server_build_info",
        "The server's edgefleet version (value 1).",
        labels=["version"],
    )
    build.add_metric([__version__], 1.0)
    return [up, restarts, build]


class _FleetCollector:
    def __init__(self, read: Callable[[], FleetState]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return fleet_families(self._read())


class FleetMetrics:
    """The server's metrics registry; :meth:`render` is the body of ``GET /metrics``."""

    def __init__(self, server: FleetServer) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_FleetCollector(lambda: FleetState.read(server)))
        self.registry.register(server.instruments)
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format (reads the database)."""
        return generate_latest(self.registry)
