"""The fleet benchmark reads each server replica's counters from its /metrics text."""

from __future__ import annotations

from edgefleet.rollout_benchmark.counters import parse_counters

_BEFORE = """\
# HELP edgefleet_server_reports_received_total Device reports received.
# TYPE edgefleet_server_reports_received_total counter
edgefleet_server_reports_received_total{kind="state"} 10.0
edgefleet_server_reports_received_total{kind="events"} 4.0
# HELP edgefleet_server_chunks_served_total Chunks published.
# TYPE edgefleet_server_chunks_served_total counter
edgefleet_server_chunks_served_total 0.0
# HELP edgefleet_server_devices Devices by availability.
# TYPE edgefleet_server_devices gauge
edgefleet_server_devices{availability="online"} 20.0
"""

_AFTER = """\
# TYPE edgefleet_server_reports_received_total counter
edgefleet_server_reports_received_total{kind="state"} 150.0
edgefleet_server_reports_received_total{kind="events"} 144.0
edgefleet_server_reports_received_total{kind="telemetry"} 0.0
# TYPE edgefleet_server_chunks_served_total counter
edgefleet_server_chunks_served_total 33.0
# TYPE edgefleet_server_chunk_requests_total counter
edgefleet_server_chunk_requests_total{result="accepted"} 20.0
edgefleet_server_chunk_requests_total{result="malformed"} 1.0
"""


def test_the_increase_over_the_rollout_is_kept_by_label() -> None:
    delta = parse_counters(_AFTER).minus(parse_counters(_BEFORE))
    assert delta.by_label("reports") == {"events": 140, "state": 140}  # zeros left out
    assert delta.total("reports") == 280
    assert delta.total("chunks_served") == 33
    assert delta.total("chunk_requests") == 21  # absent before: counted from zero


def test_a_counter_the_server_lacks_is_missing_not_zero() -> None:
    counters = parse_counters(_BEFORE)
    assert counters.total("reports_dropped") is None
    assert counters.by_label("chunk_requests") is None
    assert parse_counters(None).total("reports") is None  # no /metrics at all
