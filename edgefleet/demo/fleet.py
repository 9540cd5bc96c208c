"""The operator's half of the demo: a fleet server, its embedded broker and camera processes.

:class:`LocalFleet` runs the real :class:`~fleet_server.server.FleetServer`
in this process (SQLite registry, the TUF repository with the online keys
only, the embedded amqtt broker) and each camera as its own
``edgefleet device run --config ...`` process, exactly as a user starts one:
a real device runtime with its update agent, its own bundle store, trusted
root and config, reading the conveyor video and writing its predictions as
JSON lines. :meth:`LocalFleet.stop` ends the cameras (SIGTERM, then SIGKILL
after a grace period), the server, the MQTT client and the broker; on Linux
the cameras are also told by the kernel to stop should this process die
without cleaning up (``PR_SET_PDEATHSIG``), so no run leaves orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from fleet_server.process import EmbeddedBroker, connect_client
from fleet_server.registry import Registry
from fleet_server.server import FleetServer
from fleet_server.trust import ONLINE_ROLES, KeySet, Repository

__all__ = ["Camera", "CameraSettings", "LocalFleet"]

log = logging.getLogger(__name__)

GROUP = "line1"


@dataclass(frozen=True)
class CameraSettings:
    """How the demo's cameras run: video, telemetry and update timings."""

    video: Path
    telemetry_interval_s: float = 1.0
    probation_s: float = 3.0
    probation_min_predictions: int = 10
    smoke_latency_runs: int = 10


@dataclass
class Camera:
    """One camera process and the files it owns."""

    device_id: str
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: object = field(default=None, repr=False)

    @property
    def predictions(self) -> Path:
        """Its predictions, one JSON line each."""
        return self.folder / "predictions.jsonl"

    @property
    def config(self) -> Path:
        """The device config it was started with."""
        return self.folder / "device.yaml"

    @property
    def log(self) -> Path:
        """Its stderr (the device's log)."""
        return self.folder / "device.log"


def _pdeathsig() -> object | None:
    """libc's prctl, resolved now: a child between fork and exec must not load libraries."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _pdeathsig()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the spawning thread dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)  # type: ignore[operator]


class LocalFleet:
    """Fleet server + embedded broker in this process, cameras as ``edgefleet device run`` processes."""

    def __init__(self, workdir: Path, repository: Repository, online_keys: KeySet) -> None:
        self.workdir = workdir
        self.server_dir = workdir / "server"
        self.server_dir.mkdir(parents=True, exist_ok=True)
        self.repository = repository
        self.online_keys = online_keys.only(ONLINE_ROLES)
        self.db_url = f"sqlite:///{(self.server_dir / 'fleet.db').resolve()}"
        self.registry: Registry | None = None
        self.broker: EmbeddedBroker | None = None
        self.client: mqtt.Client | None = None
        self.server: FleetServer | None = None
        self.cameras: list[Camera] = []
        self._http: tuple[Any, threading.Thread] | None = None

    # --- server -----------------------------------------------------------------------

    def start_server(self, bundles: list[Path], tick_s: float = 0.25) -> FleetServer:
        """Open the registry, start the broker and the server, import the released bundles."""
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        self.registry = Registry.open(self.db_url)
        self.broker = EmbeddedBroker.start("127.0.0.1")
        self.client = connect_client(self.broker.host, self.broker.port, "edgefleet-demo-server")
        self.server = FleetServer(
            self.registry,
            self.repository,
            self.online_keys,
            self.client,
            self.server_dir / "bundles",
            tick_s=tick_s,
        )
        for path in bundles:
            self.server.import_bundle(path)
        self.server.start()
        return self.server

    def serve_console(self, token: str, port: int) -> str:
        """Serve the HTTP API and the operator's console on loopback (``port``, or a free one
        when it is taken); the console's URL. ``token`` is the bootstrap (admin) token."""
        import uvicorn

        from fleet_server.api import create_app

        assert self.server is not None and self.broker is not None
        if not _port_free(port):
            log.info("port %d is taken; the console takes a free one", port)
            port = 0
        if port == 0:
            port = _free_port()
        app = create_app(
            self.server,
            token,
            device_mqtt={
                "host": self.broker.host,
                "port": self.broker.port,
                "topic_prefix": self.server.prefix,
            },
        )
        http = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=http.run, name="console-http", daemon=True)
        thread.start()
        self._http = (http, thread)
        deadline = time.monotonic() + 15
        while not http.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the console's HTTP server did not start on port {port}")
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}/console"

    def _stop_console(self) -> None:
        if self._http is not None:
            http, thread = self._http
            http.should_exit = True
            thread.join(timeout=10)
            self._http = None

    @property
    def broker_address(self) -> str:
        """``host:port`` of the embedded broker."""
        assert self.broker is not None
        return f"{self.broker.host}:{self.broker.port}"

    # --- cameras ----------------------------------------------------------------------

    def start_cameras(self, count: int, settings: CameraSettings) -> list[Camera]:
        """Provision ``count`` cameras and start each as its own ``edgefleet device run`` process."""
        assert self.registry is not None and self.broker is not None
        root = self.workdir / "devices" / "root.json"
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_bytes(self.repository.root_bytes(1))  # what a camera is provisioned with
        for index in range(1, count + 1):
            device_id = f"cam-{index}"
            self.registry.provision_device(device_id, tags=(GROUP,), profile="demo-camera")
            camera = Camera(device_id, self.workdir / "devices" / device_id)
            camera.folder.mkdir(parents=True, exist_ok=True)
            camera.config.write_text(yaml.safe_dump(self._config(camera, root, settings)))
            self._spawn(camera)
            self.cameras.append(camera)
        return self.cameras

    def _config(self, camera: Camera, root: Path, settings: CameraSettings) -> dict[str, object]:
        assert self.broker is not None
        return {
            "device_id": camera.device_id,
            "store": str((camera.folder / "store").resolve()),
            "source": {
                "type": "video",
                "uri": str(settings.video.resolve()),
                "loop": True,
                "realtime": True,
            },
            "outputs": {"jsonl": {"path": str(camera.predictions.resolve())}},
            "mqtt": {
                "host": self.broker.host,
                "port": self.broker.port,
                "telemetry_interval_s": settings.telemetry_interval_s,
            },
            "metrics": {"enabled": False},
            "update": {
                "trusted_root": str(root.resolve()),
                "groups": [GROUP],
                "probation_s": settings.probation_s,
                "probation_min_predictions": settings.probation_min_predictions,
                "smoke_latency_runs": settings.smoke_latency_runs,
            },
        }

    def _spawn(self, camera: Camera) -> None:
        log_file = camera.log.open("ab")
        camera.log_file = log_file
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        camera.process = subprocess.Popen(
            [sys.executable, "-m", "edgefleet", "device", "run", "--config", str(camera.config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if _PRCTL is not None else None,  # noqa: PLW1509
        )

    def dead_cameras(self) -> list[Camera]:
        """Cameras whose process has exited."""
        return [c for c in self.cameras if c.process is not None and c.process.poll() is not None]

    # --- stopping ---------------------------------------------------------------------

    def stop_cameras(self, grace_s: float = 10.0) -> None:
        """SIGTERM every camera (a clean stop), SIGKILL what is left after ``grace_s``."""
        running = [c for c in self.cameras if c.process is not None and c.process.poll() is None]
        for camera in running:
            assert camera.process is not None
            with contextlib.suppress(ProcessLookupError):
                camera.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for camera in running:
            assert camera.process is not None
            try:
                camera.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", camera.device_id, grace_s)
                camera.process.kill()
                camera.process.wait(timeout=5)
        for camera in self.cameras:
            if camera.log_file is not None:
                camera.log_file.close()  # type: ignore[attr-defined]
                camera.log_file = None

    def stop(self) -> None:
        """Stop cameras, server, MQTT client, broker and registry, each even if another failed."""
        steps: list[Callable[[], object]] = [
            self.stop_cameras,
            self._stop_console,
            lambda: self.server.stop() if self.server is not None else None,
            self._stop_client,
            lambda: self.broker.stop() if self.broker is not None else None,
            lambda: self.registry.close() if self.registry is not None else None,
        ]
        for step in steps:
            try:
                step()
            except Exception:  # boundary: shutting down, keep stopping the rest
                log.warning("a part of the demo fleet did not stop cleanly", exc_info=True)
        self.server = None
        self.client = None
        self.broker = None
        self.registry = None

    def _stop_client(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
