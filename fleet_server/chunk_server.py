"""Serving bundle chunks over MQTT: coalesced, flow-controlled broadcasts answering device requests.

The server side of "Bundle delivery: receiver-driven chunks" in
``docs/protocol.md``. :class:`ChunkServer` listens on
``PREFIX/devices/+/download``, publishes a bundle's meta (retained) the first
time it is asked for, gathers the requests for one bundle during a short
coalescing interval and publishes each requested chunk once, QoS 1, on the
shared ``PREFIX/bundles/<sha256>/chunks/<i>`` topic, so devices of one wave
share a broadcast. At most ``window`` chunk publishes per bundle wait for the
broker's PUBACK at any time: the server never floods a broker whose client
queues are capped (Mosquitto drops silently beyond ``max_queued_messages``).

All the work happens on one worker thread; paho's network thread only
queues events for it. Malformed requests are logged and counted, never fatal.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.chunk_download import bundle_topic as _bundle_topic
from edge_runtime.protocol import (
    CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    WINDOW,
    ChunkMeta,
)
from edge_runtime.supervise import SupervisedThread, WorkerHealth
from fleet_server.chunk_io import (
    BundleDeliveryStats,
    ChunkRequest,
    CorruptChunkOnce,
    DeliveryStats,
    FaultInjector,
    describe,
    parse_request,
    read_chunk,
)
from fleet_server.errors import DeliveryServerError, MalformedRequestError

__all__ = [
    "BundleDeliveryStats",
    "ChunkRequest",
    "ChunkServer",
    "CorruptChunkOnce",
    "DeliveryStats",
    "FaultInjector",
    "parse_request",
]

log = logging.getLogger(__name__)


@dataclass
class _Bundle:
    path: Path
    meta: ChunkMeta
    announced: bool = False
    due: float | None = None
    requested: set[int] = field(default_factory=set)
    queue: dict[int, None] = field(default_factory=dict)
    inflight: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class _Event:
    kind: str
    mid: int = 0
    topic: str = ""
    payload: bytes = b""


_STOP = _Event("stop")
_CONNECTED = _Event("connected")


class ChunkServer:
    """Answers chunk requests for the bundles in ``bundles`` (sha256 -> file) over a paho client.

    The caller creates, connects and loops the client (``loop_start``);
    :meth:`start` adds a handler for the download topic and chains the
    client's ``on_connect`` (to subscribe again and re-publish retained metas
    after every reconnect, e.g. a broker restart) and ``on_publish`` (to count
    PUBACKs); callbacks set before :meth:`start` keep being called. The client
    must use paho's callback API version 2. ``bundles`` may gain entries while
    the server runs.
    """

    def __init__(
        self,
        client: mqtt.Client,
        bundles: Mapping[str, str | os.PathLike[str]],
        *,
        prefix: str = "edgefleet",
        chunk_size: int = CHUNK_SIZE,
        window: int = WINDOW,
        coalesce_s: float = 0.05,
        max_queued_requests: int = 10_000,
        fault: FaultInjector | None = None,
        share_group: str | None = None,
    ) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise DeliveryServerError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
        if window <= 0:
            raise DeliveryServerError(f"window must be positive, got {window}")
        self.client = client
        self.prefix = prefix
        self.chunk_size = chunk_size
        self.window = window
        self.coalesce_s = coalesce_s
        self.max_queued_requests = max_queued_requests
        self.fault = fault
        self.request_filter = f"{prefix}/devices/+/download"
        self.subscription = (
            f"$share/{share_group}/{self.request_filter}" if share_group else self.request_filter
        )
        """What is subscribed: with a shared-subscription group, replicas split the requests."""
        self._sources = bundles
        self._bundles: dict[str, _Bundle] = {}
        self._mids: dict[int, str] = {}
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._stats = DeliveryStats()
        self._stats_lock = threading.Lock()
        self._worker: SupervisedThread | None = None
        self._prev_on_connect: Any = None
        self._prev_on_publish: Any = None

    # --- life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Hook into the client, subscribe (now if connected, else on connect) and start working."""
        self._prev_on_connect = self.client.on_connect
        self._prev_on_publish = self.client.on_publish
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.message_callback_add(self.request_filter, self._on_request)
        if self.client.is_connected():
            self.client.subscribe(self.subscription, qos=1)
        self._worker = SupervisedThread(self._run, "chunk-server")
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker and give the client its callbacks back; unacknowledged chunks stay with paho."""
        self._events.put(_STOP)
        if self._worker is not None:
            self._worker.stop(timeout)
        self.client.message_callback_remove(self.request_filter)
        self.client.on_connect = self._prev_on_connect
        self.client.on_publish = self._prev_on_publish
        if self.client.is_connected():
            self.client.unsubscribe(self.subscription)

    def announce(self, sha256: str) -> None:
        """Publish a bundle's meta (retained) ahead of the first request."""
        if sha256 not in self._sources:
            raise DeliveryServerError(f"unknown bundle {sha256!r}")
        self._events.put(_Event("announce", topic=sha256))

    def health(self) -> WorkerHealth:
        """The worker thread's health (alive, restarts, last error) for ``/healthz``."""
        if self._worker is None:
            return WorkerHealth("chunk-server", alive=False, restarts=0, last_error="not started")
        return self._worker.health()

    def stats(self) -> DeliveryStats:
        """A snapshot of the counters."""
        with self._stats_lock:
            return copy.deepcopy(self._stats)

    # --- paho's network thread: queue events, nothing else ---------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._prev_on_connect is not None:
            self._prev_on_connect(client, userdata, flags, reason, props)
        if reason.is_failure:
            return
        client.subscribe(self.subscription, qos=1)
        self._events.put(_CONNECTED)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        if self._prev_on_publish is not None:
            self._prev_on_publish(client, userdata, mid, reason, props)
        self._events.put(_Event("ack", mid=mid))

    def _on_request(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._events.qsize() >= self.max_queued_requests:
            with self._stats_lock:
                self._stats.dropped += 1
            log.warning(
                "dropping a chunk request on %s: %d events queued",
                message.topic,
                self._events.qsize(),
            )
            return
        self._events.put(_Event("request", topic=message.topic, payload=bytes(message.payload)))

    # --- worker thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                event: _Event | None = self._events.get(timeout=self._wait_s())
            except queue.Empty:
                event = None
            while event is not None:
                if event is _STOP:
                    return
                try:
                    self._handle(event)
                except Exception:  # boundary: one event must never stop delivery for the fleet
                    with self._stats_lock:
                        self._stats.errors += 1
                    log.exception("handling a %s event failed; serving on", event.kind)
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    event = None
            self._flush_due(time.monotonic())
            self._pump()

    def _wait_s(self) -> float | None:
        deadlines = [b.due for b in self._bundles.values() if b.due is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _handle(self, event: _Event) -> None:
        if event.kind == "ack":
            sha256 = self._mids.pop(event.mid, None)
            if sha256 is not None:
                self._bundles[sha256].inflight.discard(event.mid)
        elif event.kind == "request":
            self._take_request(event.topic, event.payload)
        elif event.kind == "announce":
            try:
                self._publish_meta(self._bundle(event.topic))
            except DeliveryServerError as e:
                self._count_error(e)
        elif event.kind == "connected":
            # A restarted broker lost the retained metas and every unacknowledged publish
            # will be re-sent by paho; devices re-ask for what they still miss.
            for bundle in self._bundles.values():
                if bundle.announced:
                    self._publish_meta(bundle)

    def _take_request(self, topic: str, payload: bytes) -> None:
        try:
            request = parse_request(topic, payload, self.prefix)
            bundle = self._bundle(request.bundle)
            self._check_bounds(request, bundle.meta)
        except MalformedRequestError as e:
            with self._stats_lock:
                self._stats.malformed += 1
            log.warning("ignoring chunk request: %s", e)
            return
        except DeliveryServerError as e:
            self._count_error(e)
            return
        with self._stats_lock:
            self._stats.requests += 1
            per_bundle = self._stats.bundle(request.bundle)
            per_bundle.requests += 1
            per_bundle.devices.add(request.device_id)
        log.debug("%s wants %s of bundle %s", request.device_id, request.want, request.bundle[:12])
        if not bundle.announced:
            self._publish_meta(bundle)
        bundle.requested.update(request.indices())
        if bundle.due is None:
            bundle.due = time.monotonic() + self.coalesce_s

    def _check_bounds(self, request: ChunkRequest, meta: ChunkMeta) -> None:
        # counted, never materialised: [0, 10**9] must cost nothing to refuse
        count = sum(end - start for start, end in request.want)
        if any(end > meta.chunks for _, end in request.want):
            raise MalformedRequestError(
                f"request from {request.device_id} asks beyond the {meta.chunks} chunks"
                f" of bundle {meta.sha256[:12]}: {list(request.want)}"
            )
        if count > self.window:
            raise MalformedRequestError(
                f"request from {request.device_id} asks for {count} chunks,"
                f" more than the window of {self.window}"
            )

    def _bundle(self, sha256: str) -> _Bundle:
        """The served bundle ``sha256``, its meta computed (and its hash checked) on first use."""
        known = self._bundles.get(sha256)
        if known is not None:
            return known
        source = self._sources.get(sha256)
        if source is None:
            raise MalformedRequestError(f"unknown bundle {sha256[:12]}")
        path = Path(source)
        meta = describe(path, self.chunk_size)
        if meta.sha256 != sha256:
            raise DeliveryServerError(
                f"{path} does not hold bundle {sha256[:12]} (its sha256 is {meta.sha256[:12]})"
            )
        bundle = _Bundle(path, meta)
        self._bundles[sha256] = bundle
        return bundle

    def _publish_meta(self, bundle: _Bundle) -> None:
        payload = bundle.meta.encode()
        self.client.publish(self._topic(bundle.meta.sha256, "meta"), payload, qos=1, retain=True)
        bundle.announced = True
        with self._stats_lock:
            self._stats.bundle(bundle.meta.sha256).metas_published += 1

    def _flush_due(self, now: float) -> None:
        for bundle in self._bundles.values():
            if bundle.due is not None and bundle.due <= now:
                for index in sorted(bundle.requested):
                    bundle.queue.setdefault(index, None)
                bundle.requested.clear()
                bundle.due = None

    def _pump(self) -> None:
        """Publish queued chunks while each bundle has fewer than ``window`` unacknowledged."""
        for sha256, bundle in self._bundles.items():
            while bundle.queue and len(bundle.inflight) < self.window:
                index = next(iter(bundle.queue))
                del bundle.queue[index]
                try:
                    data = read_chunk(bundle.path, bundle.meta, index)
                except DeliveryServerError as e:
                    self._count_error(e)
                    bundle.queue.clear()
                    break
                if self.fault is not None:
                    data = self.fault.chunk_payload(sha256, index, data)
                info = self.client.publish(self._topic(sha256, f"chunks/{index}"), data, qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    # Not queued by paho: the device will ask again after its window timeout.
                    log.warning("cannot publish chunk %d of %s: %s", index, sha256[:12], info.rc)
                    continue
                bundle.inflight.add(info.mid)
                self._mids[info.mid] = sha256
                with self._stats_lock:
                    self._stats.chunks_published += 1
                    self._stats.bytes_published += len(data)
                    per_bundle = self._stats.bundle(sha256)
                    per_bundle.chunks_published += 1
                    per_bundle.bytes_published += len(data)

    def _count_error(self, error: DeliveryServerError) -> None:
        with self._stats_lock:
            self._stats.errors += 1
        log.error("cannot serve a bundle: %s", error)

    def _topic(self, sha256: str, leaf: str) -> str:
        return _bundle_topic(self.prefix, sha256, leaf)
