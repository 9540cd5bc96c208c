"""Device reports between paho's network thread and the server's worker: queued, then batched.

paho calls :meth:`ReportInbox.put` on its network thread (it must never wait
there); the server's worker takes :meth:`ReportInbox.gather` batches: the
first report, then whatever arrives within ``window_s``, at most
``max_batch``. A batch costs one database transaction and one save of each
rollout plan, so a burst of hundreds of reports costs one commit.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["Inbound", "ReportInbox", "newest_states"]


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

    def put(self, item: Inbound) -> None:
        """Queue a report (any thread; never blocks)."""
        self._queue.put(item)

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
