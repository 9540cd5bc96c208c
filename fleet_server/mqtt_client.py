"""The fleet server's MQTT side: broker URLs, the embedded amqtt broker, the server's paho client."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.amqtt_auth import embedded_auth_plugins
from fleet_server.errors import FleetError
from fleet_server.tls import BrokerTls, set_client_tls

__all__ = [
    "DEFAULT_MQTTS_PORT",
    "DEFAULT_MQTT_PORT",
    "BrokerUrl",
    "EmbeddedBroker",
    "connect_client",
    "free_port",
    "parse_broker_address",
    "parse_broker_url",
]

log = logging.getLogger(__name__)

DEFAULT_MQTT_PORT = 1883
DEFAULT_MQTTS_PORT = 8883
_CONNECT_TIMEOUT_S = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BrokerUrl(NamedTuple):
    """A broker address: ``mqtt://`` (plaintext) or ``mqtts://`` (TLS)."""

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host[:port]`` as (host, port), for clients without TLS; :class:`FleetError` otherwise."""
    address = parse_broker_address(url)
    if address.tls:
        raise FleetError(f"broker URL {url!r}: TLS (mqtts://) is not supported here")
    return address.host, address.port


def parse_broker_address(url: str) -> BrokerUrl:
    """``mqtt://host[:port]`` (port 1883) or ``mqtts://host[:port]`` (TLS, port 8883).

    :class:`FleetError` for anything else.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
        raise FleetError(f"broker URL {url!r} is not mqtt://host[:port] or mqtts://host[:port]")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (DEFAULT_MQTTS_PORT if tls else DEFAULT_MQTT_PORT)
    except ValueError as exc:
        raise FleetError(f"broker URL {url!r} has a bad port") from exc
    return BrokerUrl(parts.hostname, port, tls)


@dataclass
class EmbeddedBroker:
    """The amqtt broker (MQTT 3.1.1, anonymous) running on its own event-loop thread."""

    host: str
    port: int
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    _broker: Any

    @classmethod
    def start(
        cls, host: str = "127.0.0.1", port: int | None = None, *, passwd: Path | None = None
    ) -> EmbeddedBroker:
        """Start the broker on ``host:port`` (a free port when ``port`` is None).

        Anonymous, unless ``passwd`` names the password file the server writes
        for its devices: then logins are checked against it and topics against
        the same rules as the generated Mosquitto ACL (:mod:`fleet_server.amqtt_auth`).
        """
        from amqtt.broker import Broker

        chosen = free_port(host) if port is None else port
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{chosen}"}},
            "plugins": (
                {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
                if passwd is None
                else embedded_auth_plugins(passwd)
            ),
        }
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="amqtt", daemon=True)
        thread.start()

        async def start() -> Any:
            broker = Broker(config)
            await broker.start()
            return broker

        try:
            broker = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=15)
        except Exception as exc:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            raise FleetError(
                f"the embedded MQTT broker cannot start on {host}:{chosen}: {exc}"
            ) from exc
        log.info("embedded MQTT broker listening on %s:%d", host, chosen)
        return cls(host, chosen, loop, thread, broker)

    def stop(self) -> None:
        """Shut the broker down and end its thread."""
        try:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout=10)
        except Exception:  # best effort on the way out
            log.warning("the embedded MQTT broker did not shut down cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def connect_client(
    host: str,
    port: int,
    client_id: str = "edgefleet-fleet-server",
    *,
    username: str | None = None,
    password: str | None = None,
    tls: BrokerTls | None = None,
) -> mqtt.Client:
    """A paho client (MQTT 3.1.1) connected to ``host:port`` with its network loop running.

    With ``tls`` it speaks TLS only, checking the broker's certificate and host name.
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
    )
    if tls is not None:
        set_client_tls(client, tls)
    if username is not None:
        client.username_pw_set(username, password)
    connected = threading.Event()
    refusals: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", host, port, reason)
            refusals.append(str(reason))
        else:
            connected.set()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        log.warning("disconnected from MQTT broker %s:%d: %s", host, port, reason)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(host, port)
    except OSError as exc:  # ssl.SSLError too: a certificate that does not verify
        scheme = "mqtts" if tls is not None else "mqtt"
        raise FleetError(
            f"cannot connect to the MQTT broker at {scheme}://{host}:{port}: {exc}"
        ) from exc
    client.loop_start()
    if not connected.wait(_CONNECT_TIMEOUT_S):
        client.loop_stop()
        why = f": it said {refusals[-1]!r}" if refusals else ""
        who = f" as {username!r}" if username is not None else ""
        raise FleetError(
            f"the MQTT broker at {host}:{port} did not accept the connection{who}{why}"
        )
    return client
