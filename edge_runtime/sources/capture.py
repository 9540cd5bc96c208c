"""The capture thread and the latest-frame slot it fills.

One daemon thread per source reads frames as fast as the source gives them and puts
each in a :class:`LatestFrameSlot`; inference takes the newest one and the frames it
never saw are counted as dropped, so a slow model never delays the camera. A failing
source is closed and reopened with exponential backoff; a source that blocks is found
by :meth:`CaptureThread.stuck` and replaced by :meth:`CaptureThread.restart`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import SourceError
from edge_runtime.sources.base import Frame, FrameSource

__all__ = ["CaptureStats", "CaptureThread", "LatestFrameSlot", "ReconnectPolicy", "is_valid_frame"]

logger = logging.getLogger(__name__)

_CORRUPT_LOG_EVERY = 100


def is_valid_frame(image: object) -> bool:
    """Whether ``image`` is a non-empty ``uint8`` ``H x W x 3`` array (what inference accepts)."""
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    )


@dataclass(frozen=True)
class ReconnectPolicy:
    """Wait before reopening a failed source: ``initial_s * multiplier**attempt``, capped at
    ``max_s``, then scaled by a random factor in ``1 +- jitter``."""

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        try:
            base = self.initial_s * self.multiplier**attempt
        except OverflowError:
            base = self.max_s
        base = min(self.max_s, base)
        return base * (1 + self.jitter * rng.uniform(-1.0, 1.0))


class LatestFrameSlot:
    """Holds the newest frame for one consumer; a frame replaced before it is taken is dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._fresh = False
        self._closed = False
        self._dropped = 0
        self._produced = 0

    def put(self, frame: Frame) -> None:
        """Replace the held frame (ignored once the slot is closed)."""
        with self._cond:
            if self._closed:
                return
            if self._fresh:
                self._dropped += 1
            self._frame = frame
            self._fresh = True
            self._produced += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """Take the newest frame not yet taken, waiting up to ``timeout`` seconds (``None``: forever).

        ``None`` on timeout, or once the slot is closed and its last frame was taken.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._closed, timeout)
            if not self._fresh:
                return None
            self._fresh = False
            return self._frame

    def close(self) -> None:
        """Wake every waiter; later ``get`` calls return the last untaken frame, then ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the capture ended or was stopped)."""
        return self._closed

    @property
    def dropped(self) -> int:
        """Frames replaced before anyone took them."""
        return self._dropped

    @property
    def produced(self) -> int:
        """Frames put into the slot."""
        return self._produced


@dataclass(frozen=True)
class CaptureStats:
    """A snapshot of a capture's counters, for metrics and health."""

    produced: int
    dropped: int
    corrupt: int
    reconnects: int
    errors: int
    restarts: int
    last_error: str | None
    last_frame_monotonic: float | None
    finished: bool
    alive: bool


@dataclass
class _Run:
    """One capture thread's private state; a restart starts a new one."""

    generation: int
    source: FrameSource
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    leave_source_open: bool = False
    """Set when a restart abandons this run while a new run uses the same source."""


class CaptureThread:
    """Reads a source on a daemon thread into a :class:`LatestFrameSlot`, reconnecting on failure.

    ``source`` is an instance, or a factory called for each (re)start so that a
    :meth:`restart` gets a fresh source while a stuck read still holds the old one.
    """

    def __init__(
        self,
        source: FrameSource | Callable[[], FrameSource],
        slot: LatestFrameSlot | None = None,
        *,
        policy: ReconnectPolicy | None = None,
        rng: random.Random | None = None,
        read_timeout_s: float = 5.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        if isinstance(source, FrameSource):
            self._factory: Callable[[], FrameSource] | None = None
            self._source = source
        else:
            self._factory = source
            self._source = source()
        self.slot = slot if slot is not None else LatestFrameSlot()
        self.policy = policy if policy is not None else ReconnectPolicy()
        self.read_timeout_s = read_timeout_s
        self.open_timeout_s = open_timeout_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._lock = threading.Lock()
        self._generation = 0
        self._run: _Run | None = None
        self._stopped = False
        self._next_id = 0
        self._busy_since: float | None = None
        self._busy_op: Literal["open", "read"] | None = None
        self.reconnects = 0
        """Times a failed source was closed and tried again."""
        self.errors = 0
        """Failures: open or read errors, a live source that stopped, unexpected exceptions."""
        self.corrupt = 0
        """Frames dropped because they were not ``uint8`` ``H x W x 3``."""
        self.restarts = 0
        """Times :meth:`restart` replaced the capture thread."""
        self.last_error: str | None = None
        self.last_frame_monotonic: float | None = None
        self.last_backoff_s: float | None = None
        """The latest wait before a reconnect (back to ``initial_s`` after a good read)."""
        self.finished = False
        """The finite source ended cleanly; the capture stopped and closed the slot."""

    @property
    def source(self) -> FrameSource:
        """The source the current thread reads."""
        return self._source

    @property
    def alive(self) -> bool:
        """Whether the current capture thread is running."""
        run = self._run
        return run is not None and run.thread is not None and run.thread.is_alive()

    @property
    def produced(self) -> int:
        """Valid frames produced since start (the next frame's ``frame_id``)."""
        return self._next_id

    @property
    def read_started_monotonic(self) -> float | None:
        """When the current blocking ``open``/``read`` began (``None`` between calls)."""
        return self._busy_since

    def start(self) -> None:
        """Start capturing on a daemon thread."""
        if self._run is not None:
            raise RuntimeError("this capture was already started; use restart()")
        self._launch(self._source)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop capturing and close the slot; ``False`` if the thread did not end in ``timeout``."""
        self._stopped = True
        run = self._run
        stopped = True
        if run is not None and run.thread is not None:
            run.stop.set()
            run.source.interrupt()
            run.thread.join(timeout)
            stopped = not run.thread.is_alive()
            if not stopped:
                logger.warning(
                    "capture of %s did not stop within %.1fs; abandoning its thread",
                    run.source.name,
                    timeout,
                )
        self.slot.close()
        return stopped

    def restart(self, timeout: float = 1.0) -> bool:
        """Replace the capture thread (a watchdog's cure for a stuck source).

        The old thread is told to stop and abandoned if it does not within ``timeout``;
        it can never put a frame afterwards. Returns whether it stopped in time.
        """
        old = self._run
        with self._lock:
            if old is None or self._stopped or self.finished:
                logger.warning(
                    "not restarting the capture of %s: it is not running", self._source.name
                )
                return False
            self._generation += 1  # from here on the old thread cannot publish or finish
            self._busy_since = self._busy_op = None
        old.stop.set()
        old.source.interrupt()
        if old.thread is not None:
            old.thread.join(timeout)
        in_time = old.thread is None or not old.thread.is_alive()
        source = self._factory() if self._factory is not None else self._source
        with self._lock:
            if not in_time and source is old.source:
                old.leave_source_open = True
        if not in_time:
            logger.warning(
                "capture of %s did not stop within %.1fs; abandoning its thread",
                old.source.name,
                timeout,
            )
        self.restarts += 1
        self._source = source
        self._launch(source)
        return in_time

    def stuck(self, now: float | None = None, read_timeout_s: float | None = None) -> bool:
        """Whether the current ``read`` (or ``open``) has run past its timeout.

        A read may take ``read_timeout_s`` plus one frame period (sources pace inside
        ``read``); an open may take ``open_timeout_s`` plus ``read_timeout_s``.
        """
        with self._lock:
            since, op = self._busy_since, self._busy_op
        if since is None:
            return False
        now = time.monotonic() if now is None else now
        read_limit = self.read_timeout_s if read_timeout_s is None else read_timeout_s
        if op == "open":
            limit = self.open_timeout_s + read_limit
        else:
            fps = self._source.native_fps
            limit = read_limit + (1.0 / fps if fps else 0.0)
        return now - since > limit

    def needs_restart(self, now: float | None = None) -> bool:
        """Whether a watchdog should call :meth:`restart`: stuck, or the thread died."""
        if self._run is None or self._stopped or self.finished:
            return False
        return self.stuck(now) or not self.alive

    def stats(self) -> CaptureStats:
        """The counters now."""
        return CaptureStats(
            produced=self._next_id,
            dropped=self.slot.dropped,
            corrupt=self.corrupt,
            reconnects=self.reconnects,
            errors=self.errors,
            restarts=self.restarts,
            last_error=self.last_error,
            last_frame_monotonic=self.last_frame_monotonic,
            finished=self.finished,
            alive=self.alive,
        )

    # --- the capture thread -------------------------------------------------

    def _launch(self, source: FrameSource) -> None:
        with self._lock:
            self._generation += 1
            run = _Run(self._generation, source)
        run.thread = threading.Thread(
            target=self._capture, args=(run,), name=f"capture[{source.name}]", daemon=True
        )
        self._run = run
        run.thread.start()

    def _capture(self, run: _Run) -> None:
        source = run.source
        attempt = 0
        opened = False
        try:
            while not run.stop.is_set():
                image: npt.NDArray[np.uint8] | None = None
                failure: str | None = None
                try:
                    if not opened:
                        self._begin(run, "open")
                        source.open()
                        opened = True
                    self._begin(run, "read")
                    image = source.read()
                except SourceError as exc:
                    failure = str(exc)
                except Exception as exc:  # thread boundary: a source bug must not end capture
                    logger.exception("unexpected error from source %s", source.name)
                    failure = f"{source.name}: unexpected {type(exc).__name__}: {exc}"
                finally:
                    self._end(run)
                if not self._current(run):
                    return
                if failure is None and image is None:
                    if source.finite:
                        self._finish(run)
                        return
                    failure = f"{source.name} stopped delivering frames"
                if failure is not None:
                    opened = False
                    self._fail(run, failure, attempt)
                    attempt += 1
                elif image is not None and self._publish(run, image):
                    attempt = 0
        finally:
            with self._lock:
                keep = run.leave_source_open
            if not keep:
                source.close()

    def _current(self, run: _Run) -> bool:
        return run.generation == self._generation and not run.stop.is_set()

    def _begin(self, run: _Run, op: Literal["open", "read"]) -> None:
        with self._lock:
            if run.generation == self._generation:
                self._busy_since, self._busy_op = time.monotonic(), op

    def _end(self, run: _Run) -> None:
        with self._lock:
            if run.generation == self._generation:
                self._busy_since = self._busy_op = None

    def _publish(self, run: _Run, image: npt.NDArray[np.uint8]) -> bool:
        captured_monotonic, captured_wall = time.monotonic(), time.time()
        if not is_valid_frame(image):
            self.corrupt += 1
            if self.corrupt == 1 or self.corrupt % _CORRUPT_LOG_EVERY == 0:
                logger.warning(
                    "%s gave a corrupt frame (%s %s), dropped; %d so far",
                    run.source.name,
                    getattr(image, "dtype", type(image).__name__),
                    getattr(image, "shape", ()),
                    self.corrupt,
                )
            return False
        with self._lock:
            if not self._current(run):
                return False
            frame = Frame(image, self._next_id, captured_monotonic, captured_wall)
            self._next_id += 1
            self.last_frame_monotonic = captured_monotonic
            self.slot.put(frame)
        return True

    def _fail(self, run: _Run, message: str, attempt: int) -> None:
        self.errors += 1
        self.last_error = message
        run.source.close()
        delay = self.policy.delay(attempt, self._rng)
        self.last_backoff_s = delay
        self.reconnects += 1
        logger.warning("capture failed: %s; reopening in %.2fs", message, delay)
        run.stop.wait(delay)

    def _finish(self, run: _Run) -> None:
        with self._lock:
            if not self._current(run):
                return
            self.finished = True
        logger.info("%s ended after %d frames", run.source.name, self._next_id)
        self.slot.close()
