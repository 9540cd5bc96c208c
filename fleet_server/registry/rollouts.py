"""Rollouts: the planner's state, saved, and the tables that project it.

A rollout's one truth is the planner's :class:`RolloutState`.
:meth:`Rollouts.save_rollout` stores it and, in the same transaction,
projects it into the rollout's row (status, reason), its waves and its
devices' rows, and appends the step's events to the timeline. Nothing else
writes those rows; the API, the CLI and queries over many rollouts read them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from fleet_server import db
from fleet_server.errors import RolloutError
from fleet_server.records import RolloutInfo, TargetSelector, WaveDeviceInfo, WaveInfo
from fleet_server.registry._rows import (
    check_status,
    get_bundle,
    get_rollout,
    rollout_info,
    timeline_entry,
    wave_device_info,
    wave_info,
)
from fleet_server.registry.unit import UnitOfWork
from fleet_server.rollout_plan import RolloutEvent, RolloutState
from fleet_server.rollout_spec import wave_label
from fleet_server.statuses import TERMINAL_ROLLOUT_STATUSES, DeviceStatus, RolloutStatus

log = logging.getLogger(__name__)

__all__ = ["Rollouts"]

_IN_CHUNK = 500  # bound the size of SQL IN lists
_TERMINAL = frozenset(status.value for status in TERMINAL_ROLLOUT_STATUSES)


class Rollouts(UnitOfWork):
    """Rollouts: the planner's state, saved, and the tables that project it."""

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
                status=RolloutStatus.PENDING.value,
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
            wanted = _values([status] if isinstance(status, str) else status, RolloutStatus)
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
        query = (
            select(db.Rollout.id)
            .join(db.WaveDevice, db.WaveDevice.rollout_id == db.Rollout.id)
            .where(
                db.Rollout.status.in_(_values(rollout_statuses, RolloutStatus)),
                db.WaveDevice.status.in_(_values(device_statuses, DeviceStatus)),
            )
            .distinct()
            .order_by(db.Rollout.id)
        )
        with self._transaction() as session:
            return list(session.scalars(query))

    def rollout_state(self, rollout_id: int) -> RolloutState | None:
        """The planner state saved by :meth:`save_rollout` (None before its first save)."""
        with self._transaction() as session:
            saved = session.get(db.RolloutPlan, rollout_id)
            return None if saved is None else RolloutState.model_validate(saved.plan)

    def save_rollout(
        self,
        rollout_id: int,
        state: RolloutState,
        *,
        before: RolloutState | None = None,
        events: Sequence[RolloutEvent] = (),
    ) -> None:
        """Store the planner's state, project it into the tables, record ``events``: one transaction.

        ``before`` is the state this rollout's rows last projected (the
        previous save); with it only the devices whose status changed are
        written. Without it every row is compared with the state, which
        also repairs rows written by a transaction that failed. A status or
        wave change goes to the timeline; a finished rollout's status never
        changes.
        """
        now = self._clock()
        plan = state.model_dump(mode="json")
        with self._transaction(write=True) as session:
            row = get_rollout(session, rollout_id, lock=True)
            saved = session.get(db.RolloutPlan, rollout_id)
            if saved is None:
                session.add(db.RolloutPlan(rollout_id=rollout_id, plan=plan, updated_at=now))
            else:
                saved.plan, saved.updated_at = plan, now
            created = _project_waves(session, row, state, now)
            if row.status != state.status.value and row.status not in _TERMINAL:
                _move_rollout(session, row, state.status, state.reason or row.reason, now)
            if before is None or created:
                changed: Iterable[str] = state.devices
            else:
                changed = [
                    device_id
                    for device_id, progress in state.devices.items()
                    if (old := before.devices.get(device_id)) is None
                    or (old.status, old.reason) != (progress.status, progress.reason)
                ]
            _project_devices(session, rollout_id, state, sorted(changed), now)
            for event in events:
                session.add(_event_entry(rollout_id, event))

    def waves(self, rollout_id: int) -> list[WaveInfo]:
        """The rollout's waves in order (those with devices), each with its devices."""
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


def _values(
    statuses: Iterable[str], vocabulary: type[RolloutStatus] | type[DeviceStatus]
) -> list[str]:
    """Plain strings for SQL, each checked against its vocabulary."""
    what = "rollout" if vocabulary is RolloutStatus else "device"
    wanted = [str(getattr(value, "value", value)) for value in statuses]
    for value in wanted:
        check_status(value, vocabulary, what)
    return wanted


def _project_waves(session: Session, rollout: db.Rollout, state: RolloutState, now: float) -> bool:
    """Make the wave rows say what the state says (waves with devices only); True when a
    wave was created now (with its devices, all ``pending``)."""
    rows = {
        wave.index: wave
        for wave in session.scalars(select(db.Wave).where(db.Wave.rollout_id == rollout.id))
    }
    created = False
    for index, wave in enumerate(state.waves):
        if not wave.devices:
            continue
        row = rows.get(index)
        if row is None:
            shadow = state.spec.waves[index].shadow is not None
            row = _create_wave(session, rollout, index, wave.devices, now, shadow=shadow)
            rows[index] = row
            created = True
        status = wave.status.value
        if row.status != status:
            message = f"{wave_label(index)}: {row.status} -> {status}"
            session.add(
                timeline_entry(
                    "wave-status",
                    message,
                    rollout_id=rollout.id,
                    data={"wave": index, "from": row.status, "to": status},
                    at=now,
                )
            )
            row.status = status
        row.started_at, row.finished_at = wave.started_at, wave.finished_at
    return created


def _create_wave(
    session: Session,
    rollout: db.Rollout,
    index: int,
    device_ids: Sequence[str],
    now: float,
    *,
    shadow: bool = False,
) -> db.Wave:
    """A wave's row and its devices' rows; a shadow wave's devices have theirs in the wave
    that activates the bundle on them (:mod:`fleet_server.rollout_shadow`)."""
    wave = db.Wave(rollout_id=rollout.id, index=index, status="pending", settings={})
    session.add(wave)
    session.flush()
    if not shadow:
        session.execute(  # one multi-row INSERT, not an ORM object per device
            insert(db.WaveDevice),
            [
                {
                    "rollout_id": rollout.id,
                    "wave_id": wave.id,
                    "device_id": device_id,
                    "status": DeviceStatus.PENDING.value,
                    "updated_at": now,
                }
                for device_id in device_ids
            ],
        )
    session.add(
        timeline_entry(
            "wave-created",
            f"{wave_label(index)}{' (shadow)' if shadow else ''} with {len(device_ids)} devices",
            rollout_id=rollout.id,
            data={"wave": index, "devices": list(device_ids)},
            at=now,
        )
    )
    rollout.updated_at = now
    return wave


def _project_devices(
    session: Session, rollout_id: int, state: RolloutState, device_ids: list[str], now: float
) -> None:
    """Write the status and reason the state gives each of ``device_ids`` where they differ."""
    for start in range(0, len(device_ids), _IN_CHUNK):
        chunk = device_ids[start : start + _IN_CHUNK]
        rows = session.scalars(
            select(db.WaveDevice).where(
                db.WaveDevice.rollout_id == rollout_id, db.WaveDevice.device_id.in_(chunk)
            )
        )
        entries = []
        for row in rows:
            progress = state.devices[row.device_id]
            status, reason = progress.status.value, progress.reason or None
            if (row.status, row.reason) == (status, reason):
                continue
            previous = row.status
            row.status, row.reason, row.updated_at = status, reason, now
            entries.append(
                timeline_entry(
                    "device-status",
                    f"{previous} -> {status}" + (f": {reason}" if reason else ""),
                    rollout_id=rollout_id,
                    device_id=row.device_id,
                    data={"from": previous, "to": status},
                    at=now,
                )
            )
        session.add_all(entries)


def _event_entry(rollout_id: int, event: RolloutEvent) -> db.TimelineEntry:
    """A planner event as a timeline entry of its rollout (and of its device, when one)."""
    data: dict[str, Any] = {}
    if event.wave is not None:
        data["wave"] = event.wave
    if event.device_ids:
        data["devices"] = list(event.device_ids)
    if event.verdict is not None:
        data["verdict"] = event.verdict.model_dump(mode="json")
    return timeline_entry(
        event.kind.value,
        event.message,
        rollout_id=rollout_id,
        device_id=event.device_ids[0] if len(event.device_ids) == 1 else None,
        data=data or None,
        at=event.at,
    )


def _move_rollout(
    session: Session, row: db.Rollout, status: RolloutStatus, reason: str | None, now: float
) -> None:
    """Change a rollout's status and write the change to its timeline (same transaction)."""
    previous = row.status
    row.status, row.reason, row.updated_at = status.value, reason, now
    message = f"{previous} -> {status.value}" + (f": {reason}" if reason else "")
    session.add(
        timeline_entry(
            "rollout-status",
            message,
            rollout_id=row.id,
            data={"from": previous, "to": status.value},
            at=now,
        )
    )
    log.info("rollout %d: %s", row.id, message)
