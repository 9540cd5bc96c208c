"""Supervised worker threads: restart after an exception, report a worker that ended."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from edge_runtime.supervise import SupervisedThread


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.005)
    assert condition(), "condition not met in time"  # type: ignore[operator]


def test_a_failing_target_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    calls: list[int] = []

    def target() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RecursionError("maximum recursion depth exceeded")
        stop.wait()

    worker = SupervisedThread(target, "parser", backoff_s=0.01)
    worker.start()
    wait_for(lambda: len(calls) == 3)
    health = worker.health()
    assert health.alive and health.restarts == 2
    assert health.last_error == "RecursionError: maximum recursion depth exceeded"
    assert "worker parser failed; restarting it" in caplog.text
    assert "Traceback" in caplog.text  # the traceback is logged, not swallowed
    stop.set()
    worker.stop(timeout=5)
    assert not worker.is_alive() and worker.health().alive  # stopped on purpose: not a failure


def test_a_worker_that_ends_on_its_own_is_unhealthy() -> None:
    worker = SupervisedThread(lambda: None, "ticker")
    worker.start()
    wait_for(lambda: not worker.is_alive())
    health = worker.health()
    assert not health.alive and health.last_error == "returned before it was stopped"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_base_exception_kills_the_worker_and_health_says_so() -> None:
    def target() -> None:
        raise SystemExit(3)

    worker = SupervisedThread(target, "doomed")
    worker.start()
    wait_for(lambda: not worker.is_alive())
    assert not worker.health().alive


def test_backoff_grows_between_failures_in_a_row() -> None:
    starts: list[float] = []

    def target() -> None:
        starts.append(time.monotonic())
        raise ValueError("bad")

    worker = SupervisedThread(target, "flaky", backoff_s=0.02, max_backoff_s=0.08)
    worker.start()
    wait_for(lambda: len(starts) >= 5)
    worker.stop(timeout=5)
    gaps = [b - a for a, b in itertools.pairwise(starts)][:4]
    assert gaps[0] >= 0.02 and gaps[2] >= 0.08 and gaps[3] >= 0.08
    with pytest.raises(RuntimeError, match="already started"):
        worker.start()
