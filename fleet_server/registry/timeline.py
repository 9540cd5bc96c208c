"""The timeline: what happened to the fleet, to a rollout or to a device, in order."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select

from fleet_server import db
from fleet_server.errors import RegistryError
from fleet_server.records import (
    TimelineItem,
)
from fleet_server.registry._rows import (
    get_device,
    get_rollout,
    timeline_entry,
    timeline_item,
)
from fleet_server.registry.unit import UnitOfWork

log = logging.getLogger(__name__)

__all__ = ["MAX_TIMELINE_LIMIT", "Timeline"]

MAX_TIMELINE_LIMIT = 10_000
"""The most timeline entries one query returns."""


class Timeline(UnitOfWork):
    """The timeline: what happened to the fleet, to a rollout or to a device, in order."""

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
