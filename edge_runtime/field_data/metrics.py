"""The collector's figures on the device's ``/metrics`` (and so in its telemetry).

- counter ``edgefleet_field_samples_total{stage}``: frames a rule ``chosen``, those
  a cap turned away (``capped``) or the full queue dropped (``queue_full``), samples
  ``stored`` in the ring, ``sent``, ``acked`` by the server, and ``ring_dropped``
  (the oldest, to stay within the ring's bytes);
- gauges ``edgefleet_field_ring_samples`` and ``edgefleet_field_ring_bytes``: what
  waits for upload; ``edgefleet_field_enabled``: 1 while collecting.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge_runtime.field_data.collector import FieldCollector

__all__ = ["FieldDataCollector"]


class FieldDataCollector:
    """A ``prometheus_client`` custom collector over one :class:`FieldCollector`."""

    def __init__(self, collector: FieldCollector) -> None:
        self._collector = collector

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        """The families, read now."""
        c = self._collector
        samples = CounterMetricFamily(
            "edgefleet_field_samples",
            "Field-data frames and samples by stage (chosen, capped, queue_full, stored, sent, "
            "acked, ring_dropped).",
            labels=["stage"],
        )
        for stage, value in (
            ("chosen", c.chosen),
            ("capped", c.caps.refused),
            ("queue_full", c.queue_full),
            ("stored", c.stored),
            ("sent", c.sent),
            ("acked", c.acked),
            ("ring_dropped", c.ring.dropped),
        ):
            samples.add_metric([stage], value)
        return [
            samples,
            GaugeMetricFamily(
                "edgefleet_field_ring_samples",
                "Field samples waiting on disk for the server's ack.",
                value=len(c.ring),
            ),
            GaugeMetricFamily(
                "edgefleet_field_ring_bytes",
                "Bytes of field samples waiting on disk.",
                value=c.ring.total_bytes,
            ),
            GaugeMetricFamily(
                "edgefleet_field_enabled",
                "1 while the server's settings say to collect field data.",
                value=1.0 if c.settings.enabled else 0.0,
            ),
        ]
