"""What each server replica says it did, from the counters on its ``/metrics``.

The counters are the process's own since it started (each replica its
share of the fleet's traffic), so the benchmark reads them at the start and
at the end of the rollout and keeps the difference. A server whose
``/metrics`` lacks a counter reports it as missing, never as zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["COUNTERS", "Counters", "parse_counters"]

COUNTERS: Mapping[str, str] = {
    "reports": "edgefleet_server_reports_received_total",
    "reports_dropped": "edgefleet_server_reports_dropped_total",
    "chunk_requests": "edgefleet_server_chunk_requests_total",
    "chunks_served": "edgefleet_server_chunks_served_total",
    "chunk_bytes_served": "edgefleet_server_chunk_bytes_served_total",
}
"""Our name -> the sample's name on ``/metrics``; their label (``kind``, ``result``) is kept."""


@dataclass(frozen=True)
class Counters:
    """Counter values by our name, then by their one label's value ("" when unlabelled)."""

    values: Mapping[str, Mapping[str, float]]

    def minus(self, earlier: Counters) -> Counters:
        """The increase since ``earlier`` (a counter ``earlier`` lacked counts from zero)."""
        return Counters(
            {
                name: {
                    label: value - earlier.values.get(name, {}).get(label, 0.0)
                    for label, value in by_label.items()
                }
                for name, by_label in self.values.items()
            }
        )

    def total(self, name: str) -> int | None:
        """The sum over every label of counter ``name``; None when the server has no such counter."""
        if name not in self.values:
            return None
        return round(sum(self.values[name].values()))

    def by_label(self, name: str) -> dict[str, int] | None:
        """Counter ``name`` by its label's value, zeros left out; None when it is missing."""
        if name not in self.values:
            return None
        return {label: round(v) for label, v in sorted(self.values[name].items()) if round(v)}


def parse_counters(text: str | None) -> Counters:
    """The :data:`COUNTERS` present in a ``/metrics`` text (none when ``text`` is None)."""
    wanted = {sample: name for name, sample in COUNTERS.items()}
    values: dict[str, dict[str, float]] = {}
    if text is None:
        return Counters(values)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = wanted.get(sample.name)
            if name is None:
                continue
            label = next(iter(sample.labels.values()), "")
            values.setdefault(name, {})[label] = float(sample.value)
    return Counters(values)
