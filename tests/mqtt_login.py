"""One MQTT login as a test makes it: did the broker take these credentials and this client id?"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def login(
    port: int, username: str | None, password: str | None, client_id: str
) -> tuple[mqtt.Client, bool]:
    """(client, accepted). An accepted client runs its network loop; a refused one (a failing
    CONNACK, or the broker closing the connection without one) is stopped."""
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
    assert answered.wait(10), "the broker never answered CONNECT"
    accepted = bool(result) and not result[0].is_failure
    if not accepted:
        client.loop_stop()
        client.disconnect()
    return client, accepted
