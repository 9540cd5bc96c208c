"""Maintenance windows per device group (tag): set, cleared, listed, and snapshotted for rollouts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from fleet_server import db
from fleet_server.errors import RegistryError
from fleet_server.registry._rows import check_tags, checked_name, timeline_entry
from fleet_server.registry.unit import UnitOfWork
from fleet_server.windows import parse_window

__all__ = ["MAX_WINDOWS_PER_TAG", "TagWindows", "Windows"]

log = logging.getLogger(__name__)

MAX_WINDOWS_PER_TAG = 20


@dataclass(frozen=True)
class TagWindows:
    """A tag's maintenance windows (canonical specs, in the operator's order) and when they were set."""

    tag: str
    windows: tuple[str, ...]
    set_at: float


class Windows(UnitOfWork):
    """Maintenance windows per tag: a rollout sends a device its bundle only inside them."""

    def set_windows(self, tag: str, specs: Sequence[str]) -> TagWindows:
        """Replace ``tag``'s windows with ``specs`` (each parsed first: a
        :class:`~fleet_server.windows.WindowSpecError` writes nothing).

        Rollouts created afterwards follow the new windows; running ones keep
        the windows they were created with.
        """
        tag = checked_name(tag, "tag")
        if isinstance(specs, str):
            raise RegistryError(f"windows must be a list of window specs, not the string {specs!r}")
        canonical = tuple(dict.fromkeys(parse_window(spec).text for spec in specs))
        if not canonical:
            raise RegistryError(
                f"give tag {tag!r} at least one maintenance window (clearing them removes them)"
            )
        if len(canonical) > MAX_WINDOWS_PER_TAG:
            raise RegistryError(
                f"tag {tag!r}: {len(canonical)} maintenance windows; at most {MAX_WINDOWS_PER_TAG}"
            )
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                session.execute(
                    delete(db.MaintenanceWindowRow).where(db.MaintenanceWindowRow.tag == tag)
                )
                session.add_all(
                    db.MaintenanceWindowRow(tag=tag, position=i, spec=spec, set_at=now)
                    for i, spec in enumerate(canonical)
                )
                session.add(
                    timeline_entry(
                        "windows-set",
                        f"maintenance windows of tag {tag}: {'; '.join(canonical)}",
                        data={"tag": tag, "windows": list(canonical)},
                        at=now,
                    )
                )
        except IntegrityError as exc:
            raise RegistryError(
                f"the maintenance windows of tag {tag!r} were changed concurrently; retry"
            ) from exc
        log.info("maintenance windows of tag %s: %s", tag, "; ".join(canonical))
        return TagWindows(tag, canonical, now)

    def clear_windows(self, tag: str) -> int:
        """Remove every window of ``tag`` (its devices may then change models at any time); how many."""
        tag = checked_name(tag, "tag")
        now = self._clock()
        with self._transaction(write=True) as session:
            result = session.execute(
                delete(db.MaintenanceWindowRow).where(db.MaintenanceWindowRow.tag == tag)
            )
            removed = int(getattr(result, "rowcount", 0) or 0)
            if removed:
                session.add(
                    timeline_entry(
                        "windows-cleared",
                        f"maintenance windows of tag {tag} cleared ({removed} removed)",
                        data={"tag": tag},
                        at=now,
                    )
                )
        if removed:
            log.info("maintenance windows of tag %s cleared", tag)
        return removed

    def windows(self, tags: Iterable[str] | None = None) -> list[TagWindows]:
        """Every tag that has windows (or those of ``tags`` that do), by tag."""
        wanted = None if tags is None else set(check_tags(tags))
        if wanted is not None and not wanted:
            return []
        query = select(db.MaintenanceWindowRow).order_by(
            db.MaintenanceWindowRow.tag, db.MaintenanceWindowRow.position
        )
        with self._transaction() as session:  # a small table: filtered here, no long IN list
            rows = session.scalars(query).all()
        found: dict[str, list[db.MaintenanceWindowRow]] = {}
        for row in rows:
            if wanted is None or row.tag in wanted:
                found.setdefault(row.tag, []).append(row)
        return [
            TagWindows(tag, tuple(r.spec for r in group), max(r.set_at for r in group))
            for tag, group in found.items()
        ]

    def tag_windows(self, tags: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """The windows of those of ``tags`` that have some: what a new rollout snapshots."""
        return {w.tag: w.windows for w in self.windows(set(tags))}
