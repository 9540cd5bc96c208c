"""The fleet server's core: devices' reports in, signed assignments out, rollouts driven in between.

One :class:`FleetServer` owns the registry (database), the TUF repository
with the online keys, an MQTT client, the chunk server and the rollouts.
Devices' retained state, events, telemetry and availability are ingested
into the registry; the rollouts are the :class:`RolloutCoordinator`'s
(planner states saved in the database, so a restarted server resumes them),
whose actions (assign a wave, roll devices back) this shell turns into new
signed assignments, published retained. The server never holds the release key.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.bundle import read_bundle
from edge_runtime.errors import EdgefleetError
from edge_runtime.supervise import SupervisedThread, WorkerHealth
from fleet_server.broker_auth import BrokerAuth, hash_password, new_password
from fleet_server.chunk_server import ChunkServer
from fleet_server.coordinator import RolloutCoordinator
from fleet_server.errors import FleetError, RolloutError
from fleet_server.inbox import Inbound, ReportInbox, newest_states
from fleet_server.instruments import ServerInstruments
from fleet_server.publisher import MetadataPublisher
from fleet_server.quality_gate import Baseline
from fleet_server.rate_limit import ROW_ADDING_REPORTS, DeviceRateLimiter
from fleet_server.records import DeviceInfo, TargetSelector
from fleet_server.registry import Registry
from fleet_server.reports import (
    Availability,
    StateReport,
    parse_availability,
    parse_event,
    parse_state,
)
from fleet_server.rollout_plan import (
    Action,
    Assign,
    Notify,
    Rollback,
    RolloutState,
)
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec
from fleet_server.trust import KeySet, Repository

__all__ = ["FleetServer"]


log = logging.getLogger(__name__)

_REPORT_LEAVES = ("state", "events", "telemetry", "availability")


class FleetServer:
    """Registry + trust + delivery + rollouts, on one MQTT connection."""

    def __init__(
        self,
        registry: Registry,
        repository: Repository,
        online_keys: KeySet,
        client: mqtt.Client,
        bundle_folder: Path,
        *,
        prefix: str = "edgefleet",
        tick_s: float = 0.5,
        resign_every_s: float = 3600.0,
        prune_every_s: float = 60.0,
        broker_auth: BrokerAuth | None = None,
        instruments: ServerInstruments | None = None,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.keys = online_keys
        self.client = client
        self.prefix = prefix
        self.bundle_folder = Path(bundle_folder)
        self.bundle_folder.mkdir(parents=True, exist_ok=True)
        self.tick_s = tick_s
        self.resign_every_s = resign_every_s
        """Re-sign and re-publish snapshot/timestamp this often, long before the timestamp expires."""
        self.broker_auth = broker_auth
        """Per-device broker credentials and the Mosquitto files (None: the broker is open)."""
        self.prune_every_s = prune_every_s
        """Apply the registry's retention bounds (telemetry, timeline) this often, in the background."""
        self._last_prune = 0.0
        self.rate_limiter = DeviceRateLimiter(limited=ROW_ADDING_REPORTS)
        """Events, telemetry and availability changes per device: 120 a minute, bursts of 240."""
        self._last_publish = 0.0
        self._lock = threading.RLock()
        self.inbox = ReportInbox()
        """Device reports, queued by paho's network thread, handled by the server's own thread."""
        self.instruments = instruments or ServerInstruments()  # report batches, for /metrics
        self._last_reason: dict[str, str] = {}
        """Device id -> the reason its newest event gave (failures, rollbacks)."""
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self.rollouts = RolloutCoordinator(registry, self._execute)
        """The rollouts' planner states; this shell feeds them reports, ticks and telemetry."""
        self._paths: dict[str, Path] = {p.stem: p for p in self.bundle_folder.glob("*.efb")}
        self.publisher = MetadataPublisher(client, repository, prefix)
        self._republish_all = threading.Event()
        self._prev_on_connect: Any = None
        self.chunks = ChunkServer(client, self._paths, prefix=prefix)  # reads _paths as it grows

    # --- bundles -----------------------------------------------------------------------

    def import_bundle(self, path: Path) -> str:
        """Register a released bundle (its bytes are served to devices); returns its sha256."""
        bundle = read_bundle(path)
        if bundle.sha256 not in {b.sha256 for b in self.repository.released().values()}:
            raise FleetError(f"{path.name} is not released: sign it with `edgefleet release` first")
        target = self.bundle_folder / f"{bundle.sha256}.efb"
        if not target.exists():
            shutil.copyfile(path, target.with_suffix(".tmp"))
            target.with_suffix(".tmp").replace(target)
        self.registry.import_bundle(bundle)
        self._paths[bundle.sha256] = target
        return bundle.sha256

    # --- devices and their broker credentials ------------------------------------------

    def provision_device(
        self, device_id: str, tags: Sequence[str] = (), profile: str | None = None
    ) -> tuple[DeviceInfo, str | None]:
        """Register a device; with broker auth, also its broker password (returned once, never kept)."""
        if self.broker_auth is None:
            return self.registry.provision_device(device_id, tags, profile), None
        password = new_password()
        with self._lock:
            info = self.registry.provision_device(
                device_id, tags, profile, credentials_hash=hash_password(password)
            )
            self.broker_auth.write(self.registry.credentials_hashes())
        return info, password

    def rotate_credentials(self, device_id: str) -> str:
        """A new broker password for a device; the old one stops working at the broker's reload."""
        password = new_password()
        self._set_credentials(device_id, hash_password(password))
        return password

    def revoke_credentials(self, device_id: str) -> None:
        """Remove a device's broker credentials: it cannot connect after the broker's reload."""
        self._set_credentials(device_id, None)

    def _set_credentials(self, device_id: str, hashed: str | None) -> None:
        if self.broker_auth is None:
            raise FleetError(
                "this server does not manage broker credentials (no --broker-auth-dir)"
            )
        with self._lock:
            self.registry.set_credentials_hash(device_id, hashed)
            self.broker_auth.write(self.registry.credentials_hashes())

    # --- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to device reports, resume running rollouts, publish metadata, start ticking."""
        for leaf in _REPORT_LEAVES:
            self.client.message_callback_add(
                f"{self.prefix}/devices/+/{leaf}", self.inbox.on_message
            )
        self._subscribe_reports()
        self.chunks.start()  # chains the client's on_connect, like we do next
        self._prev_on_connect = self.client.on_connect
        self.client.on_connect = self._on_connect
        if self.broker_auth is not None:
            self.broker_auth.write(self.registry.credentials_hashes())
        with self._lock:
            self.rollouts.resume(time.time())
        self._publish()
        self._thread = SupervisedThread(self._run, "fleet-server")
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking, ingesting and serving chunks (the database keeps everything)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.stop(timeout=10)
        self.client.on_connect = self._prev_on_connect
        self.chunks.stop()
        for leaf in _REPORT_LEAVES:
            self.client.message_callback_remove(f"{self.prefix}/devices/+/{leaf}")
            self.client.unsubscribe(f"{self.prefix}/devices/+/{leaf}")

    def health(self) -> dict[str, WorkerHealth]:
        """Each worker thread (report ingestion and ticks, chunk delivery): alive, restarts, error."""
        mine = (
            self._thread.health()
            if self._thread
            else WorkerHealth("fleet-server", False, 0, "not started")
        )
        return {worker.name: worker for worker in (mine, self.chunks.health())}

    def _subscribe_reports(self) -> None:
        self.client.subscribe([(f"{self.prefix}/devices/+/{leaf}", 1) for leaf in _REPORT_LEAVES])

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        """A (re)connect: the session is clean, so subscribe again; the broker may have lost
        its retained metadata (a restart without persistence), so publish all of it again."""
        if self._prev_on_connect is not None:
            self._prev_on_connect(client, *args)
        reason = args[2] if len(args) > 2 else None
        if reason is not None and getattr(reason, "is_failure", False):
            return
        self._subscribe_reports()
        self._republish_all.set()  # by the worker: never wait for acks on paho's thread

    def _run(self) -> None:
        """The server's one worker: device reports in batches as they arrive, a tick every tick_s.

        Nothing here runs on paho's network thread, so waiting for the
        broker's acknowledgements (signed assignments, metadata) can never
        stall the thread that reads those acknowledgements.
        """
        next_tick = time.monotonic() + self.tick_s
        while not self._stop.is_set():
            batch = self.inbox.gather(next_tick - time.monotonic())
            if batch:
                self._handle_batch(batch)
                if time.monotonic() < next_tick:
                    continue
            next_tick = time.monotonic() + self.tick_s
            try:
                now = time.time()
                self.tick(now)
                if now - self._last_publish >= self.resign_every_s or self._republish_all.is_set():
                    with self._lock:
                        self._publish()
                if now - self._last_prune >= self.prune_every_s:
                    self._last_prune = now
                    self.registry.prune(now)
            except Exception:  # logged; the next tick retries from the saved state
                log.exception("rollout tick failed")

    def _handle_batch(self, batch: list[Inbound]) -> None:
        """Ingest a burst of reports in one database transaction; rollout plans are saved once."""
        started = time.monotonic()
        try:
            with self._lock, self.rollouts.batch():
                for item in newest_states(batch):
                    try:
                        self._handle_report(item)
                    except Exception:  # one bad report must never stop the others
                        log.exception("handling a report on %s failed", item.topic[:200])
        except Exception:  # the database refused the whole batch: say so, keep serving
            # (the coordinator saves its states again on the next save)
            log.exception("storing a batch of %d device reports failed", len(batch))
        self.instruments.batch_handled(batch, time.monotonic() - started)

    # --- device reports -----------------------------------------------------------------

    def _handle_report(self, item: Inbound) -> None:
        """One report, parsed once from its bytes (``edge_runtime.protocol``: size, depth and
        fields checked) and handed on as a typed message."""
        parts = item.topic.split("/")
        if len(parts) != len(self.prefix.split("/")) + 3:
            return
        device_id, leaf = parts[-2], parts[-1]
        if not item.payload or not self.rate_limiter.admit(device_id, leaf, item.received_at):
            return  # an empty payload clears a retained topic: nothing was reported
        try:
            if leaf == "availability":
                online = parse_availability(item.payload, device_id) is Availability.ONLINE
                self.registry.record_availability(device_id, online)
            elif leaf == "state":
                self._state(device_id, parse_state(item.payload, device_id), item)
            elif leaf == "events":
                event = parse_event(item.payload, device_id)
                self.registry.record_event(device_id, event)
                if event.reason:
                    # the state report that follows says where the device is, its events why
                    self._last_reason[device_id] = event.reason[:500]
            elif leaf == "telemetry":
                self.registry.record_telemetry(device_id, item.payload)
        except (ValueError, EdgefleetError) as exc:
            log.warning("ignored %s from %s: %s", leaf, device_id, exc)

    def _state(self, device_id: str, report: StateReport, item: Inbound) -> None:
        """Store a reported state; a newer one moves the rollouts that cover the device."""
        fresh = not item.retained
        if self.registry.record_state(device_id, report, received_at=item.received_at, fresh=fresh):
            self.rollouts.device_reported(
                device_id,
                report.state.value,
                report.active.bundle if report.active else None,
                time.time(),
                target=report.target.bundle if report.target else None,
                reason=self._last_reason.get(device_id, ""),
            )

    # --- rollouts ------------------------------------------------------------------------

    def create_rollout(
        self,
        bundle_sha256: str,
        target: TargetSelector,
        waves: Sequence[WaveSpec],
        *,
        previous_sha256: str | None = None,
        seed: int = 0,
    ) -> int:
        """Plan and start a rollout; returns its id."""
        devices = self.registry.select_devices(target)
        if not devices:
            raise RolloutError(f"no device matches {target.to_json()}")
        bundle = read_bundle(self.bundle_folder / f"{bundle_sha256}.efb")
        spec = RolloutSpec(
            bundle=bundle_sha256,
            previous_bundle=previous_sha256,
            devices=tuple(
                TargetDevice(
                    device_id=d.id,
                    tags=d.tags,
                    pinned_bundle=d.pinned_bundle,
                    phase=d.phase,
                    active=d.active_bundle,
                )
                for d in devices
            ),
            waves=tuple(waves),
            seed=seed,
            baseline=Baseline.from_manifest(bundle.manifest),
        )
        now = time.time()
        # plan first: a rollout that cannot be planned (RolloutPlanError, a 400) writes no row
        RolloutState.create(spec, now)
        info = self.registry.create_rollout(
            bundle_sha256, target, {}, previous_sha256=previous_sha256
        )
        with self._lock:
            self.rollouts.start(spec, info.id, now)
        return info.id

    def tick(self, now: float) -> None:
        """Advance every rollout: timeouts, health windows, quality gates, next waves.

        Telemetry is read only for the quality gates due now, so most ticks
        cost no telemetry query at all.
        """
        with self._lock:
            figures = {}
            for gate in self.rollouts.due_gates(now):
                found = self.registry.wave_figures(
                    gate.devices, gate.started_at, gate.bundle, gate.previous
                )
                if found is not None:
                    figures[gate.key] = found
            self.rollouts.tick(now, figures)

    def command(
        self, rollout_id: int, verb: str, reason: str = "operator abort", *, by: str | None = None
    ) -> RolloutState:
        """pause, resume, approve or abort a rollout; ``by`` names who (an API token's name)."""
        with self._lock:
            return self.rollouts.command(rollout_id, verb, reason, time.time(), by=by)

    def plan(self, rollout_id: int) -> RolloutState | None:
        """The live planner state of a rollout still followed (None once finished and settled)."""
        with self._lock:
            return self.rollouts.plan(rollout_id)

    def _execute(self, actions: Sequence[Action]) -> None:
        signers = self.keys.role("assignments")
        changed = False
        for action in actions:
            if isinstance(action, Assign):
                self.repository.assign_many(
                    "devices", action.device_ids, action.bundle_sha, signers
                )
                changed = True
            elif isinstance(action, Rollback):
                if action.to_sha is None:
                    self.repository.unassign_many("devices", action.device_ids, signers)
                else:
                    self.repository.assign_many(
                        "devices", action.device_ids, action.to_sha, signers
                    )
                changed = True
            elif isinstance(action, Notify):
                log.info("%s", action.message)
        if changed:
            self._publish()

    def _publish(self) -> None:
        self.repository.snapshot_and_timestamp(
            self.keys.role("snapshot"), self.keys.role("timestamp")
        )
        if self._republish_all.is_set():
            self._republish_all.clear()
            self.publisher.reset()
        self.publisher.publish()
        self._last_publish = time.time()
