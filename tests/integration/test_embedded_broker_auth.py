"""The embedded amqtt broker with per-device credentials (issue #15): the same files as Mosquitto."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fleet_server.broker_auth import SERVER_USERNAME, BrokerAuth, hash_password
from fleet_server.process import EmbeddedBroker
from tests.mqtt_login import login

pytestmark = pytest.mark.broker

SERVER_PASSWORD = "server-secret-for-tests"


def test_logins_and_topics_follow_the_generated_files(tmp_path: Path) -> None:
    auth = BrokerAuth(tmp_path / "broker", server_password=SERVER_PASSWORD)
    auth.write({"cam-a": hash_password("pw-a"), "cam-b": hash_password("pw-b")})
    broker = EmbeddedBroker.start(passwd=auth.passwd_path)
    clients: list[Any] = []
    try:
        port = broker.port
        assert not login(port, None, None, "anon")[1]  # anonymous: refused
        assert not login(port, "cam-a", "wrong", "cam-a")[1]
        assert not login(port, "cam-a", "pw-a", "cam-b")[1]  # another device's client id
        server, accepted = login(port, SERVER_USERNAME, SERVER_PASSWORD, "edgefleet-fleet-server")
        assert accepted
        clients.append(server)
        seen: list[str] = []
        server.on_message = lambda _c, _u, m: seen.append(f"{m.topic} {m.payload.decode()}")
        server.subscribe("edgefleet/devices/#", qos=1)
        device, accepted = login(port, "cam-a", "pw-a", "cam-a")
        assert accepted
        clients.append(device)
        time.sleep(0.3)
        device.publish("edgefleet/devices/cam-a/events", b"own", qos=1).wait_for_publish(5)
        device.publish("edgefleet/devices/cam-b/state", b"forged", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        assert seen == ["edgefleet/devices/cam-a/events own"]
        # a revoked device is refused from the next login on, without a reload
        auth.write({"cam-b": hash_password("pw-b")})
        assert not login(port, "cam-a", "pw-a", "cam-a")[1]
        other, accepted = login(port, "cam-b", "pw-b", "cam-b")
        clients.append(other)
        assert accepted
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()
        broker.stop()
