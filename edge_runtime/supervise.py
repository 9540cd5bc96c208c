"""Supervised worker threads: an unexpected exception is logged, counted and the worker restarts.

A worker that dies silently behind a green ``/healthz`` is the worst failure
a long-running process can have. :class:`SupervisedThread` runs a target
function; if it raises, the traceback is logged, the error counted and the
target started again after a short backoff. :meth:`SupervisedThread.health`
says whether the worker is running, and why not; the fleet server's and the
device's ``/healthz`` report it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SupervisedThread", "WorkerHealth"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerHealth:
    """One worker's state as ``/healthz`` shows it."""

    name: str
    alive: bool
    restarts: int
    last_error: str | None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "alive": self.alive,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


class SupervisedThread:
    """Run ``target()`` in a daemon thread, restarting it whenever it raises.

    ``target`` returns when its work is done (it watches its own stop
    signal); a normal return ends the worker. Restarts wait ``backoff_s``,
    doubled after each failure in a row up to ``max_backoff_s``; a target that
    ran for ``healthy_after_s`` without failing resets the backoff. The
    worker counts as alive while its thread runs; ``expect_running`` makes a
    return before :meth:`stop` count as dead (a loop that should never end).
    """

    def __init__(
        self,
        target: Callable[[], None],
        name: str,
        *,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        healthy_after_s: float = 30.0,
    ) -> None:
        self.name = name
        self._target = target
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._healthy_after_s = healthy_after_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._restarts = 0
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"worker {self.name} already started")
        self._thread = threading.Thread(target=self._supervise, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Say that the worker's end is expected, stop restarting, and wait for the thread.

        The target itself must be told to return by its owner (a stop event or
        a sentinel in its queue) before or after this call.
        """
        self._stopping.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker thread to end."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> WorkerHealth:
        """Alive or not, how often it was restarted, and the last error."""
        with self._lock:
            return WorkerHealth(
                name=self.name,
                alive=self.is_alive() or (self._stopping.is_set() and self._thread is not None),
                restarts=self._restarts,
                last_error=self._last_error,
            )

    def _supervise(self) -> None:
        backoff = self._backoff_s
        while True:
            started = time.monotonic()
            try:
                self._target()
            except Exception as exc:  # boundary: the worker must outlive any bug in one event
                log.exception("worker %s failed; restarting it", self.name)
                with self._lock:
                    self._restarts += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"[:500]
                if time.monotonic() - started >= self._healthy_after_s:
                    backoff = self._backoff_s
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            if not self._stopping.is_set():
                with self._lock:
                    self._last_error = "returned before it was stopped"
                log.error("worker %s returned before it was stopped", self.name)
            return
