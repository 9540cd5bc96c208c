"""Device reports between paho's network thread and the server's worker: queued, then batched.

paho calls :meth:`ReportInbox.put` on its network thread (it must never wait
there); the server's worker takes :meth:`ReportInbox.gather` batches: the
first report, then whatever arrives within ``window_s``, at most
``max_batch``. A batch costs one database transaction and one save of each
rollout plan, so a burst of hundreds of reports costs one commit.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["REPORT_KINDS", "Inbound", "ReportInbox", "newest_states"]

REPORT_KINDS = ("state", "events", "telemetry", "availability")
"""The kinds of device report (the last level of their topics) the fleet server takes in."""


@dataclass(frozen=True)
class Inbound:
    """A device report as it came off the broker: topic, bytes, retained copy or not, when."""

    topic: str
    payload: bytes
    retained: bool
    received_at: float


class ReportInbox:
    """A queue of :class:`Inbound` reports, read in batches."""

    def __init__(self, *, max_batch: int = 1000, window_s: float = 0.1) -> None:
        self.max_batch = max_batch
        """At most this many queued device reports share one database transaction."""
        self.window_s = window_s
        """How long a batch gathers reports: bursts cost one transaction and one plan save."""
        self._queue: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._received = dict.fromkeys(REPORT_KINDS, 0)
        self._count_lock = threading.Lock()

    def put(self, item: Inbound) -> None:
        """Queue a report (any thread; never blocks), counted by kind."""
        kind = item.topic.rpartition("/")[2]
        if kind in self._received:
            with self._count_lock:
                self._received[kind] += 1
        self._queue.put(item)

    def depth(self) -> int:
        """Reports queued now, not yet taken in a batch (approximate while reports arrive)."""
        return self._queue.qsize()

    def received(self) -> dict[str, int]:
        """Report kind (:data:`REPORT_KINDS`) -> reports queued since this inbox was made."""
        with self._count_lock:
            return dict(self._received)

    def on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's message callback: queue the report with the time it arrived."""
        self.put(Inbound(message.topic, bytes(message.payload), bool(message.retain), time.time()))

    def gather(self, timeout_s: float) -> list[Inbound]:
        """The next batch: empty when nothing arrived within ``timeout_s``."""
        try:
            batch = [self._queue.get(timeout=max(0.0, timeout_s))]
        except queue.Empty:
            return []
        until = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get(timeout=max(0.0, until - time.monotonic())))
            except queue.Empty:
                break
        return batch


def newest_states(batch: list[Inbound]) -> list[Inbound]:
    """The batch without the ``state`` reports a later one of the same device replaces.

    A device's state topic is retained and each report is complete, so only
    the newest of a burst matters (the events say what happened between).
    """
    last = {item.topic: i for i, item in enumerate(batch) if item.topic.endswith("/state")}
    return [
        item
        for i, item in enumerate(batch)
        if not item.topic.endswith("/state") or last[item.topic] == i
    ]
