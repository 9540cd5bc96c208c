"""The per-frame loop: latest frame -> classifier -> outputs, with metrics, health and a watchdog.

The capture thread keeps only the newest frame (older ones are counted as
dropped), so a model slower than the camera never builds a queue: every
answer is about a frame at most one inference old. The classifier in use is
held by :class:`ActiveModel`; a new bundle is loaded in the background and
swapped in between two frames, and the frame in flight finishes on the model
it started with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_runtime.bundle.model_bundle import Bundle
from edge_runtime.classifier import Classifier
from edge_runtime.errors import EdgefleetError
from edge_runtime.health import HealthState
from edge_runtime.metrics import RuntimeMetrics
from edge_runtime.outputs import PredictionSink
from edge_runtime.prediction import Prediction
from edge_runtime.sources import CaptureThread, LatestFrameSlot
from edge_runtime.sources.base import Frame

__all__ = ["ActiveModel", "FrameObserver", "Pipeline", "PipelineStats"]

FrameObserver = Callable[[Frame, Prediction], None]
"""Sees each classified frame with its prediction, on the inference thread (after the outputs).

For work that needs the pixels (field-data sampling, a shadow model): it must
only hand the frame on (copy into a bounded queue) and return at once; an
observer that raises is logged and counted as an output error."""

log = logging.getLogger(__name__)


class ActiveModel:
    """The classifier that serves frames now; swapped atomically between frames."""

    def __init__(self, classifier: Classifier | None = None) -> None:
        self._lock = threading.Lock()
        self._classifier = classifier
        self.swaps = 0
        self.listeners: list[Callable[[Classifier], None]] = []
        """Called (on the swapping thread) after every swap with the new classifier."""

    @property
    def current(self) -> Classifier | None:
        """The classifier to use for the next frame."""
        with self._lock:
            return self._classifier

    def swap(self, classifier: Classifier) -> Classifier | None:
        """Make ``classifier`` serve from the next frame on; return the one it replaces."""
        with self._lock:
            previous, self._classifier = self._classifier, classifier
            self.swaps += 1
        log.info(
            "active bundle is now %s %s (%s)",
            classifier.bundle.manifest.name,
            classifier.bundle.manifest.version,
            classifier.bundle.id,
        )
        for listener in self.listeners:
            listener(classifier)
        return previous

    def load_in_background(
        self,
        bundle: Bundle,
        backend: str = "auto",
        threads: int = 1,
        on_done: Callable[[Classifier | None, EdgefleetError | None], None] | None = None,
        activate: bool = True,
    ) -> threading.Thread:
        """Build a classifier for ``bundle`` off the inference thread, then (optionally) swap it in.

        While it loads, the current classifier keeps serving. ``on_done`` gets
        the new classifier, or the error that stopped it (the old one stays).
        """

        def load() -> None:
            try:
                classifier = Classifier(bundle, backend=backend, threads=threads)
            except EdgefleetError as exc:
                log.warning("cannot load bundle %s: %s", bundle.id, exc)
                if on_done is not None:
                    on_done(None, exc)
                return
            if activate:
                self.swap(classifier)
            if on_done is not None:
                on_done(classifier, None)

        thread = threading.Thread(target=load, name=f"load-{bundle.sha256[:8]}", daemon=True)
        thread.start()
        return thread


@dataclass
class PipelineStats:
    """Totals of one :meth:`Pipeline.run`."""

    predictions: int = 0
    inference_errors: int = 0
    output_errors: int = 0
    watchdog_restarts: int = 0


class Pipeline:
    """Takes the newest frame, classifies it with the active model and hands the answer to outputs."""

    def __init__(
        self,
        device_id: str,
        *,
        capture: CaptureThread,
        slot: LatestFrameSlot,
        model: ActiveModel,
        sinks: Sequence[PredictionSink],
        metrics: RuntimeMetrics,
        health: HealthState,
        read_timeout_s: float = 5.0,
        on_inference_error: Callable[[str], None] | None = None,
        observers: Sequence[FrameObserver] = (),
        camera: str | None = None,
    ) -> None:
        self.device_id = device_id
        self.camera = camera
        """Set on a multi-camera device: this pipeline's camera, its predictions' ``camera_id`` and
        the label of its metrics series."""
        self.capture = capture
        self.slot = slot
        self.model = model
        self.sinks = list(sinks)
        self.observers = list(observers)
        self.metrics = metrics
        self.health = health
        self.read_timeout_s = read_timeout_s
        self.on_inference_error = on_inference_error
        self.stats = PipelineStats()
        self.last_prediction: Prediction | None = None

    def watchdog(self, now: float) -> None:
        """Restart capture when a read hangs or the capture thread died unexpectedly."""
        if self.capture.finished:
            return
        if self.capture.stuck(now, self.read_timeout_s) or not self.capture.alive:
            log.warning("capture is stuck or dead (%s); restarting it", self.capture.last_error)
            self.capture.restart()
            self.stats.watchdog_restarts += 1

    def step(self, timeout: float = 0.25) -> Prediction | None:
        """Classify the newest frame if one arrives within ``timeout``; return the prediction."""
        waited = time.monotonic()
        frame = self.slot.get(timeout)
        now = time.monotonic()
        self.metrics.set_counter_totals(
            dropped=self.slot.dropped,
            corrupt=self.capture.corrupt,
            reconnects=self.capture.reconnects,
            camera=self.camera,
        )
        if frame is None:
            self.watchdog(now)
            return None
        self.health.frame_received(now)
        classifier = self.model.current
        if classifier is None:
            return None
        self.health.inference_started(now)
        try:
            result = classifier.classify(frame.image)
        except EdgefleetError as exc:
            self.stats.inference_errors += 1
            self.metrics.inference_errors.inc()
            log.warning("inference failed on frame %d: %s", frame.frame_id, exc)
            if self.on_inference_error is not None:
                self.on_inference_error(str(exc))
            return None
        finally:
            self.health.inference_finished(time.monotonic())
        done = time.monotonic()
        manifest = classifier.bundle.manifest
        staleness_ms = (done - frame.captured_monotonic) * 1e3
        prediction = Prediction(
            device_id=self.device_id,
            frame_id=frame.frame_id,
            captured_at=frame.captured_wall,
            label=result.answer.label,
            confidence=result.answer.confidence,
            top_k=result.answer.top_k,
            uncertain=result.answer.uncertain,
            latency_ms=staleness_ms,
            inference_ms=result.total_ms,
            bundle_name=manifest.name,
            bundle_version=manifest.version,
            bundle_sha256=classifier.bundle.sha256,
            camera_id=self.camera,
        )
        for sink in self.sinks:
            try:
                sink.emit(prediction)
            except Exception:  # plug-in code must never stop classification
                self.stats.output_errors += 1
                log.exception("output %s failed on frame %d", sink.name, frame.frame_id)
        for observer in self.observers:
            try:
                observer(frame, prediction)
            except Exception:  # same rule as outputs: never stop classification
                self.stats.output_errors += 1
                log.exception("frame observer %r failed on frame %d", observer, frame.frame_id)
        self.metrics.observe_stages(
            capture_wait_ms=(now - waited) * 1e3,
            preprocess_ms=result.preprocess_ms,
            invoke_ms=result.invoke_ms,
            postprocess_ms=result.postprocess_ms,
            end_to_end_ms=(time.monotonic() - waited) * 1e3,
        )
        self.metrics.record_prediction(
            done, uncertain=result.answer.uncertain, staleness_ms=staleness_ms
        )
        if self.camera is not None:
            self.metrics.record_camera_prediction(self.camera, staleness_ms)
        self.stats.predictions += 1
        self.last_prediction = prediction
        return prediction

    def run(
        self, stop: threading.Event, max_frames: int | None = None, deadline: float | None = None
    ) -> PipelineStats:
        """Loop until ``stop`` is set, ``max_frames`` predictions, the monotonic ``deadline``, or the end of a finite source."""
        while not stop.is_set():
            if max_frames is not None and self.stats.predictions >= max_frames:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            prediction = self.step()
            # a finite source has ended: take what is left in the slot, then stop
            if prediction is None and self.capture.finished and self.step(timeout=0.0) is None:
                break
        return self.stats
