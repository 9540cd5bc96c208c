"""The fuzzing harness for the fleet's wire (issue #15): generated payloads on every topic.

Hypothesis drives, through a real broker, every topic the fleet server
subscribes to (device state, events, telemetry, availability, download
requests) and every topic a device subscribes to (TUF metadata, bundle meta
and chunks) with valid-shaped and hostile payloads. After each burst the
harness asserts that no worker thread died, that a legitimate message sent
after the burst is still handled, and at the end that memory stayed bounded,
that the database reads back consistently and that a real update still
reaches the device.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.testing import RunningDevice
from edgefleet.testing.fleet import LocalFleet
from fleet_server.process import connect_client
from fleet_server.registry import Registry
from fleet_server.server import FleetServer
from tests.integration.test_updates import device_config, make_fleet
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = pytest.mark.broker

SHA = "ab" * 32
DEVICES = ["cam-01", "cam-02", "ghost", "edgefleet-server", "x" * 64]
HOSTILE = [
    b"",
    b"[" * 5000,
    b'{"a":' * 3000,
    b"\xff\xfe\x00garbage",
    b"null",
    b'{"protocol": 1e999}',
    b'{"state": "idle", "updated_at": 1e308, "sequence": 1e30}',
    b"x" * 70_000,
]
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def _shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """Valid-looking reports: the real field names with generated (often wrong) values."""
    return st.fixed_dictionaries({}, optional=fields).map(_json_bytes)


STATE = _shaped(
    {
        "protocol": st.sampled_from([1, 2, "1"]),
        "state": st.sampled_from(["idle", "committed", "downloading", "napping"]) | _JSON,
        "active": st.fixed_dictionaries({"bundle": st.sampled_from([SHA, "zz"])}) | _JSON,
        "updated_at": st.floats(allow_nan=True, allow_infinity=True) | _JSON,
        "sequence": st.integers(min_value=-5, max_value=2**70) | _JSON,
        "epoch": st.text(max_size=40),
    }
)
EVENT = _shaped(
    {
        "kind": st.sampled_from(["transition", "refused", "other"]),
        "bundle": st.just(SHA) | _JSON,
        "assignment": st.integers(min_value=-1, max_value=2**70),
        "from": st.sampled_from(["idle", "downloading"]),
        "to": st.sampled_from(["rolled-back", "committed", "bogus"]),
        "reason": st.text(max_size=200),
        "at": st.floats(allow_nan=True, allow_infinity=True),
    }
)
DOWNLOAD = _shaped(
    {
        "protocol": st.just(1),
        "bundle": st.just(SHA) | st.text(max_size=70),
        "want": st.lists(
            st.lists(st.integers(min_value=-5, max_value=2**40), max_size=3), max_size=20
        )
        | _JSON,
        "have": st.integers(min_value=-1, max_value=2**40) | _JSON,
    }
)
PAYLOADS = st.one_of(
    STATE,
    EVENT,
    DOWNLOAD,
    _JSON.map(_json_bytes),
    st.binary(max_size=300),
    st.sampled_from(HOSTILE),
)
SERVER_MESSAGES = st.lists(
    st.tuples(
        st.sampled_from(DEVICES),
        st.sampled_from(["state", "events", "telemetry", "availability", "download", "nope"]),
        PAYLOADS,
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@dataclass
class ServerUnderFire:
    server: FleetServer
    registry: Registry
    client: mqtt.Client
    attacker: mqtt.Client
    bundle_sha: str
    sent: int = 0


@pytest.fixture
def server_under_fire(tmp_path: Path, amqtt_broker: int) -> Iterator[ServerUnderFire]:
    bundle = make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True)
    with LocalFleet(tmp_path / "fleet", amqtt_broker, tick_s=0.1, client_id="fuzz-server") as fleet:
        fleet.release("v1", tmp_path / "v1.efb")
        fleet.provision("sentinel")
        fleet.start()
        assert fleet.server is not None and fleet.registry is not None
        assert fleet.client is not None
        attacker = connect_client("127.0.0.1", amqtt_broker, client_id="fuzz-attacker")
        try:
            yield ServerUnderFire(
                fleet.server, fleet.registry, fleet.client, attacker, bundle.sha256
            )
        finally:
            attacker.loop_stop()
            attacker.disconnect()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(burst=SERVER_MESSAGES)
def test_generated_device_messages_never_stop_the_server(
    server_under_fire: ServerUnderFire, burst: list[tuple[str, str, bytes, bool]]
) -> None:
    fire = server_under_fire
    for device_id, leaf, payload, retain in burst:
        fire.attacker.publish(
            f"edgefleet/devices/{device_id}/{leaf}", payload, qos=1, retain=retain
        )
    # a legitimate report and download request after the burst are still handled
    fire.sent += 1
    marker = f"s{fire.sent}"
    state = {"protocol": 1, "state": "idle", "runtime_version": marker, "updated_at": time.time()}
    fire.attacker.publish("edgefleet/devices/sentinel/state", json.dumps(state), qos=1)
    served = fire.server.chunks.stats().bundles.get(fire.bundle_sha)
    before = 0 if served is None else served.requests
    request = {"protocol": 1, "bundle": fire.bundle_sha, "want": [[0, 1]], "have": 0}
    fire.attacker.publish("edgefleet/devices/sentinel/download", json.dumps(request), qos=1)
    _wait(lambda: fire.registry.device("sentinel").runtime_version == marker)
    _wait(lambda: fire.server.chunks.stats().bundles[fire.bundle_sha].requests > before)
    health = fire.server.health()
    assert all(w.alive and w.restarts == 0 for w in health.values()), health
    assert fire.server.chunks.stats().errors == 0


def test_after_the_fuzzing_the_database_reads_back_and_memory_is_bounded(
    server_under_fire: ServerUnderFire,
) -> None:
    fire = server_under_fire
    start = _peak_rss_mb()
    for i in range(300):  # the heaviest hostile payloads, many times over
        payload = HOSTILE[i % len(HOSTILE)]
        leaf = ["state", "events", "telemetry", "download"][i % 4]
        fire.attacker.publish(f"edgefleet/devices/cam-{i % 7}/{leaf}", payload, qos=1)
    marker = "after-the-flood"
    state = {"protocol": 1, "state": "idle", "runtime_version": marker, "updated_at": time.time()}
    fire.attacker.publish("edgefleet/devices/sentinel/state", json.dumps(state), qos=1)
    _wait(lambda: fire.registry.device("sentinel").runtime_version == marker, timeout=30)
    assert _peak_rss_mb() - start < 150, "the flood grew the server's memory"
    devices = fire.registry.devices()
    assert "edgefleet-server" not in {d.id for d in devices}
    for device in devices:
        fire.registry.timeline(device_id=device.id, limit=10)
        fire.registry.telemetry(device.id, limit=10)
    assert all(w.alive for w in fire.server.health().values())


# --- the device side ----------------------------------------------------------------------

DEVICE_TOPICS = st.sampled_from(
    [
        "tuf/root/2",
        "tuf/root/1",
        "tuf/timestamp",
        "tuf/snapshot",
        "tuf/targets",
        "tuf/assignments",
        "tuf/bins/assignments-bin-00",
        "tuf/unknown",
        f"bundles/{SHA}/meta",
        f"bundles/{SHA}/chunks/0",
    ]
)


def test_generated_metadata_and_chunks_never_stop_a_device(
    tmp_path: Path, amqtt_broker: int
) -> None:
    """Hostile retained metadata and chunks: the device keeps classifying, then still updates."""
    with make_fleet(tmp_path, amqtt_broker) as fleet:
        device = RunningDevice(device_config(fleet, tmp_path))
        try:
            device.wait_for(
                lambda: device.runtime.mqtt is not None and device.runtime.mqtt.connected.is_set()
            )
            legit = fleet.repo.published()

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
            @given(burst=st.lists(st.tuples(DEVICE_TOPICS, PAYLOADS), min_size=1, max_size=8))
            def fire(burst: list[tuple[str, bytes]]) -> None:
                for topic, payload in burst:
                    fleet.client.publish(f"edgefleet/{topic}", payload, qos=1, retain=True)
                frames = device.runtime.health.evaluate().details["frames_received"]
                device.wait_for(
                    lambda: device.runtime.health.evaluate().details["frames_received"] > frames + 3
                )
                report = device.runtime.health.evaluate()
                assert report.healthy, report.reasons

            fire()
            # the operator's metadata comes back (retained junk replaced) and an update works
            for suffix, payload in legit.items():
                fleet.client.publish(f"edgefleet/tuf/{suffix}", payload, qos=1, retain=True)
            fleet.client.publish("edgefleet/tuf/unknown", b"", qos=1, retain=True)
            fleet.assign(fleet.bundles["v2"], "cam-1")
            device.wait_for(
                lambda: (
                    device.agent.state.active is not None
                    and device.agent.state.active.sha256 == fleet.bundles["v2"].sha256
                ),
                timeout=60,
            )
        finally:
            device.close()
