"""The embedded amqtt broker with per-device credentials (issue #15): the same files as Mosquitto."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.broker_auth import SERVER_USERNAME, BrokerAuth, hash_password
from fleet_server.service import EmbeddedBroker

pytestmark = pytest.mark.broker

SERVER_PASSWORD = "server-secret-for-tests"


def connect(port: int, username: str | None, password: str | None, client_id: str) -> Any:
    """(client, CONNACK reason); the client runs its loop when the login was taken."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
    )
    if username is not None:
        client.username_pw_set(username, password)
    answered = threading.Event()
    result: list[Any] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result.append(reason)
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_args: answered.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    answered.wait(10)
    if not result or result[0].is_failure:
        client.loop_stop()
        client.disconnect()
        return client, None
    return client, result[0]


def test_logins_and_topics_follow_the_generated_files(tmp_path: Path) -> None:
    auth = BrokerAuth(tmp_path / "broker", server_password=SERVER_PASSWORD)
    auth.write({"cam-a": hash_password("pw-a"), "cam-b": hash_password("pw-b")})
    broker = EmbeddedBroker.start(passwd=auth.passwd_path)
    clients: list[Any] = []
    try:
        port = broker.port
        assert connect(port, None, None, "anon")[1] is None  # anonymous: refused
        assert connect(port, "cam-a", "wrong", "cam-a")[1] is None
        assert connect(port, "cam-a", "pw-a", "cam-b")[1] is None  # another device's client id
        server, reason = connect(port, SERVER_USERNAME, SERVER_PASSWORD, "edgefleet-fleet-server")
        assert reason is not None
        clients.append(server)
        seen: list[str] = []
        server.on_message = lambda _c, _u, m: seen.append(f"{m.topic} {m.payload.decode()}")
        server.subscribe("edgefleet/devices/#", qos=1)
        device, reason = connect(port, "cam-a", "pw-a", "cam-a")
        assert reason is not None
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
        assert connect(port, "cam-a", "pw-a", "cam-a")[1] is None
        other, reason = connect(port, "cam-b", "pw-b", "cam-b")
        clients.append(other)
        assert reason is not None
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()
        broker.stop()
