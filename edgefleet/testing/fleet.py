"""A whole fleet on one machine for tests: keys, signed releases, the fleet server, real devices.

:class:`LocalFleet` is the operator's side, built with the project's public
parts: TUF keys and a repository (:mod:`fleet_server.trust`), a SQLite
registry, and either the real :class:`~fleet_server.server.FleetServer`
(rollouts, device registry, optionally its HTTP API) or, with
``fleet_server=False``, only the chunk server and direct signed assignments, to
test a device's update path without any rollout logic. Devices are real
:class:`~edge_runtime.device.DeviceRuntime` loops in threads
(:class:`~edgefleet.testing.device.RunningDevice`), a fake camera by default.

Typical use (the ``local_fleet`` pytest fixture does the first two lines)::

    with LocalFleet(tmp_path, broker.port) as fleet:
        fleet.release("v1", path_to_v1_bundle)
        fleet.start()
        device = fleet.start_device("cam-1", bundle="v1")
        fleet.wait_for(lambda: fleet.active() == {"cam-1": fleet.bundles["v1"].sha256})

Needs ``edgefleet[server]``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from edge_runtime.bundle import Bundle, read_bundle
from edge_runtime.errors import EdgefleetError
from edgefleet.testing.broker import LOOPBACK, free_port
from edgefleet.testing.device import RunningDevice, wait_for
from fleet_server.chunk_server import ChunkServer
from fleet_server.process import connect_client
from fleet_server.publisher import publish_metadata
from fleet_server.registry import Registry
from fleet_server.server import FleetServer
from fleet_server.trust import ONLINE_ROLES, Expiry, Repository, init_keys

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt
    import uvicorn

__all__ = ["LocalFleet", "LocalFleetError"]


class LocalFleetError(EdgefleetError):
    """The test asked the local fleet for something its mode or state does not allow."""


class LocalFleet:
    """The operator's side of a fleet on the broker at ``127.0.0.1:broker_port`` (see the module)."""

    def __init__(
        self,
        folder: Path,
        broker_port: int,
        *,
        fleet_server: bool = True,
        tick_s: float = 0.2,
        prefix: str = "edgefleet",
        client_id: str = "edgefleet-test-fleet",
        db_url: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.broker_port = broker_port
        self.prefix = prefix
        self.tick_s = tick_s
        self.client_id = client_id
        self.keys = init_keys(self.folder / "keys")
        self.online_keys = self.keys.only(ONLINE_ROLES)
        """The keys the fleet server holds (the release and root keys stay with the test)."""
        self.repo = Repository.create(self.folder / "repo", self.keys, Expiry())
        self.root_file = self.folder / "root.json"
        """Root v1, as a device is provisioned with it (``update.trusted_root``)."""
        self.root_file.write_bytes(self.repo.root_bytes(1))
        self.registry: Registry | None = (
            Registry.open(db_url or f"sqlite:///{self.folder / 'fleet.db'}")
            if fleet_server
            else None
        )
        """The fleet server's registry: on ``db_url`` when given, else a SQLite file in ``folder``."""
        self.bundles: dict[str, Bundle] = {}
        """Released bundles by the name the test gave them."""
        self.paths: dict[str, Path] = {}
        self.client: mqtt.Client | None = None
        self.server: FleetServer | None = None
        self.chunks: ChunkServer | None = None
        self.devices: list[RunningDevice] = []
        self._served: dict[str, Path] = {}
        self._to_import: list[Path] = []
        self._http: tuple[uvicorn.Server, threading.Thread] | None = None

    # --- set-up ---------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran (and :meth:`close` did not)."""
        return self.client is not None

    def release(self, name: str, path: Path, *, import_bundle: bool = True) -> Bundle:
        """Sign the bundle at ``path`` with the release key; ``bundles[name]`` is it from now on.

        With the fleet server, release before :meth:`start`; ``import_bundle=False``
        leaves the import to the test (through the HTTP API, say).
        """
        if self.server is not None:
            raise LocalFleetError("release bundles before start(): the fleet server is running")
        bundle = read_bundle(path)
        self.repo.release(path, self.keys.role("targets"))
        self.bundles[name] = bundle
        self.paths[name] = Path(path)
        self._served[bundle.sha256] = Path(path)
        if import_bundle:
            self._to_import.append(Path(path))
        if self.started:  # direct mode: devices see the new release at once
            self._sign_and_publish()
        return bundle

    def provision(
        self, device_id: str, tags: Iterable[str] = (), profile: str | None = None
    ) -> None:
        """Register a device in the fleet server's registry."""
        self._registry().provision_device(device_id, tags=tuple(tags), profile=profile)

    def start(self) -> None:
        """Connect to the broker and start serving: the fleet server, or the chunk server."""
        if self.started:
            return
        self.client = connect_client(LOOPBACK, self.broker_port, client_id=self.client_id)
        if self.registry is not None:
            self.server = self._new_server()
            for path in self._to_import:
                self.server.import_bundle(path)
            self.server.start()
        else:
            self.chunks = ChunkServer(self.client, self._served, prefix=self.prefix)
            self.chunks.start()
            self._sign_and_publish()

    def restart_server(self) -> FleetServer:
        """Stop the fleet server and start a new one on the same registry, repository and client."""
        if self.server is None:
            raise LocalFleetError("no fleet server runs (start() it, or fleet_server=True)")
        self.server.stop()
        self.server = self._new_server()
        self.server.start()
        return self.server

    def serve_http(self, token: str, **options: Any) -> str:
        """Serve the fleet server's HTTP API on a free loopback port; its base URL.

        ``options`` go to :func:`fleet_server.api.create_app` (``public_docs=True`` ...).
        """
        import uvicorn

        from fleet_server.api import create_app

        if self.server is None:
            raise LocalFleetError("the HTTP API needs the fleet server: start() it first")
        if self._http is not None:
            raise LocalFleetError("the HTTP API is already served")
        options.setdefault(
            "device_mqtt",
            {"host": LOOPBACK, "port": self.broker_port, "topic_prefix": self.prefix},
        )
        app = create_app(self.server, token, **options)
        port = free_port()
        http = uvicorn.Server(
            uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=http.run, name="uvicorn", daemon=True)
        thread.start()
        self._http = (http, thread)
        wait_for(lambda: http.started, 10, interval=0.02, message="the HTTP API did not start")
        return f"http://{LOOPBACK}:{port}"

    # --- operating ----------------------------------------------------------------------

    def assign(self, bundle: str | Bundle, device_id: str) -> int:
        """Without the fleet server: sign ``device_id``'s assignment to ``bundle`` and publish it.

        Returns the assignment number. With the fleet server, assignments are its
        job: create a rollout (``fleet.server.create_rollout``) instead.
        """
        if self.registry is not None:
            raise LocalFleetError(
                "the fleet server owns assignments here: create a rollout instead"
            )
        if not self.started:
            raise LocalFleetError("start() the fleet before assigning")
        sha256 = (self.bundles[bundle] if isinstance(bundle, str) else bundle).sha256
        number = self.repo.assign("devices", device_id, sha256, self.keys.role("assignments"))
        self._sign_and_publish()
        return number

    def active(self) -> dict[str, str | None]:
        """Device id -> the sha256 of the bundle it reports running, from the registry."""
        return {d.id: d.active_bundle for d in self._registry().devices()}

    def wait_for(self, condition: Callable[[], object], timeout: float = 60.0) -> None:
        """Poll ``condition`` until true (``AssertionError`` after ``timeout`` s)."""
        wait_for(condition, timeout, interval=0.1, message="the fleet did not get there")

    # --- devices ----------------------------------------------------------------------

    def device_config(
        self, device_id: str, *, bundle: str | Path | None = None, **sections: Any
    ) -> dict[str, Any]:
        """A device config (as a mapping) for this fleet: its broker, trusted root and a fake camera.

        ``bundle`` is a released bundle's name or a path, served at start.
        ``sections`` replace or extend the defaults key by key (``source`` as a
        whole; ``update={"probation_s": 1}`` adds to the update section);
        ``name=None`` removes a section.
        """
        config: dict[str, Any] = {
            "device_id": device_id,
            "store": str(self.folder / "stores" / device_id),
            "source": {"type": "fake-camera", "width": 64, "height": 48, "fps": 30},
            "mqtt": {"host": LOOPBACK, "port": self.broker_port, "topic_prefix": self.prefix},
            "metrics": {"enabled": False},
            "update": {"trusted_root": str(self.root_file)},
        }
        if bundle is not None:
            config["bundle"] = str(self.paths[bundle] if isinstance(bundle, str) else bundle)
        for key, value in sections.items():
            if value is None:
                config.pop(key, None)
            elif (
                key != "source" and isinstance(value, Mapping) and isinstance(config.get(key), dict)
            ):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def start_device(
        self, device_id: str, *, bundle: str | Path | None = None, **sections: Any
    ) -> RunningDevice:
        """Run a device (config from :meth:`device_config`) until :meth:`close`."""
        device = RunningDevice(self.device_config(device_id, bundle=bundle, **sections))
        self.devices.append(device)
        return device

    # --- tear-down ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the devices, the HTTP API, the servers and the client; close the registry."""
        for device in self.devices:
            device.stop_event.set()
        for device in self.devices:
            device.close()
        self.devices.clear()
        if self._http is not None:
            http, thread = self._http
            http.should_exit = True
            thread.join(timeout=10)
            self._http = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.chunks is not None:
            self.chunks.stop()
            self.chunks = None
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
            self.client = None
        if self.registry is not None:
            self.registry.close()
            self.registry = None

    def __enter__(self) -> LocalFleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------

    def _registry(self) -> Registry:
        if self.registry is None:
            raise LocalFleetError("this fleet runs without the fleet server (no registry)")
        return self.registry

    def _new_server(self) -> FleetServer:
        assert self.client is not None
        return FleetServer(
            self._registry(),
            self.repo,
            self.online_keys,
            self.client,
            self.folder / "served",
            prefix=self.prefix,
            tick_s=self.tick_s,
        )

    def _sign_and_publish(self) -> None:
        assert self.client is not None
        self.repo.snapshot_and_timestamp(self.keys.role("snapshot"), self.keys.role("timestamp"))
        publish_metadata(self.client, self.repo, self.prefix)
