"""The candidate beside the active model: a FrameObserver that hands frames to a low-priority thread.

On the inference thread :meth:`ShadowRunner.observe` only counts and, for
every Nth frame the candidate may take (its CPU budget's pause is over and it
is not busy with another), copies the frame into a one-place queue; a frame
that finds the place taken is skipped, never queued, so the shadow never
builds a backlog and the pipeline never waits for it. The runner's own
thread (niced on Linux, with its own interpreter: the candidate's
:class:`~edge_runtime.classifier.Classifier`) classifies it, compares the
answer with the active model's, and after each frame pauses for as long as
the budget asks: a frame that took ``t`` seconds is followed by a pause of
``t * (1 / cpu_budget - 1)``, so the candidate uses at most ``cpu_budget`` of
one core. Its answers go nowhere but into the window's counters; every
``window_s`` the window is reported and a new one starts.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edge_runtime.classifier import Classifier
from edge_runtime.errors import EdgefleetError
from edge_runtime.prediction import Prediction
from edge_runtime.protocol.shadow import ShadowReport, ShadowRequest
from edge_runtime.shadow.window import ShadowWindow
from edge_runtime.sources.base import Frame
from edge_runtime.supervise import SupervisedThread

__all__ = ["NICE", "ShadowRunner"]

log = logging.getLogger(__name__)

_LIVE_S = 2.0
"""A camera that offered no frame for this long no longer holds the others' turn."""

NICE = 10
"""How much lower the shadow thread's scheduling priority is (Linux: a per-thread nice value)."""


class ShadowRunner:
    """Runs ``candidate`` on sampled frames beside the active model; reports through ``publish``."""

    def __init__(
        self,
        device_id: str,
        candidate: Classifier,
        request: ShadowRequest,
        publish: Callable[[ShadowReport], None],
        *,
        clock: Callable[[], float] = time.time,
        on_disagreement: Callable[[npt.NDArray[np.uint8], Prediction], object] | None = None,
    ) -> None:
        self.device_id = device_id
        self.candidate = candidate
        self.request = request
        self._publish = publish
        self._clock = clock
        self._on_disagreement = on_disagreement
        """Handed each frame the candidate answered otherwise (field data's rule), in this thread."""
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[npt.NDArray[np.uint8], Prediction]] = queue.Queue(1)
        self._seen: dict[str | None, int] = {}
        """Frames seen per camera: every Nth is counted per camera, since cameras served
        round-robin would otherwise always hand the same camera's frame to an even N."""
        self._resume_at = 0.0
        """Monotonic time before which the budget's pause lasts."""
        self._offered_at: dict[str | None, float] = {}
        self._served_at: dict[str | None, float] = {}
        """Per camera: when it last offered a frame, when the candidate last took one. The
        free candidate takes the frame of the live camera it served least recently: with
        cameras served round-robin, the budget's pause after one camera's frame would
        otherwise end in time for the same camera's next frame every time (one camera of
        a two-belt box never compared, seen in CI)."""
        self._busy = False
        self._window = ShadowWindow(start=clock())
        self._active: str | None = None
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self.reports = 0
        self.compared = 0
        """Frames compared since the start (all windows)."""

    @property
    def sha256(self) -> str:
        """The candidate bundle's sha256."""
        return self.candidate.bundle.sha256

    # --- the inference thread(s) ----------------------------------------------------------

    def observe(self, frame: Frame, prediction: Prediction) -> None:
        """The FrameObserver: every Nth frame to the shadow thread when it is free (never blocks)."""
        if prediction.bundle_sha256 == self.sha256:
            return  # the candidate serves already: nothing to compare with
        if prediction.device_id != self.device_id:
            return  # a camera that is its own fleet device: its rollouts are its own
        with self._lock:
            seen = self._seen[prediction.camera_id] = self._seen.get(prediction.camera_id, 0) + 1
            if seen % self.request.every_nth:
                return
            window = self._window
            window.offered += 1
            self._active = prediction.bundle_sha256
            now = time.monotonic()
            camera = prediction.camera_id
            self._offered_at[camera] = now
            if now < self._resume_at:
                window.skipped_budget += 1
                return
            if self._busy or not self._turn_of(camera, now):
                window.skipped_busy += 1  # busy, or waiting for another camera's frame
                return
            self._busy = True
            self._served_at[camera] = now
        try:
            self._queue.put_nowait((frame.image.copy(), prediction))
        except queue.Full:  # cannot happen while _busy guards the place; count it all the same
            with self._lock:
                self._window.skipped_busy += 1

    def _turn_of(self, camera: str | None, now: float) -> bool:
        """Whether ``camera`` is, among the cameras that offered a frame in the last
        ``_LIVE_S`` seconds, one the candidate served least recently (under the lock)."""
        live = [c for c, at in self._offered_at.items() if now - at <= _LIVE_S]
        oldest = min(self._served_at.get(c, 0.0) for c in live)
        return self._served_at.get(camera, 0.0) <= oldest

    # --- the shadow thread ----------------------------------------------------------------

    def _classify(self, image: npt.NDArray[np.uint8], prediction: Prediction) -> None:
        started = time.monotonic()
        try:
            result = self.candidate.classify(image)
            failure = None
        except EdgefleetError as exc:
            result, failure = None, str(exc)
        spent = time.monotonic() - started
        agreed = True
        with self._lock:
            window = self._window
            if result is None:
                window.error(f"the candidate failed: {failure}")
            else:
                before = window.compared
                agreed = window.compare(
                    active_label=prediction.label,
                    active_confidence=prediction.confidence,
                    active_ms=prediction.inference_ms,
                    candidate_label=result.answer.label,
                    candidate_confidence=result.answer.confidence,
                    candidate_ms=result.total_ms,
                    camera=prediction.camera_id,
                )
                self.compared += window.compared - before
                agreed = agreed or window.compared == before  # an error is no disagreement
            self._resume_at = time.monotonic() + spent * (1.0 / self.request.cpu_budget - 1.0)
            self._busy = False
        if not agreed and result is not None and self._on_disagreement is not None:
            try:
                self._on_disagreement(image, prediction)  # the runner's own copy of the frame
            except Exception:  # field data's trouble must never stop the comparison
                log.exception("handing a disagreement to field data failed")

    def flush(self, *, status: str = "running", reason: str = "") -> ShadowReport:
        """Report the current window now and start a new one."""
        now = self._clock()
        with self._lock:
            window, self._window = self._window, ShadowWindow(start=now)
            active = self._active
        report = window.report(
            self.device_id, self.sha256, active, now, status=status, reason=reason
        )
        self._publish(report)
        self.reports += 1
        return report

    def _loop(self) -> None:
        _lower_priority()
        while not self._stop.is_set():
            try:
                image, prediction = self._queue.get(timeout=0.2)
            except queue.Empty:
                pass
            else:
                self._classify(image, prediction)
            if self._clock() - self._window.start >= self.request.window_s:
                self.flush()

    def start(self) -> None:
        """Start the shadow thread."""
        if self._thread is None:
            self._thread = SupervisedThread(self._loop, f"shadow-{self.sha256[:8]}")
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the shadow thread (the window in progress is not reported)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.stop(timeout=timeout)


def _lower_priority() -> None:
    """Nice the calling thread (Linux keeps a nice value per thread); elsewhere leave it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError as exc:  # a container may forbid it: the budget still bounds the shadow
        log.info("cannot lower the shadow thread's priority: %s", exc)
