"""The fleet registry: bundles, devices, assignments, rollouts, timeline and telemetry in the database.

Every operation is one short transaction and returns plain frozen records
(:mod:`fleet_server.records`), so callers never hold database objects or
sessions. Device reports are idempotent, as the protocol asks of QoS 1
handlers: an older reported state, a repeated event or a late step of an
update that already ended changes nothing. Everything a rollout needs to
resume lives here, so a server restarted mid-rollout carries on from the
database.

Unknown devices, bundles and rollouts are :class:`RegistryError` naming them;
a rollout asked to move in a way its state forbids is a :class:`RolloutError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from edge_runtime.bundle import Bundle
from fleet_server import db
from fleet_server._registry_rows import (
    assignment_info,
    bundle_info,
    check_id,
    check_status,
    check_tags,
    checked_name,
    device_info,
    get_bundle,
    get_device,
    get_rollout,
    get_wave,
    new_device,
    replace_tags,
    rollout_info,
    timeline_entry,
    timeline_item,
    wave_device_info,
    wave_info,
)
from fleet_server.errors import RegistryError, RegistryStorageError, RolloutError
from fleet_server.records import (
    ASSIGNMENT_KINDS,
    ROLLOUT_STATUSES,
    TERMINAL_DEVICE_STATUSES,
    TERMINAL_ROLLOUT_STATUSES,
    WAVE_DEVICE_STATUSES,
    WAVE_STATUSES,
    AssignmentInfo,
    AssignmentKind,
    Availability,
    BundleInfo,
    DeviceInfo,
    RolloutInfo,
    RolloutStatus,
    TargetSelector,
    TimelineItem,
    WaveDeviceInfo,
    WaveDeviceStatus,
    WaveInfo,
    WaveStatus,
)
from fleet_server.reports import MAX_TELEMETRY_BYTES, parse_event, parse_state, parse_telemetry
from fleet_server.rollout_spec import wave_label
from fleet_server.telemetry import (
    TelemetrySample,
    TelemetrySummary,
    combine_figures,
    device_figures,
    read_sample,
)

__all__ = [
    "CLOCK_SKEW_WARN_S",
    "MAX_TIMELINE_LIMIT",
    "Registry",
    "TelemetryRetention",
    "TimelineRetention",
]

log = logging.getLogger(__name__)

MAX_TIMELINE_LIMIT = 10_000
"""The most timeline entries one query returns."""
CLOCK_SKEW_WARN_S = 60.0
"""A device clock further off than this is logged (the skew is kept per device either way)."""

_TERMINAL_WAVE_STATUSES = frozenset({"succeeded", "failed", "aborted"})
_IN_CHUNK = 500  # bound the size of SQL IN lists


@dataclass(frozen=True)
class _Retention:
    """At most ``max_per_device`` rows per device, none older than ``max_age_s`` seconds
    (``None``: no such bound)."""

    max_per_device: int | None
    max_age_s: float | None

    def __post_init__(self) -> None:
        if self.max_per_device is not None and self.max_per_device < 1:
            raise ValueError(f"max_per_device must be at least 1, got {self.max_per_device}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {self.max_age_s}")


@dataclass(frozen=True)
class TelemetryRetention(_Retention):
    """How much telemetry the registry keeps: snapshots per device, and for how long."""

    max_per_device: int | None = 2_000
    max_age_s: float | None = 7 * 24 * 3600.0


@dataclass(frozen=True)
class TimelineRetention(_Retention):
    """How much of the timeline the registry keeps: entries about each device (its newest),
    and for how long. A rollout's own entries (no device) are its audit trail and only age out.
    """

    max_per_device: int | None = 1_000
    max_age_s: float | None = 365 * 24 * 3600.0


class Registry:
    """The fleet server's state, over a SQLAlchemy session factory.

    ``clock`` gives Unix time (tests pass a fake one). With ``auto_register``
    a device that reports before it was provisioned is registered on first
    contact; without it, its reports are refused as unknown.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        clock: Callable[[], float] = time.time,
        retention: TelemetryRetention | None = None,
        timeline_retention: TimelineRetention | None = None,
        auto_register: bool = True,
        max_telemetry_bytes: int = MAX_TELEMETRY_BYTES,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.retention = retention or TelemetryRetention()
        self.timeline_retention = timeline_retention or TimelineRetention()
        self.auto_register = auto_register
        self.max_telemetry_bytes = max_telemetry_bytes
        self._engine: Engine | None = None
        self._known_devices: set[str] = set()
        self._local = threading.local()
        bind = sessions.kw.get("bind")
        self._row_locks = bind is None or bind.dialect.name != "sqlite"
        """Lock rows (SELECT ... FOR UPDATE) against other writers; not on SQLite."""

    @classmethod
    def open(cls, url: str = db.DEFAULT_DATABASE_URL, **options: Any) -> Registry:
        """A registry on the database at ``url``, its schema created if missing; close it after."""
        engine = db.make_engine(url)
        try:
            db.create_schema(engine)
        except RegistryError:
            engine.dispose()
            raise
        registry = cls(db.session_factory(engine), **options)
        registry._engine = engine
        return registry

    def close(self) -> None:
        """Release the database connections of a registry made by :meth:`open`."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Let every registry call made by this thread in the block share one write transaction.

        Each call still runs in its own savepoint, so one that fails (and is
        caught) leaves the others in place; everything commits once at the
        end. The fleet server handles a burst of device reports this way:
        one commit instead of hundreds.
        """
        if getattr(self._local, "session", None) is not None:
            yield
            return
        with self._transaction(write=True) as session:
            self._local.session = session
            self._local.locked = set()
            self._local.event_rollouts = {}
            try:
                yield
            finally:
                self._local.session = None
                self._local.locked = None
                self._local.event_rollouts = None

    def _locked_device(self, session: Session, device_id: str) -> db.Device:
        """The device row, locked for this transaction (once per batch: it stays locked)."""
        if not self._row_locks:  # SQLite: the write transaction already excludes every writer
            return get_device(session, device_id, tags=False)
        locked: set[str] | None = getattr(self._local, "locked", None)
        if locked is not None:
            if device_id in locked:
                return get_device(session, device_id, tags=False)  # from the session, no query
            row = get_device(session, device_id, lock=True, tags=False)
            locked.add(device_id)
            return row
        return get_device(session, device_id, lock=True, tags=False)

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Session]:
        outer: Session | None = getattr(self._local, "session", None)
        if outer is not None:
            try:
                with outer.begin_nested():
                    yield outer
            except BaseException:
                self._local.locked = set()  # a rolled-back savepoint may release its row locks
                raise
            return
        try:
            with self._sessions() as session, session.begin():
                if write:
                    session.connection(execution_options=dict(db.WRITE_OPTIONS))
                yield session
        except OperationalError as exc:
            bind = self._sessions.kw.get("bind")
            where = (
                "the database" if bind is None else bind.url.render_as_string(hide_password=True)
            )
            raise RegistryStorageError(f"database {where} failed: {exc.orig}") from exc

    # --- bundles ------------------------------------------------------------------------

    def import_bundle(self, bundle: Bundle, *, released_at: float | None = None) -> BundleInfo:
        """Record a released bundle with its quality report and baseline; a repeat changes nothing."""
        manifest = bundle.manifest
        quality = manifest.quality
        distribution = None
        shares = None if quality is None else quality.class_distribution
        if shares is not None and len(shares) == len(manifest.labels):
            distribution = dict(zip(manifest.labels, shares, strict=True))
        row = db.Bundle(
            sha256=bundle.sha256,
            name=manifest.name,
            version=manifest.version,
            format=manifest.model.format,
            precision=manifest.model.precision,
            size=bundle.size,
            released_at=self._clock() if released_at is None else released_at,
            labels=list(manifest.labels),
            quality=None if quality is None else quality.model_dump(mode="json"),
            baseline_accuracy=None if quality is None else quality.accuracy,
            baseline_mean_confidence=None if quality is None else quality.mean_confidence,
            baseline_class_distribution=distribution,
            latency_budget_ms=manifest.compatibility.latency_budget_ms,
            manifest=manifest.model_dump(mode="json"),
        )
        try:
            with self._transaction(write=True) as session:
                existing = session.get(db.Bundle, bundle.sha256)
                if existing is not None:
                    return bundle_info(existing)
                session.add(row)
                session.add(
                    timeline_entry(
                        "bundle-imported",
                        f"imported {row.name} {row.version}",
                        data={"bundle": row.sha256},
                        at=row.released_at,
                    )
                )
        except IntegrityError:
            log.debug("bundle %s was imported concurrently", bundle.sha256)
            return self.bundle(bundle.sha256)
        log.info("imported bundle %s %s (%s)", row.name, row.version, row.sha256[:12])
        return bundle_info(row)

    def bundles(self) -> list[BundleInfo]:
        """Every released bundle, oldest release first."""
        with self._transaction() as session:
            rows = session.scalars(select(db.Bundle).order_by(db.Bundle.released_at))
            return [bundle_info(row) for row in rows]

    def bundle(self, sha256: str) -> BundleInfo:
        """The bundle with this sha256."""
        with self._transaction() as session:
            return bundle_info(get_bundle(session, sha256))

    # --- devices ------------------------------------------------------------------------

    def provision_device(
        self,
        device_id: str,
        tags: Iterable[str] = (),
        profile: str | None = None,
        *,
        credentials_hash: str | None = None,
    ) -> DeviceInfo:
        """Register a device ahead of its first contact (or adopt one that already made contact).

        A device provisioned before is refused: change it with :meth:`set_tags` and :meth:`pin`.
        """
        check_id(device_id)
        wanted = check_tags(tags)
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                row = session.get(db.Device, device_id)
                if row is not None and row.origin == "provisioned":
                    raise RegistryError(f"device {device_id!r} is already provisioned")
                if row is None:
                    row = new_device(device_id, "provisioned", now)
                    session.add(row)
                row.origin = "provisioned"
                row.profile = profile
                row.credentials_hash = credentials_hash
                replace_tags(row, wanted)
                session.add(
                    timeline_entry(
                        "device-provisioned",
                        f"provisioned with tags {list(wanted)}",
                        device_id=device_id,
                        at=now,
                    )
                )
                session.flush()
                info = device_info(row)
        except IntegrityError as exc:
            raise RegistryError(f"device {device_id!r} was registered concurrently; retry") from exc
        self._known_devices.add(device_id)
        return info

    def register_on_first_contact(self, device_id: str) -> DeviceInfo:
        """The device, registered now (untagged) if it was unknown.

        Without ``auto_register`` an unknown device is a :class:`RegistryError`.
        """
        check_id(device_id)
        if not self.auto_register:
            with self._transaction() as session:
                if (row := session.get(db.Device, device_id)) is None:
                    raise RegistryError(
                        f"unknown device {device_id!r}: it is not provisioned and this "
                        "server does not register devices on first contact"
                    )
                return device_info(row)
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                row = session.get(db.Device, device_id)
                if row is None:
                    row = new_device(device_id, "first-contact", now)
                    session.add(row)
                    session.add(
                        timeline_entry(
                            "device-registered",
                            "registered on first contact",
                            device_id=device_id,
                            at=now,
                        )
                    )
                    log.info("device %s registered on first contact", device_id)
                session.flush()
                info = device_info(row)
        except IntegrityError:
            info = self.device(device_id)  # another server replica registered it first
        self._known_devices.add(device_id)
        return info

    def devices(self, tags: Iterable[str] | None = None) -> list[DeviceInfo]:
        """Every device, or those carrying every one of ``tags``, by id."""
        if tags is not None:
            return self.devices_with_tags(tags)
        with self._transaction() as session:
            return [
                device_info(row)
                for row in session.scalars(select(db.Device).order_by(db.Device.id))
            ]

    def device(self, device_id: str) -> DeviceInfo:
        """The device with this id."""
        with self._transaction() as session:
            return device_info(get_device(session, device_id))

    def devices_with_tags(self, tags: Iterable[str], *, match: str = "all") -> list[DeviceInfo]:
        """Group membership: devices carrying every tag (``match="all"``) or any of them ("any")."""
        wanted = check_tags(tags)
        if match not in {"all", "any"}:
            raise RegistryError(f"match must be 'all' or 'any', not {match!r}")
        if not wanted:
            return self.devices() if match == "all" else []
        needed = len(wanted) if match == "all" else 1
        members = (
            select(db.DeviceTag.device_id)
            .where(db.DeviceTag.tag.in_(wanted))
            .group_by(db.DeviceTag.device_id)
            .having(func.count() >= needed)
        )
        with self._transaction() as session:
            rows = session.scalars(
                select(db.Device).where(db.Device.id.in_(members)).order_by(db.Device.id)
            )
            return [device_info(row) for row in rows]

    def groups(self) -> dict[str, list[str]]:
        """Every tag in use and the ids of the devices carrying it."""
        with self._transaction() as session:
            rows = session.execute(
                select(db.DeviceTag.tag, db.DeviceTag.device_id).order_by(
                    db.DeviceTag.tag, db.DeviceTag.device_id
                )
            )
            result: dict[str, list[str]] = {}
            for tag, device_id in rows:
                result.setdefault(tag, []).append(device_id)
            return result

    def select_devices(self, target: TargetSelector) -> list[DeviceInfo]:
        """The devices a rollout target covers; named devices must all be registered."""
        if target.kind == "all":
            return self.devices()
        if target.kind == "tags":
            return self.devices_with_tags(target.values)
        with self._transaction() as session:
            return [device_info(get_device(session, device_id)) for device_id in target.values]

    def set_tags(self, device_id: str, tags: Iterable[str]) -> DeviceInfo:
        """Replace the device's tags."""
        wanted = check_tags(tags)
        with self._transaction(write=True) as session:
            row = self._locked_device(session, device_id)
            replace_tags(row, wanted)
            session.flush()
            return device_info(row)

    def set_credentials_hash(self, device_id: str, credentials_hash: str | None) -> None:
        """Store (or clear) the hash of the device's broker credentials."""
        with self._transaction(write=True) as session:
            self._locked_device(session, device_id).credentials_hash = credentials_hash

    def credentials_hash(self, device_id: str) -> str | None:
        """The hash of the device's broker credentials, if it has any."""
        with self._transaction() as session:
            return get_device(session, device_id).credentials_hash

    def credentials_hashes(self) -> dict[str, str]:
        """Every device's broker credentials hash, by device id (devices without any are left out)."""
        with self._transaction() as session:
            rows = session.execute(
                select(db.Device.id, db.Device.credentials_hash).where(
                    db.Device.credentials_hash.is_not(None)
                )
            )
            return {device_id: hashed for device_id, hashed in rows if hashed is not None}

    def pin(self, device_id: str, sha256: str | None) -> DeviceInfo:
        """Keep the device on a bundle whatever rollouts say (``None`` unpins)."""
        now = self._clock()
        with self._transaction(write=True) as session:
            row = self._locked_device(session, device_id)
            if sha256 is not None:
                get_bundle(session, sha256)
            if row.pinned_bundle != sha256:
                row.pinned_bundle = sha256
                message = "unpinned" if sha256 is None else f"pinned to bundle {sha256[:12]}"
                session.add(
                    timeline_entry(
                        "device-pinned",
                        message,
                        device_id=device_id,
                        data={"bundle": sha256},
                        at=now,
                    )
                )
            session.flush()
            return device_info(row)

    # --- device reports -----------------------------------------------------------------

    def _ensure_device(self, device_id: str) -> None:
        if device_id not in self._known_devices:
            self.register_on_first_contact(device_id)

    def record_state(
        self, device_id: str, payload: Any, *, received_at: float | None = None, fresh: bool = False
    ) -> bool:
        """Store a device's reported state; False when it is older than the one stored.

        Reports are ordered by the device's ``(epoch, sequence)`` (arrival
        order for devices that send none), never by the device's clock: a
        clock that jumped a year ahead must not freeze the row. A ``fresh``
        report (published now, not a retained copy) also measures the
        device's clock skew against ``received_at`` (default: now).

        Like every report, it registers an unknown device on first contact
        (see ``auto_register``). The state is retained on the broker, so it
        says nothing about presence: it leaves ``last_seen`` alone.
        """
        report = parse_state(payload, device_id)
        received = self._clock() if received_at is None else received_at
        self._ensure_device(device_id)
        with self._transaction(write=True) as session:
            row = self._locked_device(session, device_id)
            if not report.supersedes(row.state_epoch, row.state_sequence):
                log.debug(
                    "ignored state of %s: sequence %s is older than %s (epoch %s)",
                    device_id,
                    report.sequence,
                    row.state_sequence,
                    report.epoch,
                )
                return False
            row.phase = report.state.value
            row.active_bundle = report.active.bundle if report.active else None
            row.active_name = report.active.name if report.active else None
            row.active_version = report.active.version if report.active else None
            row.last_good_bundle = report.last_good.bundle if report.last_good else None
            row.target_bundle = report.target.bundle if report.target else None
            row.target_assignment = report.target.assignment if report.target else None
            row.runtime_version = report.runtime_version
            row.state_updated_at = report.updated_at
            row.state_sequence = report.sequence
            row.state_epoch = report.epoch
            row.state_received_at = received
            if fresh:
                row.clock_skew_s = received - report.updated_at
                if abs(row.clock_skew_s) > CLOCK_SKEW_WARN_S:
                    log.warning(
                        "device %s's clock is %+.0f s off the server's",
                        device_id,
                        -row.clock_skew_s,
                    )
            return True

    def record_event(self, device_id: str, payload: Any) -> TimelineItem | None:
        """Add a device's update event or refusal to the timeline; None for a repeat.

        The entry belongs to the newest rollout that covers the device and
        whose bundle (or previous bundle) the event is about.
        """
        event = parse_event(payload, device_id)
        self._ensure_device(device_id)
        key = event.dedupe_key(device_id)
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                row = self._locked_device(session, device_id)
                row.last_seen = max(row.last_seen or now, now)
                seen = select(db.TimelineEntry.id).where(db.TimelineEntry.dedupe_key == key)
                if session.scalar(seen) is not None:
                    return None
                rollout_id = (
                    None
                    if event.bundle is None
                    else self._event_rollout(session, device_id, event.bundle)
                )
                entry = timeline_entry(
                    "device-refused" if event.kind == "refused" else "device-event",
                    event.message(),
                    rollout_id=rollout_id,
                    device_id=device_id,
                    data=event.model_dump(mode="json", by_alias=True, exclude_none=True),
                    at=now,  # the server's clock: a device's own time stays in data["at"]
                )
                entry.dedupe_key = key
                session.add(entry)
                session.flush()
                item = timeline_item(entry)
        except IntegrityError:
            return None  # the same event, recorded concurrently by another replica
        return item

    def _event_rollout(self, session: Session, device_id: str, bundle: str) -> int | None:
        """The newest rollout of the device about ``bundle`` (new or previous), memoised per batch."""
        memo: dict[tuple[str, str], int | None] | None = getattr(
            self._local, "event_rollouts", None
        )
        if memo is not None and (device_id, bundle) in memo:
            return memo[device_id, bundle]
        rollout_id = session.scalar(
            select(db.WaveDevice.rollout_id)
            .join(db.Rollout, db.Rollout.id == db.WaveDevice.rollout_id)
            .where(
                db.WaveDevice.device_id == device_id,
                or_(db.Rollout.bundle_sha256 == bundle, db.Rollout.previous_sha256 == bundle),
            )
            .order_by(db.Rollout.id.desc())
            .limit(1)
        )
        if memo is not None:
            memo[device_id, bundle] = rollout_id
        return rollout_id

    def record_availability(self, device_id: str, online: bool, *, at: float | None = None) -> bool:
        """Store a device's availability (its retained Last Will topic); True when it changed."""
        self._ensure_device(device_id)
        now = self._clock() if at is None else at
        value: Availability = "online" if online else "offline"
        with self._transaction(write=True) as session:
            row = self._locked_device(session, device_id)
            if online:
                row.last_seen = max(row.last_seen or now, now)
            if row.availability == value:
                return False
            row.availability = value
            session.add(
                timeline_entry(f"device-{value}", f"device is {value}", device_id=device_id, at=now)
            )
            return True

    def record_telemetry(self, device_id: str, payload: Any, at: float | None = None) -> None:
        """Store a telemetry snapshot received at ``at`` and apply the retention bounds."""
        snapshot = parse_telemetry(payload, device_id, self.max_telemetry_bytes)
        self._ensure_device(device_id)
        now = self._clock() if at is None else at
        with self._transaction(write=True) as session:
            row = self._locked_device(session, device_id)
            row.last_seen = max(row.last_seen or now, now)
            session.add(db.Telemetry(device_id=device_id, at=now, snapshot=snapshot))
            session.flush()
            self._prune_device_telemetry(session, device_id, now)

    def _prune_device_telemetry(self, session: Session, device_id: str, now: float) -> None:
        mine = db.Telemetry.device_id == device_id
        if self.retention.max_age_s is not None:
            session.execute(
                delete(db.Telemetry).where(mine, db.Telemetry.at < now - self.retention.max_age_s)
            )
        if self.retention.max_per_device is not None:
            cutoff = session.execute(
                select(db.Telemetry.at, db.Telemetry.id)
                .where(mine)
                .order_by(db.Telemetry.at.desc(), db.Telemetry.id.desc())
                .offset(self.retention.max_per_device)
                .limit(1)
            ).first()
            if cutoff is not None:
                older = or_(
                    db.Telemetry.at < cutoff.at,
                    and_(db.Telemetry.at == cutoff.at, db.Telemetry.id <= cutoff.id),
                )
                session.execute(delete(db.Telemetry).where(mine, older))

    def prune_telemetry(self, now: float | None = None) -> int:
        """Drop every snapshot older than the retention age; the number dropped."""
        if self.retention.max_age_s is None:
            return 0
        horizon = (self._clock() if now is None else now) - self.retention.max_age_s
        with self._transaction(write=True) as session:
            result = session.execute(delete(db.Telemetry).where(db.Telemetry.at < horizon))
            dropped = int(getattr(result, "rowcount", 0) or 0)
        if dropped:
            log.info("dropped %d telemetry snapshots older than %.0f", dropped, horizon)
        return dropped

    def prune_timeline(self, now: float | None = None) -> int:
        """Apply :class:`TimelineRetention`: the number of entries dropped."""
        keep = self.timeline_retention
        dropped = 0
        with self._transaction(write=True) as session:
            if keep.max_age_s is not None:
                horizon = (self._clock() if now is None else now) - keep.max_age_s
                result = session.execute(
                    delete(db.TimelineEntry).where(db.TimelineEntry.at < horizon)
                )
                dropped += int(getattr(result, "rowcount", 0) or 0)
            if keep.max_per_device is not None:
                crowded = session.scalars(
                    select(db.TimelineEntry.device_id)
                    .where(db.TimelineEntry.device_id.is_not(None))
                    .group_by(db.TimelineEntry.device_id)
                    .having(func.count() > keep.max_per_device)
                ).all()
                for device_id in crowded:
                    mine = db.TimelineEntry.device_id == device_id
                    cutoff = session.scalar(
                        select(db.TimelineEntry.id)
                        .where(mine)
                        .order_by(db.TimelineEntry.id.desc())
                        .offset(keep.max_per_device)
                        .limit(1)
                    )
                    if cutoff is not None:
                        result = session.execute(
                            delete(db.TimelineEntry).where(mine, db.TimelineEntry.id <= cutoff)
                        )
                        dropped += int(getattr(result, "rowcount", 0) or 0)
        if dropped:
            log.info("dropped %d timeline entries beyond the retention bounds", dropped)
        return dropped

    def prune(self, now: float | None = None) -> int:
        """Every retention bound at once (what the server runs in the background): rows dropped."""
        return self.prune_telemetry(now) + self.prune_timeline(now)

    def telemetry(self, device_id: str, limit: int = 100) -> list[tuple[float, dict[str, Any]]]:
        """The device's newest snapshots as ``(at, snapshot)``, oldest first."""
        with self._transaction() as session:
            rows = session.execute(
                select(db.Telemetry.at, db.Telemetry.snapshot)
                .where(db.Telemetry.device_id == device_id)
                .order_by(db.Telemetry.at.desc(), db.Telemetry.id.desc())
                .limit(max(1, min(limit, MAX_TIMELINE_LIMIT)))
            ).all()
        return [(at, dict(snapshot)) for at, snapshot in reversed(rows)]

    def aggregate_telemetry(
        self,
        device_ids: Iterable[str],
        since: float | None = None,
        until: float | None = None,
        *,
        bundle: str | None = None,
    ) -> TelemetrySummary:
        """Figures per device and together over ``[since, until]`` (see :mod:`fleet_server.telemetry`).

        With ``bundle``, only the snapshots a device sent while serving that
        bundle count (each snapshot names it), so a wave's figures never mix
        the old model's predictions with the new one's.
        """
        ids = sorted(set(device_ids))
        window: dict[str, list[TelemetrySample]] = {device_id: [] for device_id in ids}
        baselines: dict[str, TelemetrySample] = {}
        with self._transaction() as session:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                query = select(
                    db.Telemetry.device_id, db.Telemetry.at, db.Telemetry.snapshot
                ).where(db.Telemetry.device_id.in_(chunk))
                if since is not None:
                    query = query.where(db.Telemetry.at >= since)
                if until is not None:
                    query = query.where(db.Telemetry.at <= until)
                query = query.order_by(db.Telemetry.device_id, db.Telemetry.at, db.Telemetry.id)
                for device_id, at, snapshot in session.execute(query):
                    if bundle is None or (
                        isinstance(snapshot, dict) and snapshot.get("bundle") == bundle
                    ):
                        window[device_id].append(read_sample(snapshot, at))
            if since is not None and bundle is None:  # a filtered window has no baseline
                for device_id in ids:
                    before = session.execute(
                        select(db.Telemetry.at, db.Telemetry.snapshot)
                        .where(db.Telemetry.device_id == device_id, db.Telemetry.at < since)
                        .order_by(db.Telemetry.at.desc(), db.Telemetry.id.desc())
                        .limit(1)
                    ).first()
                    if before is not None:
                        baselines[device_id] = read_sample(before.snapshot, before.at)
        figures = {
            device_id: device_figures(samples, baselines.get(device_id))
            for device_id, samples in window.items()
        }
        return TelemetrySummary(
            since=since,
            until=until,
            devices=figures,
            overall=combine_figures(list(figures.values())),
        )

    def wave_telemetry(
        self,
        wave_id: int,
        since: float | None = None,
        until: float | None = None,
        *,
        bundle: str | None = None,
    ) -> TelemetrySummary:
        """:meth:`aggregate_telemetry` over a wave's devices, by default since the wave started."""
        with self._transaction() as session:
            wave = get_wave(session, wave_id)
            started = wave.started_at
            ids = session.scalars(
                select(db.WaveDevice.device_id).where(db.WaveDevice.wave_id == wave_id)
            ).all()
        return self.aggregate_telemetry(
            ids, since if since is not None else started, until, bundle=bundle
        )

    # --- assignments --------------------------------------------------------------------

    def set_assignment(
        self, kind: AssignmentKind, name: str, sha256: str, version: int
    ) -> AssignmentInfo:
        """Record that ``assignments/<kind>/<name>`` names a bundle at assignment ``version``.

        Versions only grow: a repeat of the stored one changes nothing, an
        older version or the same version naming another bundle is refused.
        """
        if kind not in ASSIGNMENT_KINDS:
            raise RegistryError(f"assignment kind must be devices or groups, not {kind!r}")
        checked_name(name, "device id" if kind == "devices" else "group name")
        if version < 0:
            raise RegistryError(f"assignment version {version} is negative")
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                get_bundle(session, sha256)
                row = session.scalar(
                    select(db.Assignment)
                    .where(db.Assignment.kind == kind, db.Assignment.name == name)
                    .with_for_update()
                )
                if row is not None:
                    if version == row.version and sha256 == row.bundle_sha256:
                        return assignment_info(row)
                    if version <= row.version:
                        raise RegistryError(
                            f"assignment {kind}/{name} is at version {row.version}; "
                            f"version {version} (bundle {sha256[:12]}) is not newer"
                        )
                else:
                    row = db.Assignment(kind=kind, name=name)
                    session.add(row)
                row.bundle_sha256, row.version, row.updated_at = sha256, version, now
                device = session.get(db.Device, name) if kind == "devices" else None
                device_id = None if device is None else device.id
                message = f"{kind}/{name} -> bundle {sha256[:12]} (assignment {version})"
                session.add(
                    timeline_entry(
                        "assignment",
                        message,
                        device_id=device_id,
                        data={"kind": kind, "name": name, "bundle": sha256, "assignment": version},
                        at=now,
                    )
                )
                session.flush()
                return assignment_info(row)
        except IntegrityError as exc:
            raise RegistryError(
                f"assignment {kind}/{name} was changed concurrently; read it again and retry"
            ) from exc

    def clear_assignment(self, kind: AssignmentKind, name: str) -> bool:
        """Forget ``assignments/<kind>/<name>``; False when there was none."""
        now = self._clock()
        with self._transaction(write=True) as session:
            result = session.execute(
                delete(db.Assignment).where(db.Assignment.kind == kind, db.Assignment.name == name)
            )
            if not getattr(result, "rowcount", 0):
                return False
            device = session.get(db.Device, name) if kind == "devices" else None
            session.add(
                timeline_entry(
                    "assignment-cleared",
                    f"{kind}/{name} no longer assigned",
                    device_id=None if device is None else device.id,
                    data={"kind": kind, "name": name},
                    at=now,
                )
            )
            return True

    def assignments(self) -> list[AssignmentInfo]:
        """Every assignment, devices first, by name."""
        with self._transaction() as session:
            rows = session.scalars(
                select(db.Assignment).order_by(db.Assignment.kind, db.Assignment.name)
            )
            return [assignment_info(row) for row in rows]

    # --- rollouts -----------------------------------------------------------------------

    def create_rollout(
        self,
        bundle_sha256: str,
        target: TargetSelector,
        settings: Mapping[str, Any] | None = None,
        *,
        previous_sha256: str | None = None,
    ) -> RolloutInfo:
        """A new ``pending`` rollout of a released bundle to ``target``."""
        if previous_sha256 == bundle_sha256:
            raise RolloutError(f"bundle {bundle_sha256[:12]} cannot roll back to itself")
        now = self._clock()
        with self._transaction(write=True) as session:
            bundle = get_bundle(session, bundle_sha256)
            if previous_sha256 is not None:
                get_bundle(session, previous_sha256)
            row = db.Rollout(
                bundle_sha256=bundle_sha256,
                previous_sha256=previous_sha256,
                target=target.to_json(),
                status="pending",
                created_at=now,
                updated_at=now,
                settings=dict(settings or {}),
            )
            session.add(row)
            session.flush()
            message = f"rollout of {bundle.name} {bundle.version} created for {target.to_json()}"
            session.add(timeline_entry("rollout-created", message, rollout_id=row.id, at=now))
            log.info("created rollout %d of %s %s", row.id, bundle.name, bundle.version)
            return rollout_info(row)

    def rollout(self, rollout_id: int) -> RolloutInfo:
        """The rollout with this id."""
        with self._transaction() as session:
            return rollout_info(get_rollout(session, rollout_id))

    def rollouts(self, status: str | Iterable[str] | None = None) -> list[RolloutInfo]:
        """Every rollout, or those in ``status`` (one or several), oldest first."""
        query = select(db.Rollout).order_by(db.Rollout.id)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            for value in wanted:
                check_status(value, ROLLOUT_STATUSES, "rollout")
            query = query.where(db.Rollout.status.in_(wanted))
        with self._transaction() as session:
            return [rollout_info(row) for row in session.scalars(query)]

    def rollouts_with_devices(
        self, rollout_statuses: Iterable[str], device_statuses: Iterable[str]
    ) -> list[int]:
        """Ids of the rollouts in one of ``rollout_statuses`` with a device in ``device_statuses``.

        One query, however long the history: the server asks it at start for
        the finished rollouts it must keep following.
        """
        wanted_rollouts, wanted_devices = list(rollout_statuses), list(device_statuses)
        for value in wanted_rollouts:
            check_status(value, ROLLOUT_STATUSES, "rollout")
        for value in wanted_devices:
            check_status(value, WAVE_DEVICE_STATUSES, "device")
        query = (
            select(db.Rollout.id)
            .join(db.WaveDevice, db.WaveDevice.rollout_id == db.Rollout.id)
            .where(
                db.Rollout.status.in_(wanted_rollouts),
                db.WaveDevice.status.in_(wanted_devices),
            )
            .distinct()
            .order_by(db.Rollout.id)
        )
        with self._transaction() as session:
            return list(session.scalars(query))

    def update_rollout_status(
        self, rollout_id: int, status: RolloutStatus, *, reason: str | None = None
    ) -> RolloutInfo:
        """Move a rollout to ``status`` and say so in its timeline; a finished rollout stays finished."""
        check_status(status, ROLLOUT_STATUSES, "rollout")
        now = self._clock()
        with self._transaction(write=True) as session:
            row = get_rollout(session, rollout_id, lock=True)
            if row.status == status:
                return rollout_info(row)
            if row.status in TERMINAL_ROLLOUT_STATUSES:
                raise RolloutError(
                    f"rollout {rollout_id} is {row.status}; it cannot become {status}"
                )
            _move_rollout(session, row, status, reason, now)
            return rollout_info(row)

    def save_rollout_plan(
        self,
        rollout_id: int,
        plan: Mapping[str, Any],
        status: RolloutStatus,
        reason: str | None = None,
    ) -> None:
        """Store the rollout planner's state (JSON) and follow its status, in one transaction.

        The server resumes a rollout from this after a restart. A status change
        is written to the timeline with ``reason`` (why it was paused or
        aborted), which also becomes the rollout's reason; a finished
        rollout's status never changes.
        """
        check_status(status, ROLLOUT_STATUSES, "rollout")
        now = self._clock()
        with self._transaction(write=True) as session:
            row = get_rollout(session, rollout_id, lock=True)
            saved = session.get(db.RolloutPlan, rollout_id)
            if saved is None:
                session.add(db.RolloutPlan(rollout_id=rollout_id, plan=dict(plan), updated_at=now))
            else:
                saved.plan, saved.updated_at = dict(plan), now
            if row.status != status and row.status not in TERMINAL_ROLLOUT_STATUSES:
                row.updated_at = now
                _move_rollout(session, row, status, reason or row.reason, now)

    def rollout_plan(self, rollout_id: int) -> dict[str, Any] | None:
        """The planner state saved by :meth:`save_rollout_plan`, if any."""
        with self._transaction() as session:
            saved = session.get(db.RolloutPlan, rollout_id)
            return None if saved is None else dict(saved.plan)

    def create_wave(
        self,
        rollout_id: int,
        index: int,
        device_ids: Sequence[str],
        settings: Mapping[str, Any] | None = None,
    ) -> WaveInfo:
        """Add wave ``index`` of the rollout with its devices, all ``pending``.

        A device belongs to at most one wave of a rollout.
        """
        ids = list(dict.fromkeys(device_ids))
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                rollout = get_rollout(session, rollout_id, lock=True)
                if rollout.status in TERMINAL_ROLLOUT_STATUSES:
                    raise RolloutError(
                        f"rollout {rollout_id} is {rollout.status}; it takes no new wave"
                    )
                known = set(
                    session.scalars(select(db.Device.id).where(db.Device.id.in_(ids))).all()
                )
                if unknown := [d for d in ids if d not in known]:
                    raise RegistryError(f"unknown device {unknown[0]!r}")
                taken = session.scalars(
                    select(db.WaveDevice.device_id).where(
                        db.WaveDevice.rollout_id == rollout_id, db.WaveDevice.device_id.in_(ids)
                    )
                ).all()
                if taken:
                    raise RolloutError(
                        f"rollout {rollout_id} already covers devices {sorted(taken)}"
                    )
                clash = select(db.Wave.id).where(
                    db.Wave.rollout_id == rollout_id, db.Wave.index == index
                )
                if session.scalar(clash) is not None:
                    raise RolloutError(f"rollout {rollout_id} already has a {wave_label(index)}")
                wave = db.Wave(
                    rollout_id=rollout_id,
                    index=index,
                    status="pending",
                    settings=dict(settings or {}),
                )
                session.add(wave)
                session.flush()
                if ids:  # one multi-row INSERT, not an ORM object per device
                    session.execute(
                        insert(db.WaveDevice),
                        [
                            {
                                "rollout_id": rollout_id,
                                "wave_id": wave.id,
                                "device_id": device_id,
                                "status": "pending",
                                "updated_at": now,
                            }
                            for device_id in ids
                        ],
                    )
                session.add(
                    timeline_entry(
                        "wave-created",
                        f"{wave_label(index)} with {len(ids)} devices",
                        rollout_id=rollout_id,
                        data={"wave": index, "devices": ids},
                        at=now,
                    )
                )
                rollout.updated_at = now
                session.flush()
                return wave_info(wave, tuple(ids))
        except IntegrityError as exc:
            raise RolloutError(
                f"rollout {rollout_id}: {wave_label(index)} or one of its devices was added concurrently"
            ) from exc

    def waves(self, rollout_id: int) -> list[WaveInfo]:
        """The rollout's waves in order, each with its devices."""
        with self._transaction() as session:
            get_rollout(session, rollout_id)
            waves = session.scalars(
                select(db.Wave).where(db.Wave.rollout_id == rollout_id).order_by(db.Wave.index)
            ).all()
            members: dict[int, list[str]] = {wave.id: [] for wave in waves}
            for wave_id, device_id in session.execute(
                select(db.WaveDevice.wave_id, db.WaveDevice.device_id)
                .where(db.WaveDevice.rollout_id == rollout_id)
                .order_by(db.WaveDevice.device_id)
            ):
                members[wave_id].append(device_id)
            return [wave_info(wave, tuple(members[wave.id])) for wave in waves]

    def update_wave_status(self, wave_id: int, status: WaveStatus) -> WaveInfo:
        """Move a wave to ``status``; the first ``running`` sets its start, an outcome its end."""
        check_status(status, WAVE_STATUSES, "wave")
        now = self._clock()
        with self._transaction(write=True) as session:
            wave = get_wave(session, wave_id, lock=True)
            if wave.status != status:
                if wave.status in _TERMINAL_WAVE_STATUSES:
                    raise RolloutError(
                        f"{wave_label(wave.index)} of rollout {wave.rollout_id} is {wave.status}; it cannot become {status}"
                    )
                message = f"{wave_label(wave.index)}: {wave.status} -> {status}"
                session.add(
                    timeline_entry(
                        "wave-status",
                        message,
                        rollout_id=wave.rollout_id,
                        data={"wave": wave.index, "from": wave.status, "to": status},
                        at=now,
                    )
                )
                wave.status = status
                if status == "running" and wave.started_at is None:
                    wave.started_at = now
                if status in _TERMINAL_WAVE_STATUSES:
                    wave.finished_at = now
            ids = session.scalars(
                select(db.WaveDevice.device_id)
                .where(db.WaveDevice.wave_id == wave_id)
                .order_by(db.WaveDevice.device_id)
            ).all()
            return wave_info(wave, tuple(ids))

    def set_wave_device_status(
        self,
        rollout_id: int,
        device_id: str,
        status: WaveDeviceStatus,
        reason: str | None = None,
        *,
        force: bool = False,
    ) -> bool:
        """Record how far a device of the rollout got; True when that changed anything.

        Once a device has an outcome (committed, rolled-back, timed-out,
        failed), a late report of an earlier step is ignored; another outcome
        replaces it (a timed-out device that comes back and commits). With
        ``force`` any status applies (the rollout retries the device).
        """
        changed = self.set_wave_device_statuses(
            rollout_id, {device_id: (status, reason)}, force=force
        )
        return bool(changed)

    def set_wave_device_statuses(
        self,
        rollout_id: int,
        changes: Mapping[str, tuple[WaveDeviceStatus, str | None]],
        *,
        force: bool = False,
    ) -> list[str]:
        """:meth:`set_wave_device_status` for many devices in one transaction and one query.

        ``changes`` maps device ids to (status, reason); returns the devices
        whose status changed, each written to the timeline.
        """
        for status, _ in changes.values():
            check_status(status, WAVE_DEVICE_STATUSES, "device")
        if not changes:
            return []
        now = self._clock()
        changed: list[str] = []
        with self._transaction(write=True) as session:
            query = select(db.WaveDevice).where(
                db.WaveDevice.rollout_id == rollout_id,
                db.WaveDevice.device_id.in_(list(changes)),
            )
            if self._row_locks:
                query = query.with_for_update()
            rows = {row.device_id: row for row in session.scalars(query)}
            if missing := sorted(set(changes) - set(rows)):
                get_rollout(session, rollout_id)
                raise RegistryError(
                    f"device {missing[0]!r} is not in any wave of rollout {rollout_id}"
                )
            entries = []
            for device_id, (status, reason) in changes.items():
                row = rows[device_id]
                if row.status == status and row.reason == reason:
                    continue
                late = (
                    row.status in TERMINAL_DEVICE_STATUSES
                    and status not in TERMINAL_DEVICE_STATUSES
                )
                if late and not force:
                    log.debug(
                        "rollout %d: kept %s %s over late %s",
                        rollout_id,
                        device_id,
                        row.status,
                        status,
                    )
                    continue
                previous = row.status
                row.status, row.reason, row.updated_at = status, reason, now
                entries.append(
                    timeline_entry(
                        "device-status",
                        f"{previous} -> {status}" + (f": {reason}" if reason else ""),
                        rollout_id=rollout_id,
                        device_id=device_id,
                        data={"from": previous, "to": status},
                        at=now,
                    )
                )
                changed.append(device_id)
            session.add_all(entries)
        return changed

    def wave_devices(self, rollout_id: int, *, wave_id: int | None = None) -> list[WaveDeviceInfo]:
        """Where every device of the rollout (or of one wave) stands, by wave then device."""
        query = (
            select(db.WaveDevice, db.Wave.index)
            .join(db.Wave, db.Wave.id == db.WaveDevice.wave_id)
            .where(db.WaveDevice.rollout_id == rollout_id)
            .order_by(db.Wave.index, db.WaveDevice.device_id)
        )
        if wave_id is not None:
            query = query.where(db.WaveDevice.wave_id == wave_id)
        with self._transaction() as session:
            get_rollout(session, rollout_id)
            return [wave_device_info(row, index) for row, index in session.execute(query)]

    # --- timeline -----------------------------------------------------------------------

    def add_timeline(
        self,
        kind: str,
        message: str,
        *,
        rollout_id: int | None = None,
        device_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> TimelineItem:
        """Append an entry to the timeline (of a rollout, a device, both or neither)."""
        with self._transaction(write=True) as session:
            if rollout_id is not None:
                get_rollout(session, rollout_id)
            if device_id is not None:
                get_device(session, device_id)
            entry = timeline_entry(
                kind,
                message,
                rollout_id=rollout_id,
                device_id=device_id,
                data=data,
                at=self._clock() if at is None else at,
            )
            session.add(entry)
            session.flush()
            return timeline_item(entry)

    def timeline(
        self,
        rollout_id: int | None = None,
        device_id: str | None = None,
        limit: int = 100,
        *,
        after_id: int | None = None,
    ) -> list[TimelineItem]:
        """Timeline entries in the order they were recorded.

        Without ``after_id``: the newest ``limit`` entries; with it, the first
        ``limit`` entries recorded after that one (for following a timeline).
        """
        if not 1 <= limit <= MAX_TIMELINE_LIMIT:
            raise RegistryError(f"limit must be between 1 and {MAX_TIMELINE_LIMIT}, not {limit}")
        query = select(db.TimelineEntry)
        if rollout_id is not None:
            query = query.where(db.TimelineEntry.rollout_id == rollout_id)
        if device_id is not None:
            query = query.where(db.TimelineEntry.device_id == device_id)
        if after_id is not None:
            query = query.where(db.TimelineEntry.id > after_id).order_by(db.TimelineEntry.id)
        else:
            query = query.order_by(db.TimelineEntry.id.desc())
        with self._transaction() as session:
            entries = [timeline_item(row) for row in session.scalars(query.limit(limit))]
        return entries if after_id is not None else entries[::-1]


def _move_rollout(
    session: Session, row: db.Rollout, status: RolloutStatus, reason: str | None, now: float
) -> None:
    """Change a rollout's status and write the change to its timeline (same transaction)."""
    previous = row.status
    row.status, row.reason, row.updated_at = status, reason, now
    message = f"{previous} -> {status}" + (f": {reason}" if reason else "")
    session.add(
        timeline_entry(
            "rollout-status",
            message,
            rollout_id=row.id,
            data={"from": previous, "to": status},
            at=now,
        )
    )
    log.info("rollout %d: %s", row.id, message)
