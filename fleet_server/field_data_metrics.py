"""Field data on the server's ``/metrics``.

- ``edgefleet_server_field_samples{labelled}``: samples kept (``yes``: a person labelled
  them), read from the database at each scrape (the same on every replica);
- ``edgefleet_server_field_sample_bytes``: their images' bytes;
- counter ``edgefleet_server_field_uploads_total{result}``: sample payloads this
  process received: ``stored`` (new), ``repeat`` (stored before: a resend),
  ``refused`` (malformed, unknown device, over a device's rate) and ``dropped``
  (the receiver's queue was full); the device sends what was not acknowledged again.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fleet_server.field_data_receiver import FieldDataReceiver

__all__ = ["FieldDataMetrics"]


class FieldDataMetrics:
    """A ``prometheus_client`` custom collector over the receiver and the registry."""

    def __init__(self, receiver: FieldDataReceiver) -> None:
        self._receiver = receiver

    def collect(self) -> Iterable[Metric]:
        """The families, read now."""
        receiver = self._receiver
        counts = receiver.registry.field_counts()
        samples = GaugeMetricFamily(
            "edgefleet_server_field_samples",
            "Field samples kept, by whether a person labelled them.",
            labels=["labelled"],
        )
        samples.add_metric(["yes"], counts["labelled"])
        samples.add_metric(["no"], counts["samples"] - counts["labelled"])
        size = GaugeMetricFamily(
            "edgefleet_server_field_sample_bytes",
            "Bytes of the field samples' images.",
            value=counts["bytes"],
        )
        uploads = CounterMetricFamily(
            "edgefleet_server_field_uploads",
            "Field-sample payloads this server process received, by result.",
            labels=["result"],
        )
        refused = receiver.malformed + receiver.rate_limiter.dropped.get("field-data", 0)
        for result, value in (
            ("stored", receiver.stored),
            ("repeat", receiver.repeats),
            ("refused", refused),
            ("dropped", receiver.dropped),
        ):
            uploads.add_metric([result], value)
        return [samples, size, uploads]
