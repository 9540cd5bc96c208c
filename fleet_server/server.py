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
from fleet_server.broker_auth import BrokerAuth
from fleet_server.chunk_io import BundleFolder
from fleet_server.chunk_server import ChunkServer
from fleet_server.coordinator import RolloutCoordinator
from fleet_server.credentials import DeviceCredentials
from fleet_server.errors import FleetError, LeaseLostError, NotLeaderError, RegistryStorageError
from fleet_server.inbox import REPORT_KINDS, Inbound, ReportInbox, newest_states
from fleet_server.instruments import ServerInstruments
from fleet_server.leadership import Leadership, LeaseKeeper, default_replica_id
from fleet_server.publisher import MetadataPublisher
from fleet_server.quality_gate import Baseline
from fleet_server.rate_limit import ROW_ADDING_REPORTS, DeviceRateLimiter
from fleet_server.records import TargetSelector
from fleet_server.registry import Registry
from fleet_server.reports import (
    Availability,
    StateReport,
    parse_availability,
    parse_event,
    parse_state,
)
from fleet_server.rollout_plan import RolloutState
from fleet_server.rollout_spec import WaveSpec
from fleet_server.signer import OnlineSigner
from fleet_server.state_sweep import RetainedSweep
from fleet_server.trust import KeySet, Repository
from fleet_server.workers import WorkerBoard

__all__ = ["FleetServer"]


log = logging.getLogger(__name__)

_BATCH_ATTEMPTS = 3


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
        replica_id: str | None = None,
        share_group: str | None = None,
        lease_ttl_s: float = 10.0,
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
        self._lock = threading.RLock()
        self.credentials = DeviceCredentials(registry, broker_auth, self._lock)
        self.inbox = ReportInbox()  # queued by paho's network thread, read by the worker
        self.instruments = instruments or ServerInstruments()  # report batches, for /metrics
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self.signer = OnlineSigner(
            repository, online_keys, MetadataPublisher(client, repository, prefix)
        )  # the leader's signing of assignments and publishing of metadata
        leases = registry.dedicated()  # renewals never wait for a pooled connection
        self.leadership = Leadership(leases, replica_id or default_replica_id(), lease_ttl_s)
        self.keeper = LeaseKeeper(self.leadership, self._renew)  # renews on its own thread
        self.share_group = share_group  # MQTT shared subscriptions: replicas split the reports
        self.rollouts = RolloutCoordinator(registry, self.signer.execute)  # plans, while leading
        self._paths = BundleFolder(self.bundle_folder)  # shared by replicas: any imports, all serve
        self._prev_on_connect: Any = None
        self.chunks = ChunkServer(client, self._paths, prefix=prefix, share_group=share_group)
        self.sweep = RetainedSweep(client, prefix) if share_group else None  # a lone server: none
        self.workers = WorkerBoard()  # those beside ours (the app's: drift, field data)

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
        return bundle.sha256

    # --- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to device reports, resume running rollouts, publish metadata, start ticking."""
        for leaf in REPORT_KINDS:
            self.client.message_callback_add(
                f"{self.prefix}/devices/+/{leaf}", self.inbox.on_message
            )
        self._subscribe_reports()
        self.chunks.start()  # chains the client's on_connect, like we do next
        self._prev_on_connect = self.client.on_connect
        self.client.on_connect = self._on_connect
        self.credentials.write_broker_files()
        self.leadership.renew(time.monotonic())
        self._take_turn()
        self._thread = SupervisedThread(self._run, "fleet-server")
        self._thread.start()
        self.keeper.start()

    def stop(self) -> None:
        """Stop ticking, ingesting and serving chunks (the database keeps everything)."""
        self._stop.set()
        self.keeper.stop()
        if self._thread is not None:
            self._thread.stop(timeout=10)
        self.client.on_connect = self._prev_on_connect
        self.chunks.stop()
        if self.sweep is not None:
            self.sweep.stop()
        self.leadership.release()
        if self.leadership.registry is not self.registry:
            self.leadership.registry.close()
        for leaf in REPORT_KINDS:
            self.client.message_callback_remove(f"{self.prefix}/devices/+/{leaf}")
            self.client.unsubscribe(f"{self.prefix}/devices/+/{leaf}")

    def health(self) -> dict[str, WorkerHealth]:
        """Each worker (report ingestion and ticks, chunk delivery, the lease, and the board's):
        alive, restarts, error."""
        thread = self._thread
        mine = thread.health() if thread else WorkerHealth("fleet-server", False, 0, "not started")
        workers = (mine, self.chunks.health(), self.keeper.health(), *self.workers.health())
        return {worker.name: worker for worker in workers}

    def _subscribe_reports(self) -> None:
        share = f"$share/{self.share_group}/" if self.share_group else ""
        self.client.subscribe(
            [(f"{share}{self.prefix}/devices/+/{leaf}", 1) for leaf in REPORT_KINDS]
        )

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        """A (re)connect: the session is clean, so subscribe again; the broker may have lost
        its retained metadata (a restart without persistence), so publish all of it again."""
        if self._prev_on_connect is not None:
            self._prev_on_connect(client, *args)
        reason = args[2] if len(args) > 2 else None
        if reason is not None and getattr(reason, "is_failure", False):
            return
        self._subscribe_reports()
        self.signer.republish_all.set()  # by the worker: never wait for acks on paho's thread

    def _run(self) -> None:
        """The server's one worker: device reports in batches as they arrive, a tick every tick_s.

        Nothing here runs on paho's network thread, so waiting for the
        broker's acknowledgements (signed assignments, metadata) can never
        stall the thread that reads those acknowledgements.
        """
        next_tick = time.monotonic() + self.tick_s
        while not self._stop.is_set():
            self.keeper.beat()
            self._take_turn()
            if self.sweep is not None:
                self.sweep.poll(time.monotonic(), self.leadership.leading)
            batch = self.inbox.gather(next_tick - time.monotonic())
            if batch:
                self._handle_batch(batch)
                if time.monotonic() < next_tick:
                    continue
            next_tick = time.monotonic() + self.tick_s
            try:
                if not self.leadership.leading:
                    continue
                now = time.time()
                if self.share_group:  # reports other replicas ingested (idempotent: overlap)
                    with self._lock:
                        self.rollouts.catch_up(now)
                self.tick(now)
                if (
                    now - self.signer.last_publish >= self.resign_every_s
                    or self.signer.republish_all.is_set()
                ):
                    with self._lock:
                        self.signer.publish()
                if now - self._last_prune >= self.prune_every_s:
                    self._last_prune = now
                    self.registry.prune(now)
            except LeaseLostError as exc:  # another replica took over: its turn
                self._step_down(str(exc))
            except Exception:  # logged; the next tick retries from the saved state
                log.exception("rollout tick failed")

    def _renew(self) -> None:
        """The lease keeper's turn (its own thread): renew only; the worker acts on a change."""
        try:
            self.leadership.renew(time.monotonic())
        except Exception:  # the database is away: keep trying; the fence guards every write
            log.exception("renewing the leader lease failed")

    def _take_turn(self) -> None:
        """On the worker, follow the lease: lost, drop every plan; gained, resume the rollouts,
        catch up with every device, publish metadata, sweep (the keeper renews meanwhile)."""
        fence = self.leadership.fence
        if fence == self.rollouts.fence:
            return
        with self._lock:
            self.rollouts.forget_all()
            self.rollouts = RolloutCoordinator(self.registry, self.signer.execute, fence)
            if fence is None:
                if self.sweep is not None:
                    self.sweep.stop()
                return
            try:
                now = time.time()
                self.rollouts.resume(now)
                self.rollouts.catch_up(now, everyone=True)
                self.signer.republish_all.set()  # another leader's may be newer
                self.signer.publish()
                if self.sweep is not None:  # reports a dead leader took with it
                    self.sweep.begin(time.monotonic(), "this replica takes the lead")
            except BaseException:  # lead half taken: let go, the next renewal retakes it
                self._step_down("taking over the rollouts failed")
                raise

    def _require_lead(self) -> None:
        self.leadership.require()
        if self.rollouts.fence != self.leadership.fence:  # gained, not yet resumed
            raise NotLeaderError("this replica is taking over the rollouts: try again shortly")

    def _step_down(self, why: str) -> None:
        with self._lock:
            self.leadership.lose(why)
            self.rollouts.forget_all()
            if self.sweep is not None:
                self.sweep.stop()

    def _handle_batch(self, batch: list[Inbound]) -> None:
        """Ingest a burst of reports in one database transaction; rollout plans are saved once.

        Reports are taken device by device in id order, so replicas lock rows in one order
        (no deadlock). A refused transaction is tried again (after a lost lead, as a
        follower): the reports were acknowledged to the broker, so dropping them loses them.
        """
        started = time.monotonic()
        reports = sorted(newest_states(batch), key=lambda item: item.topic.rsplit("/", 2)[-2])
        for attempt in range(1, _BATCH_ATTEMPTS + 1):
            try:
                with self._lock, self.rollouts.batch():
                    for item in reports:
                        try:
                            self._handle_report(item)
                        except (RegistryStorageError, LeaseLostError):
                            raise
                        except Exception:  # one bad report must never stop the others
                            log.exception("handling a report on %s failed", item.topic[:200])
                break
            except LeaseLostError as exc:  # another replica leads: store them as a follower
                self._step_down(str(exc))
            except Exception:  # the database refused the batch: say so, try again
                log.exception(
                    "storing a batch of %d device reports failed (try %d)", len(batch), attempt
                )
                time.sleep(0.2 * attempt)
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
                self.registry.record_event(device_id, parse_event(item.payload, device_id))
            elif leaf == "telemetry":
                self.registry.record_telemetry(device_id, item.payload)
        except (RegistryStorageError, LeaseLostError):
            raise  # the batch is tried again: a report the database refused is not bad
        except (ValueError, EdgefleetError) as exc:
            log.warning("ignored %s from %s: %s", leaf, device_id, exc)

    def _state(self, device_id: str, report: StateReport, item: Inbound) -> None:
        """Store a reported state; a newer one moves the rollouts that cover the device (here when
        this replica leads; the leader catches up with the others' from the database)."""
        fresh = not item.retained
        stored = self.registry.record_state(
            device_id, report, received_at=item.received_at, fresh=fresh
        )
        if stored is not None:
            self.rollouts.device_stored(stored, time.time())

    def create_rollout(
        self,
        bundle_sha256: str,
        target: TargetSelector,
        waves: Sequence[WaveSpec],
        *,
        previous_sha256: str | None = None,
        seed: int = 0,
        ignore_windows: bool = False,
    ) -> int:
        """Plan and start a rollout (on the leading replica); returns its id."""
        bundle = read_bundle(self.bundle_folder / f"{bundle_sha256}.efb")
        with self._lock:
            self._require_lead()
            return self.rollouts.create(
                bundle_sha256,
                target,
                waves,
                Baseline.from_manifest(bundle.manifest),
                time.time(),
                previous_sha256=previous_sha256,
                seed=seed,
                ignore_windows=ignore_windows,
                min_runtime_version=bundle.manifest.compatibility.min_runtime_version,
            )

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
            self._require_lead()
            return self.rollouts.command(rollout_id, verb, reason, time.time(), by=by)

    def plan(self, rollout_id: int) -> RolloutState | None:
        """The live planner state of a rollout still followed (None once finished and settled);
        no lock (states are immutable), so an API read never waits for a batch or a takeover."""
        return self.rollouts.plan(rollout_id)
