"""Tokens with roles, the audit trail and four-eyes approval, as operators use them through the CLI.

`edgefleet serve` runs as its own process, started with a bootstrap token;
every command is `edgefleet fleet ...` in a process of its own, each person
with their own token. Two real device agents (the test kit's, configured
from the files `fleet provision --out` wrote) take a four-eyes rollout, so
that its canary passes the quality gate and waits for two approvals.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefleet.testing import RunningDevice
from edgefleet.testing.broker import free_port
from fleet_server.trust import Expiry, Repository, init_keys
from tests.e2e.test_cli_serve import EDGEFLEET, ENV, start_serve, wait_healthy
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker, pytest.mark.slow]

BOOTSTRAP = ENV["EDGEFLEET_TOKEN"]
PEOPLE = {"alice": "operator", "bob": "operator", "carol": "viewer", "dana": "admin"}
CAMERAS = ("cam-01", "cam-02")


def device_config(folder: Path, v1: Path) -> dict[str, Any]:
    """The provisioned device.yaml, with a fake camera, a store here and v1 to start on."""
    config: dict[str, Any] = yaml.safe_load((folder / "device.yaml").read_text())
    config["source"] = {"type": "fake-camera", "width": 64, "height": 48, "fps": 50}
    config["store"] = str(folder / "store")
    config["bundle"] = str(v1)
    config["metrics"] = {"enabled": False}
    config["mqtt"]["telemetry_interval_s"] = 0.5
    config["update"] |= {"probation_s": 1, "probation_min_predictions": 5, "smoke_latency_runs": 3}
    return config


def test_tokens_roles_audit_and_four_eyes_through_the_cli(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys, Expiry())
    v1 = make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True)
    # v2: a new release of the same weights, so that no quality check can stop its waves
    v2 = make_bundle(tmp_path / "v2.efb", tiny_onnx_model(), "onnx", "2.0.0", softmax=True)
    for name in ("v1", "v2"):
        repo.release(tmp_path / f"{name}.efb", keys.role("targets"))
    for offline in ("root", "targets"):
        for path in (tmp_path / "keys").glob(f"{offline}-*.pem"):
            path.unlink()
    http_port, broker_port = free_port(), free_port()
    server = f"http://127.0.0.1:{http_port}"
    process = start_serve(tmp_path, http_port, "--broker-port", str(broker_port))
    devices: list[RunningDevice] = []
    try:
        wait_healthy(server, process)

        def fleet(*args: str, token: str = BOOTSTRAP) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*EDGEFLEET, "fleet", "--server", server, *args],
                capture_output=True,
                text=True,
                env={**ENV, "EDGEFLEET_TOKEN": token},
                timeout=60,
            )

        def ok(*args: str, token: str = BOOTSTRAP) -> subprocess.CompletedProcess[str]:
            done = fleet(*args, token=token)
            assert done.returncode == 0, f"fleet {' '.join(args)}: {done.stderr}"
            return done

        # the bootstrap admin gives each person a token; the secret alone goes to stdout
        secret: dict[str, str] = {}
        for name, role in PEOPLE.items():
            made = ok("tokens", "create", name, "--role", role)
            secret[name] = made.stdout.strip()
            assert secret[name].startswith("eft_") and "\n" not in secret[name]
            assert "shown this once" in made.stderr
        listed = ok("tokens", "list", token=secret["dana"])
        for name, role in PEOPLE.items():
            assert name in listed.stdout and role in listed.stdout
        assert not any(s in listed.stdout for s in secret.values())
        assert "4 active, 0 revoked" in listed.stdout
        refused = fleet("tokens", "create", "mallory", "--role", "admin", token=secret["alice"])
        assert refused.returncode == 1
        assert "error: 403 POST /tokens needs the admin role; token 'alice' has operator" in (
            refused.stderr
        )

        # a viewer reads, and is refused a change with the role it needs
        assert json.loads(ok("devices", "--json", token=secret["carol"]).stdout) == []
        viewer = fleet("provision", "cam-01", token=secret["carol"])
        assert viewer.returncode == 1
        assert "error: 403 POST /devices needs the operator role; token 'carol' has viewer" in (
            viewer.stderr
        )

        # an operator provisions two cameras and imports the bundles
        for cam in CAMERAS:
            out = str(tmp_path / cam)
            ok("provision", cam, "--out", out, "--device-dir", out, token=secret["alice"])
        for name in ("v1", "v2"):
            ok("import", str(tmp_path / f"{name}.efb"), token=secret["alice"])
        for cam in CAMERAS:
            devices.append(RunningDevice(device_config(tmp_path / cam, tmp_path / "v1.efb")))

        def status(rollout: str) -> dict[str, Any]:
            view: dict[str, Any] = json.loads(
                ok("rollout", "status", rollout, "--json", token=secret["carol"]).stdout
            )
            return view

        def wait(condition: Any, what: str, timeout: float = 120) -> None:
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                time.sleep(0.5)

        def on(sha: str) -> bool:
            rows = json.loads(ok("devices", "--json", token=secret["carol"]).stdout)
            return [d["active_bundle"] for d in rows] == [sha, sha]

        wait(lambda: on(v1.sha256), "both cameras to report v1")

        # a four-eyes rollout: the canary, then two different operators release the rest
        created = ok(
            "rollout",
            "create",
            v2.sha256,
            "--devices",
            ",".join(CAMERAS),
            "--canary",
            "1",
            "--waves",
            "100",
            "--four-eyes",
            "--health-window",
            "1",
            "--device-timeout",
            "120",
            "--json",
            token=secret["alice"],
        )
        rollout = str(json.loads(created.stdout)["id"])
        finished = {"rolled-back", "aborted", "completed"}
        wait(lambda: status(rollout)["status"] in {"awaiting-approval", *finished}, "the canary")
        assert status(rollout)["status"] == "awaiting-approval", status(rollout)
        shown = ok("rollout", "status", rollout, token=secret["carol"]).stdout
        assert "waits for approval (2 different people)" in shown

        first = ok("rollout", "approve", rollout, token=secret["alice"])
        assert (
            f"rollout {rollout}: awaiting-approval (approved by alice; waits for 1 more "
            "person's approval)"
        ) in first.stdout
        twice = fleet("rollout", "approve", rollout, token=secret["alice"])
        assert twice.returncode == 1 and "error: 409" in twice.stderr
        assert "already approved by alice" in twice.stderr
        by_viewer = fleet("rollout", "approve", rollout, token=secret["carol"])
        assert by_viewer.returncode == 1 and "error: 403" in by_viewer.stderr
        second = ok("rollout", "approve", rollout, token=secret["bob"])
        assert f"rollout {rollout}: running" in second.stdout
        # the second approval sent wave 2: both cameras commit v2 (the gate's verdict on the
        # figures that follow is the planner's business, tested on its own)
        wait(lambda: status(rollout)["counts"].get("committed") == 2, "wave 2 to commit")
        wait(lambda: on(v2.sha256), "both cameras to report v2")

        # an admin revokes bob's token: refused from then on, and that refusal is recorded too
        assert (
            "revoked the operator token 'bob'"
            in ok("tokens", "revoke", "bob", token=secret["dana"]).stdout
        )
        gone = fleet("rollout", "pause", rollout, token=secret["bob"])
        assert gone.returncode == 1 and "error: 401" in gone.stderr

        # the audit trail: who did what, when, from where, and how it ended
        table = ok("audit", "--limit", "200", token=secret["alice"]).stdout
        for expected in (
            "bootstrap (admin)",
            "alice (operator)",
            "bob (operator)",
            "carol (viewer)",
            "dana (admin)",
            "127.0.0.1",
            "POST /tokens",
            "POST /devices",
            f"POST /rollouts/{rollout}/approve",
            f"POST /rollouts/{rollout}/pause",
            "DELETE /tokens/bob",
            "│ 201",
            "│ 401 missing",
            "│ 403 POST",
            "│ 409 wave 2",
        ):
            assert expected in table, expected
        entries = json.loads(ok("audit", "--limit", "200", "--json", token=secret["dana"]).stdout)
        approvals = [
            (e["actor"], e["status"])
            for e in entries
            if e["path"] == f"/rollouts/{rollout}/approve"
        ]
        assert approvals == [("alice", 200), ("alice", 409), ("carol", 403), ("bob", 200)]
        created_by = [e for e in entries if (e["method"], e["path"]) == ("POST", "/rollouts")]
        assert [(e["actor"], e["status"]) for e in created_by] == [("alice", 201)]
        assert (
            v2.sha256 in created_by[0]["body"]
            and '"approvals_required": 2' in (created_by[0]["body"])
        )
        errors = {e["status"]: e["error"] for e in entries if e["status"] >= 400}
        assert errors[401] == "missing or wrong bearer token"
        assert errors[403].startswith(f"POST /rollouts/{rollout}/approve needs the operator role")
        assert errors[409].startswith("wave 2 is already approved by alice")
        assert [(e["actor"], e["status"]) for e in entries if e["status"] == 401] == [(None, 401)]
        assert all(e["method"] != "GET" for e in entries)  # reads are not changes
        assert all(isinstance(e["at"], float) and e["client"] == "127.0.0.1" for e in entries)

        mine = json.loads(ok("audit", "--actor", "carol", "--json", token=secret["alice"]).stdout)
        assert [(e["path"], e["status"]) for e in mine] == [
            ("/devices", 403),
            (f"/rollouts/{rollout}/approve", 403),
        ]
        recent = json.loads(ok("audit", "--since", "1h", "--json", token=secret["alice"]).stdout)
        assert len(recent) == min(len(entries), 50)
        assert json.loads(ok("audit", "--since", "2099-01-01", "--json").stdout) == []
        bad = fleet("audit", "--since", "yesterday", token=secret["alice"])
        assert bad.returncode == 2 and "is not a time" in bad.stderr
        denied = fleet("audit", token=secret["carol"])
        assert denied.returncode == 1 and "needs the operator role" in denied.stderr
    finally:
        for device in devices:
            device.close()
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
