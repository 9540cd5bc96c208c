"""Maintenance windows end to end: `edgefleet serve`, driven by `edgefleet fleet windows` and `rollout`.

No fake clock: one line's window opened a minute ago, the other's opens in
an hour, so the real server's own clock decides who is sent now and who
waits (the planner's unit tests move a controllable clock through windows).
"""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edgefleet.testing.broker import free_port
from fleet_server.trust import Expiry, Repository, init_keys
from tests.e2e.test_cli_serve import EDGEFLEET, ENV, start_serve, wait_healthy
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]


def window_from(minutes_from_now: int, length_minutes: int) -> str:
    """A weekly UTC window starting ``minutes_from_now`` (whole minutes) for ``length_minutes``."""
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(
        minutes=minutes_from_now
    )
    end = start + timedelta(minutes=length_minutes)
    return f"{start:%a} {start:%H:%M}-{end:%H:%M} UTC"


def test_windows_hold_devices_until_they_open_and_ignore_windows_overrides(
    tmp_path: Path,
) -> None:
    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys, Expiry())
    bundle = make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True)
    repo.release(tmp_path / "v1.efb", keys.role("targets"))
    http_port = free_port()
    server = f"http://127.0.0.1:{http_port}"
    process = start_serve(tmp_path, http_port, "--broker-port", str(free_port()))
    try:
        wait_healthy(server, process)

        def fleet(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*EDGEFLEET, "fleet", "--server", server, *args],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=60,
            )

        for device, tag in (("cam-01", "open-line"), ("cam-02", "closed-line")):
            made = fleet("provision", device, "--tags", tag)
            assert made.returncode == 0, made.stderr
        assert fleet("import", str(tmp_path / "v1.efb")).returncode == 0

        # windows: one open since a minute ago, one opening in an hour
        empty = fleet("windows", "list")
        assert empty.returncode == 0 and "no maintenance windows" in empty.stdout
        opened, later = window_from(-1, 120), window_from(60, 30)
        made = fleet("windows", "set", "open-line", opened.lower())
        assert made.returncode == 0, made.stderr
        assert "maintenance windows of open-line: 1" in made.stdout and opened in made.stdout
        assert fleet("windows", "set", "closed-line", later).returncode == 0
        listed = fleet("windows", "list", "--json")
        rows = {r["tag"]: r["windows"] for r in json.loads(listed.stdout)}
        assert rows["open-line"][0]["open_now"] and not rows["closed-line"][0]["open_now"]
        next_opens = rows["closed-line"][0]["next_open"]
        assert next_opens.endswith(" UTC") and later.startswith(next_opens.split()[0])
        table = fleet("windows", "list")
        assert "open-line" in table.stdout and "yes" in table.stdout and next_opens in table.stdout

        bad = fleet("windows", "set", "closed-line", "Sun 02:00-04:00")
        assert bad.returncode == 1
        assert "error: 400 maintenance window 'Sun 02:00-04:00' has no time zone" in bad.stderr
        zone = fleet("windows", "set", "closed-line", "Sun 02:00-04:00 Europe/Pariss")
        assert zone.returncode == 1 and "unknown time zone 'Europe/Pariss'" in zone.stderr
        kept = json.loads(fleet("windows", "list", "--tag", "closed-line", "--json").stdout)
        assert kept[0]["windows"][0]["spec"] == later  # a refused change changes nothing

        # a rollout sends cam-01 now; cam-02 waits for its window
        created = fleet(
            "rollout", "create", bundle.sha256, "--canary", "0", "--waves", "100", "--json"
        )
        assert created.returncode == 0, created.stderr
        view = json.loads(created.stdout)
        rollout_id = str(view["id"])
        assert view["counts"] == {"sent": 1, "pending": 1}
        assert view["planner"]["waiting_for_window"] == ["cam-02"]
        status = fleet("rollout", "status", rollout_id)
        assert status.returncode == 0, status.stderr
        assert (
            f"1 devices wait for their maintenance window (next opens {next_opens}): cam-02"
            in status.stdout
        )
        timeline = json.loads(fleet("rollout", "timeline", rollout_id, "--json").stdout)
        waiting = [t["message"] for t in timeline if t["kind"] == "window-waiting"]
        assert waiting == [
            f"wave 1: 1 devices wait for their maintenance window (next opens {next_opens})"
        ]
        assert fleet("rollout", "abort", rollout_id, "--reason", "e2e").returncode == 0

        # an emergency: --ignore-windows sends to both at once, and says so
        urgent = fleet(
            "rollout",
            "create",
            bundle.sha256,
            "--canary",
            "0",
            "--waves",
            "100",
            "--ignore-windows",
        )
        assert urgent.returncode == 0, urgent.stderr
        assert "maintenance windows ignored (--ignore-windows)" in urgent.stdout
        rollouts = json.loads(fleet("rollouts", "--json").stdout)
        urgent_id = str(rollouts[-1]["id"])
        urgent_view = json.loads(fleet("rollout", "status", urgent_id, "--json").stdout)
        assert urgent_view["counts"] == {"sent": 2}
        kinds = [
            t["kind"] for t in json.loads(fleet("rollout", "timeline", urgent_id, "--json").stdout)
        ]
        assert "windows-ignored" in kinds and "window-waiting" not in kinds
        audit = json.loads(fleet("audit", "--json").stdout)
        assert any(
            a["path"] == "/rollouts" and '"ignore_windows": true' in (a["body"] or "")
            for a in audit
        )

        cleared = fleet("windows", "clear", "closed-line")
        assert cleared.returncode == 0
        assert "maintenance windows of closed-line cleared (1 removed)" in cleared.stdout
        again = fleet("windows", "clear", "closed-line")
        assert "closed-line had no maintenance windows" in again.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
