"""`edgefleet bench fleet` as an engineer runs it: a real rollout to simulated devices, measured.

Three runs: the rollout alone (the quickest), the rollout bracketed by the
transport floor, and two server replicas on PostgreSQL sharing the devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import NOT_INSTALLED, find_postgres_bin
from tests.services import require_mosquitto, service_missing

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _bench(tmp_path: Path, devices: int, *args: str) -> tuple[dict[str, Any], str]:
    """Run the command; its JSON report and its printed output."""
    require_mosquitto()  # the benchmark starts its own
    report_path = tmp_path / "fleet.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefleet",
            "bench",
            "fleet",
            "--devices",
            str(devices),
            "--canary",
            "2",
            "--bundle-size",
            "0.6",
            "--timeout",
            "120",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(report_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(report_path.read_text()), result.stdout


def _everyone_committed(report: dict[str, Any], devices: int) -> None:
    assert report["rollout_status"] == "completed"
    assert report["committed"] == devices and report["device_errors"] == 0
    assert report["device_counts"] == {"committed": devices}
    commit = report["device_commit_s"]
    assert 0 < commit["p50"] <= commit["p90"] <= commit["max"] <= report["wall_s"]


def test_fleet_bench_rolls_out_to_every_simulated_device_and_measures_the_server(
    tmp_path: Path,
) -> None:
    report, stdout = _bench(tmp_path, 12, "--floor", "none")
    assert "Rollout to 12 simulated devices" in stdout
    _everyone_committed(report, 12)
    assert 0.5e6 < report["bundle_bytes"] <= 0.6e6
    assert report["delivered_mb"] == pytest.approx(12 * report["bundle_bytes"] / 1e6, abs=0.1)
    # the server and the broker were measured as processes of their own
    assert report["server"]["peak_rss_mb"] > 30 and report["server"]["cpu_s"] > 0
    assert report["server"]["cpu_ms_per_committed_device"] == pytest.approx(
        1000 * report["server"]["cpu_s"] / 12, rel=0.01
    )
    assert report["broker"]["peak_rss_mb"] > 0
    assert report["simulator"]["processes"] == 1
    assert report["floor"]["runs"] == [] and report["floor_ratio"] is None
    # the devices' own count of their downloads: every chunk stored, duplicates apart
    fetch = report["device_fetch"]
    assert fetch["requests"] >= 12 and fetch["chunk_messages_per_device"]["p50"] >= 3
    assert fetch["chunk_messages"] == 12 * 3 + fetch["duplicate_chunks"]
    # the server's own counters over the rollout: every device's reports and chunk requests
    (server,) = report["server_replicas"]
    assert server["reports_by_kind"]["state"] >= 12 and server["reports_by_kind"]["events"] >= 12
    assert server["reports_share"] == 1.0 and server["log_errors"] == 0
    assert server["chunk_requests"] >= 12 and server["chunks_served"] >= 3  # 0.6 MB: 3 chunks
    # the server's own record of the rollout: two waves, everyone committed
    from fleet_server.registry import Registry

    registry = Registry.open(f"sqlite:///{tmp_path / 'work' / 'state' / 'fleet.db'}")
    try:
        (rollout,) = registry.rollouts()
        waves = registry.waves(rollout.id)
        assert [len(w.device_ids) for w in waves] == [1, 11]  # the canary is at most 10%
        assert {d.status for d in registry.wave_devices(rollout.id)} == {"committed"}
    finally:
        registry.close()


def test_fleet_bench_measures_the_transport_floor_before_and_after_the_rollout(
    tmp_path: Path,
) -> None:
    report, stdout = _bench(tmp_path, 20)
    _everyone_committed(report, 20)
    before, after = report["floor"]["runs"]
    assert (before["when"], after["when"]) == ("before", "after")
    for floor in (before, after):
        # every plain subscriber got every chunk of the same bundle, exactly once
        assert floor["subscribers"] == 20 and floor["complete"] == 20
        assert floor["chunks"] == 3 and floor["bundle_bytes"] == report["bundle_bytes"]
        assert floor["duplicates"] == 0 and floor["error"] is None
        assert 0 < floor["subscriber_s"]["p50"] <= floor["subscriber_s"]["max"] == floor["wall_s"]
        assert floor["broker"]["cpu_s"] >= 0
    assert report["floor_s"] == pytest.approx((before["wall_s"] + after["wall_s"]) / 2, abs=0.0002)
    assert report["floor_ratio"] == pytest.approx(report["wall_s"] / report["floor_s"], rel=0.01)
    assert report["floor_ratio"] > 1  # TUF, requests and the lifecycle cost something
    assert "transport floor (before)" in stdout and "rollout / floor" in stdout


def test_fleet_bench_with_two_replicas_splits_the_devices_between_them(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if os.environ.get("EDGEFLEET_TEST_POSTGRES_URL"):  # no local server: a database there
        db_args = ["--db", request.getfixturevalue("postgres_url")]
    elif find_postgres_bin() is None:
        service_missing(NOT_INSTALLED)
    else:
        db_args = []  # the benchmark starts a throw-away cluster of its own
    report, stdout = _bench(tmp_path, 20, "--replicas", "2", "--floor", "none", *db_args)
    _everyone_committed(report, 20)
    assert report["replicas"] == 2 and report["database"].startswith("PostgreSQL")
    one, two = report["server_replicas"]
    assert (one["id"], two["id"]) == ("replica-1", "replica-2")
    # shared subscriptions: each report reached exactly one replica, and both took some
    assert one["reports"] > 0 and two["reports"] > 0
    assert one["reports_share"] + two["reports_share"] == pytest.approx(1.0, abs=0.002)
    assert one["cpu_s"] > 0 and two["cpu_s"] > 0
    assert one["log_errors"] == two["log_errors"] == 0, (one, two)
    assert report["server"]["cpu_s"] == pytest.approx(one["cpu_s"] + two["cpu_s"], abs=0.02)
    if not db_args:
        assert report["database_process"]["cpu_s"] > 0  # PostgreSQL, all its processes
    assert "Each server over the rollout" in stdout and "replica-2" in stdout
