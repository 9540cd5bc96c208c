"""The server's workers beside its own, and the failing work that makes a live thread count as down.

``/healthz`` and ``/metrics`` report :meth:`FleetServer.health
<fleet_server.server.FleetServer.health>`: the server's own threads and
those added to its :class:`WorkerBoard` (the drift monitor and the
field-data receiver, which run while the HTTP API serves). A worker that
catches its errors to try again later (a database that went away) never
ends, so its thread alone would look well for ever: a :class:`FailureStreak`
counts its failed passes in a row, and from ``limit`` of them on the worker
counts as down, with the last error as the reason, until a pass succeeds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from edge_runtime.supervise import WorkerHealth

__all__ = ["DEFAULT_FAILURE_LIMIT", "FailureStreak", "WorkerBoard"]

DEFAULT_FAILURE_LIMIT = 3
"""Failed passes in a row after which a live worker counts as down."""


class FailureStreak:
    """A periodic worker's failed passes in a row (thread-safe; see the module)."""

    def __init__(self, limit: int = DEFAULT_FAILURE_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"the failure limit must be at least 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self.failures = 0
        """Failed passes since the last one that succeeded."""
        self.last_error: str | None = None

    def passed(self) -> None:
        """A pass did its work: the streak ends."""
        with self._lock:
            self.failures = 0

    def failed(self, exc: BaseException) -> None:
        """A pass failed with ``exc``."""
        with self._lock:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]

    def judge(self, thread: WorkerHealth) -> WorkerHealth:
        """The worker's health: its thread's, down while ``limit`` passes or more failed in a row."""
        with self._lock:
            failures, error = self.failures, self.last_error
        if not thread.alive or failures < self.limit:
            return thread
        return WorkerHealth(
            thread.name,
            False,
            thread.restarts,
            f"its last {failures} passes failed, the last with {error}",
        )


class WorkerBoard:
    """Workers that run beside the server's own threads, each by its health function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, Callable[[], WorkerHealth]] = {}

    def add(self, name: str, health: Callable[[], WorkerHealth]) -> None:
        """Report this worker from now on (a worker of the same name is replaced)."""
        with self._lock:
            self._workers[name] = health

    def remove(self, name: str) -> None:
        """Stop reporting a worker (gone with the app that ran it)."""
        with self._lock:
            self._workers.pop(name, None)

    def health(self) -> list[WorkerHealth]:
        """Each worker's health now, by name."""
        with self._lock:
            workers = sorted(self._workers.items())
        return [health() for _, health in workers]
