"""Fetching one bundle over MQTT: a :class:`ChunkDownload` fed from the bundle's topics.

The fetcher subscribes to ``PREFIX/bundles/<sha256>/#``, passes the meta and
chunks it receives to the download, and publishes ``download`` requests
(QoS 1) for the next window: when the subscription is acknowledged (first
time and after every reconnect, so a broker restart resumes the download),
when a window is done, and when one times out. It never asks before the
broker has acknowledged the subscription, so no chunk it asks for can pass
it by. See "Bundle delivery" in ``docs/protocol.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.chunk_download import ChunkDownload, bundle_topic
from edge_runtime.errors import ChunkIntegrityError, DeliveryError
from edge_runtime.mqtt_link import MqttLink, device_topic

__all__ = ["BundleFetcher", "FetchStats"]

log = logging.getLogger(__name__)


@dataclass
class FetchStats:
    """What one fetch did; times are ``time.monotonic()`` values."""

    requests: int = 0
    chunks_stored: int = 0
    duplicates: int = 0
    refused: int = 0
    metas: int = 0
    subscribed: int = 0
    first_request_at: float | None = None
    completed_at: float | None = None

    @property
    def elapsed_s(self) -> float | None:
        """Seconds from the first request to the complete file, once complete."""
        if self.first_request_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.first_request_at


class BundleFetcher:
    """Drives one :class:`ChunkDownload` over an :class:`MqttLink` until the file is complete.

    Message handling runs on paho's network thread and a small timer thread
    re-asks for windows that time out. When the download completes, the part
    file is moved to ``<sha256>.download`` (:meth:`ChunkDownload.finish`), the
    fetcher unsubscribes, sets :attr:`done` and calls ``on_done(self)`` from
    the network thread; the caller then verifies the file against TUF. A
    :class:`DeliveryError` that cannot heal (disk full) ends the fetch the same
    way with :attr:`error` set. Corrupt chunks and a meta that disagrees with
    the signed target are logged, counted and asked for again.
    """

    def __init__(
        self,
        link: MqttLink,
        download: ChunkDownload,
        *,
        on_done: Callable[[BundleFetcher], None] | None = None,
        tick_s: float = 0.1,
    ) -> None:
        self.link = link
        self.download = download
        self.stats = FetchStats()
        self.done = threading.Event()
        prefix = link.config.topic_prefix
        self._topic_filter = bundle_topic(prefix, download.sha256, "#")
        self._topic_base = bundle_topic(prefix, download.sha256, "")
        self._request_topic = device_topic(prefix, link.device_id, "download")
        self._on_done = on_done
        self._tick_s = tick_s
        self._lock = threading.Lock()
        self._subscribed = False
        self._path: Path | None = None
        self._error: DeliveryError | None = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    @property
    def path(self) -> Path | None:
        """The assembled ``<sha256>.download`` file once complete (not yet verified)."""
        return self._path

    @property
    def error(self) -> DeliveryError | None:
        """Why the fetch stopped without a file, if it did."""
        return self._error

    def start(self) -> None:
        """Subscribe and start asking; returns at once."""
        if self.download.complete:
            with self._lock:
                self._finish()
            self._announce_done()
            return
        self.link.add_connect_listener(self._on_connect)
        self.link.subscribe(self._topic_filter, self._on_message, qos=1, on_subscribed=self._ready)
        self._timer = threading.Thread(
            target=self._tick, name=f"fetch-{self.download.sha256[:12]}", daemon=True
        )
        self._timer.start()

    def wait(self, timeout: float | None = None) -> Path | None:
        """Block until done; the file's path, ``None`` on timeout, or the :class:`DeliveryError`."""
        if not self.done.wait(timeout):
            return None
        if self._error is not None:
            raise self._error
        return self._path

    def stop(self) -> None:
        """Stop asking and unsubscribe; the download keeps its progress on disk."""
        self._stop.set()
        self.link.unsubscribe(self._topic_filter)
        self.link.remove_connect_listener(self._on_connect)
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=5.0)

    # --- network thread --------------------------------------------------------

    def _on_connect(self) -> None:
        with self._lock:
            self._subscribed = False

    def _ready(self) -> None:
        """The broker acknowledged the subscription: ask for whatever is missing, now."""
        with self._lock:
            self.stats.subscribed += 1
            self._subscribed = True
            self._request(force=True)

    def _on_message(self, topic: str, payload: bytes) -> None:
        leaf = topic.removeprefix(self._topic_base)
        finished = False
        with self._lock:
            if self.done.is_set():
                return
            try:
                if leaf == "meta":
                    self._take_meta(payload)
                elif leaf.startswith("chunks/") and leaf[7:].isascii() and leaf[7:].isdigit():
                    self._take_chunk(int(leaf[7:]), payload)
                else:
                    log.debug("ignoring message on %s", topic)
                    return
                if self.download.complete:
                    self._finish()
                    finished = True
                else:
                    self._request(force=False)
            except DeliveryError as e:
                self._error = e
                self.done.set()
                finished = True
        if self._error is not None and finished:
            log.error("download of bundle %s failed: %s", self.download.sha256[:12], self._error)
        if finished:
            self._announce_done()

    def _take_meta(self, payload: bytes) -> None:
        try:
            self.download.on_meta(payload)
        except ChunkIntegrityError as e:
            log.warning("refusing meta of bundle %s: %s", self.download.sha256[:12], e)
            self.stats.refused += 1
            return
        self.stats.metas += 1

    def _take_chunk(self, index: int, data: bytes) -> None:
        try:
            stored = self.download.on_chunk(index, data)
        except ChunkIntegrityError as e:
            log.warning("refusing a chunk: %s; it will be asked for again", e)
            self.stats.refused += 1
            return
        if stored:
            self.stats.chunks_stored += 1
        else:
            self.stats.duplicates += 1

    # --- both threads, with self._lock held ---------------------------------------

    def _request(self, *, force: bool) -> None:
        if not self._subscribed or self.done.is_set() or not self.link.connected.is_set():
            return
        request = self.download.next_request(time.monotonic(), force=force)
        if request is None:
            return
        self.link.publish(self._request_topic, request.encode(), qos=1)
        self.stats.requests += 1
        if self.stats.first_request_at is None:
            self.stats.first_request_at = time.monotonic()
        log.debug("asked for %s of bundle %s", request.want, self.download.sha256[:12])

    def _finish(self) -> None:
        try:
            self._path = self.download.finish()
            self.stats.completed_at = time.monotonic()
        except DeliveryError as e:
            self._error = e
        self.done.set()

    def _announce_done(self) -> None:
        """Unsubscribe and tell the caller; runs without ``self._lock``."""
        self._stop.set()
        self.link.unsubscribe(self._topic_filter)
        self.link.remove_connect_listener(self._on_connect)
        if self._path is not None:
            log.info(
                "bundle %s received in %s after %d requests",
                self.download.sha256[:12],
                self._path,
                self.stats.requests,
            )
        if self._on_done is not None:
            self._on_done(self)

    # --- timer thread ------------------------------------------------------------

    def _tick(self) -> None:
        while not self._stop.wait(self._tick_s):
            with self._lock:
                if self.done.is_set():
                    return
                self._request(force=False)
