"""How the fleet server thins a burst of device reports before it stores them."""

from __future__ import annotations

from fleet_server.inbox import Inbound, newest_states


def inbound(topic: str, payload: bytes) -> Inbound:
    return Inbound(topic, payload, retained=False, received_at=0.0)


def test_only_the_newest_state_of_each_device_is_kept_and_everything_else_in_order() -> None:
    batch = [
        inbound("edgefleet/devices/a/state", b"a1"),
        inbound("edgefleet/devices/a/events", b"e1"),
        inbound("edgefleet/devices/b/state", b"b1"),
        inbound("edgefleet/devices/a/state", b"a2"),
        inbound("edgefleet/devices/a/events", b"e2"),
        inbound("edgefleet/devices/a/telemetry", b"t"),
        inbound("edgefleet/devices/a/state", b"a3"),
        inbound("edgefleet/devices/b/availability", b"online"),
    ]
    assert newest_states(batch) == [
        inbound("edgefleet/devices/a/events", b"e1"),
        inbound("edgefleet/devices/b/state", b"b1"),
        inbound("edgefleet/devices/a/events", b"e2"),
        inbound("edgefleet/devices/a/telemetry", b"t"),
        inbound("edgefleet/devices/a/state", b"a3"),  # after the events that explain it
        inbound("edgefleet/devices/b/availability", b"online"),
    ]
    assert newest_states([]) == []
