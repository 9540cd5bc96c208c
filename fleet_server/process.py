"""The fleet server as one process: registry, trust, MQTT (external or embedded), HTTP API.

:func:`run_server` opens the registry and the TUF repository, loads the
online keys only (the release and root keys stay offline), connects one
paho client (MQTT 3.1.1) to the broker, or starts the embedded amqtt broker
in-process on its own event-loop thread when no broker URL is given, starts
the :class:`~fleet_server.server.FleetServer` and serves the HTTP API with
uvicorn in the calling thread. Ctrl-C or SIGTERM stops uvicorn; everything
else is then stopped in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.atomic import atomic_write_text
from fleet_server.amqtt_auth import embedded_auth_plugins
from fleet_server.broker_auth import SERVER_USERNAME, BrokerAuth, new_password
from fleet_server.errors import FleetError
from fleet_server.registry import Registry
from fleet_server.trust import ONLINE_ROLES, Repository, load_keys

__all__ = [
    "EmbeddedBroker",
    "ServeOptions",
    "connect_client",
    "free_port",
    "parse_broker_url",
    "run_server",
    "server_password",
]

log = logging.getLogger(__name__)

DEFAULT_MQTT_PORT = 1883
_CONNECT_TIMEOUT_S = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host[:port]`` as (host, port); :class:`FleetError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise FleetError(f"broker URL {url!r} is not mqtt://host[:port]")
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError as exc:
        raise FleetError(f"broker URL {url!r} has a bad port") from exc
    return parts.hostname, port


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
) -> mqtt.Client:
    """A paho client (MQTT 3.1.1) connected to ``host:port`` with its network loop running."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
    )
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
    except OSError as exc:
        raise FleetError(f"cannot connect to the MQTT broker at {host}:{port}: {exc}") from exc
    client.loop_start()
    if not connected.wait(_CONNECT_TIMEOUT_S):
        client.loop_stop()
        why = f": it said {refusals[-1]!r}" if refusals else ""
        who = f" as {username!r}" if username is not None else ""
        raise FleetError(
            f"the MQTT broker at {host}:{port} did not accept the connection{who}{why}"
        )
    return client


@dataclass(frozen=True)
class ServeOptions:
    """Everything `edgefleet serve` is told."""

    db_url: str
    repo_dir: Path
    keys_dir: Path
    state_dir: Path
    broker_url: str | None
    http_host: str
    http_port: int
    token: str
    embedded_broker_host: str = "127.0.0.1"
    embedded_broker_port: int | None = None
    tick_s: float = 0.5
    broker_auth_dir: Path | None = None
    """Write Mosquitto's password and ACL files here and give every device its own credentials."""
    broker_reload: str | None = None
    """Command run after those files change (e.g. ``systemctl reload mosquitto``)."""
    mqtt_password: str | None = None
    """The server's own broker password (user ``edgefleet-server``); made and kept if None."""
    public_docs: bool = False
    """Serve the OpenAPI docs without the token."""
    device_broker_url: str | None = None
    """What provisioned devices are told to connect to (default: the server's own broker URL)."""
    auto_register: bool | None = None
    """Register unknown devices on first contact; None: only when the broker is open (no
    per-device credentials), so an authenticated fleet takes provisioned devices only."""


def run_server(options: ServeOptions) -> None:
    """Run the fleet server until Ctrl-C or SIGTERM, then stop every part of it cleanly."""
    if not options.token:
        raise FleetError("the API token is empty: set it in the token environment variable")
    Path(options.state_dir).mkdir(parents=True, exist_ok=True)
    previous = _terminate_as_interrupt()
    try:
        _serve(options)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def server_password(state_dir: Path) -> str:
    """The server's broker password kept in ``STATE/broker-server.secret`` (made on first use)."""
    path = Path(state_dir) / "broker-server.secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = new_password()
    atomic_write_text(path, password + "\n", mode=0o600)
    return password


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM raise KeyboardInterrupt like Ctrl-C (main thread only); the old handler, or None.

    uvicorn re-raises the signal that stopped it to the handler it found, so
    without this a SIGTERM would kill the process before the MQTT client,
    the broker and the database are closed.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _serve(options: ServeOptions) -> None:
    import uvicorn

    from fleet_server.api import create_app
    from fleet_server.server import FleetServer

    repository = Repository(options.repo_dir)
    keys = load_keys(options.keys_dir, roles=ONLINE_ROLES)
    auto_register = (
        options.broker_auth_dir is None if options.auto_register is None else options.auto_register
    )
    registry = Registry.open(options.db_url, auto_register=auto_register)
    if not auto_register:
        log.info("devices that were not provisioned are refused (no registration on first contact)")
    broker_auth: BrokerAuth | None = None
    username = password = None
    if options.broker_auth_dir is not None:
        username = SERVER_USERNAME
        password = options.mqtt_password or server_password(options.state_dir)
        broker_auth = BrokerAuth(
            options.broker_auth_dir,
            server_password=password,
            reload_command=options.broker_reload,
        )
        broker_auth.write(registry.credentials_hashes())  # before connecting: the broker needs us
    broker: EmbeddedBroker | None = None
    client: mqtt.Client | None = None
    server: FleetServer | None = None
    try:
        if options.broker_url is None:
            logging.getLogger("amqtt").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
            broker = EmbeddedBroker.start(
                options.embedded_broker_host,
                options.embedded_broker_port,
                passwd=None if broker_auth is None else broker_auth.passwd_path,
            )
            host, port = broker.host, broker.port
        else:
            host, port = parse_broker_url(options.broker_url)
        device_host, device_port = (
            (host, port)
            if options.device_broker_url is None
            else parse_broker_url(options.device_broker_url)
        )
        client = connect_client(host, port, username=username, password=password)
        server = FleetServer(
            registry,
            repository,
            keys,
            client,
            Path(options.state_dir) / "bundles",
            tick_s=options.tick_s,
            broker_auth=broker_auth,
        )
        server.start()
        app = create_app(
            server,
            options.token,
            device_mqtt={"host": device_host, "port": device_port, "topic_prefix": server.prefix},
            public_docs=options.public_docs,
        )
        config = uvicorn.Config(
            app,
            host=options.http_host,
            port=options.http_port,
            log_level="warning",
            access_log=False,
        )
        log.warning(
            "fleet server: HTTP API on http://%s:%d (docs at /docs), MQTT broker %s:%d%s",
            options.http_host,
            options.http_port,
            host,
            port,
            " (embedded)" if broker is not None else "",
        )
        uvicorn.Server(config).run()  # returns on SIGINT/SIGTERM, then re-raises the signal
    except KeyboardInterrupt:
        pass  # SIGINT, or SIGTERM through _terminate_as_interrupt: a normal stop
    finally:
        log.warning("fleet server stopping")
        started = time.monotonic()
        if server is not None:
            server.stop()
        if client is not None:
            client.loop_stop()
            client.disconnect()
        if broker is not None:
            broker.stop()
        registry.close()
        log.info("fleet server stopped in %.1f s", time.monotonic() - started)
