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

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.atomic import atomic_write_text
from fleet_server.broker_auth import SERVER_USERNAME, BrokerAuth, new_password
from fleet_server.drift_monitor import DEFAULT_DRIFT_INTERVAL_S
from fleet_server.errors import FleetError
from fleet_server.mqtt_client import (
    BrokerUrl,
    EmbeddedBroker,
    connect_client,
    free_port,
    parse_broker_address,
    parse_broker_url,
)
from fleet_server.registry import Registry
from fleet_server.tls import ServeTls
from fleet_server.trust import ONLINE_ROLES, Repository, load_keys

__all__ = [
    "BrokerUrl",
    "EmbeddedBroker",
    "ServeOptions",
    "connect_client",
    "free_port",
    "parse_broker_address",
    "parse_broker_url",
    "run_server",
    "server_password",
]

log = logging.getLogger(__name__)


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
    tls: ServeTls = field(default_factory=ServeTls)
    """TLS towards an mqtts:// broker, for provisioned devices, and HTTPS for the API."""
    replica_id: str | None = None
    """This replica's name among several on one database and broker (default: the host name)."""
    share_group: str | None = None
    """MQTT shared-subscription group the replicas split device reports and chunk requests in
    (``$share/<group>/...``, Mosquitto 2); None: this server takes every report."""
    lease_ttl_s: float = 10.0
    """How long the rollout leader's lease lasts unrenewed: the longest a dead leader's
    rollouts wait before another replica takes them over."""
    drift_interval_s: float = DEFAULT_DRIFT_INTERVAL_S
    """Seconds between two drift passes over the fleet (on the leading replica)."""


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
            broker_url = BrokerUrl(broker.host, broker.port, tls=False)
        else:
            broker_url = parse_broker_address(options.broker_url)
        device_url = (
            broker_url
            if options.device_broker_url is None
            else parse_broker_address(options.device_broker_url)
        )
        client_id = "edgefleet-fleet-server" + (
            f"-{options.replica_id}" if options.replica_id else ""
        )
        client = connect_client(
            broker_url.host,
            broker_url.port,
            client_id,
            username=username,
            password=password,
            tls=options.tls.broker if broker_url.tls else None,
        )
        server = FleetServer(
            registry,
            repository,
            keys,
            client,
            Path(options.state_dir) / "bundles",
            tick_s=options.tick_s,
            broker_auth=broker_auth,
            replica_id=options.replica_id,
            share_group=options.share_group,
            lease_ttl_s=options.lease_ttl_s,
        )
        server.start()
        app = create_app(
            server,
            options.token,
            device_mqtt={
                "host": device_url.host,
                "port": device_url.port,
                "topic_prefix": server.prefix,
                **options.tls.device_settings(device_url.tls),
            },
            public_docs=options.public_docs,
            fleet_ca_pem=options.tls.fleet_ca_pem(),
            drift_interval_s=options.drift_interval_s,
        )
        config = uvicorn.Config(
            app,
            host=options.http_host,
            port=options.http_port,
            log_level="warning",
            access_log=False,
            **options.tls.uvicorn_ssl(),
        )
        log.warning(
            "fleet server: HTTP API on %s://%s:%d (docs at /docs), MQTT broker %s://%s:%d%s",
            "https" if options.tls.https_cert is not None else "http",
            options.http_host,
            options.http_port,
            "mqtts" if broker_url.tls else "mqtt",
            broker_url.host,
            broker_url.port,
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
