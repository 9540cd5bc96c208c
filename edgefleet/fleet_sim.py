"""Simulated devices for fleet-scale measurements: the real update protocol without a camera or a model.

Each :class:`SimDevice` is what the fleet server sees of a camera box: its
own MQTT connection (:class:`~edge_runtime.mqtt_link.MqttLink`, with the retained
``availability`` Last Will), its own TUF client that verifies every piece of
metadata it is offered (:class:`~edge_runtime.trust.TrustClient`), the real
receiver-driven chunk download (:class:`~edge_runtime.chunk_fetch.BundleFetcher`),
the check of the finished file against the signed length and sha256, and
the real lifecycle state machine whose retained state and events it
publishes exactly as :class:`~edge_runtime.agent.UpdateAgent` does.

What it leaves out is what needs a model: the smoke test (golden vectors and
latency), the hot swap and the probation window pass at once. Verified
bundles are deleted after the check, so a thousand devices do not need a
thousand copies on disk.

Devices share a few worker threads instead of one agent thread each (MQTT
callbacks only queue work). paho waits on its sockets with ``select()``,
which cannot watch file descriptors past 1023, so one process holds at most
about 300 devices (three descriptors each): :class:`SimFleetProcesses`
spreads a larger fleet over several processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime.chunk_download import ChunkDownload
from edge_runtime.chunk_fetch import BundleFetcher, FetchStats
from edge_runtime.config import MqttConfig
from edge_runtime.errors import EdgefleetError, TrustError
from edge_runtime.mqtt_link import MqttLink, device_topic
from edge_runtime.trust import Assignment, TrustClient
from edge_runtime.update import BundleRef, Transition, UpdatePhase, UpdateState
from edge_runtime.update.lifecycle import event_payload, reported_state

__all__ = ["DEVICES_PER_PROCESS", "SimDevice", "SimFleet", "SimFleetProcesses"]

DEVICES_PER_PROCESS = 250
"""Below paho's ``select()`` ceiling of about 330 connections per process."""

log = logging.getLogger(__name__)


@dataclass
class SimDevice:
    """One simulated camera box (see the module docstring for what it does and skips)."""

    fleet: SimFleet
    device_id: str
    folder: Path
    link: MqttLink
    trust: TrustClient
    groups: tuple[str, ...] = ()
    state: UpdateState = field(default_factory=lambda: UpdateState.initial(now=time.time()))
    committed_at: dict[str, float] = field(default_factory=dict)
    """Bundle sha256 -> when this device committed it (``time.time()``)."""
    fetches: dict[str, FetchStats] = field(default_factory=dict)
    """Bundle sha256 -> what fetching it took (requests, chunks stored, duplicates)."""
    errors: list[str] = field(default_factory=list)
    _queued: bool = False
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _fetcher: BundleFetcher | None = None
    _assignment: Assignment | None = None

    # --- network thread: only queue work -------------------------------------------

    def on_metadata(self, topic: str, payload: bytes) -> None:
        suffix = topic[len(self.link.config.topic_prefix) + len("/tuf/") :]
        if self.trust.offer(suffix, payload):
            self.fleet.schedule(self, "metadata")

    def on_connect(self) -> None:
        self.publish_state()

    # --- worker threads ---------------------------------------------------------------

    def handle(self, event: str) -> None:
        """Handle one queued event (one at a time per device, like the agent's single worker)."""
        try:
            with self._mutex:
                if event == "metadata":
                    self._refresh()
                elif event == "fetched":
                    self._fetched()
        except EdgefleetError as exc:
            self.errors.append(str(exc))
            log.warning("%s: %s", self.device_id, exc)

    def _refresh(self) -> None:
        try:
            if not self.trust.refresh():
                return
            assignment = self.trust.assignment(self.device_id, self.groups)
        except TrustError as exc:
            self.errors.append(f"refused metadata: {exc}")
            return
        if assignment is None:
            return
        handled = self.state.handled_assignment
        if handled is not None and assignment.assignment <= handled:
            return
        custom = self.trust.bundle_target(assignment.bundle_sha256).custom
        ref = BundleRef(
            sha256=assignment.bundle_sha256,
            name=str(custom.get("name", "bundle")),
            version=str(custom.get("version", "0")),
        )
        self._assignment = assignment
        self._apply(self.state.assignment_seen(ref, assignment.assignment, time.time()))
        if self.state.phase is not UpdatePhase.DOWNLOADING:
            return  # already running it: the lifecycle says so
        if self._fetcher is not None:
            if self._fetcher.download.sha256 == ref.sha256:
                return  # a newer assignment of the bundle being fetched: keep fetching it
            self._fetcher.stop()
        download = ChunkDownload(
            self.folder / "downloads", ref.sha256, assignment.length, window_timeout=10.0
        )
        self._fetcher = BundleFetcher(
            self.link,
            download,
            on_done=lambda _f: self.fleet.schedule(self, "fetched"),
            tick_s=1.0,  # re-asks after 10 s anyway; 1,000 fetchers ticking at 10 Hz cost a core
        )
        self._fetcher.start()

    def _fetched(self) -> None:
        fetcher = self._fetcher
        if fetcher is None or not fetcher.done.is_set():
            return  # from a fetcher replaced since (another bundle), or already handled
        self._fetcher = None
        self.fetches[fetcher.download.sha256] = fetcher.stats
        target, assignment = self.state.target, self._assignment
        if target is None or assignment is None or self.state.phase is not UpdatePhase.DOWNLOADING:
            return
        path = fetcher.path
        if fetcher.error is not None or path is None:
            self._apply(self.state.failed(str(fetcher.error or "no file"), time.time()))
            return
        self._apply(self.state.download_complete(time.time()))
        try:
            self.trust.verify_file(path, self.trust.bundle_target(target.bundle.sha256))
        except TrustError as exc:
            self._apply(self.state.verification_failed(str(exc), time.time()))
            return
        finally:
            path.unlink(missing_ok=True)
        now = time.time()
        for step in ("verified", "smoke_started", "smoke_passed", "activated", "probation_passed"):
            self._apply(getattr(self.state, step)(now))
        self.committed_at[target.bundle.sha256] = time.time()
        self.fleet.committed(self)

    def _apply(self, transition: Transition) -> None:
        self.state = transition.state
        for event in transition.events:
            self._publish("events", event_payload(self.device_id, event), retain=False)
        if transition.events:
            self.publish_state()

    def publish_state(self) -> None:
        self._publish("state", reported_state(self.device_id, self.state, __version__), retain=True)

    def _publish(self, leaf: str, payload: dict[str, Any], retain: bool) -> None:
        topic = device_topic(self.link.config.topic_prefix, self.device_id, leaf)
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.link.publish(topic, body, qos=1, retain=retain)


class SimFleet:
    """Many :class:`SimDevice` on one broker, served by a few shared worker threads."""

    def __init__(
        self,
        host: str,
        port: int,
        folder: Path,
        root: bytes,
        *,
        prefix: str = "edgefleet",
        workers: int = 4,
        on_commit: Callable[[SimDevice], None] | None = None,
    ) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.folder = Path(folder)
        self.root = root
        self.devices: list[SimDevice] = []
        self._queue: queue.SimpleQueue[tuple[SimDevice, str] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._on_commit = on_commit
        self._workers = [
            threading.Thread(target=self._work, name=f"sim-worker-{i}", daemon=True)
            for i in range(workers)
        ]

    def add(self, device_ids: Sequence[str], groups: Sequence[str] = ()) -> None:
        """Create the devices (connections start with :meth:`start`)."""
        config = MqttConfig(
            host=self.host, port=self.port, topic_prefix=self.prefix, keepalive_s=60
        )
        for device_id in device_ids:
            folder = self.folder / device_id
            device = SimDevice(
                fleet=self,
                device_id=device_id,
                folder=folder,
                link=MqttLink(config, device_id),
                trust=TrustClient.provision(folder / "metadata", self.root),
                groups=tuple(groups),
            )
            device.link.subscribe(f"{self.prefix}/tuf/#", device.on_metadata)
            device.link.add_connect_listener(device.on_connect)
            self.devices.append(device)

    def start(
        self,
        progress: Callable[[int], None] | None = None,
        timeout: float = 120.0,
        batch: int = 50,
    ) -> None:
        """Start the workers and connect every device, ``batch`` at a time; returns once all are."""
        for worker in self._workers:
            worker.start()
        deadline = time.monotonic() + timeout
        started = 0
        while True:
            connected = sum(d.link.connected.is_set() for d in self.devices)
            if progress is not None:
                progress(connected)
            if connected == len(self.devices):
                return
            if started < len(self.devices) and connected >= started:
                for device in self.devices[started : started + batch]:
                    device.link.start()
                started += batch
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {connected} of {len(self.devices)} simulated devices connected "
                    f"within {timeout:.0f} s"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Disconnect every device and end the workers."""
        for device in self.devices:
            if device._fetcher is not None:
                device._fetcher.stop()
            device.link.stop()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=5)

    def schedule(self, device: SimDevice, event: str) -> None:
        """Queue work for a device; repeated metadata events coalesce into one refresh."""
        if event == "metadata":
            with self._lock:
                if device._queued:
                    return
                device._queued = True
        self._queue.put((device, event))

    def committed(self, device: SimDevice) -> None:
        if self._on_commit is not None:
            self._on_commit(device)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            device, event = item
            if event == "metadata":
                with self._lock:
                    device._queued = False
            try:
                device.handle(event)
            except Exception as exc:  # boundary: one device's bug must not stop the shared workers
                device.errors.append(f"simulator: {exc!r}")
                log.exception("%s: handling %s failed", device.device_id, event)


@dataclass(frozen=True)
class _ProcessSpec:
    host: str
    port: int
    folder: str
    root: bytes
    device_ids: list[str]
    groups: list[str]
    workers: int


def _fleet_process(conn: Connection, spec: _ProcessSpec) -> None:
    """Child process: run a :class:`SimFleet` and report to the parent over ``conn``.

    Sends ``("connected", n)`` while connecting, ``("ready", n)``, then
    ``("committed", device_id, sha256, at, (requests, chunks stored, duplicate
    chunks))`` for each commit; on ``"stop"``
    it sends ``("stopped", errors)`` and ends.
    """
    logging.getLogger("edge_runtime").setLevel(logging.ERROR)
    send_lock = threading.Lock()

    def send(*message: Any) -> None:
        with send_lock:
            conn.send(message)

    def on_commit(device: SimDevice) -> None:
        sha = device.state.active.sha256 if device.state.active is not None else ""
        fetch = device.fetches.get(sha)
        counts = (
            (0, 0, 0) if fetch is None else (fetch.requests, fetch.chunks_stored, fetch.duplicates)
        )
        send("committed", device.device_id, sha, device.committed_at.get(sha, time.time()), counts)

    fleet = SimFleet(
        spec.host,
        spec.port,
        Path(spec.folder),
        spec.root,
        workers=spec.workers,
        on_commit=on_commit,
    )
    fleet.add(spec.device_ids, spec.groups)
    try:
        fleet.start(lambda n: send("connected", n))
        send("ready", len(spec.device_ids))
        while conn.recv() != "stop":
            pass
    except (EOFError, KeyboardInterrupt):
        pass
    except TimeoutError as exc:
        send("failed", str(exc))
    finally:
        fleet.stop()
        errors = [f"{d.device_id}: {e}" for d in fleet.devices for e in d.errors]
        with contextlib.suppress(OSError):
            send("stopped", errors)


class SimFleetProcesses:
    """A large simulated fleet over several processes of at most :data:`DEVICES_PER_PROCESS`."""

    def __init__(
        self,
        host: str,
        port: int,
        folder: Path,
        root: bytes,
        device_ids: Sequence[str],
        *,
        groups: Sequence[str] = (),
        workers: int = 4,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.device_ids = list(device_ids)
        self.commits: dict[str, dict[str, float]] = {}
        """sha256 -> device id -> when it committed."""
        self.fetch_counts: dict[str, dict[str, tuple[int, int, int]]] = {}
        """sha256 -> device id -> (download requests, chunks stored, duplicate chunks received)."""
        self.errors: list[str] = []
        self._connected: dict[int, int] = {}
        self._children: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()
        for index in range(0, len(self.device_ids), DEVICES_PER_PROCESS):
            parent, child = context.Pipe()
            slice_ = self.device_ids[index : index + DEVICES_PER_PROCESS]
            process = context.Process(
                target=_fleet_process,
                args=(
                    child,
                    _ProcessSpec(host, port, str(folder), root, slice_, list(groups), workers),
                ),
                name=f"sim-fleet-{index // DEVICES_PER_PROCESS}",
                daemon=True,
            )
            self._children.append((process, parent))
        self._reader: threading.Thread | None = None
        self._ready = 0
        self._failure: str | None = None

    def start(self, progress: Callable[[int], None] | None = None, timeout: float = 300.0) -> None:
        """Start every process; returns once every device is connected."""
        for process, _ in self._children:
            process.start()
        self._reader = threading.Thread(target=self._read, name="sim-fleet-reader", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while self._ready < len(self._children):
            if self._failure is not None:
                raise TimeoutError(self._failure)
            if progress is not None:
                progress(sum(self._connected.values()))
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {sum(self._connected.values())} of {len(self.device_ids)} simulated "
                    f"devices connected within {timeout:.0f} s"
                )
            time.sleep(0.1)
        if progress is not None:
            progress(len(self.device_ids))

    def pids(self) -> list[int]:
        """The simulator processes' ids (for measuring them)."""
        return [process.pid for process, _ in self._children if process.pid is not None]

    def committed(self, sha256: str) -> dict[str, float]:
        """Device id -> commit time, for the devices that committed ``sha256`` so far."""
        with self._lock:
            return dict(self.commits.get(sha256, {}))

    def fetched(self, sha256: str) -> dict[str, tuple[int, int, int]]:
        """Device id -> (requests, chunks stored, duplicate chunks) of its fetch of ``sha256``."""
        with self._lock:
            return dict(self.fetch_counts.get(sha256, {}))

    def stop(self) -> None:
        """Ask every process to disconnect its devices and wait for them."""
        for _, conn in self._children:
            with contextlib.suppress(OSError):
                conn.send("stop")
        for process, _ in self._children:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _read(self) -> None:
        pending: dict[Any, int] = {conn: index for index, (_, conn) in enumerate(self._children)}
        while pending:
            ready: list[Any] = wait(list(pending), timeout=1.0)
            for conn in ready:
                index = pending[conn]
                try:
                    message: tuple[Any, ...] = conn.recv()
                except (EOFError, OSError):
                    pending.pop(conn)
                    continue
                kind = message[0]
                with self._lock:
                    if kind == "connected":
                        self._connected[index] = message[1]
                    elif kind == "ready":
                        self._connected[index] = message[1]
                        self._ready += 1
                    elif kind == "committed":
                        _, device_id, sha, at, counts = message
                        self.commits.setdefault(sha, {})[device_id] = at
                        self.fetch_counts.setdefault(sha, {})[device_id] = counts
                    elif kind == "failed":
                        self._failure = message[1]
                    elif kind == "stopped":
                        self.errors.extend(message[1])
                        pending.pop(conn)
