"""The registry's unit of work: one short transaction per call, or one shared by a batch.

Every room of the registry (:mod:`.devices`, :mod:`.ingest`, ...) derives
from :class:`UnitOfWork` and reaches the database only through
:meth:`UnitOfWork._transaction`, so a caller's :meth:`UnitOfWork.batch` makes
all of them share one write transaction, each call in its own savepoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from fleet_server import db
from fleet_server.errors import RegistryStorageError
from fleet_server.registry._rows import get_device
from fleet_server.registry.retention import TelemetryRetention, TimelineRetention
from fleet_server.reports import MAX_TELEMETRY_BYTES

__all__ = ["UnitOfWork"]


class UnitOfWork:
    """The registry's sessions and transactions, shared by every room of the registry.

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
            except OperationalError as exc:  # a deadlock, a lost connection: the batch is lost
                self._local.locked = set()
                raise RegistryStorageError(f"database failed: {exc.orig}") from exc
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
