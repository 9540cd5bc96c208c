"""The latest-frame slot and the capture thread: drops, reconnects, backoff, stuck reads."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from edge_runtime.errors import SourceError
from edge_runtime.sources import (
    CaptureThread,
    Frame,
    FrameSource,
    LatestFrameSlot,
    ReconnectPolicy,
    SyntheticSource,
    SyntheticSourceConfig,
    is_valid_frame,
)
from edgefleet.testing import FakeCamera, FakeCameraConfig

FAST = ReconnectPolicy(initial_s=0.01, max_s=0.05, multiplier=2.0, jitter=0.0)


def image(value: int = 0) -> np.ndarray:
    return np.full((4, 6, 3), value, np.uint8)


def frame(frame_id: int) -> Frame:
    return Frame(image(frame_id), frame_id, time.monotonic(), time.time())


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def capture_threads(source_name: str) -> int:
    return sum(t.name == f"capture[{source_name}]" for t in threading.enumerate())


@pytest.fixture
def captures() -> Iterator[list[CaptureThread]]:
    """Captures started by a test, stopped afterwards."""
    started: list[CaptureThread] = []
    yield started
    for capture in started:
        capture.stop(timeout=2.0)


# --- fakes that implement the real FrameSource interface --------------------


class ScriptedSource(FrameSource):
    """Plays a script: arrays are returned, exceptions raised, None ends; then ``tail`` forever."""

    def __init__(self, script: list[object], *, finite: bool = False, tail: object = None) -> None:
        self.name = "scripted"
        self.script = list(script)
        self.tail = tail
        self._finite = finite
        self.opens: list[float] = []
        self.closes = 0
        self.is_open = False

    @property
    def finite(self) -> bool:
        return self._finite

    def open(self) -> None:
        self.opens.append(time.monotonic())
        self.is_open = True

    def read(self) -> np.ndarray | None:
        assert self.is_open, "read on a closed source"
        step = self.script.pop(0) if self.script else self.tail
        if isinstance(step, BaseException):
            raise step
        if step is None:
            return None
        assert isinstance(step, np.ndarray)
        return step

    def close(self) -> None:
        self.closes += 1
        self.is_open = False


class BlockingSource(FrameSource):
    """Its first read blocks until ``release`` is set; then it gives frames of ``value``."""

    def __init__(self, value: int, *, block_first: bool = True) -> None:
        self.name = f"blocking {value}"
        self.value = value
        self.release = threading.Event()
        self.blocking = threading.Event()
        self._first = block_first
        self.closed = False

    def open(self) -> None:
        self.closed = False

    def read(self) -> np.ndarray | None:
        if self._first:
            self._first = False
            self.blocking.set()
            self.release.wait(10)
        time.sleep(0.002)
        return image(self.value)

    def close(self) -> None:
        self.closed = True


# --- LatestFrameSlot --------------------------------------------------------


def test_slot_counts_frames_replaced_before_they_were_taken() -> None:
    slot = LatestFrameSlot()
    for i in range(3):
        slot.put(frame(i))
    assert (slot.produced, slot.dropped) == (3, 2)
    taken = slot.get(timeout=0)
    assert taken is not None
    assert taken.frame_id == 2
    slot.put(frame(3))
    assert slot.dropped == 2  # the held frame had been taken


def test_slot_get_waits_for_a_newer_frame_and_times_out() -> None:
    slot = LatestFrameSlot()
    slot.put(frame(0))
    assert slot.get(timeout=0.05) is not None
    start = time.monotonic()
    assert slot.get(timeout=0.1) is None  # the held frame was already taken
    assert time.monotonic() - start >= 0.09

    got: list[Frame | None] = []
    waiter = threading.Thread(target=lambda: got.append(slot.get(timeout=5)))
    waiter.start()
    time.sleep(0.05)
    slot.put(frame(1))
    waiter.join(5)
    assert got[0] is not None
    assert got[0].frame_id == 1


def test_slot_close_wakes_waiters_and_keeps_the_last_frame_once() -> None:
    slot = LatestFrameSlot()
    got: list[Frame | None] = []
    waiter = threading.Thread(target=lambda: got.append(slot.get(timeout=None)))
    waiter.start()
    time.sleep(0.05)
    slot.close()
    waiter.join(5)
    assert not waiter.is_alive()
    assert got == [None]
    assert slot.closed

    slot = LatestFrameSlot()
    slot.put(frame(0))
    slot.close()
    slot.put(frame(1))  # ignored after close
    last = slot.get(timeout=0)
    assert last is not None
    assert last.frame_id == 0
    assert slot.get(timeout=None) is None
    assert slot.produced == 1


# --- ReconnectPolicy --------------------------------------------------------


def test_backoff_grows_is_capped_and_jitter_is_deterministic() -> None:
    policy = ReconnectPolicy()
    assert [policy.delay(a, random.Random(0)) for a in range(3)] == [
        policy.delay(a, random.Random(0)) for a in range(3)
    ]
    plain = ReconnectPolicy(jitter=0.0)
    assert [plain.delay(a, random.Random()) for a in range(8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert plain.delay(10_000, random.Random()) == 30.0
    rng = random.Random(1)
    delays = [policy.delay(2, rng) for _ in range(200)]
    assert all(1.6 <= d <= 2.4 for d in delays)
    assert len(set(delays)) > 100
    with pytest.raises(ValueError, match="initial_s"):
        ReconnectPolicy(initial_s=0)
    with pytest.raises(ValueError, match="jitter"):
        ReconnectPolicy(jitter=1.5)


# --- CaptureThread ----------------------------------------------------------


def test_finite_source_finishes_without_reconnecting(captures: list[CaptureThread]) -> None:
    source = SyntheticSource(SyntheticSourceConfig(width=32, height=24, fps=None, frames=5))
    capture = CaptureThread(source)
    captures.append(capture)
    capture.start()
    assert wait_until(lambda: capture.finished)
    assert wait_until(lambda: not capture.alive)
    assert (capture.produced, capture.reconnects, capture.errors) == (5, 0, 0)
    assert capture.slot.closed
    last = capture.slot.get(timeout=0)
    assert last is not None
    assert last.frame_id == 4
    assert last.image.shape == (24, 32, 3)
    assert capture.slot.produced == 5
    assert capture.slot.dropped == 4
    assert not capture.needs_restart()
    assert not capture.restart()


def test_frames_carry_ids_and_capture_times(captures: list[CaptureThread]) -> None:
    capture = CaptureThread(
        SyntheticSource(SyntheticSourceConfig(width=16, height=8, fps=200.0)),
    )
    captures.append(capture)
    before_m, before_w = time.monotonic(), time.time()
    capture.start()
    frames = [capture.slot.get(timeout=2) for _ in range(5)]
    assert all(f is not None for f in frames)
    ids = [f.frame_id for f in frames if f is not None]
    assert ids == sorted(set(ids))
    first = frames[0]
    assert first is not None
    assert first.captured_monotonic >= before_m
    assert first.captured_wall >= before_w - 1
    assert capture.last_frame_monotonic is not None
    assert capture.stop(timeout=2)
    assert not capture.alive
    assert capture.slot.closed


def test_dead_source_reconnects_with_growing_backoff(captures: list[CaptureThread]) -> None:
    source = FakeCamera(FakeCameraConfig(width=6, height=4, refuse_opens=3, drop_after=4))
    policy = ReconnectPolicy(initial_s=0.02, max_s=1.0, multiplier=3.0, jitter=0.0)
    capture = CaptureThread(source, policy=policy, rng=random.Random(0))
    captures.append(capture)
    capture.start()
    assert wait_until(lambda: capture.produced >= 8)
    assert capture.stop(timeout=2)
    # three refused opens, then the stream drops after every 4 frames
    assert capture.reconnects >= 4
    assert capture.errors == capture.reconnects
    assert capture.last_error is not None
    assert "fake camera 6x4" in capture.last_error
    gaps = [b - a for a, b in zip(source.opens, source.opens[1:], strict=False)]
    assert gaps[0] >= 0.015
    assert gaps[1] >= 0.05
    assert gaps[2] >= 0.15  # 0.02, 0.06, 0.18: the wait grows
    # after a good read the backoff starts again at initial_s
    assert capture.last_backoff_s == pytest.approx(0.02)


def test_frame_ids_continue_across_reconnects(captures: list[CaptureThread]) -> None:
    source = ScriptedSource(
        [image(1), image(2), SourceError("scripted: lost"), image(3), None, image(4)],
        tail=image(9),
    )
    capture = CaptureThread(source, policy=FAST)
    captures.append(capture)
    seen: list[Frame] = []

    def consume() -> None:
        while (f := capture.slot.get(timeout=2)) is not None and len(seen) < 6:
            seen.append(f)

    consumer = threading.Thread(target=consume)
    capture.start()
    consumer.start()
    consumer.join(5)
    capture.stop(timeout=2)
    assert capture.reconnects == 2  # the SourceError, and the live source returning None
    assert capture.last_error is not None
    assert "stopped delivering frames" in capture.last_error
    assert len(source.opens) >= 3
    ids = [f.frame_id for f in seen]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert capture.produced >= 5


def test_unexpected_exception_is_a_failure_not_the_end(captures: list[CaptureThread]) -> None:
    source = ScriptedSource([RuntimeError("bug in a plug-in source")], tail=image(5))
    capture = CaptureThread(source, policy=FAST)
    captures.append(capture)
    capture.start()
    assert wait_until(lambda: capture.produced >= 3)
    assert capture.errors == 1
    assert capture.last_error is not None
    assert "RuntimeError" in capture.last_error
    assert capture.alive


def test_corrupt_frames_are_counted_and_skipped(captures: list[CaptureThread]) -> None:
    bad = [
        np.zeros((4, 6), np.uint8),  # grayscale
        np.zeros((0, 6, 3), np.uint8),  # empty
        np.zeros((4, 6, 3), np.float32),  # wrong dtype
        np.zeros((4, 6, 4), np.uint8),  # BGRA
    ]
    source = ScriptedSource([image(1), *bad, image(2), None], finite=True)
    capture = CaptureThread(source)
    captures.append(capture)
    capture.start()
    assert wait_until(lambda: capture.finished)
    assert capture.corrupt == 4
    assert capture.produced == 2
    assert capture.errors == 0
    last = capture.slot.get(timeout=0)
    assert last is not None
    assert last.frame_id == 1
    assert int(last.image[0, 0, 0]) == 2
    assert not any(is_valid_frame(b) for b in bad)


def test_stuck_read_is_detected_and_restart_recovers(captures: list[CaptureThread]) -> None:
    made: list[BlockingSource] = []

    def factory() -> BlockingSource:
        source = BlockingSource(value=len(made) * 100, block_first=not made)
        made.append(source)
        return source

    capture = CaptureThread(factory, read_timeout_s=0.2)
    captures.append(capture)
    capture.start()
    assert made[0].blocking.wait(5)
    assert wait_until(capture.stuck, timeout=5)
    assert capture.needs_restart()
    assert capture.read_started_monotonic is not None
    assert capture.stuck(time.monotonic(), read_timeout_s=0.1)
    assert not capture.stuck(capture.read_started_monotonic + 0.05)

    assert capture.restart(timeout=0.1) is False  # the old thread is still blocked: abandoned
    assert capture.restarts == 1
    assert capture.source is made[1]
    first = capture.slot.get(timeout=2)
    assert first is not None
    assert int(first.image[0, 0, 0]) == 100

    # the abandoned thread wakes up with a frame: it must never reach the slot
    produced_before = capture.produced
    made[0].release.set()
    assert wait_until(lambda: made[0].closed)  # it closes its own source and exits
    for _ in range(20):
        got = capture.slot.get(timeout=1)
        assert got is not None
        assert int(got.image[0, 0, 0]) == 100
    assert capture.produced > produced_before


def test_restart_with_a_shared_source_instance(captures: list[CaptureThread]) -> None:
    source = BlockingSource(value=7)
    capture = CaptureThread(source, read_timeout_s=0.1)
    captures.append(capture)
    capture.start()
    assert source.blocking.wait(5)
    assert wait_until(capture.stuck, timeout=5)
    capture.restart(timeout=0.05)
    got = capture.slot.get(timeout=2)
    assert got is not None
    source.release.set()
    # the abandoned thread exits and leaves the shared source open for the new one
    assert wait_until(lambda: capture_threads("blocking 7") == 1)
    assert not source.closed
    assert capture.alive
    assert capture.slot.get(timeout=2) is not None


def test_stop_interrupts_a_paced_source(captures: list[CaptureThread]) -> None:
    capture = CaptureThread(SyntheticSource(SyntheticSourceConfig(width=8, height=8, fps=0.1)))
    captures.append(capture)
    capture.start()
    assert capture.slot.get(timeout=2) is not None  # frame 0 is immediate, frame 1 due in 10 s
    assert capture.stop(timeout=5)
    assert not capture.alive
    with pytest.raises(RuntimeError, match="already started"):
        capture.start()
