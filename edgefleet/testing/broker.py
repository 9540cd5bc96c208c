"""MQTT brokers on a free loopback port: the embedded amqtt broker, or a Mosquitto process.

The embedded broker (MQTT 3.1.1, in this process, ``edgefleet[server]``) is quick
to start; Mosquitto 2.x (a separate process, default limits) is what production
runs, and what a test of flow control or a broker restart needs.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from edge_runtime.errors import EdgefleetError

if TYPE_CHECKING:
    from fleet_server.process import EmbeddedBroker

__all__ = ["LocalBroker", "LocalBrokerError", "free_port", "wait_for_port"]

LOOPBACK = "127.0.0.1"


class LocalBrokerError(EdgefleetError):
    """A test broker cannot start: Mosquitto is not installed, or nothing listens on its port."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = LOOPBACK) -> None:
    """Return once something accepts connections on ``host:port``; ``LocalBrokerError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise LocalBrokerError(f"nothing listens on {host}:{port} after {timeout:g} s")


class LocalBroker:
    """One broker on ``127.0.0.1:port``; :meth:`stop` and :meth:`start` again keep the port.

    Use :meth:`amqtt` or :meth:`mosquitto` to make one (started), and :meth:`close`
    (or ``with``) to end it.
    """

    def __init__(
        self, kind: Literal["amqtt", "mosquitto"], port: int, folder: Path | None = None
    ) -> None:
        self.kind = kind
        self.host = LOOPBACK
        self.port = port
        self.folder = folder
        self._embedded: EmbeddedBroker | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def amqtt(cls, port: int | None = None) -> LocalBroker:
        """The embedded amqtt broker (anonymous) in this process, started."""
        broker = cls("amqtt", free_port() if port is None else port)
        broker.start()
        return broker

    @classmethod
    def mosquitto(
        cls, folder: Path, port: int | None = None, *, extra_config: str = ""
    ) -> LocalBroker:
        """Mosquitto (anonymous, no persistence, default limits) with its config in ``folder``, started."""
        from fleet_server.broker_auth import mosquitto_binary

        if mosquitto_binary() is None:
            raise LocalBrokerError(
                "mosquitto is not installed (apt-get install mosquitto, or put it on PATH)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        broker = cls("mosquitto", free_port() if port is None else port, folder)
        (folder / "mosquitto.conf").write_text(
            f"listener {broker.port} {LOOPBACK}\nallow_anonymous true\npersistence false\n"
            + extra_config,
            encoding="utf-8",
        )
        broker.start()
        return broker

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:port``, as ``edgefleet serve --broker`` takes it."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker was started and not stopped."""
        return self._embedded is not None or self._process is not None

    def start(self) -> None:
        """Start the broker on its port (again, after :meth:`stop`); returns once it listens."""
        if self.running:
            return
        if self.kind == "amqtt":
            from fleet_server.process import EmbeddedBroker

            try:
                self._embedded = EmbeddedBroker.start(self.host, self.port)
            except EdgefleetError as exc:
                raise LocalBrokerError(str(exc)) from exc
        else:
            from fleet_server.broker_auth import mosquitto_binary

            binary = mosquitto_binary()
            if binary is None or self.folder is None:
                raise LocalBrokerError("mosquitto is not installed")
            self._process = subprocess.Popen(
                [binary, "-c", str(self.folder / "mosquitto.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:  # Mosquitto listens a moment after it starts (amqtt: once start returns)
                wait_for_port(self.port, host=self.host)
            except LocalBrokerError:
                self.stop()
                raise

    def stop(self) -> None:
        """Stop the broker (clients see the connection drop); :meth:`start` brings it back."""
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            embedded.stop()
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def close(self) -> None:
        """Stop the broker for good."""
        self.stop()

    def __enter__(self) -> LocalBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalBroker({self.kind}, {self.url}, {state})"
