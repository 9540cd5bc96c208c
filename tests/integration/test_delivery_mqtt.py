"""Bundle delivery over real brokers: shared broadcast, broker restart, tampering, many devices, amqtt."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.chunk_download import CHUNK_SIZE, ChunkDownload
from edge_runtime.chunk_fetch import BundleFetcher
from edge_runtime.config import MqttConfig
from edge_runtime.mqtt_link import MqttLink
from edgefleet.testing.broker import LocalBroker
from fleet_server.chunk_server import ChunkServer, CorruptChunkOnce

pytestmark = pytest.mark.broker

BUNDLE_SIZE = 2_600_000  # 2.6 MB: 10 chunks of 256 KiB


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[str, Path, bytes]:
    data = os.urandom(BUNDLE_SIZE)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "server" / f"{sha}.efb"
    path.parent.mkdir()
    path.write_bytes(data)
    return sha, path, data


def chunks_of(length: int) -> int:
    return -(-length // CHUNK_SIZE)


# --- a server and devices on a broker ------------------------------------------------------


@dataclass
class Fleet:
    port: int
    folder: Path
    client: mqtt.Client | None = None
    server: ChunkServer | None = None
    links: list[MqttLink] = field(default_factory=list)
    fetchers: list[BundleFetcher] = field(default_factory=list)

    def start_server(self, bundles: dict[str, Path], **options: Any) -> ChunkServer:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="edgefleet-server-test",
            protocol=mqtt.MQTTv311,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        connected = threading.Event()
        client.on_connect = lambda *_args: connected.set()
        client.connect_async("127.0.0.1", self.port)
        client.loop_start()
        assert connected.wait(10)
        self.client = client
        self.server = ChunkServer(client, bundles, **options)
        self.server.start()
        return self.server

    def device(self, name: str, sha: str, length: int, **options: Any) -> BundleFetcher:
        link = MqttLink(MqttConfig(host="127.0.0.1", port=self.port), name)
        link.start()
        assert link.wait_connected(10)
        self.links.append(link)
        download = ChunkDownload(self.folder / name, sha, length, **options)
        fetcher = BundleFetcher(link, download)
        self.fetchers.append(fetcher)
        return fetcher

    def close(self) -> None:
        for fetcher in self.fetchers:
            fetcher.stop()
            fetcher.download.close()
        for link in self.links:
            link.stop()
        if self.server is not None:
            self.server.stop()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


@pytest.fixture
def fleet_on(tmp_path: Path) -> Iterator[Any]:
    fleets: list[Fleet] = []

    def make(port: int) -> Fleet:
        fleet = Fleet(port, tmp_path / "devices")
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


def publish_as_rogue(fleet: Fleet, payloads: list[bytes]) -> None:
    """Publish each payload on a device's download topic, as any client of the broker can."""
    assert fleet.client is not None
    for payload in payloads:
        fleet.client.publish("edgefleet/devices/rogue/download", payload, qos=1).wait_for_publish(5)


def received(fetcher: BundleFetcher, timeout: float) -> bytes:
    path = fetcher.wait(timeout)
    assert path is not None, f"{fetcher.link.device_id}: {fetcher.download.missing} chunks missing"
    return path.read_bytes()


# --- tests --------------------------------------------------------------------------------


def test_one_device_delivery_time_over_loopback_mosquitto(
    mosquitto: int,
    fleet_on: Any,
    bundle: tuple[str, Path, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sha, path, data = bundle
    fleet = fleet_on(mosquitto)
    fleet.start_server({sha: path})
    fetcher = fleet.device("cam-time", sha, len(data))
    fetcher.start()
    assert received(fetcher, 20) == data
    elapsed = fetcher.stats.elapsed_s
    assert elapsed is not None
    with capsys.disabled():
        print(
            f"\n[delivery] {len(data) / 1e6:.1f} MB ({chunks_of(len(data))} chunks) over loopback"
            f" Mosquitto: {elapsed * 1000:.0f} ms from first request to complete file"
            f" ({len(data) / elapsed / 1e6:.0f} MB/s, {fetcher.stats.requests} requests)"
        )


def test_three_devices_share_one_broadcast(
    mosquitto: int, fleet_on: Any, bundle: tuple[str, Path, bytes]
) -> None:
    sha, path, data = bundle
    fleet = fleet_on(mosquitto)
    server = fleet.start_server({sha: path})
    fetchers = [fleet.device(f"cam-{i}", sha, len(data)) for i in range(3)]
    for fetcher in fetchers:
        fetcher.start()
    for fetcher in fetchers:
        assert received(fetcher, 20) == data
    stats = server.stats()
    n = chunks_of(len(data))
    per_bundle = stats.bundles[sha]
    assert per_bundle.devices == {"cam-0", "cam-1", "cam-2"}
    assert n <= per_bundle.chunks_published < 2 * n  # one broadcast, not one per device
    assert stats.malformed == 0


def test_download_resumes_after_a_broker_restart(
    mosquitto_broker: LocalBroker, fleet_on: Any, bundle: tuple[str, Path, bytes]
) -> None:
    sha, path, data = bundle

    class Throttle:
        """Slows publishing so that the broker can be killed mid-download."""

        def chunk_payload(self, _sha: str, _index: int, payload: bytes) -> bytes:
            time.sleep(0.08)
            return payload

    fleet = fleet_on(mosquitto_broker.port)
    fleet.start_server({sha: path}, fault=Throttle())
    fetcher = fleet.device("cam-r", sha, len(data), window_timeout=1.0)
    fetcher.start()
    deadline = time.monotonic() + 10
    while fetcher.download.have < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    have_before = fetcher.download.have
    assert 3 <= have_before < chunks_of(len(data))

    mosquitto_broker.stop()  # the kit's Mosquitto comes back on the same port
    assert not fetcher.done.wait(0.3)
    mosquitto_broker.start()

    assert received(fetcher, 20) == data
    assert fetcher.stats.subscribed >= 2  # subscribed again after the reconnect, and asked again
    assert fetcher.stats.chunks_stored == chunks_of(len(data))


def test_tampered_chunk_is_refused_and_fetched_again(
    mosquitto: int, fleet_on: Any, bundle: tuple[str, Path, bytes]
) -> None:
    sha, path, data = bundle
    fleet = fleet_on(mosquitto)
    corrupt = CorruptChunkOnce(index=3)
    server = fleet.start_server({sha: path}, fault=corrupt)
    fetcher = fleet.device("cam-t", sha, len(data))
    fetcher.start()
    assert received(fetcher, 20) == data
    assert corrupt.fired
    assert fetcher.stats.refused == 1
    assert fetcher.download.refused == 1
    assert fetcher.download.timeouts == 0  # asked again as soon as the window settled
    assert server.stats().bundles[sha].chunks_published == chunks_of(len(data)) + 1


def test_ten_devices_on_default_broker_limits_lose_nothing(
    mosquitto: int, fleet_on: Any, tmp_path: Path
) -> None:
    data = os.urandom(40 * CHUNK_SIZE + 1234)  # 41 chunks: three windows each
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "big.efb"
    path.write_bytes(data)
    fleet = fleet_on(mosquitto)
    server = fleet.start_server({sha: path})
    fetchers = [fleet.device(f"cam-{i:02d}", sha, len(data)) for i in range(10)]
    for fetcher in fetchers:
        fetcher.start()
    for fetcher in fetchers:
        assert received(fetcher, 30) == data
    # a lost chunk would show as a window asked again after its timeout
    assert [f.download.timeouts for f in fetchers] == [0] * 10
    assert sum(f.stats.refused for f in fetchers) == 0
    stats = server.stats()
    assert stats.malformed == 0
    assert stats.bundles[sha].chunks_published < 10 * chunks_of(len(data))


def test_malformed_requests_are_counted_and_the_server_keeps_serving(
    mosquitto: int, fleet_on: Any, bundle: tuple[str, Path, bytes]
) -> None:
    sha, path, data = bundle
    fleet = fleet_on(mosquitto)
    server = fleet.start_server({sha: path})
    bad = [
        b"{",
        b'{"bundle": "' + sha.encode() + b'", "want": [[0, 99]]}',
        b'{"bundle": "' + b"0" * 64 + b'", "want": [[0, 1]]}',
        b'{"bundle": "' + sha.encode() + b'", "want": "all"}',
    ]
    publish_as_rogue(fleet, bad)
    fetcher = fleet.device("cam-m", sha, len(data))
    fetcher.start()
    assert received(fetcher, 20) == data
    deadline = time.monotonic() + 5
    while server.stats().malformed < len(bad) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats().malformed == len(bad)


def test_delivery_over_the_embedded_amqtt_broker(
    amqtt_broker: int, fleet_on: Any, bundle: tuple[str, Path, bytes]
) -> None:
    sha, path, data = bundle
    fleet = fleet_on(amqtt_broker)
    fleet.start_server({sha: path})
    fetchers = [fleet.device(f"cam-a{i}", sha, len(data), window_timeout=2.0) for i in range(2)]
    for fetcher in fetchers:
        fetcher.start()
    for fetcher in fetchers:
        assert received(fetcher, 30) == data


# --- hostile requests (issue #15, items 1 and 2) --------------------------------------------


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt_broker"])
def test_one_hostile_request_never_stops_delivery_for_the_fleet(
    broker: str,
    request: pytest.FixtureRequest,
    fleet_on: Any,
    bundle: tuple[str, Path, bytes],
) -> None:
    """Deep nesting (RecursionError in json) and oversized payloads are refused; delivery goes on."""
    sha, path, data = bundle
    fleet = fleet_on(request.getfixturevalue(broker))
    server = fleet.start_server({sha: path})
    hostile = [
        b"[" * 2000 + b"]" * 2000,  # 4 KB that json cannot parse without recursing 2000 deep
        b'{"want": ' + b"[" * 1500 + b"]" * 1500 + b"}",
        b"[" * 500_000,  # half a megabyte
    ]
    publish_as_rogue(fleet, hostile)
    deadline = time.monotonic() + 10
    while server.stats().malformed < len(hostile) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats().malformed == len(hostile)
    health = server.health()
    assert health.alive and health.restarts == 0 and server.stats().errors == 0
    fetcher = fleet.device("cam-after", sha, len(data), window_timeout=2.0)
    fetcher.start()
    assert received(fetcher, 30) == data


def test_a_huge_chunk_range_is_refused_without_allocating_it(
    mosquitto: int, fleet_on: Any, bundle: tuple[str, Path, bytes]
) -> None:
    """About a hundred bytes asking for 2**31 chunks: counted, never materialised."""
    import tracemalloc

    sha, path, data = bundle
    fleet = fleet_on(mosquitto)
    server = fleet.start_server({sha: path})
    payload = b'{"bundle": "' + sha.encode() + b'", "want": [[0, 2147483647]], "have": 0}'
    assert len(payload) < 128
    tracemalloc.start()
    try:
        publish_as_rogue(fleet, [payload])
        deadline = time.monotonic() + 10
        while server.stats().malformed < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.stats().malformed == 1
    assert peak < 4 * 2**20, f"refusing the request allocated {peak / 2**20:.0f} MiB"
    fetcher = fleet.device("cam-ok", sha, len(data))
    fetcher.start()
    assert received(fetcher, 20) == data
