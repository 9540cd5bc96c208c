"""How the fleet server thins a burst of device reports before it stores them."""

from __future__ import annotations

from fleet_server.server import _newest_states


def test_only_the_newest_state_of_each_device_is_kept_and_everything_else_in_order() -> None:
    batch = [
        ("edgefleet/devices/a/state", b"a1"),
        ("edgefleet/devices/a/events", b"e1"),
        ("edgefleet/devices/b/state", b"b1"),
        ("edgefleet/devices/a/state", b"a2"),
        ("edgefleet/devices/a/events", b"e2"),
        ("edgefleet/devices/a/telemetry", b"t"),
        ("edgefleet/devices/a/state", b"a3"),
        ("edgefleet/devices/b/availability", b"online"),
    ]
    assert _newest_states(batch) == [
        ("edgefleet/devices/a/events", b"e1"),
        ("edgefleet/devices/b/state", b"b1"),
        ("edgefleet/devices/a/events", b"e2"),
        ("edgefleet/devices/a/telemetry", b"t"),
        ("edgefleet/devices/a/state", b"a3"),  # after the events that explain it
        ("edgefleet/devices/b/availability", b"online"),
    ]
    assert _newest_states([]) == []
