"""Two `edgefleet serve` replicas on one PostgreSQL and one Mosquitto: the leader is SIGKILLed
mid-wave, the other takes over, and the rollout completes with nothing lost or applied twice.

Issue #17: devices' reports are split between the replicas by MQTT shared subscriptions;
only the holder of the ``rollouts`` lease drives the planner, signs assignments and publishes
TUF metadata, and every write it makes is fenced by the lease's epoch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from edgefleet.fleet_sim import SimFleet
from edgefleet.testing.broker import LocalBroker, free_port
from fleet_server.registry import Registry
from fleet_server.trust import Expiry, Repository, init_keys
from tests.e2e.test_cli_serve import EDGEFLEET, ENV, wait_healthy
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICES = 60
CANARY = 10
LEASE_TTL_S = 5.0
COMMIT_PAUSE_S = 0.15
"""Each simulated commit holds one of the 2 workers this long: the second wave takes seconds."""
_NO_GATE = {
    "max_latency_ratio": None,
    "max_budget_ratio": None,
    "max_error_rate": None,
    "max_confidence_drop": None,
    "max_baseline_confidence_drop": None,
    "max_class_shift": None,
    "max_baseline_class_shift": None,
}
_TRANSITIONS = (
    7  # idle -> downloading -> verifying -> staged -> smoke -> activating -> probation -> committed
)


def _call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": "Bearer e2e-token", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        exc.add_note(f"{method} {url}: {exc.code} {exc.read().decode(errors='replace')[:500]}")
        raise


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:.0f} s")


@pytest.fixture
def replicas(
    tmp_path: Path, mosquitto_broker: LocalBroker, postgres_url: str
) -> Iterator[dict[str, Any]]:
    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys, Expiry())
    bundle = make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True)
    repo.release(tmp_path / "v1.efb", keys.role("targets"))
    for offline in ("root", "targets"):
        for path in (tmp_path / "keys").glob(f"{offline}-*.pem"):
            path.unlink()
    broker = f"mqtt://127.0.0.1:{mosquitto_broker.port}"
    processes: dict[str, subprocess.Popen[str]] = {}  # logs in replica-<name>.log
    urls: dict[str, str] = {}
    logs: list[IO[str]] = []
    for name in ("a", "b"):  # one after the other: the first creates the schema
        port = free_port()
        urls[name] = f"http://127.0.0.1:{port}"
        log = (tmp_path / f"replica-{name}.log").open("w")  # a file: a full pipe would block it
        logs.append(log)
        processes[name] = subprocess.Popen(
            [
                *EDGEFLEET,
                "--log-level",
                "info",
                "serve",
                "--state",
                str(tmp_path / "state"),
                "--repo",
                str(tmp_path / "repo"),
                "--keys",
                str(tmp_path / "keys"),
                "--http-port",
                str(port),
                "--broker",
                broker,
                "--db",
                postgres_url,
                "--replica-id",
                name,
                "--shared-subscriptions",
                "edgefleet",
                "--lease-ttl",
                str(LEASE_TTL_S),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
        try:
            wait_healthy(urls[name], processes[name])
        except AssertionError:
            text = (tmp_path / f"replica-{name}.log").read_text()
            raise AssertionError(f"replica {name} did not start:\n{text[-3000:]}") from None
    registry = Registry.open(postgres_url)
    try:
        yield {
            "bundle": bundle,
            "repo": repo,
            "urls": urls,
            "processes": processes,
            "registry": registry,
            "broker_port": mosquitto_broker.port,
            "folder": tmp_path,
        }
    finally:
        registry.close()
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def test_the_leader_killed_mid_wave_is_replaced_and_nothing_is_lost_or_doubled(
    replicas: dict[str, Any],
) -> None:
    registry: Registry = replicas["registry"]
    urls, processes = replicas["urls"], replicas["processes"]
    lease = registry.lease("rollouts")
    assert lease is not None and lease.holder in {"a", "b"}

    names = [f"cam-{i:02d}" for i in range(DEVICES)]
    for i, name in enumerate(names):  # provisioning works on any replica
        _call(urls["ab"[i % 2]] + "/devices", "POST", {"id": name, "tags": ["line1"]})
    bundle = replicas["bundle"]
    _call(urls["b"] + "/bundles/import", "POST", {"path": str(replicas["folder"] / "v1.efb")})
    sim = SimFleet(
        "127.0.0.1",
        replicas["broker_port"],
        replicas["folder"] / "sim",
        replicas["repo"].root_bytes(),
        workers=2,
        on_commit=lambda _device: time.sleep(COMMIT_PAUSE_S),  # the kill lands mid-wave
    )
    sim.add(names, groups=("line1",))
    sim.start(timeout=120)
    try:
        waves = [
            {"count": CANARY, "health_window_s": 0, "gate": _NO_GATE, "device_timeout_s": 300},
            {"percent": 100, "health_window_s": 0, "gate": _NO_GATE, "device_timeout_s": 300},
        ]
        request = {"bundle_sha256": bundle.sha256, "target": {"kind": "tags", "values": ["line1"]}}
        held = registry.lease("rollouts")
        assert held is not None
        leader, follower = held.holder, "b" if held.holder == "a" else "a"
        with pytest.raises(urllib.error.HTTPError) as refused:  # rollout changes go to the leader
            _call(urls[follower] + "/rollouts", "POST", {**request, "waves": waves})
        assert refused.value.code == 503
        assert f"{leader} does: send rollout changes there" in str(refused.value.__notes__)
        rollout_id = _call(urls[leader] + "/rollouts", "POST", {**request, "waves": waves})["id"]

        def committed() -> int:
            return sum(d.status == "committed" for d in registry.wave_devices(rollout_id))

        def dump() -> None:  # what the replicas and the devices saw, when a wait fails
            for item in registry.timeline(rollout_id=rollout_id, limit=40):
                print("TL", item.kind, item.device_id, item.message[:160])
            print("STATUS", Counter(d.status for d in registry.wave_devices(rollout_id)))
            stuck = [
                d.device_id for d in registry.wave_devices(rollout_id) if d.status != "committed"
            ]
            for device in registry.devices_by_id(stuck):
                print("STORED", device.id, device.phase, device.active_bundle, device.target_bundle)
            print("ERRORS", {d.device_id: d.errors for d in sim.devices if d.errors})
            print("PHASES", Counter(d.state.phase.value for d in sim.devices))
            for name in processes:
                text = (replicas["folder"] / f"replica-{name}.log").read_text()
                print("LOG", name, text[-8000:])

        try:
            _wait(lambda: committed() >= CANARY + 5, 120, "the second wave under way")
        except AssertionError:
            dump()
            raise
        processes[leader].send_signal(signal.SIGKILL)  # mid-wave, no chance to release
        processes[leader].wait(timeout=10)
        killed_at = time.monotonic()
        at_kill = committed()
        assert at_kill < DEVICES, "the wave finished before the leader was killed"

        def taken_over() -> bool:
            held = registry.lease("rollouts")
            return held is not None and held.holder == follower

        took = _wait(taken_over, 10, "the surviving replica takes over the lead")
        try:
            _wait(lambda: committed() == DEVICES, 180, "every device committed after the takeover")
        except AssertionError:
            dump()
            raise

        def completed() -> bool:  # the planner closes the rollout on its next tick
            return bool(_call(urls[follower] + f"/rollouts/{rollout_id}")["status"] == "completed")

        _wait(completed, 30, "the rollout completed")
        finished = _call(urls[follower] + f"/rollouts/{rollout_id}")
        assert finished["counts"] == {"committed": DEVICES}
    finally:
        sim.stop()

    held = registry.lease("rollouts")
    assert held is not None and held.holder == follower
    assert time.monotonic() - killed_at >= took
    # every device ran the bundle and never refused metadata (no TUF version went back)
    active = {d.device_id: d.state.active.sha256 if d.state.active else None for d in sim.devices}
    assert active == dict.fromkeys(names, bundle.sha256)
    assert {d.device_id: d.errors for d in sim.devices if d.errors} == {}

    # no report lost or applied twice: each transition once, each outcome once
    def events() -> Counter[str]:
        return Counter(
            item.device_id
            for item in registry.timeline(limit=10_000)
            if item.kind == "device-event" and item.device_id is not None
        )

    # the events the killed leader took with it come back with the new leader's sweep of the
    # devices' retained states (`recent`), which may finish after the rollout did
    try:
        _wait(lambda: events() == dict.fromkeys(names, _TRANSITIONS), 30, "every event stored")
    except AssertionError:
        assert events() == dict.fromkeys(names, _TRANSITIONS)  # the difference, shown
        raise
    outcomes = Counter(
        item.device_id
        for item in registry.timeline(rollout_id=rollout_id, limit=10_000)
        if item.kind == "device-status" and (item.data or {}).get("to") == "committed"
    )
    assert outcomes == dict.fromkeys(names, 1)
    print(f"takeover {took:.1f} s after SIGKILL; {at_kill} of {DEVICES} committed at the kill")
