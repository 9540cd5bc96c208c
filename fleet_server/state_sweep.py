"""The rollout leader's sweep of the broker's retained device states: reports no replica stored.

With several replicas, device reports reach the servers through MQTT shared
subscriptions, and paho acknowledges a report to the broker as it arrives,
before the database has it. A replica killed in between takes those reports
with it: a device's last ``state`` (``committed``, say) is then in no
database, and the rollout would wait for it until the device's timeout. The
broker still holds every device's newest state and availability, retained
(``docs/protocol.md``), but it sends retained messages only when a
subscription is made (and MQTT 5 sends none to a shared subscription).

So the leader, when it takes the lead and every ``every_s`` while it keeps
it, subscribes for ``window_s`` to the same topics *without* ``$share``: the
broker sends it every retained state and availability, which go through the
same inbox and are stored like any report. The registry orders states by the
device's sequence numbers, so the copies it already has change nothing, and
the planner takes reports idempotently; a sweep of 1,000 devices costs 2,000
small messages.
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt

__all__ = ["RetainedSweep"]

log = logging.getLogger(__name__)

SWEPT_KINDS = ("state", "availability")
"""The retained device reports (``edge_runtime.protocol.catalogue``) a sweep re-reads."""


class RetainedSweep:
    """Subscribe to the retained device reports without ``$share`` for a while, now and then."""

    def __init__(
        self,
        client: mqtt.Client,
        prefix: str,
        *,
        window_s: float = 15.0,
        every_s: float = 300.0,
    ) -> None:
        self.client = client
        self.filters = [f"{prefix}/devices/+/{kind}" for kind in SWEPT_KINDS]
        self.window_s = window_s
        """How long a sweep stays subscribed (the broker sends the retained copies at once)."""
        self.every_s = every_s
        """Sweep again this often while leading (a replica may have died since)."""
        self._until: float | None = None
        self._next: float | None = None
        self.sweeps = 0
        """Sweeps begun by this process."""
        self._lock = threading.RLock()  # begun by the lease's thread, polled by the worker

    @property
    def active(self) -> bool:
        """Whether a sweep is subscribed now."""
        return self._until is not None

    def begin(self, monotonic_now: float, why: str) -> None:
        """Subscribe to the retained reports now (the broker sends them all); end in ``window_s``."""
        with self._lock:
            self.client.subscribe([(topic, 1) for topic in self.filters])
            self._until = monotonic_now + self.window_s
            self._next = monotonic_now + self.every_s
            self.sweeps += 1
            log.info(
                "re-reading every device's retained state and availability from the broker (%s)",
                why,
            )

    def poll(self, monotonic_now: float, leading: bool) -> None:
        """End a sweep whose window passed; begin the next one when due and still leading."""
        with self._lock:
            if self._until is not None and monotonic_now >= self._until:
                self.end()
            if not leading:
                self._next = None
            elif self._next is not None and monotonic_now >= self._next and self._until is None:
                self.begin(monotonic_now, f"every {self.every_s:g} s")

    def end(self) -> None:
        """Unsubscribe the non-shared filters (the shared subscriptions stay)."""
        with self._lock:
            if self._until is not None:
                self.client.unsubscribe(self.filters)
                self._until = None

    def stop(self) -> None:
        """No more sweeps (the server stops, or this replica stops leading)."""
        with self._lock:
            self.end()
            self._next = None
