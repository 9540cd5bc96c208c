"""The fleet server's core: devices' reports in, signed assignments out, rollouts driven in between.

One :class:`FleetServer` owns the registry (database), the TUF repository
with the online keys, an MQTT client, the chunk server and the rollouts.
Devices' retained state, events, telemetry and availability are ingested
into the registry; every running rollout is a pure :class:`RolloutState`
whose JSON lives in the database (so a restarted server resumes it) and whose
actions (assign a wave, roll devices back) become new signed assignments,
published retained. The server never holds the release key.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.bundle import read_bundle
from edge_runtime.errors import EdgefleetError
from edge_runtime.supervise import SupervisedThread, WorkerHealth
from fleet_server.broker_auth import BrokerAuth, hash_password, new_password
from fleet_server.delivery import ChunkServer
from fleet_server.errors import FleetError, MalformedReportError, RolloutError
from fleet_server.publisher import MetadataPublisher
from fleet_server.quality_gate import Baseline, WaveTelemetry
from fleet_server.rate_limit import DeviceRateLimiter
from fleet_server.records import DeviceInfo, TargetSelector, WaveDeviceStatus, WaveInfo
from fleet_server.registry import Registry
from fleet_server.rollout_plan import (
    Action,
    Assign,
    DeviceStatus,
    Notify,
    Rollback,
    RolloutState,
    RolloutStatus,
    Step,
    recover,
)
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec
from fleet_server.telemetry import quality_figures
from fleet_server.trust import KeySet, Repository

__all__ = ["MAX_REPORT_BYTES", "FleetServer"]

MAX_REPORT_BYTES = 64 * 1024
_ROW_ADDING = frozenset({"events", "telemetry", "availability"})
"""Report kinds that add database rows, so each device's rate of them is limited."""
"""The largest device report (state, event, telemetry) read; larger ones are refused unread."""

_WAVE_STATUS = {
    "running": "running",
    "watching": "running",
    "passed": "succeeded",
    "skipped": "succeeded",
    "failed": "failed",
    "aborted": "aborted",
}
_DEVICE_STATUS: dict[str, WaveDeviceStatus] = {
    "pending": "pending",
    "sent": "sent",
    "in-progress": "downloading",
    "committed": "committed",
    "rolled-back": "rolled-back",
    "failed": "failed",
    "timed-out": "timed-out",
}

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
        self.rate_limiter = DeviceRateLimiter()
        """Events, telemetry and availability changes per device: 120 a minute, bursts of 240."""
        self._last_publish = 0.0
        self._lock = threading.RLock()
        self._inbox: queue.SimpleQueue[_Inbound] = queue.SimpleQueue()
        """Device reports, queued by paho's network thread, handled by the server's own thread."""
        self.max_batch = 1000
        """At most this many queued device reports share one database transaction."""
        self.batch_window_s = 0.1
        """How long a batch gathers reports: bursts cost one transaction and one plan save."""
        self._dirty: dict[int, RolloutState] = {}
        self._synced_waves: dict[int, dict[int, tuple[int, str]]] = {}
        """Rollout id -> wave index -> (wave id, status) as last written to the registry."""
        self._last_reason: dict[str, str] = {}
        """Device id -> the reason its newest event gave (failures, rollbacks)."""
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self._plans: dict[int, RolloutState] = {}
        self._synced: dict[int, dict[str, str]] = {}
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
        if self.broker_auth is None:
            raise FleetError(
                "this server does not manage broker credentials (no --broker-auth-dir)"
            )
        password = new_password()
        with self._lock:
            self.registry.set_credentials_hash(device_id, hash_password(password))
            self.broker_auth.write(self.registry.credentials_hashes())
        return password

    def revoke_credentials(self, device_id: str) -> None:
        """Remove a device's broker credentials: it cannot connect after the broker's reload."""
        if self.broker_auth is None:
            raise FleetError(
                "this server does not manage broker credentials (no --broker-auth-dir)"
            )
        with self._lock:
            self.registry.set_credentials_hash(device_id, None)
            self.broker_auth.write(self.registry.credentials_hashes())

    # --- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to device reports, resume running rollouts, publish metadata, start ticking."""
        for leaf in _REPORT_LEAVES:
            self.client.message_callback_add(
                f"{self.prefix}/devices/+/{leaf}", self._on_device_message
            )
        self._subscribe_reports()
        self.chunks.start()  # chains the client's on_connect, like we do next
        self._prev_on_connect = self.client.on_connect
        self.client.on_connect = self._on_connect
        if self.broker_auth is not None:
            self.broker_auth.write(self.registry.credentials_hashes())
        now = time.time()
        live = [
            info.id
            for info in self.registry.rollouts(
                status=("pending", "running", "paused", "awaiting-approval")
            )
        ]
        # finished rollouts still waiting for devices: rolled back, or completed with late ones
        waiting = self.registry.rollouts_with_devices(
            ("rolled-back",), ("sent", "downloading", "committed")
        ) + self.registry.rollouts_with_devices(
            ("completed",), ("sent", "downloading", "timed-out")
        )
        for rollout_id in sorted({*live, *waiting}):
            plan = self.registry.rollout_plan(rollout_id)
            if plan is None:
                continue
            state = RolloutState.model_validate(plan)
            if _followed(state):
                self._apply(rollout_id, recover(state, now))
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
        workers = [self.chunks.health()]
        if self._thread is not None:
            workers.insert(0, self._thread.health())
        else:
            workers.insert(0, WorkerHealth("fleet-server", False, 0, "not started"))
        return {worker.name: worker for worker in workers}

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
            try:
                first = self._inbox.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                pass
            else:
                batch = [first]
                gather_until = time.monotonic() + self.batch_window_s
                while len(batch) < self.max_batch:
                    try:
                        batch.append(
                            self._inbox.get(timeout=max(0.0, gather_until - time.monotonic()))
                        )
                    except queue.Empty:
                        break
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

    def _handle_batch(self, batch: list[_Inbound]) -> None:
        """Ingest a burst of reports in one database transaction; rollout plans are saved once."""
        try:
            with self._lock, self.registry.batch():
                for item in _newest_states(batch):
                    try:
                        self._handle_report(item)
                    except Exception:  # one bad report must never stop the others
                        log.exception("handling a report on %s failed", item.topic[:200])
                self._save_dirty()
        except Exception:  # the database refused the whole batch: say so, keep serving
            log.exception("storing a batch of %d device reports failed", len(batch))
            with self._lock:  # what was written is gone: save the live plans again next time
                self._dirty.update(self._plans)
                self._synced.clear()
                self._synced_waves.clear()

    # --- device reports -----------------------------------------------------------------

    def _on_device_message(
        self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        self._inbox.put(
            _Inbound(message.topic, bytes(message.payload), bool(message.retain), time.time())
        )

    def _handle_report(self, item: _Inbound) -> None:
        topic, raw = item.topic, item.payload
        parts = topic.split("/")
        if len(parts) != len(self.prefix.split("/")) + 3:
            return
        device_id, leaf = parts[-2], parts[-1]
        if not self._admitted(device_id, leaf, item.received_at):
            return
        try:
            if leaf == "availability":
                self.registry.record_availability(device_id, raw == b"online")
                return
            if not raw:
                return
            payload = _decode(raw)
            if leaf == "state":
                fresh = not item.retained
                if self.registry.record_state(
                    device_id, payload, received_at=item.received_at, fresh=fresh
                ):
                    self._device_state(device_id, payload)
            elif leaf == "events":
                self.registry.record_event(device_id, payload)
                if isinstance(payload, dict) and payload.get("reason"):
                    # the state report that follows says where the device is, its events why
                    self._last_reason[device_id] = str(payload["reason"])[:500]
            elif leaf == "telemetry":
                self.registry.record_telemetry(device_id, payload)
        except (ValueError, EdgefleetError) as exc:
            log.warning("ignored %s from %s: %s", leaf, device_id, exc)

    def _admitted(self, device_id: str, leaf: str, now: float) -> bool:
        """Whether this report is within its device's rate (only row-adding kinds are limited)."""
        if leaf not in _ROW_ADDING or self.rate_limiter.allow(device_id, leaf, now):
            return True
        dropped = self.rate_limiter.dropped[leaf]
        if dropped == 1 or dropped % 1000 == 0:
            log.warning(
                "dropping %s from %s: over %g a minute (%d dropped so far)",
                leaf,
                device_id[:64],
                self.rate_limiter.per_minute,
                dropped,
            )
        return False

    def _device_state(self, device_id: str, payload: dict[str, Any]) -> None:
        active = (payload.get("active") or {}).get("bundle")
        target = (payload.get("target") or {}).get("bundle")
        phase = str(payload.get("state", ""))
        now = time.time()
        with self._lock:
            for rollout_id, state in list(self._plans.items()):
                if device_id in state.devices:
                    reason = self._last_reason.get(device_id, "")
                    step = state.device_report(
                        device_id, phase, active, reason, now, target_sha=target
                    )
                    if step.state is not state or step.events or step.actions:
                        self._apply(rollout_id, step, save=False)

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
        state = RolloutState.create(spec, now)
        info = self.registry.create_rollout(
            bundle_sha256, target, {}, previous_sha256=previous_sha256
        )
        with self._lock:
            self._apply(info.id, state.start(now))
        return info.id

    def tick(self, now: float) -> None:
        """Advance every rollout: timeouts, health windows, quality gates, next waves."""
        with self._lock:
            for rollout_id, state in list(self._plans.items()):
                self._apply(rollout_id, state.tick(now, self._wave_telemetry(rollout_id, state)))

    def command(self, rollout_id: int, verb: str, reason: str = "operator abort") -> RolloutState:
        """pause, resume, approve or abort a rollout."""
        now = time.time()
        with self._lock:
            state = self._plans.get(rollout_id)
            if state is None:
                raise RolloutError(f"rollout {rollout_id} is not running")
            step = {
                "pause": lambda: state.pause(now),
                "resume": lambda: state.resume(now),
                "approve": lambda: state.approve(now),
                "abort": lambda: state.abort(reason, now),
            }[verb]()
            self._apply(rollout_id, step)
            return step.state

    def plan(self, rollout_id: int) -> RolloutState | None:
        """The live planner state of a rollout still followed (None once finished and settled)."""
        with self._lock:
            return self._plans.get(rollout_id)

    def _wave_telemetry(self, rollout_id: int, state: RolloutState) -> Mapping[int, WaveTelemetry]:
        """Each started wave's telemetry, computed only for the waves the planner asks about.

        The planner reads it only when a wave's quality gate decides, so most
        ticks cost no telemetry query at all.
        """
        return _LazyWaveTelemetry(
            self.registry, rollout_id, state.spec.bundle, state.spec.previous_bundle
        )

    def _apply(self, rollout_id: int, step: Step, *, save: bool = True) -> None:
        """Record the step's events, execute its actions, keep its state; save it now or with the batch.

        With ``save=False`` (device reports) the plan is saved once at the end
        of the batch of reports (:meth:`_save_dirty`), in the same transaction.
        """
        state = step.state
        for event in step.events:
            data: dict[str, Any] = {}
            if event.wave is not None:
                data["wave"] = event.wave
            if event.device_ids:
                data["devices"] = list(event.device_ids)
            if event.verdict is not None:
                data["verdict"] = event.verdict.model_dump(mode="json")
            self.registry.add_timeline(
                event.kind.value,
                event.message,
                rollout_id=rollout_id,
                device_id=event.device_ids[0] if len(event.device_ids) == 1 else None,
                data=data or None,
                at=event.at,
            )
        if step.actions:
            self._execute(step.actions)
        if _followed(state):
            self._plans[rollout_id] = state
        else:
            self._plans.pop(rollout_id, None)
        self._dirty[rollout_id] = state
        if save:
            self._save_dirty()

    def _save_dirty(self) -> None:
        """Persist every plan changed since the last save, and mirror its waves into the registry."""
        dirty, self._dirty = self._dirty, {}
        for rollout_id, state in dirty.items():
            with self.registry.batch():  # readers see the plan's status and its waves together
                self.registry.save_rollout_plan(
                    rollout_id,
                    state.model_dump(mode="json"),
                    state.status.value,
                    state.reason or None,
                )
                self._sync_waves(rollout_id, state)
            if not _followed(state):
                self._synced.pop(rollout_id, None)
                self._synced_waves.pop(rollout_id, None)

    def _sync_waves(self, rollout_id: int, state: RolloutState) -> None:
        """Mirror the planner's waves and device statuses into the registry (changes only)."""
        waves = self._synced_waves.get(rollout_id)
        if waves is None or len(waves) < sum(1 for w in state.waves if w.devices):
            waves = {w.index: (w.id, w.status) for w in self.registry.waves(rollout_id)}
        for index, wave in enumerate(state.waves):
            if index not in waves and wave.devices:
                created = self.registry.create_wave(rollout_id, index, wave.devices)
                waves[index] = (created.id, created.status)
            stored = waves.get(index)
            desired = _WAVE_STATUS.get(wave.status.value)
            if stored is not None and desired is not None and desired != stored[1]:
                if stored[1] == "pending" and desired != "running":
                    self.registry.update_wave_status(stored[0], "running")
                self.registry.update_wave_status(stored[0], desired)  # type: ignore[arg-type]
                waves[index] = (stored[0], desired)
        self._synced_waves[rollout_id] = waves
        synced = self._synced.setdefault(rollout_id, {})
        changes: dict[str, tuple[WaveDeviceStatus, str | None]] = {}
        for device_id, progress in state.devices.items():
            status = _DEVICE_STATUS[progress.status.value]
            if synced.get(device_id) != status:
                changes[device_id] = (status, progress.reason or None)
        self.registry.set_wave_device_statuses(rollout_id, changes)
        for device_id, (status, _) in changes.items():
            synced[device_id] = status

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


def _followed(state: RolloutState) -> bool:
    """Whether device reports still change the rollout: while it runs; after a rollback until
    every rolled-back device is off the new bundle; after it completed, until the devices
    that were sent it but had not answered (offline, late) have."""
    if not state.finished:
        return True
    if state.status is RolloutStatus.ROLLED_BACK:
        return state.rollback_completed_at is None
    if state.status is RolloutStatus.COMPLETED:
        return any(p.status in _UNANSWERED for p in state.devices.values())
    return False


_UNANSWERED = frozenset({DeviceStatus.SENT, DeviceStatus.IN_PROGRESS, DeviceStatus.TIMED_OUT})


def _decode(raw: bytes) -> Any:
    """A report's JSON, read only when it is small enough and not nested past the stack."""
    if len(raw) > MAX_REPORT_BYTES:
        raise MalformedReportError(f"{len(raw)} bytes, over the {MAX_REPORT_BYTES}-byte cap")
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise MalformedReportError("JSON nested too deeply") from exc


@dataclass(frozen=True)
class _Inbound:
    """A device report as it came off the broker: topic, bytes, retained copy or not, when."""

    topic: str
    payload: bytes
    retained: bool
    received_at: float


def _newest_states(batch: list[_Inbound]) -> list[_Inbound]:
    """The batch without the ``state`` reports a later one of the same device replaces.

    A device's state topic is retained and each report is complete, so only
    the newest of a burst matters (the events say what happened between).
    """
    last = {item.topic: i for i, item in enumerate(batch) if item.topic.endswith("/state")}
    return [
        item
        for i, item in enumerate(batch)
        if not item.topic.endswith("/state") or last[item.topic] == i
    ]


class _LazyWaveTelemetry(Mapping[int, WaveTelemetry]):
    """Wave index -> :class:`WaveTelemetry`, aggregated from the registry on first access."""

    def __init__(
        self, registry: Registry, rollout_id: int, bundle: str, previous: str | None
    ) -> None:
        self._registry = registry
        self._rollout_id = rollout_id
        self._bundle = bundle
        self._previous = previous
        self._waves: dict[int, WaveInfo] | None = None
        self._figures: dict[int, WaveTelemetry | None] = {}

    def _started(self) -> dict[int, WaveInfo]:
        if self._waves is None:
            self._waves = {
                w.index: w
                for w in self._registry.waves(self._rollout_id)
                if w.started_at is not None
            }
        return self._waves

    def __getitem__(self, index: int) -> WaveTelemetry:
        if index not in self._figures:
            wave = self._started().get(index)
            figures = None
            if wave is not None and wave.started_at is not None:
                # each side counts only what its own bundle served
                new = self._registry.wave_telemetry(wave.id, bundle=self._bundle).overall
                before = self._registry.aggregate_telemetry(
                    wave.device_ids, until=wave.started_at, bundle=self._previous
                ).overall
                if new is not None:
                    figures = WaveTelemetry(
                        new=quality_figures(new),
                        previous=quality_figures(before) if before is not None else None,
                    )
            self._figures[index] = figures
        found = self._figures[index]
        if found is None:
            raise KeyError(index)
        return found

    def __iter__(self) -> Iterator[int]:
        return (i for i in self._started() if i in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return True  # do not aggregate anything just to be tested for emptiness
