"""`edgefleet keys` and `edgefleet release` as a release manager runs them; a device trusts the result."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from edge_runtime.trust import TrustClient
from fleet_server.trust import Repository, load_keys
from tests.media import make_bundle
from tests.models import tiny_onnx_model

EDGEFLEET = [sys.executable, "-m", "edgefleet"]
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "RELEASE_PASS": "correct horse"}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEFLEET, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120
    )


def test_keys_release_rotate_revoke(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "m.efb", tiny_onnx_model(), "onnx", "1.2.3", softmax=True)
    init = run(
        "keys",
        "init",
        "keys",
        "--root-keys",
        "2",
        "--root-threshold",
        "1",
        "--passphrase-env",
        "RELEASE_PASS",
        cwd=tmp_path,
    )
    assert init.returncode == 0, init.stderr
    assert "targets      offline" in init.stdout and "assignments  online" in init.stdout
    for pem in (tmp_path / "keys").glob("*.pem"):
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600, pem
    assert b"ENCRYPTED" in (tmp_path / "keys" / "targets-1.pem").read_bytes()
    assert b"ENCRYPTED" not in (tmp_path / "keys" / "timestamp-1.pem").read_bytes()
    again = run("keys", "init", "keys", cwd=tmp_path)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    released = run(
        "release",
        "m.efb",
        "--repo",
        "repo",
        "--keys",
        "keys",
        "--passphrase-env",
        "RELEASE_PASS",
        cwd=tmp_path,
    )
    assert released.returncode == 0, released.stderr
    assert f"bundles/{bundle.sha256}.efb" in released.stdout
    wrong = subprocess.run(
        [*EDGEFLEET, "release", "m.efb", "--repo", "repo", "--keys", "keys"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**ENV, "RELEASE_PASS": ""},
        timeout=60,
    )
    assert wrong.returncode != 0

    # the fleet server (online keys only) snapshots; a device provisioned with root 1 trusts the release
    repo = Repository(tmp_path / "repo")
    online = load_keys(tmp_path / "keys")
    repo.snapshot_and_timestamp(online.role("snapshot"), online.role("timestamp"))
    device = TrustClient.provision(tmp_path / "device", repo.root_bytes(1))
    for suffix, payload in repo.published().items():
        device.offer(suffix, payload)
    assert device.refresh()
    assert device.bundle_target(bundle.sha256).length == bundle.size

    rotated = run(
        "keys",
        "rotate",
        "targets",
        "--repo",
        "repo",
        "--keys",
        "keys",
        "--passphrase-env",
        "RELEASE_PASS",
        cwd=tmp_path,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "in root version 2" in rotated.stdout
    repo = Repository(tmp_path / "repo")
    repo.snapshot_and_timestamp(online.role("snapshot"), online.role("timestamp"))
    for suffix, payload in repo.published().items():
        device.offer(suffix, payload)
    assert device.refresh()  # walks root 2 without re-provisioning
    assert device.bundle_target(bundle.sha256).length == bundle.size

    root_key = repo.root_keyids("root")[1][:12]
    revoked = run(
        "keys",
        "revoke",
        "root",
        root_key,
        "--repo",
        "repo",
        "--keys",
        "keys",
        "--passphrase-env",
        "RELEASE_PASS",
        cwd=tmp_path,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked in root version 3" in revoked.stdout
    assert len(Repository(tmp_path / "repo").root_keyids("root")) == 1
