"""Device reports in: reported state, update events, availability and telemetry snapshots.

Reports are idempotent, as the protocol asks of QoS 1 handlers: an older
reported state, a repeated event or a late step of an update that already
ended changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fleet_server import db
from fleet_server.records import (
    Availability,
    DeviceInfo,
    TimelineItem,
)
from fleet_server.registry._rows import (
    device_info,
    timeline_entry,
    timeline_item,
)
from fleet_server.registry.devices import Devices
from fleet_server.registry.telemetry import TelemetryStore
from fleet_server.reports import (
    EventReport,
    StateReport,
    parse_event,
    parse_state,
    parse_telemetry,
)

log = logging.getLogger(__name__)

__all__ = ["CLOCK_SKEW_WARN_S", "RECOVER_EVENTS_S", "Ingest"]

CLOCK_SKEW_WARN_S = 60.0
"""A device clock further off than this is logged (the skew is kept per device either way)."""
RECOVER_EVENTS_S = 6 * 3600.0
"""Events carried in a retained state are recovered only when younger than this (device clock
corrected by its measured skew)."""


class Ingest(Devices, TelemetryStore):
    """Device reports in: reported state, update events, availability and telemetry snapshots."""

    # --- device reports -----------------------------------------------------------------

    def _ensure_device(self, device_id: str) -> None:
        if device_id not in self._known_devices:
            self.register_on_first_contact(device_id)

    def record_state(
        self, device_id: str, payload: Any, *, received_at: float | None = None, fresh: bool = False
    ) -> DeviceInfo | None:
        """Store a device's reported state; the device as stored, or None when the report is older
        than the one stored.

        Reports are ordered by the device's ``(epoch, sequence)`` (arrival
        order for devices that send none), never by the device's clock: a
        clock that jumped a year ahead must not freeze the row. A ``fresh``
        report (published now, not a retained copy) also measures the
        device's clock skew against ``received_at`` (default: now).

        Like every report, it registers an unknown device on first contact
        (see ``auto_register``). The state is retained on the broker, so it
        says nothing about presence: it leaves ``last_seen`` alone.
        """
        report = payload if isinstance(payload, StateReport) else parse_state(payload, device_id)
        received = self._clock() if received_at is None else received_at
        self._ensure_device(device_id)
        stored = self._store_state(device_id, report, received, fresh)
        if stored is not None and not fresh and report.recent:
            self._recover_events(device_id, report.recent, received - (stored.clock_skew_s or 0.0))
        return stored

    def _store_state(
        self, device_id: str, report: StateReport, received: float, fresh: bool
    ) -> DeviceInfo | None:
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
                return None
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
            session.flush()
            return device_info(row)

    def _recover_events(self, device_id: str, recent: list[EventReport], device_now: float) -> None:
        """Store the events a retained state carries that no replica stored (one killed after
        the broker handed it the event messages): repeats are skipped by their keys, and events
        older than :data:`RECOVER_EVENTS_S` on the device's clock are left alone (retention may
        have pruned them on purpose)."""
        keys = {event.dedupe_key(device_id) for event in recent}
        with self._transaction() as session:  # one query for all: most are stored already
            stored = set(
                session.scalars(
                    select(db.TimelineEntry.dedupe_key).where(db.TimelineEntry.dedupe_key.in_(keys))
                )
            )
        for position, event in enumerate(recent):
            if (
                event.device_id not in (None, device_id)
                or event.at < device_now - RECOVER_EVENTS_S
                or event.dedupe_key(device_id) in stored
            ):
                continue
            newest = position == len(recent) - 1
            if self.record_event(device_id, event, keep_reason=not newest) is not None:
                log.info("stored %s's event %s from its retained state", device_id, event.message())

    def record_event(
        self, device_id: str, payload: Any, *, keep_reason: bool = False
    ) -> TimelineItem | None:
        """Add a device's update event or refusal to the timeline; None for a repeat.

        The entry belongs to the newest rollout that covers the device and
        whose bundle (or previous bundle) the event is about. Its reason becomes
        the device's last event reason unless ``keep_reason`` (an older event, recovered).
        """
        event = payload if isinstance(payload, EventReport) else parse_event(payload, device_id)
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
                if event.reason and not keep_reason:  # read with its next state, by any replica
                    row.last_event_reason = event.reason[:1024]
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
