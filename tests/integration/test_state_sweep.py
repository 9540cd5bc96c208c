"""The rollout leader's sweep of retained device states, against a real Mosquitto.

A broker sends retained messages when a subscription is made, never again to one that
exists (and MQTT 5 sends none to a shared subscription at all), so reports a killed
replica took with it are re-read by subscribing without ``$share`` for a while: the sweep
gets every retained state and availability, and once it ends the leader is back to its
share of the live reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.testing.broker import LocalBroker
from fleet_server.state_sweep import RetainedSweep

pytestmark = pytest.mark.broker

PREFIX = "edgefleet"


class Collector:
    """A paho client (the server's role) that records every message it gets."""

    def __init__(self, port: int) -> None:
        self.got: list[tuple[str, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="server-a")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append((message.topic, bool(message.retain)))

    def topics(self) -> list[str]:
        with self._lock:
            return sorted(topic for topic, _ in self.got)

    def clear(self) -> None:
        with self._lock:
            self.got.clear()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def devices(mosquitto_broker: LocalBroker) -> Iterator[mqtt.Client]:
    """Three devices' retained state and availability on the broker; the client publishes more."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="devices")
    client.connect("127.0.0.1", mosquitto_broker.port)
    client.loop_start()
    for n in range(3):
        client.publish(
            f"{PREFIX}/devices/cam-{n}/state", b"{}", qos=1, retain=True
        ).wait_for_publish()
        client.publish(
            f"{PREFIX}/devices/cam-{n}/availability", b"online", qos=1, retain=True
        ).wait_for_publish()
    client.publish(
        f"{PREFIX}/devices/cam-0/events", b"{}", qos=1
    ).wait_for_publish()  # not retained
    yield client
    client.loop_stop()
    client.disconnect()


def test_a_sweep_reads_every_retained_state_a_shared_subscription_never_gets(
    mosquitto_broker: LocalBroker, devices: mqtt.Client
) -> None:
    server = Collector(mosquitto_broker.port)
    try:
        server.client.subscribe(
            [(f"$share/fleet/{PREFIX}/devices/+/{kind}", 1) for kind in ("state", "availability")]
        )
        time.sleep(1.0)  # what the subscription got when it was made is the broker's choice
        server.clear()
        time.sleep(0.5)
        assert server.topics() == []  # an existing subscription gets no retained copy again

        sweep = RetainedSweep(server.client, PREFIX, window_s=1.0, every_s=3600.0)
        start = time.monotonic()
        sweep.begin(start, "a test")
        expected = sorted(
            f"{PREFIX}/devices/cam-{n}/{kind}"
            for n in range(3)
            for kind in ("state", "availability")
        )
        assert wait_for(lambda: server.topics() == expected)
        assert all(retained for _, retained in server.got)
        assert sweep.active and sweep.sweeps == 1

        sweep.poll(start + 0.5, leading=True)
        assert sweep.active  # still inside its window
        sweep.poll(start + 1.0, leading=True)
        assert not sweep.active
        time.sleep(0.5)  # the unsubscribe reaches the broker
        server.clear()
        devices.publish(
            f"{PREFIX}/devices/cam-1/state", b"{}", qos=1, retain=True
        ).wait_for_publish()
        assert wait_for(lambda: server.topics() == [f"{PREFIX}/devices/cam-1/state"])
        time.sleep(0.5)
        assert server.got == [(f"{PREFIX}/devices/cam-1/state", False)]  # once: the shared copy

        sweep.poll(start + 3600.0, leading=True)  # the next one is due
        assert sweep.active and sweep.sweeps == 2
        sweep.stop()
        assert not sweep.active
        sweep.poll(start + 7200.0, leading=False)  # a follower never sweeps
        assert not sweep.active and sweep.sweeps == 2
    finally:
        server.client.loop_stop()
        server.client.disconnect()
