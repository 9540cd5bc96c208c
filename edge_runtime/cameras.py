"""Several cameras in one device process: a capture thread each, one inference loop shared round-robin.

Each camera keeps its own capture thread and latest-frame slot (its own
drops), its own outputs and its own metrics series; inference runs on one
thread with one interpreter (the active bundle's), taking cameras in turn:
each round classifies the newest frame of every camera that has one. When
the model cannot keep up, every camera still gets one frame per round, and
the frames a camera produced meanwhile are dropped from its own slot (counted
per camera), so no camera is starved and none builds a queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from edge_runtime.classifier import Classifier
from edge_runtime.errors import EdgefleetError
from edge_runtime.pipeline import ActiveModel, Pipeline, PipelineStats
from edge_runtime.sources import LatestFrameSlot
from edge_runtime.sources.base import Frame

__all__ = ["CameraModel", "PerCameraInference", "RoundRobinInference", "WakingSlot"]


log = logging.getLogger(__name__)


class WakingSlot(LatestFrameSlot):
    """A latest-frame slot that also sets a shared event on every frame, and knows when it got the last one."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake
        self.last_put: float | None = None
        """Monotonic time of the newest frame put here (None before the first)."""

    def put(self, frame: Frame) -> None:
        super().put(frame)
        self.last_put = time.monotonic()
        self._wake.set()

    def close(self) -> None:
        super().close()
        self._wake.set()


class RoundRobinInference:
    """Runs several cameras' pipelines on the calling thread, one frame per camera per round."""

    def __init__(self, pipelines: Sequence[Pipeline], wake: threading.Event) -> None:
        if not pipelines:
            raise ValueError("round-robin inference needs at least one camera")
        self.pipelines = list(pipelines)
        self._wake = wake
        self.rounds = 0

    def stats(self) -> PipelineStats:
        """The cameras' totals added up."""
        return _total(self.pipelines)

    def step(self, timeout: float = 0.25) -> int:
        """One round: the newest frame of each camera that has one; wait up to ``timeout`` when none has.

        Returns how many frames were classified.
        """
        self._wake.clear()  # a frame arriving from here on wakes the wait below
        served = 0
        for pipeline in self.pipelines:
            if pipeline.step(timeout=0.0) is not None:
                served += 1
        self.rounds += 1
        if served == 0:
            self._wake.wait(timeout)
        return served

    def run(
        self, stop: threading.Event, max_frames: int | None = None, deadline: float | None = None
    ) -> PipelineStats:
        """Loop until ``stop``, ``max_frames`` predictions in all, the monotonic ``deadline``, or every source ended."""
        while not stop.is_set():
            if max_frames is not None and self.stats().predictions >= max_frames:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            served = self.step()
            if (
                served == 0
                and all(p.capture.finished for p in self.pipelines)
                and self.step(timeout=0.0) == 0
            ):
                break
        return self.stats()


def _total(pipelines: Sequence[Pipeline]) -> PipelineStats:
    total = PipelineStats()
    for pipeline in pipelines:
        stats = pipeline.stats
        total.predictions += stats.predictions
        total.inference_errors += stats.inference_errors
        total.output_errors += stats.output_errors
        total.watchdog_restarts += stats.watchdog_restarts
    return total


class CameraModel(ActiveModel):
    """One camera's own interpreter for the device's active bundle (``inference: per-camera``).

    :attr:`current` follows the device's :class:`ActiveModel`: after a swap,
    the camera's next frame first builds its own classifier for the new
    bundle (on the camera's inference thread), so cameras never share an
    interpreter. If that build fails, the camera keeps its previous one.
    """

    def __init__(self, device: ActiveModel, backend: str, threads: int) -> None:
        super().__init__()
        self.device = device
        self.backend = backend
        self.threads = threads

    @property
    def current(self) -> Classifier | None:
        active = self.device.current
        mine = super().current
        if active is None or (mine is not None and mine.bundle.sha256 == active.bundle.sha256):
            return mine
        try:
            built = Classifier(active.bundle, backend=self.backend, threads=self.threads)
        except EdgefleetError as exc:
            log.warning("a camera cannot load bundle %s: %s", active.bundle.id, exc)
            return mine
        with self._lock:
            self._classifier = built
        return built


class PerCameraInference:
    """Runs each camera's pipeline on its own thread with its own interpreter (``inference: per-camera``)."""

    def __init__(self, pipelines: Sequence[Pipeline]) -> None:
        if not pipelines:
            raise ValueError("per-camera inference needs at least one camera")
        self.pipelines = list(pipelines)

    def run(
        self, stop: threading.Event, max_frames: int | None = None, deadline: float | None = None
    ) -> PipelineStats:
        """Until ``stop``, ``max_frames`` predictions in all, the monotonic ``deadline``, or every source ended."""
        done = threading.Event()
        errors: list[BaseException] = []

        def stop_when_done() -> bool:
            return stop.is_set() or done.is_set()

        def camera(pipeline: Pipeline) -> None:
            try:
                while not stop_when_done():
                    if max_frames is not None and _total(self.pipelines).predictions >= max_frames:
                        done.set()
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    prediction = pipeline.step()
                    if (
                        prediction is None
                        and pipeline.capture.finished
                        and pipeline.step(timeout=0.0) is None
                    ):
                        break
            except Exception as exc:  # noqa: BLE001 - re-raised on the calling thread below
                errors.append(exc)
                done.set()

        threads = [
            threading.Thread(
                target=camera, args=(p,), name=f"inference-{p.camera or p.device_id}", daemon=True
            )
            for p in self.pipelines
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return _total(self.pipelines)
