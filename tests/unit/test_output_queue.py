"""QueuedSink: an output on its own thread; a consumer that hangs or dies never holds the inference thread."""

from __future__ import annotations

import threading

import pytest

from edge_runtime.output_queue import OutputQueueCollector, QueuedSink
from edge_runtime.outputs import CallbackSink, JsonLinesSink, MqttPredictionSink, PredictionSink
from edge_runtime.prediction import Prediction
from edgefleet.testing import FakeClock, sample_prediction, wait_for


class GatedConsumer(PredictionSink):
    """Takes each prediction only when the test opens the gate; keeps what it got, in order."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.got: list[int] = []
        self.closed = False

    def emit(self, prediction: Prediction) -> None:
        self.entered.set()
        self.gate.wait()
        self.got.append(prediction.frame_id)

    def close(self) -> None:
        self.closed = True


def frames(ids: range) -> list[Prediction]:
    return [sample_prediction(frame_id=i) for i in ids]


def test_a_hung_consumer_holds_only_its_own_thread_and_the_newest_predictions_wait() -> None:
    consumer = GatedConsumer()
    clock = FakeClock(100.0)
    sink = QueuedSink(consumer, capacity=3, stall_s=5.0, clock=clock)
    sink.emit(sample_prediction(frame_id=0))
    assert consumer.entered.wait(5.0)  # frame 0 is being delivered, and hangs there
    for prediction in frames(range(1, 11)):
        sink.emit(prediction)  # returns at once although the consumer hangs
    stats = sink.stats()
    assert (stats.queued, stats.dropped, stats.delivered) == (3, 7, 0)
    assert sink.stall_warning(now=104.0) is None
    warning = sink.stall_warning(now=106.5)
    assert warning is not None and "6.5 s" in warning and "7 dropped" in warning
    assert sink.problem() is None  # hung is not dead
    consumer.gate.set()
    wait_for(lambda: sink.stats().delivered == 4, timeout=10)
    assert consumer.got == [0, 8, 9, 10]  # in order, the oldest waiting ones dropped
    sink.close()
    assert consumer.closed


def test_a_consumer_that_raises_is_counted_and_the_next_prediction_still_goes() -> None:
    class Flaky(PredictionSink):
        name = "flaky"

        def __init__(self) -> None:
            self.got: list[int] = []

        def emit(self, prediction: Prediction) -> None:
            if prediction.frame_id % 2:
                raise OSError("disk full")
            self.got.append(prediction.frame_id)

    consumer = Flaky()
    sink = QueuedSink(consumer)
    for prediction in frames(range(6)):
        sink.emit(prediction)
    sink.close()
    assert consumer.got == [0, 2, 4]
    assert (sink.errors, sink.delivered, sink.dropped) == (3, 3, 0)


def test_a_dead_output_thread_is_a_problem_until_close() -> None:
    class Dying(PredictionSink):
        name = "dying"

        def emit(self, prediction: Prediction) -> None:
            raise SystemExit("plug-in called sys.exit")

    sink = QueuedSink(Dying(), camera="belt-2")
    sink.emit(sample_prediction())
    wait_for(lambda: not sink.alive, timeout=10)
    problem = sink.problem()
    assert problem is not None
    assert "'dying' of camera 'belt-2' thread died" in problem and "sys.exit" in problem
    sink.emit(sample_prediction(frame_id=2))  # still never blocks
    assert sink.stats().queued == 1


def test_close_gives_a_hung_consumer_a_deadline_and_does_not_close_it() -> None:
    consumer = GatedConsumer()
    sink = QueuedSink(consumer)
    for prediction in frames(range(3)):
        sink.emit(prediction)
    assert consumer.entered.wait(5.0)
    sink.close(timeout=0.2)
    assert not consumer.closed and sink.dropped == 2  # the two still waiting
    consumer.gate.set()


def test_counters_are_exported_per_output_and_camera() -> None:
    consumer = GatedConsumer()
    consumer.gate.set()
    sink = QueuedSink(consumer, camera="belt-1")
    for prediction in frames(range(4)):
        sink.emit(prediction)
    wait_for(lambda: sink.delivered == 4, timeout=10)
    families = {f.name: f for f in OutputQueueCollector(lambda: [sink]).collect()}
    delivered = families["edgefleet_output_delivered"].samples[0]
    assert delivered.labels == {"output": "gated", "camera": "belt-1"} and delivered.value == 4
    assert families["edgefleet_output_thread_alive"].samples[0].value == 1.0
    assert list(OutputQueueCollector(list).collect()) == []
    sink.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        QueuedSink(GatedConsumer(), capacity=0)


def test_a_plug_in_says_whether_it_can_block() -> None:
    class Fast:
        blocking = False

        def emit(self, prediction: dict[str, object]) -> None:
            """Hands the prediction to a lock-free ring."""

    class Plain:
        def emit(self, prediction: dict[str, object]) -> None:
            """Talks to a sorter."""

    assert CallbackSink("fast", Fast()).blocking is False
    assert CallbackSink("plain", Plain()).blocking is True
    assert MqttPredictionSink.blocking is False and JsonLinesSink.blocking is True
