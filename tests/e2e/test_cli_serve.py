"""`edgefleet serve` with its embedded MQTT broker, driven by `edgefleet fleet` as an operator runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from edgefleet.testing.broker import free_port
from fleet_server.trust import Expiry, Repository, init_keys
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]

EDGEFLEET = [sys.executable, "-m", "edgefleet"]
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "EDGEFLEET_TOKEN": "e2e-token"}


def start_serve(
    folder: Path, http_port: int, *options: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`edgefleet serve` on the state, repo and keys folders under ``folder``."""
    return subprocess.Popen(
        [
            *EDGEFLEET,
            "serve",
            "--state",
            str(folder / "state"),
            "--repo",
            str(folder / "repo"),
            "--keys",
            str(folder / "keys"),
            "--http-port",
            str(http_port),
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or ENV,
    )


def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"edgefleet serve exited {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError("edgefleet serve did not answer /healthz")


def test_serve_with_embedded_broker_and_fleet_commands(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys, Expiry())
    bundle = make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True)
    repo.release(tmp_path / "v1.efb", keys.role("targets"))
    for offline in ("root", "targets"):  # the server must run without the offline keys
        for path in (tmp_path / "keys").glob(f"{offline}-*.pem"):
            path.unlink()
    http_port, broker_port = free_port(), free_port()
    server = f"http://127.0.0.1:{http_port}"
    process = start_serve(
        tmp_path, http_port, "--broker-port", str(broker_port), "--drift-interval", "1"
    )
    try:
        wait_healthy(server, process)

        def fleet(*args: str, token: str = "e2e-token") -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*EDGEFLEET, "fleet", "--server", server, *args],
                capture_output=True,
                text=True,
                env={**ENV, "EDGEFLEET_TOKEN": token},
                timeout=60,
            )

        empty = fleet("devices", "--json")
        assert empty.returncode == 0, empty.stderr
        assert json.loads(empty.stdout) == []

        made = fleet("provision", "cam-01", "--tags", "line1,north")
        assert made.returncode == 0, made.stderr
        snippet = yaml.safe_load(made.stdout)
        assert snippet["device_id"] == "cam-01" and snippet["mqtt"]["port"] == broker_port
        assert snippet["update"]["groups"] == ["line1", "north"]
        assert "password" not in snippet["mqtt"]  # the embedded broker is anonymous
        twice = fleet("provision", "cam-01")
        assert twice.returncode == 1 and "error: 409" in twice.stderr
        assert "already provisioned" in twice.stderr

        listed = fleet("devices", "--json")
        assert [d["id"] for d in json.loads(listed.stdout)] == ["cam-01"]
        # --drift-interval 1: the drift monitor passes every second (the default: a minute),
        # and /metrics says so, with when the last pass ended
        deadline, figures = time.monotonic() + 20, {}
        while figures.get("edgefleet_server_drift_passes_total", 0) < 3:
            assert time.monotonic() < deadline, figures
            time.sleep(0.5)
            request = urllib.request.Request(
                f"{server}/metrics", headers={"Authorization": "Bearer e2e-token"}
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                lines = reply.read().decode().splitlines()
            figures = {
                line.split()[0]: float(line.split()[1])
                for line in lines
                if line.startswith("edgefleet_server_drift_") and " " in line
            }
        assert figures["edgefleet_server_drift_interval_seconds"] == 1.0
        assert abs(figures["edgefleet_server_drift_last_pass_timestamp_seconds"] - time.time()) < 5
        table = fleet("devices")
        assert "cam-01" in table.stdout and "line1,north" in table.stdout
        assert "runtime" in table.stdout  # which edge_runtime each device reported (none yet)

        imported = fleet("import", str(tmp_path / "v1.efb"))
        assert imported.returncode == 0 and bundle.sha256 in imported.stdout, imported.stderr
        assert bundle.sha256[:12] in fleet("bundles").stdout
        # a second camera on the line, pinned to the bundle it has: the rollout skips it
        assert fleet("provision", "cam-02", "--tags", "line1").returncode == 0
        pin = urllib.request.Request(
            f"{server}/devices/cam-02/pin",
            data=json.dumps({"sha256": bundle.sha256}).encode(),
            method="PUT",
            headers={"Authorization": "Bearer e2e-token", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(pin, timeout=10) as reply:
            assert reply.status == 200

        created = fleet(
            "rollout",
            "create",
            bundle.sha256,
            "--tags",
            "line1",
            "--canary",
            "1",
            "--waves",
            "100",
            "--json",
        )
        assert created.returncode == 0, created.stderr
        rollout_id = str(json.loads(created.stdout)["id"])
        status = fleet("rollout", "status", rollout_id)
        assert status.returncode == 0 and "running" in status.stdout and "canary" in status.stdout
        assert f"skipped: cam-02 (pinned to {bundle.sha256[:12]})" in status.stdout, status.stdout
        paused = fleet("rollout", "pause", rollout_id)
        assert paused.returncode == 0 and f"rollout {rollout_id}: paused" in paused.stdout
        approve = fleet("rollout", "approve", rollout_id)
        assert approve.returncode == 1 and "error: 409 cannot approve" in approve.stderr
        assert fleet("rollout", "abort", rollout_id, "--reason", "e2e").returncode == 0
        watched = fleet("rollout", "status", rollout_id, "--watch", "--json")
        assert watched.returncode == 0 and json.loads(watched.stdout)["finished"]

        wrong = fleet("devices", token="wrong")
        assert wrong.returncode == 1 and "error: 401" in wrong.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    assert "fleet server stopping" in stderr
