"""`edgefleet bench fleet` as an engineer runs it: a real rollout to simulated devices, measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import require_mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_fleet_bench_rolls_out_to_every_simulated_device_and_measures_the_server(
    tmp_path: Path,
) -> None:
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
            "12",
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
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Rollout to 12 simulated devices" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["rollout_status"] == "completed"
    assert report["committed"] == 12 and report["device_errors"] == 0
    assert report["device_counts"] == {"committed": 12}
    assert 0.5e6 < report["bundle_bytes"] <= 0.6e6
    assert report["delivered_mb"] == pytest.approx(12 * report["bundle_bytes"] / 1e6, abs=0.1)
    commit = report["device_commit_s"]
    assert 0 < commit["p50"] <= commit["p90"] <= commit["max"] <= report["wall_s"]
    # the server and the broker were measured as processes of their own
    assert report["server"]["peak_rss_mb"] > 30 and report["server"]["cpu_s"] > 0
    assert report["broker"]["peak_rss_mb"] > 0
    assert report["simulator"]["processes"] == 1
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
