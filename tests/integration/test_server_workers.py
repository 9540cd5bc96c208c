"""The drift monitor and the field-data receiver are workers of the server: /healthz and /metrics
report them, a database that goes away turns them down, and only the leader judges drift.

The outage is real: the fleet server runs on a PostgreSQL database that stops
taking connections (its sessions terminated), then takes them again.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from edge_runtime.protocol.field_data import FieldSample, FieldSampleHeader
from edgefleet.testing import FakeClock, wait_for
from edgefleet.testing.broker import LocalBroker
from edgefleet.testing.fleet import LocalFleet
from fleet_server.drift import DriftThresholds
from fleet_server.drift_monitor import DriftMonitor
from fleet_server.leadership import Leadership
from fleet_server.registry import Registry
from tests.postgres import PostgresServer

TOKEN = "workers-token"


def _get(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text_ = raw.decode()
    return status, json.loads(text_) if text_.startswith("{") else text_


def _sample(number: int) -> bytes:
    """A field sample of cam-1 whose image is ``number`` (the receiver does not decode it)."""
    image = f"frame {number}".encode()
    header = FieldSampleHeader(
        device_id="cam-1",
        sha256=hashlib.sha256(image).hexdigest(),
        image_format="jpeg",
        captured_at=time.time(),
        reason="random",
        label="glass",
        confidence=0.9,
        bundle_sha256="c" * 64,
        bundle_name="tiny",
        bundle_version="1.0.0",
    )
    return FieldSample(header, image).encode()


def _connections(server: PostgresServer, database: str, *, allowed: bool) -> None:
    """Let the database take connections, or refuse them and end every session it has."""
    admin = create_engine(server.admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            flag = "true" if allowed else "false"
            connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {flag}'))
            if not allowed:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                )
    finally:
        admin.dispose()


@pytest.mark.broker
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_database_that_goes_away_turns_the_drift_worker_down_until_it_returns(
    tmp_path: Path, mqtt_broker: LocalBroker, postgres_server: PostgresServer, postgres_url: str
) -> None:
    database = make_url(postgres_url).database
    assert database is not None
    with LocalFleet(tmp_path / "fleet", mqtt_broker.port, db_url=postgres_url) as fleet:
        fleet.provision("cam-1")
        fleet.start()
        url = fleet.serve_http(TOKEN, drift_interval_s=0.1)
        status, health = _get(f"{url}/healthz")
        assert status == 200, health
        assert {"drift-monitor", "field-data"} <= set(health["workers"])
        assert all(w["alive"] for w in health["workers"].values())
        status, metrics = _get(f"{url}/metrics")
        assert status == 200
        assert 'edgefleet_server_worker_up{worker="drift-monitor"} 1.0' in metrics
        assert 'edgefleet_server_worker_up{worker="field-data"} 1.0' in metrics

        _connections(postgres_server, database, allowed=False)
        try:
            wait_for(
                lambda: _get(f"{url}/healthz")[0] == 503,
                30,
                interval=0.1,
                message="/healthz stayed green while the database was away",
            )
            status, health = _get(f"{url}/healthz")
            assert health["status"] == "unhealthy"
            assert "worker drift-monitor is not running (its last" in health["reason"]
            drift = health["workers"]["drift-monitor"]
            assert not drift["alive"] and "passes failed" in drift["last_error"]
            assert health["workers"]["fleet-server"]["alive"]  # its thread runs, it retries
            # samples arrive while the database is away: the receiver cannot store them
            assert fleet.client is not None
            for number in range(3):
                fleet.client.publish("edgefleet/devices/cam-1/field-data/samples", _sample(number))
            wait_for(
                lambda: not _get(f"{url}/healthz")[1]["workers"]["field-data"]["alive"],
                30,
                interval=0.1,
                message="the field-data worker stayed green while no sample could be stored",
            )
            assert "worker field-data is not running" in _get(f"{url}/healthz")[1]["reason"]
        finally:
            _connections(postgres_server, database, allowed=True)
        wait_for(
            lambda: _get(f"{url}/healthz")[1]["workers"]["drift-monitor"]["alive"],
            30,
            interval=0.1,
            message="the drift worker never came back with the database",
        )
        # the next sample is stored: the receiver is well again, and so is the server
        fleet.client.publish("edgefleet/devices/cam-1/field-data/samples", _sample(3), qos=1)
        wait_for(lambda: _get(f"{url}/healthz")[0] == 200, 30, interval=0.1)
        registry = fleet.registry
        assert registry is not None and len(registry.field_samples()) == 1


def test_only_the_leading_replica_judges_drift(tmp_path: Path) -> None:
    clock = FakeClock()
    with Registry.open(f"sqlite:///{tmp_path / 'fleet.db'}", clock=clock) as registry:
        registry.provision_device("cam-1", tags=["line-1"])
        quality = {"bundle": "a" * 64, "predictions": 300, "class_counts": {"glass": 300}}
        registry.record_telemetry("cam-1", {"protocol": 1, "quality": quality}, at=clock.now)
        first, second = (Leadership(registry, name, ttl_s=30) for name in ("r-1", "r-2"))
        assert first.renew(0.0).leading and not second.renew(0.0).leading
        thresholds = DriftThresholds(window_s=60, min_predictions=10)
        follower = DriftMonitor(registry, thresholds, clock=clock, leading=lambda: second.leading)
        assert follower.turn() is False
        assert follower.skipped == 1 and follower.passes == 0
        assert registry.drift_statuses() == []  # the follower judged nothing
        leader = DriftMonitor(registry, thresholds, clock=clock, leading=lambda: first.leading)
        assert leader.turn() is True
        assert {(s.scope, s.name) for s in registry.drift_statuses()} == {
            ("device", "cam-1"),
            ("group", "line-1"),
        }
        first.release()
        assert second.renew(1.0).leading  # the lead moves: so does the judging
        assert follower.turn() is True and follower.passes == 1
