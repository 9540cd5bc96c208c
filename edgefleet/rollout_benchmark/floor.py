"""The transport's own floor: the bundle's bytes fanned out to N plain MQTT subscribers, timed.

What a rollout to N devices cannot beat on the same machine: the same bundle
file, cut exactly as the server cuts it (:data:`~edge_runtime.protocol.CHUNK_SIZE`),
published once, QoS 1, through the same broker with the same limits, with at
most :data:`~edge_runtime.protocol.WINDOW` publishes waiting for the broker's
PUBACK (the chunk server's flow control), to N subscribers that each hold one
paho connection (MQTT 3.1.1, clean session, QoS 1 subscription), laid out as
the simulated fleet is (:data:`~edgefleet.fleet_sim.DEVICES_PER_PROCESS` per
process, one network thread per connection). No TUF, no update lifecycle, no
requests, no per-chunk hashing, no files: a subscriber only checks that it
holds every chunk at its exact length.

The clock runs from the first publish until the last subscriber holds every
byte. A subscriber that misses a chunk (a broker dropping past its queue
limit) never completes; the floor then says how many did, and has no time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.protocol import CHUNK_SIZE, WINDOW
from edgefleet.fleet_sim import DEVICES_PER_PROCESS
from edgefleet.rollout_benchmark.options import FleetBenchError

__all__ = ["FLOOR_PREFIX", "FloorResult", "measure_floor"]

FLOOR_PREFIX = "edgefleet-floor"
"""Topic prefix of the floor's messages, apart from the fleet's (the same depth and length)."""
_CONNECT_BATCH = 50
"""Subscribers connected at a time, as the simulated fleet connects its devices."""
_STALL_S = 30.0
"""The floor gives up when no subscriber completes for this long."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FloorResult:
    """One measurement of the transport floor."""

    when: str
    """``before`` or ``after`` the rollout."""
    subscribers: int
    chunks: int
    bundle_bytes: int
    seconds: float | None
    """First publish -> every subscriber holds every byte; None when some never did."""
    complete: int
    """Subscribers that received every chunk."""
    subscriber_s: dict[str, float]
    """p50 / p90 / max of each subscriber's own completion time (s after the first publish)."""
    duplicates: int = 0
    connect_s: float = 0.0
    """How long connecting and subscribing the subscribers took (not in ``seconds``)."""
    error: str | None = None
    window: tuple[float, float] = (0.0, 0.0)
    """Monotonic start and end of the timed fan-out, for the process samplers."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON report's form."""
        return {
            "when": self.when,
            "subscribers": self.subscribers,
            "chunks": self.chunks,
            "bundle_bytes": self.bundle_bytes,
            "wall_s": None if self.seconds is None else round(self.seconds, 4),
            "complete": self.complete,
            "subscriber_s": self.subscriber_s,
            "duplicates": self.duplicates,
            "connect_s": round(self.connect_s, 1),
            "error": self.error,
        }


@dataclass(frozen=True)
class _Spec:
    host: str
    port: int
    topic_filter: str
    ids: list[str]
    chunk_lengths: list[int]


@dataclass
class _Subscriber:
    client: mqtt.Client
    missing: int
    got: bytearray
    subscribed: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)


def _subscriber_process(conn: Connection, spec: _Spec) -> None:
    """Child process: ``spec.ids`` subscribers; reports to the parent over ``conn``.

    Sends ``("connected", n)`` while connecting, ``("ready", n)`` once every
    subscription is acknowledged, ``("done", id, time.time())`` as each
    subscriber completes; on ``"stop"``: ``("stopped", incomplete, duplicates)``.
    """
    send_lock = threading.Lock()
    count_lock = threading.Lock()
    duplicates = [0]

    def send(*message: Any) -> None:
        with send_lock:
            conn.send(message)

    subscribers: list[_Subscriber] = []
    lengths = spec.chunk_lengths
    for subscriber_id in spec.ids:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{FLOOR_PREFIX}-{subscriber_id}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        sub = _Subscriber(client, len(lengths), bytearray(len(lengths)))
        _hook(
            sub,
            subscriber_id,
            topic_filter=spec.topic_filter,
            lengths=lengths,
            send=send,
            duplicates=duplicates,
            count_lock=count_lock,
        )
        subscribers.append(sub)
    try:
        started = 0
        while True:
            connected = sum(s.subscribed.is_set() for s in subscribers)
            send("connected", connected)
            if connected == len(subscribers):
                break
            if started < len(subscribers) and connected >= started:
                for sub in subscribers[started : started + _CONNECT_BATCH]:
                    sub.client.connect_async(spec.host, spec.port, keepalive=60)
                    sub.client.loop_start()
                started += _CONNECT_BATCH
            time.sleep(0.05)
        send("ready", len(subscribers))
        while conn.recv() != "stop":
            pass
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        for sub in subscribers:
            sub.client.disconnect()
        for sub in subscribers:
            sub.client.loop_stop()
        with contextlib.suppress(OSError):
            send("stopped", sum(1 for s in subscribers if s.missing), duplicates[0])


def _hook(
    sub: _Subscriber,
    subscriber_id: str,
    *,
    topic_filter: str,
    lengths: list[int],
    send: Callable[..., None],
    duplicates: list[int],
    count_lock: threading.Lock,
) -> None:
    """Set ``sub``'s paho callbacks (they run on its network thread)."""

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            sub.connected.set()
            client.subscribe(topic_filter, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        if reasons and not reasons[0].is_failure:
            sub.subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        leaf = message.topic.rpartition("/")[2]
        index = int(leaf) if leaf.isdigit() else -1
        if not 0 <= index < len(lengths) or len(message.payload) != lengths[index]:
            return
        if sub.got[index]:
            with count_lock:
                duplicates[0] += 1
            return
        sub.got[index] = 1
        sub.missing -= 1
        if sub.missing == 0:
            send("done", subscriber_id, time.time())

    sub.client.on_connect = on_connect
    sub.client.on_subscribe = on_subscribe
    sub.client.on_message = on_message


class _Subscribers:
    """The subscriber processes and the thread that reads what they say."""

    def __init__(self, spec: _Spec) -> None:
        context = multiprocessing.get_context("spawn")
        self.total = len(spec.ids)
        self.done: dict[str, float] = {}
        self.incomplete = 0
        self.duplicates = 0
        self._connected: dict[int, int] = {}
        self._ready = 0
        self._lock = threading.Lock()
        self._children: list[tuple[Any, Any]] = []
        for index in range(0, self.total, DEVICES_PER_PROCESS):
            parent, child = context.Pipe()
            part = _Spec(
                spec.host,
                spec.port,
                spec.topic_filter,
                spec.ids[index : index + DEVICES_PER_PROCESS],
                spec.chunk_lengths,
            )
            process = context.Process(
                target=_subscriber_process,
                args=(child, part),
                name=f"floor-{index // DEVICES_PER_PROCESS}",
                daemon=True,
            )
            self._children.append((process, parent))
        self._reader = threading.Thread(target=self._read, name="floor-reader", daemon=True)

    def start(self, progress: Callable[[int], None], timeout: float) -> None:
        for process, _ in self._children:
            process.start()
        self._reader.start()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ready, connected = self._ready, sum(self._connected.values())
            progress(connected)
            if ready == len(self._children):
                return
            if time.monotonic() > deadline or not any(p.is_alive() for p, _ in self._children):
                raise FleetBenchError(
                    f"only {connected} of {self.total} floor subscribers subscribed"
                    f" within {timeout:.0f} s"
                )
            time.sleep(0.1)

    def completed(self) -> int:
        with self._lock:
            return len(self.done)

    def stop(self) -> None:
        for _, conn in self._children:
            with contextlib.suppress(OSError):
                conn.send("stop")
        for process, _ in self._children:
            if process.pid is None:
                continue  # never started
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        if self._reader.is_alive():
            self._reader.join(timeout=5)

    def _read(self) -> None:
        pending: dict[Any, int] = {conn: i for i, (_, conn) in enumerate(self._children)}
        while pending:
            ready: list[Any] = wait(list(pending), timeout=1.0)
            for conn in ready:
                index = pending[conn]
                try:
                    message: tuple[Any, ...] = conn.recv()
                except (EOFError, OSError):
                    pending.pop(conn)
                    continue
                with self._lock:
                    kind = message[0]
                    if kind == "connected":
                        self._connected[index] = message[1]
                    elif kind == "ready":
                        self._connected[index] = message[1]
                        self._ready += 1
                    elif kind == "done":
                        self.done[message[1]] = message[2]
                    elif kind == "stopped":
                        self.incomplete += message[1]
                        self.duplicates += message[2]
                        pending.pop(conn)


class _Publisher:
    """One paho connection that publishes chunks with at most ``window`` awaiting PUBACK."""

    def __init__(self, host: str, port: int, window: int) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{FLOOR_PREFIX}-publisher",
            protocol=mqtt.MQTTv311,
        )
        self._slots = threading.Semaphore(window)
        self._connected = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: (
            None if reason.is_failure else self._connected.set()
        )
        self.client.on_publish = lambda _c, _u, _mid, _r, _p: self._slots.release()
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._connected.wait(15):
            self.close()
            raise FleetBenchError(f"the floor's publisher could not connect to {host}:{port}")

    def publish(self, topic: str, payload: bytes) -> None:
        if not self._slots.acquire(timeout=60):
            raise FleetBenchError(f"the broker acknowledged no chunk for 60 s (before {topic})")
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise FleetBenchError(f"the floor's publisher could not publish {topic}: {info.rc}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def measure_floor(
    host: str,
    port: int,
    bundle_path: Path,
    subscribers: int,
    *,
    when: str,
    timeout_s: float,
    progress: Any = None,
) -> FloorResult:
    """Fan ``bundle_path`` out to ``subscribers`` plain subscribers through ``host:port``; timed.

    ``progress`` is a ``rich.progress.Progress`` (or None): two bars, one
    while subscribers connect and subscribe, one while they fill up.
    """
    data = bundle_path.read_bytes()
    chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    base = f"{FLOOR_PREFIX}/bundles/{when}-{os.getpid()}/chunks"  # this measurement's own topics
    spec = _Spec(
        host,
        port,
        f"{base}/#",
        [f"{i:04d}" for i in range(subscribers)],
        [len(c) for c in chunks],
    )

    def bar(description: str) -> Callable[[int], None]:
        if progress is None:
            return lambda _n: None
        task = progress.add_task(description, total=subscribers)
        return lambda n: progress.update(task, completed=n)

    group = _Subscribers(spec)
    publisher: _Publisher | None = None
    connect_started = time.monotonic()
    try:
        group.start(bar(f"transport floor ({when}): subscribers subscribed"), timeout_s)
        connect_s = time.monotonic() - connect_started
        publisher = _Publisher(host, port, WINDOW)
        filled = bar(f"transport floor ({when}): subscribers with every byte")
        started, wall_start = time.monotonic(), time.time()
        for index, chunk in enumerate(chunks):
            publisher.publish(f"{base}/{index}", chunk)
        error = _wait_complete(group, filled, started + timeout_s)
        finished = time.monotonic()
    finally:
        if publisher is not None:
            publisher.close()
        group.stop()
    times = sorted(at - wall_start for at in group.done.values())
    complete = len(times)
    spread = np.asarray(times) if times else np.asarray([math.nan])
    return FloorResult(
        when=when,
        subscribers=subscribers,
        chunks=len(chunks),
        bundle_bytes=len(data),
        seconds=times[-1] if complete == subscribers else None,
        complete=complete,
        subscriber_s={
            "p50": round(float(np.percentile(spread, 50)), 4),
            "p90": round(float(np.percentile(spread, 90)), 4),
            "max": round(float(np.max(spread)), 4),
        },
        duplicates=group.duplicates,
        connect_s=connect_s,
        error=error,
        window=(started, finished),
    )


def _wait_complete(
    group: _Subscribers, progress: Callable[[int], None], deadline: float
) -> str | None:
    """Until every subscriber holds every byte; why not, if it never happens."""
    last, last_change = -1, time.monotonic()
    while True:
        done = group.completed()
        progress(done)
        now = time.monotonic()
        if done == group.total:
            return None
        if done != last:
            last, last_change = done, now
        if now - last_change > _STALL_S or now > deadline:
            return (
                f"{done} of {group.total} subscribers received every chunk; the others stalled"
                " (a broker dropping messages past its queue limit?)"
            )
        time.sleep(0.02)
