"""Mosquitto with TLS-only listeners from the generated config, certificates from the fleet CA.

The broker's files sit in one folder, as ``edgefleet fleet ca server-cert --out``
and ``edgefleet serve --broker-auth-dir`` leave them: broker.crt, broker.key,
ca.crt, crl.pem, passwd, acl. Devices connect to ``port`` with a client
certificate (its common name is their username); the fleet server and the
tests' spy to ``server_port`` with a password, over TLS too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.testing.broker import LOOPBACK, free_port, wait_for_port
from fleet_server.broker_auth import BrokerAuth, MosquittoTls
from fleet_server.fleet_ca import FleetCA, write_pair
from tests.services import require_mosquitto

SERVER_PASSWORD = "server-secret-for-the-tls-test"


@dataclass
class TlsMosquitto:
    """A running Mosquitto (TLS only) and where its files are."""

    port: int
    server_port: int
    folder: Path
    conf: str
    process: subprocess.Popen[bytes]
    auth: BrokerAuth

    @property
    def ca_file(self) -> Path:
        """The fleet CA's certificate: it signed the broker's and the devices' certificates."""
        return self.folder / "ca.crt"

    @property
    def log(self) -> str:
        """What Mosquitto logged so far."""
        return (self.folder / "mosquitto.log").read_text(errors="replace")

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads passwd, acl, its certificate and the CRL."""
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Stop the broker."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_tls_mosquitto(folder: Path, ca: FleetCA) -> TlsMosquitto:
    """Mosquitto on two free loopback ports with the generated TLS config, started."""
    binary = require_mosquitto()
    folder.mkdir(parents=True, exist_ok=True)
    write_pair(folder, "broker", ca.issue_server([LOOPBACK, "localhost"]))
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    (folder / "crl.pem").write_bytes(ca.crl_path.read_bytes())
    auth = BrokerAuth(folder, server_password=SERVER_PASSWORD)
    auth.write({})  # the server's own user first, so that it can connect at all
    port, server_port = free_port(), free_port()
    tls = MosquittoTls(
        certfile=folder / "broker.crt", keyfile=folder / "broker.key", cafile=folder / "ca.crt"
    )
    conf = auth.mosquitto_conf(port, LOOPBACK, server_port=server_port, tls=tls)
    # as root Mosquitto drops to user 'mosquitto', who cannot read the 0600/0640 files here
    extra = "persistence false\nlog_type all\n" + ("user root\n" if os.geteuid() == 0 else "")
    (folder / "mosquitto.conf").write_text(conf + extra, encoding="utf-8")
    log = (folder / "mosquitto.log").open("wb")
    process = subprocess.Popen(
        [binary, "-c", str(folder / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    broker = TlsMosquitto(port, server_port, folder, conf, process, auth)
    try:
        wait_for_port(port)
        wait_for_port(server_port)
    except Exception:
        broker.stop()
        raise
    return broker


@dataclass
class Login:
    """One MQTT login over TLS as a test makes it."""

    client: mqtt.Client
    accepted: bool
    error: str | None = None
    """Why the TLS handshake failed on this side (a broker certificate that does not verify)."""

    def close(self) -> None:
        """Disconnect and stop the network loop."""
        self.client.loop_stop()
        self.client.disconnect()


def tls_login(
    port: int,
    *,
    ca_file: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    username: str | None = None,
    password: str | None = None,
    client_id: str = "",
) -> Login:
    """Connect over TLS; accepted means a successful CONNACK (the broker's refusal of a client
    certificate arrives after the handshake, as a closed connection)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"probe-{time.monotonic_ns()}",
        protocol=mqtt.MQTTv311,
    )
    client.tls_set(
        ca_certs=None if ca_file is None else str(ca_file),
        certfile=None if cert is None else str(cert),
        keyfile=None if key is None else str(key),
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
    try:
        client.connect(LOOPBACK, port)
    except (OSError, ssl.SSLError) as exc:
        return Login(client, accepted=False, error=str(exc))
    client.loop_start()
    assert answered.wait(10), "the broker never answered CONNECT"
    accepted = bool(result) and not result[0].is_failure
    login = Login(client, accepted)
    if not accepted:
        login.close()
    return login


@dataclass
class Recorder:
    """A TCP relay that records every byte between clients and a server on loopback."""

    target: int
    host: str = LOOPBACK
    """Where the relay listens (any 127.x address is loopback on Linux)."""
    port: int = field(default_factory=free_port)
    sent: bytearray = field(default_factory=bytearray)
    """Client to server."""
    received: bytearray = field(default_factory=bytearray)
    """Server to client."""
    _listener: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Recorder:
        """Listen on ``port`` and relay each connection to ``target``."""
        self._listener = socket.create_server((self.host, self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        """Stop listening (relayed connections end with their peers)."""
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((LOOPBACK, self.target))
            threading.Thread(
                target=self._pump, args=(client, server, self.sent), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, self.received), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bytearray) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    record.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
