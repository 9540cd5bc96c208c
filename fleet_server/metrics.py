"""The fleet server's Prometheus ``/metrics``: the fleet's state, read at each scrape.

A ``prometheus_client`` custom collector on a per-instance registry (never
the process-global one): at each scrape it reads the registry (devices,
rollouts, bundles) and the server's worker threads into a :class:`FleetState`
of plain values, and :func:`fleet_families` turns that into metric families.
Nothing is counted in memory, so every replica of the server reports the
same fleet, and a restart loses nothing. The registry also carries
``prometheus_client``'s ``process_*`` metrics of the server process.

Series (gauges unless said otherwise):

- ``edgefleet_server_devices{availability}``: devices online, offline and
  unknown (never seen), every availability present, zero included;
- ``edgefleet_server_devices_in_phase{phase}``: devices by the update phase
  they last reported (``unreported`` before their first state report);
- ``edgefleet_server_rollouts{status}``: rollouts by status, for the statuses
  that occur;
- ``edgefleet_server_bundles``: bundles imported;
- ``edgefleet_server_worker_up{worker}`` (1 running, 0 not) and the counter
  ``edgefleet_server_worker_restarts_total{worker}``;
- ``edgefleet_server_build_info{version}``: always 1.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from edge_runtime import __version__
from edge_runtime.supervise import WorkerHealth
from fleet_server.records import AVAILABILITIES

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

    availability: Mapping[str, int]
    phases: Mapping[str, int]
    rollouts: Mapping[str, int]
    bundles: int
    workers: Sequence[WorkerHealth]

    @classmethod
    def read(cls, server: FleetServer) -> FleetState:
        """The server's state now, from its registry and its worker threads."""
        registry = server.registry
        devices = registry.devices()
        return cls(
            availability=Tally(device.availability for device in devices),
            phases=Tally(device.phase or UNREPORTED_PHASE for device in devices),
            rollouts=Tally(str(rollout.status) for rollout in registry.rollouts()),
            bundles=len(registry.bundles()),
            workers=list(server.health().values()),
        )


def fleet_families(state: FleetState) -> list[Metric]:
    """The metric families for ``state``."""
    devices = GaugeMetricFamily(
        "edgefleet_server_devices",
        "Devices by availability (unknown: never seen since provisioning).",
        labels=["availability"],
    )
    for availability in sorted({*AVAILABILITIES, *state.availability}):
        devices.add_metric([availability], state.availability.get(availability, 0))
    phases = GaugeMetricFamily(
        "edgefleet_server_devices_in_phase",
        f"Devices by the update phase they last reported ({UNREPORTED_PHASE}: none yet).",
        labels=["phase"],
    )
    for phase, count in sorted(state.phases.items()):
        phases.add_metric([phase], count)
    rollouts = GaugeMetricFamily(
        "edgefleet_server_rollouts", "Rollouts by status.", labels=["status"]
    )
    for status, count in sorted(state.rollouts.items()):
        rollouts.add_metric([status], count)
    bundles = GaugeMetricFamily(
        "edgefleet_server_bundles", "Bundles imported into the registry.", value=state.bundles
    )
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
    for worker in state.workers:
        up.add_metric([worker.name], 1.0 if worker.alive else 0.0)
        restarts.add_metric([worker.name], worker.restarts)
    build = GaugeMetricFamily(
        "edgefleet_server_build_info",
        "The server's edgefleet version (value 1).",
        labels=["version"],
    )
    build.add_metric([__version__], 1.0)
    return [devices, phases, rollouts, bundles, up, restarts, build]


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
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format (reads the database)."""
        return generate_latest(self.registry)
