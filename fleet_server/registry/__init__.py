"""The fleet registry: bundles, devices, assignments, rollouts, timeline and telemetry in the database.

Every operation is one short transaction and returns plain frozen records
(:mod:`fleet_server.records`), so callers never hold database objects or
sessions. Everything a rollout needs to resume lives here, so a server
restarted mid-rollout carries on from the database.

The :class:`Registry` is one object made of rooms, one idea each, all on the
same :class:`~.unit.UnitOfWork` (sessions, transactions, batches)::

    unit.py        sessions, transactions, batch()          <- every room
    catalogue.py   released bundles, assignments
    devices.py     provisioning, tags and groups, credentials, pins
    ingest.py      device reports in (state, events, availability, telemetry)
    telemetry.py   stored telemetry: retention, history, figures per wave
    rollouts.py    the planner's state saved, and its projection into tables
    timeline.py    what happened, in order
    access.py      API tokens (hashed) and the API's audit log
    stats.py       counts for /metrics, grouped in the database
    leases.py      one holder at a time for a job (the rollout leader), fenced by epoch
    windows.py     maintenance windows per tag (when a group may change models)
    drift.py       drift per device and group against the bundles' baselines, its alerts
    field_data.py  field samples (one row per image), people's labels, settings per group
    shadow.py      shadow reports (one row per device window), read back for a shadow wave's gate
    _rows.py       argument checks, row lookups, rows -> records (no transactions)

Unknown devices, bundles and rollouts are :class:`RegistryError` naming them;
a rollout asked to move in a way its state forbids is a :class:`RolloutError`.
"""

from __future__ import annotations

from typing import Any

from fleet_server import db
from fleet_server.errors import RegistryError
from fleet_server.registry.access import MAX_AUDIT_LIMIT, Access
from fleet_server.registry.catalogue import Catalogue
from fleet_server.registry.drift import DriftWatch
from fleet_server.registry.field_data import FieldData
from fleet_server.registry.ingest import CLOCK_SKEW_WARN_S, Ingest
from fleet_server.registry.leases import Leases
from fleet_server.registry.retention import (
    AuditRetention,
    TelemetryRetention,
    TimelineRetention,
)
from fleet_server.registry.rollouts import Rollouts
from fleet_server.registry.shadow import ShadowReports
from fleet_server.registry.stats import FleetCounts, Stats
from fleet_server.registry.timeline import MAX_TIMELINE_LIMIT, Timeline
from fleet_server.registry.windows import TagWindows, Windows

__all__ = [
    "CLOCK_SKEW_WARN_S",
    "MAX_AUDIT_LIMIT",
    "MAX_TIMELINE_LIMIT",
    "AuditRetention",
    "FleetCounts",
    "Registry",
    "TagWindows",
    "TelemetryRetention",
    "TimelineRetention",
]


class Registry(
    Catalogue,
    Ingest,
    Rollouts,
    Timeline,
    Leases,
    Stats,
    Access,
    Windows,
    DriftWatch,
    FieldData,
    ShadowReports,
):
    """The fleet server's state, over a SQLAlchemy session factory.

    ``clock`` gives Unix time (tests pass a fake one). With ``auto_register``
    a device that reports before it was provisioned is registered on first
    contact; without it, its reports are refused as unknown.
    """

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

    def dedicated(self) -> Registry:
        """The same database on a connection of its own (PostgreSQL), for work that must never
        queue behind the shared pool (the leader lease's renewals, while API requests and
        report batches hold every pooled connection); on SQLite, this registry. Close it after.
        """
        if self._engine is None or self._engine.dialect.name == "sqlite":
            return self
        engine = db.make_engine(self._engine.url.render_as_string(hide_password=False), pool_size=1)
        registry = type(self)(db.session_factory(engine), clock=self._clock)
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

    def prune(self, now: float | None = None) -> int:
        """Every retention bound at once (telemetry, timeline, audit log; what the server runs in
        the background): rows dropped."""
        return self.prune_telemetry(now) + self.prune_timeline(now) + self.prune_audit(now)
