"""One device topic in, on the server's paho client, worked off by a supervised worker.

:class:`DeviceTopicReceiver` is what the receivers of device messages that
the server stores share (:class:`~fleet_server.shadow_receiver.ShadowReceiver`,
:class:`~fleet_server.field_data_receiver.FieldDataReceiver`): it subscribes
to ``PREFIX/devices/+/<leaf>`` (``$share/<group>/...`` when the replicas
split device traffic) and again after every reconnect; paho's thread only
queues each payload (a bounded queue: a full one drops it and counts it);
its own worker (:class:`~edge_runtime.supervise.SupervisedThread`) hands
each to :meth:`handle` and, between messages, runs :meth:`periodic` (pruning,
publishing). Database work that fails is logged and counted in a
:class:`~fleet_server.workers.FailureStreak`: from several failures in a row
on, until some succeeds, the worker is down in ``/healthz``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.supervise import SupervisedThread, WorkerHealth
from fleet_server.workers import FailureStreak

__all__ = ["DeviceTopicReceiver"]

log = logging.getLogger(__name__)


class DeviceTopicReceiver(ABC):
    """Subscribe to one per-device topic and work its messages off on a worker (see the module).

    Subclasses set :attr:`worker_name`, :attr:`leaf` and :attr:`what` and implement
    :meth:`handle`; :meth:`periodic` and :meth:`reconnected` are optional.
    """

    worker_name = "device-topic"
    """The worker's name in ``/healthz`` and the server's metrics."""
    leaf = ""
    """The topic after ``PREFIX/devices/<id>/``."""
    what = "message"
    """What one message is, for the logs."""

    def __init__(
        self,
        client: mqtt.Client,
        *,
        prefix: str = "edgefleet",
        share_group: str | None = None,
        queue_size: int = 256,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.share_group = share_group
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self._prev_on_connect: Any = None
        self.streak = FailureStreak()
        """Database work that failed in a row."""
        self.dropped = 0
        """Messages dropped because the queue was full."""

    @property
    def _filter(self) -> str:
        return f"{self.prefix}/devices/+/{self.leaf}"

    def _share(self, topic: str) -> str:
        return f"$share/{self.share_group}/{topic}" if self.share_group else topic

    @staticmethod
    def device_of(topic: str) -> str:
        """The device id a ``PREFIX/devices/<id>/a/b`` topic names ('' when it has too few
        levels)."""
        parts = topic.split("/")
        return parts[-3] if len(parts) >= 3 else ""

    def start(self) -> None:
        """Subscribe and start the worker."""
        if self._thread is not None:
            return
        self.client.message_callback_add(self._filter, self._on_message)
        self._prev_on_connect = self.client.on_connect
        self.client.on_connect = self._on_connect
        self.client.subscribe(self._share(self._filter), qos=1)
        self._stop.clear()
        self.started()
        self._thread = SupervisedThread(self._loop, self.worker_name)
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.stop(timeout=5)
        self.client.on_connect = self._prev_on_connect
        self.client.message_callback_remove(self._filter)
        self.client.unsubscribe(self._share(self._filter))

    def health(self) -> WorkerHealth:
        """The worker's health; down after its database work failed several times in a row."""
        if self._thread is None:
            return WorkerHealth(self.worker_name, False, 0, "not started")
        return self.streak.judge(self._thread.health())

    # --- what subclasses do ---------------------------------------------------------

    @abstractmethod
    def handle(self, topic: str, payload: bytes) -> bool:
        """Work one message off; False when it was refused (and so may never have reached the
        database). Raise what the database raised."""

    def periodic(self, now: float) -> None:  # noqa: B027 - an optional hook
        """Between messages, on the worker (``now``: ``time.monotonic()``); use :meth:`attempt`
        for database work."""

    def started(self) -> None:  # noqa: B027 - an optional hook
        """Called on :meth:`start`, before the worker runs."""

    def reconnected(self) -> None:  # noqa: B027 - an optional hook
        """Called on paho's thread after each reconnect (the subscription is renewed already)."""

    def attempt(self, what: str, work: Callable[[], object]) -> None:
        """Run ``work()``: a success or failure counts in the streak; a failure is logged."""
        try:
            work()
        except Exception as exc:  # the database is away: tried again later
            self.streak.failed(exc)
            log.exception("%s failed", what)
        else:
            self.streak.passed()

    # --- plumbing -------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        if self._prev_on_connect is not None:
            self._prev_on_connect(client, *args)
        self.client.subscribe(self._share(self._filter), qos=1)
        self.reconnected()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self.dropped += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                topic, payload = self._inbox.get(timeout=0.25)
            except queue.Empty:
                pass
            else:
                try:
                    stored = self.handle(topic, payload)
                except Exception as exc:  # the database is away
                    self.streak.failed(exc)
                    log.exception("storing a %s failed", self.what)
                else:
                    if stored:  # a refused one may never have reached the database
                        self.streak.passed()
            self.periodic(time.monotonic())
