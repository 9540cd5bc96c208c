"""What one fleet server process measures of its own work: batches of device reports.

The server's worker hands each batch it handled to
:meth:`ServerInstruments.batch_handled`; ``/metrics`` collects the histograms
(:mod:`fleet_server.metrics`). They are this process's, since it started:
each replica reports its own share of the fleet's traffic, and Prometheus
sums them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from prometheus_client import Histogram
from prometheus_client.core import Metric

from fleet_server.inbox import Inbound

__all__ = ["BATCH_SECONDS_BUCKETS", "BATCH_SIZE_BUCKETS", "ServerInstruments"]

BATCH_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds: a batch is one database transaction, a few milliseconds when all is well."""
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
"""Reports per batch (at most the inbox's ``max_batch``, 1000 by default)."""


class ServerInstruments:
    """The histograms of the server's report batches; a ``prometheus_client`` collector.

    Each instance has its own instruments, registered in no registry until
    :mod:`fleet_server.metrics` collects them, so two servers in one process
    (tests, a replica set) never share a series.
    """

    def __init__(self) -> None:
        self.batch_duration = Histogram(
            "edgefleet_server_report_batch_duration_seconds",
            "Time the server took to store one batch of device reports and move its rollouts.",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=None,
        )
        self.batch_size = Histogram(
            "edgefleet_server_report_batch_size_reports",
            "Device reports in each batch the server handled.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=None,
        )
        self.report_wait = Histogram(
            "edgefleet_server_report_wait_seconds",
            "For each batch, how long its oldest report waited between arriving and being"
            " handled (queueing and the batch itself).",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=None,
        )

    def batch_handled(self, batch: Sequence[Inbound], duration_s: float) -> None:
        """Record a batch the worker handled in ``duration_s`` seconds (monotonic)."""
        if not batch:
            return
        self.batch_duration.observe(max(0.0, duration_s))
        self.batch_size.observe(len(batch))
        oldest = min(item.received_at for item in batch)
        self.report_wait.observe(max(0.0, time.time() - oldest))

    def collect(self) -> Iterable[Metric]:
        """Every histogram's metric family (the collector protocol of ``prometheus_client``)."""
        for histogram in (self.batch_duration, self.batch_size, self.report_wait):
            yield from histogram.collect()
