"""Device telemetry: quality figures per serving bundle, and a payload the fleet server's own reader accepts."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

from edge_runtime.health import HealthState
from edge_runtime.metrics import RuntimeMetrics
from edge_runtime.prediction import Prediction
from edge_runtime.telemetry import QualityTracker, TelemetryPublisher
from fleet_server.reports import parse_telemetry
from fleet_server.telemetry import device_figures, quality_figures, read_sample

BUNDLE_A = "a" * 64
BUNDLE_B = "b" * 64
TOPIC = "edgefleet/devices/cam-1/telemetry"


def prediction(
    label: str = "glass",
    confidence: float = 0.9,
    bundle: str = BUNDLE_A,
    uncertain: bool = False,
    frame_id: int = 0,
) -> Prediction:
    return Prediction(
        device_id="cam-1",
        frame_id=frame_id,
        captured_at=1_800_000_000.0,
        label=label,
        confidence=confidence,
        top_k=[(label, confidence)],
        uncertain=uncertain,
        latency_ms=5.0,
        inference_ms=3.0,
        bundle_name="m",
        bundle_version="1.0.0",
        bundle_sha256=bundle,
    )


class FakeLink:
    """Records what is published; can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.published = threading.Event()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if self.fail:
            raise OSError("broker gone")
        self.messages.append((topic, payload, qos, retain))
        self.published.set()


def test_tracker_counts_labels_and_averages_finite_confidences() -> None:
    tracker = QualityTracker()
    assert tracker.snapshot().to_dict() == {
        "bundle": None,
        "predictions": 0,
        "mean_confidence": None,
        "class_counts": {},
        "confidence_histogram": [0] * 10,
    }
    tracker.emit(prediction("glass", 0.9))
    tracker.emit(prediction("glass", 0.7))
    tracker.emit(prediction("paper", 0.5))
    tracker.emit(prediction("uncertain", math.nan, uncertain=True))
    snap = tracker.snapshot()
    assert snap.bundle == BUNDLE_A and snap.predictions == 4
    assert snap.class_counts == {"glass": 2, "paper": 1, "uncertain": 1}
    assert snap.mean_confidence == pytest.approx(0.7)  # NaN counted as a class, not in the mean
    # 0.5 in [0.5, 0.6), 0.7 in [0.7, 0.8), 0.9 in [0.9, 1]; NaN in no bin
    assert snap.confidence_histogram == [0, 0, 0, 0, 0, 1, 0, 1, 0, 1]


def test_tracker_starts_again_when_the_serving_bundle_changes() -> None:
    tracker = QualityTracker()
    for _ in range(5):
        tracker.emit(prediction("glass", 0.9, BUNDLE_A))
    tracker.emit(prediction("metal", 0.4, BUNDLE_B))
    snap = tracker.snapshot()
    assert snap.bundle == BUNDLE_B and snap.predictions == 1
    assert snap.class_counts == {"metal": 1} and snap.mean_confidence == pytest.approx(0.4)
    assert snap.confidence_histogram == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]  # bundle A's bins gone
    # swapped in, but no prediction of bundle A yet: nothing is known about it
    assert tracker.snapshot(BUNDLE_A).to_dict() == {
        "bundle": BUNDLE_A,
        "predictions": 0,
        "mean_confidence": None,
        "class_counts": {},
        "confidence_histogram": [],
    }
    tracker.emit(prediction("glass", 0.8, BUNDLE_A))  # a rollback: counts start again too
    assert tracker.snapshot(BUNDLE_A).class_counts == {"glass": 1}


def test_tracker_with_only_nonfinite_confidences_has_no_mean() -> None:
    tracker = QualityTracker()
    tracker.emit(prediction("uncertain", math.inf, uncertain=True))
    snap = tracker.snapshot()
    assert snap.predictions == 1 and snap.mean_confidence is None


def serving_metrics() -> RuntimeMetrics:
    metrics = RuntimeMetrics(clock=lambda: 100.0)
    metrics.set_active_bundle("m", "1.0.0", BUNDLE_A)
    for index in range(9):
        metrics.record_prediction(99.0 + index / 10, uncertain=False, staleness_ms=5.0)
        metrics.observe_stages(0.1, 0.5, 3.0, 0.1, 4.0)
    metrics.record_prediction(99.9, uncertain=True, staleness_ms=5.0)
    metrics.observe_stages(0.1, 0.5, 7.0, 0.1, 8.0)
    metrics.inference_errors.inc()
    return metrics


def publisher_for(
    link: FakeLink, tracker: QualityTracker, interval_s: float = 10.0
) -> TelemetryPublisher:
    return TelemetryPublisher(
        link,
        TOPIC,
        device_id="cam-1",
        metrics=serving_metrics(),
        quality=tracker,
        health=HealthState(startup_grace_s=15.0),
        info=lambda: {"device_id": "cam-1", "source": "synthetic"},
        interval_s=interval_s,
        clock=lambda: 1_800_000_000.0,
    )


def test_payload_is_read_by_the_fleet_servers_own_parser() -> None:
    tracker = QualityTracker()
    for index in range(9):
        tracker.emit(prediction("glass" if index % 3 else "paper", 0.8, frame_id=index))
    tracker.emit(prediction("uncertain", 0.2, uncertain=True, frame_id=9))
    link = FakeLink()
    assert publisher_for(link, tracker).publish_once()

    [(topic, body, qos, retain)] = link.messages
    assert (topic, qos, retain) == (TOPIC, 0, False)
    data = json.loads(body)
    assert data["protocol"] == 1 and data["device_id"] == "cam-1"
    assert data["bundle"] == BUNDLE_A and data["at"] == 1_800_000_000.0
    assert set(data) >= {"health", "metrics", "info", "quality"}  # /stats content + quality
    assert data["health"]["status"] == "ok" and data["info"]["source"] == "synthetic"

    snapshot = parse_telemetry(data, "cam-1")  # the registry's boundary check
    sample = read_sample(snapshot, at=1_800_000_001.0)
    assert sample.frames == 10 and sample.errors == 1 and sample.uncertain == 1
    assert sample.fps == pytest.approx(10.0)  # ten predictions in the last second
    assert sample.latency_p95_ms == pytest.approx(3.0 + 0.55 * 4.0)  # p95 of nine 3.0 and one 7.0
    assert sample.mean_confidence == pytest.approx((9 * 0.8 + 0.2) / 10)
    assert sample.class_counts == {"glass": 6, "paper": 3, "uncertain": 1}

    figures = quality_figures(device_figures([sample]))
    assert figures.predictions == 10 and figures.errors == 1
    assert figures.class_counts == {"glass": 6, "paper": 3, "uncertain": 1}


def test_payload_before_any_prediction_is_still_accepted() -> None:
    link = FakeLink()
    publisher = publisher_for(link, QualityTracker())
    assert publisher.publish_once()
    sample = read_sample(parse_telemetry(json.loads(link.messages[0][1]), "cam-1"), at=0.0)
    assert sample.mean_confidence is None and sample.class_counts == {}


def test_publish_failure_is_logged_and_counted_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = FakeLink(fail=True)
    publisher = publisher_for(link, QualityTracker())
    assert publisher.publish_once() is False
    assert publisher.failures == 1 and publisher.published == 0
    assert (
        "telemetry on edgefleet/devices/cam-1/telemetry not published: broker gone" in caplog.text
    )


def test_thread_publishes_every_interval_and_stops() -> None:
    link = FakeLink()
    publisher = publisher_for(link, QualityTracker(), interval_s=0.05)
    publisher.start()
    try:
        assert link.published.wait(2.0)
        with pytest.raises(RuntimeError):
            publisher.start()
    finally:
        publisher.stop()
    assert not publisher.running
    count = len(link.messages)
    assert count >= 1 and publisher.published == count
    publisher.stop()  # twice is harmless


def test_thread_survives_failing_publishes() -> None:
    link = FakeLink(fail=True)
    publisher = publisher_for(link, QualityTracker(), interval_s=0.02)
    publisher.start()
    try:
        deadline = threading.Event()
        deadline.wait(0.2)
        assert publisher.running and publisher.failures >= 2
        link.fail = False
        assert link.published.wait(2.0)
    finally:
        publisher.stop()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        publisher_for(FakeLink(), QualityTracker(), interval_s=0)


class DyingLink(FakeLink):
    """A link whose publish kills the calling thread (what no ``except Exception`` catches)."""

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.set()
        raise SystemExit("the telemetry thread was killed")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # on purpose
def test_a_dead_telemetry_worker_is_named_by_healthz() -> None:
    """Issue #15: a worker thread that dies never hides behind a green /healthz."""
    health = HealthState(startup_grace_s=0.0)
    publisher = TelemetryPublisher(
        DyingLink(),
        TOPIC,
        device_id="cam-1",
        metrics=serving_metrics(),
        quality=QualityTracker(),
        health=health,
        interval_s=0.01,
    )
    health.add_check(publisher.worker_problem)
    assert publisher.worker_problem() is None  # not started: nothing to report
    publisher.start()
    deadline = time.monotonic() + 10
    while publisher.running and time.monotonic() < deadline:
        time.sleep(0.01)
    problem = publisher.worker_problem()
    assert problem is not None and problem.startswith("the telemetry worker is not running")
    verdict = health.evaluate()
    assert not verdict.healthy and problem in verdict.reasons
    publisher.stop()
