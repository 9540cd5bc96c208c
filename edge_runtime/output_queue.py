"""An output on its own thread behind a bounded, newest-first queue, so a slow consumer never stalls the line.

:class:`QueuedSink` wraps any :class:`~edge_runtime.outputs.PredictionSink`.
The inference thread only appends to a bounded queue (constant time, never
blocking); a worker thread delivers predictions in order. When the consumer
falls behind and the queue is full, the oldest waiting prediction is dropped
and counted: a sorter wants the newest answer, not a backlog. A consumer that
hangs holds only its own thread; the line keeps classifying and every other
output keeps receiving.

Each queued output reports, per output (and camera):

- counters delivered / dropped / errors and the queue depth, exported by
  :class:`OutputQueueCollector` as ``edgefleet_output_*`` on ``/metrics``;
- :meth:`QueuedSink.problem` (a dead worker thread: fatal in ``/healthz``) and
  :meth:`QueuedSink.stall_warning` (one delivery running longer than
  ``stall_s``: a warning in ``/healthz``, the line still classifies).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge_runtime.outputs import PredictionSink
from edge_runtime.prediction import Prediction

__all__ = ["OutputQueueCollector", "OutputQueueStats", "QueuedSink", "ReportsOutputStats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputQueueStats:
    """One queued output's counts at one moment."""

    output: str
    camera: str
    delivered: int
    dropped: int
    errors: int
    queued: int
    alive: bool


class ReportsOutputStats(Protocol):
    """An output that keeps its own queue and counts: a :class:`QueuedSink`, or one that never waits."""

    def stats(self) -> OutputQueueStats:
        """Counts now."""
        ...


class QueuedSink(PredictionSink):
    """Delivers to ``inner`` from a worker thread; ``emit`` never waits for the consumer.

    ``capacity`` predictions may wait; one more drops the oldest waiting one
    (newest first). ``stall_s``: a single delivery running longer is reported
    by :meth:`stall_warning`.
    """

    def __init__(
        self,
        inner: PredictionSink,
        *,
        capacity: int = 256,
        stall_s: float = 5.0,
        camera: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"an output queue holds at least 1 prediction, got {capacity}")
        if not stall_s > 0:
            raise ValueError(f"stall_s must be positive, got {stall_s}")
        self.inner = inner
        self.name = inner.name
        self.camera = camera
        self.capacity = capacity
        self.stall_s = stall_s
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[Prediction] = deque()
        self._closing = False
        self._delivering_since: float | None = None
        self._death: str | None = None
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        label = f"{camera}/{self.name}" if camera else self.name
        self._thread = threading.Thread(target=self._run, name=f"output-{label}", daemon=True)
        self._thread.start()

    def emit(self, prediction: Prediction) -> None:
        """Queue ``prediction`` (dropping the oldest waiting one when full); returns at once."""
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(prediction)
            self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._queue) or self._closing)
                    if not self._queue:
                        return  # closing, and everything was delivered
                    prediction = self._queue.popleft()
                    self._delivering_since = self._clock()
                try:
                    self.inner.emit(prediction)
                except Exception:  # a consumer's failure is counted; the next prediction still goes
                    with self._cond:
                        self.errors += 1
                    log.exception("output %s failed on frame %d", self.name, prediction.frame_id)
                else:
                    with self._cond:
                        self.delivered += 1
                finally:
                    with self._cond:
                        self._delivering_since = None
        except BaseException as exc:  # a plug-in's SystemExit ends this thread only
            with self._cond:
                self._death = f"{type(exc).__name__}: {exc}"
            log.exception("output %s thread died: %s", self.name, self._death)

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self._thread.is_alive()

    def stats(self) -> OutputQueueStats:
        """Counts now."""
        with self._cond:
            return OutputQueueStats(
                output=self.name,
                camera=self.camera,
                delivered=self.delivered,
                dropped=self.dropped,
                errors=self.errors,
                queued=len(self._queue),
                alive=self._thread.is_alive(),
            )

    def _label(self) -> str:
        return f"output {self.name!r}" + (f" of camera {self.camera!r}" if self.camera else "")

    def problem(self) -> str | None:
        """A sentence when the worker thread died before :meth:`close` (predictions no longer reach it)."""
        with self._cond:
            closing, death, dropped = self._closing, self._death, self.dropped
        if closing or self._thread.is_alive():
            return None
        return f"{self._label()} thread died ({death or 'unknown cause'}); {dropped} dropped"

    def stall_warning(self, now: float | None = None) -> str | None:
        """A sentence while one delivery has run longer than ``stall_s`` (a hung consumer)."""
        now = self._clock() if now is None else now
        with self._cond:
            since, dropped, queued = self._delivering_since, self.dropped, len(self._queue)
        if since is None or now - since <= self.stall_s:
            return None
        return (
            f"{self._label()} has been delivering one prediction for {now - since:.1f} s"
            f" (limit {self.stall_s:g} s); {queued} waiting, {dropped} dropped"
        )

    def request_close(self) -> None:
        """Take no more predictions; the thread delivers what is queued, then ends.

        Lets a device with several outputs drain them all at once before
        :meth:`close` waits for each.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (for up to ``timeout`` s), then close the output.

        A consumer still hung after ``timeout`` keeps its (daemon) thread and
        is not closed: closing it under a running ``emit`` could block too.
        """
        self.request_close()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                left = len(self._queue)
                self.dropped += left
                self._queue.clear()
            log.warning(
                "%s still delivering after %.1f s; %d queued predictions dropped, output not closed",
                self._label(),
                timeout,
                left,
            )
            return
        self.inner.close()


class OutputQueueCollector:
    """``edgefleet_output_{delivered,dropped,errors}_total`` and ``edgefleet_output_queue_depth`` per output."""

    LABELS = ("output", "camera")

    def __init__(self, sinks: Callable[[], Sequence[ReportsOutputStats]]) -> None:
        self._sinks = sinks

    def describe(self) -> Iterable[Metric]:
        return []  # families come and go with the queued outputs; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        stats = [sink.stats() for sink in self._sinks()]
        return self._families(stats) if stats else []  # inline outputs only: no families

    def _families(self, stats: list[OutputQueueStats]) -> list[Metric]:
        delivered = CounterMetricFamily(
            "edgefleet_output_delivered",
            "Predictions an output's consumer accepted.",
            labels=self.LABELS,
        )
        dropped = CounterMetricFamily(
            "edgefleet_output_dropped",
            "Predictions dropped because the output's queue was full (oldest first).",
            labels=self.LABELS,
        )
        errors = CounterMetricFamily(
            "edgefleet_output_errors",
            "Predictions whose delivery raised an error.",
            labels=self.LABELS,
        )
        depth = GaugeMetricFamily(
            "edgefleet_output_queue_depth",
            "Predictions waiting for an output's consumer.",
            labels=self.LABELS,
        )
        alive = GaugeMetricFamily(
            "edgefleet_output_thread_alive",
            "1 while an output's delivery thread runs.",
            labels=self.LABELS,
        )
        for s in stats:
            labels = [s.output, s.camera]
            delivered.add_metric(labels, s.delivered)
            dropped.add_metric(labels, s.dropped)
            errors.add_metric(labels, s.errors)
            depth.add_metric(labels, s.queued)
            alive.add_metric(labels, 1.0 if s.alive else 0.0)
        return [delivered, dropped, errors, depth, alive]
