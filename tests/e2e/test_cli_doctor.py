"""`edgefleet device doctor` as an operator runs it after installing a box."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media import make_bundle

ROOT = Path(__file__).resolve().parents[2]
EDGEFLEET = [sys.executable, "-m", "edgefleet"]
ENV = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEFLEET, "device", "doctor", *args],
        capture_output=True,
        text=True,
        env=env or ENV,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.locked_env
def test_the_test_environment_is_exactly_the_dev_lock() -> None:
    """What `make test` built is locks/dev.lock.txt package for package (edgefleet itself aside)."""
    result = doctor("--lock", "locks/dev.lock.txt", "--json")
    report = json.loads(result.stdout)
    comparison = report["packages"]["comparison"]
    assert result.returncode == 0, (
        comparison["missing"],
        comparison["different"],
        comparison["extra"],
    )
    assert report["ok"] and report["packages"]["locked_here"] > 100
    assert [name for name, _ in comparison["ignored"]][:1] == ["edgefleet"]
    backends = {b["name"]: b for b in report["backends"]}
    assert backends["litert"]["installed"] and backends["onnxruntime"]["installed"]
    assert "CPUExecutionProvider" in backends["onnxruntime"]["detail"]
    assert report["tensorflow_installed"]  # the development environment converts models too
    assert report["cpu"]["usable_cores"] >= 1


def test_a_box_that_drifted_from_its_lock_is_named_and_fails(tmp_path: Path) -> None:
    text = (ROOT / "locks" / "dev.lock.txt").read_text()
    locked = next(line for line in text.splitlines() if line.startswith("click=="))
    drifted = text.replace(locked, "click==1.0" + locked[locked.index(" ") :])
    lock = tmp_path / "drifted.txt"
    lock.write_text(drifted)
    result = doctor("--lock", str(lock), "--packages-only")
    assert result.returncode == 1
    assert "different click: installed" in result.stdout and "locked 1.0" in result.stdout
    assert "NOT the locked set" in result.stdout

    # the device lock on a workstation: the locked part matches, the rest is not locked
    result = doctor("--lock", "locks/device.lock.txt", "--packages-only")
    assert result.returncode == 1
    assert "not locked tensorflow-cpu" in result.stdout or "more not locked" in result.stdout


def test_lock_lookup_and_a_bad_lock_give_clear_errors(tmp_path: Path) -> None:
    result = doctor(env={**ENV, "EDGEFLEET_LOCK": str(tmp_path / "absent.txt")})
    assert result.returncode == 1
    assert "no lock file found (tried" in result.stderr and "absent.txt" in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("numpy>=2\n")
    result = doctor("--lock", str(bad))
    assert result.returncode == 1
    assert f"{bad}:1: numpy is not pinned to one version" in result.stderr


def _fake_distribution(site: Path, payload: bytes) -> Path:
    """A real installed distribution (dist-info with RECORD) on a folder added to sys.path."""
    module = site / "tinydist.py"
    module.write_bytes(payload)
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
    info = site / "tinydist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinydist\nVersion: 1.0\n")
    # a wheel may record bytecode that the interpreter rewrites later: never judged
    (site / "__pycache__").mkdir()
    (site / "__pycache__" / "tinydist.cpython-3.pyc").write_bytes(b"rewritten")
    (info / "RECORD").write_text(
        f"tinydist.py,sha256={digest},{len(payload)}\n"
        f"__pycache__/tinydist.cpython-3.pyc,sha256={digest},{len(payload)}\n"
        "tinydist-1.0.dist-info/RECORD,,\n"
    )
    return module


def test_verify_files_finds_a_file_changed_after_install(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    module = _fake_distribution(site, b"VALUE = 1\n")
    lock = tmp_path / "tiny.txt"
    lock.write_text("tinydist==1.0 --hash=sha256:" + "0" * 64 + "\n")
    env = {**ENV, "PYTHONPATH": f"{site}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
    ok = doctor("--lock", str(lock), "--packages-only", "--verify-files", "--json", env=env)
    report = json.loads(ok.stdout)
    assert report["files"] == {"checked": 1, "modified": [], "missing": [], "ok": True}
    module.write_bytes(b"VALUE = 2\n")
    changed = doctor("--lock", str(lock), "--packages-only", "--verify-files", env=env)
    assert changed.returncode == 1
    assert "modified tinydist: tinydist.py" in changed.stdout


@pytest.mark.parametrize("model_format", ["tflite", "onnx"])
def test_bundle_smoke_test_on_every_backend_and_xnnpack(
    tmp_path: Path, tflite_model: bytes, onnx_model: bytes, model_format: str
) -> None:
    path = tmp_path / f"tiny-{model_format}.efb"
    make_bundle(path, tflite_model if model_format == "tflite" else onnx_model, model_format)
    result = doctor("--lock", "locks/dev.lock.txt", "--bundle", str(path), "--json")
    report = json.loads(result.stdout)
    # the exit status also judges the packages (not the lock's under make test-latest)
    assert result.returncode == (0 if report["packages"]["ok"] else 1), result.stderr
    rows = {row["backend"]: row for row in report["bundle"]["backends"]}
    if model_format == "tflite":
        assert set(rows) == {"litert", "tf-lite"}
        assert rows["litert"]["xnnpack"] is True
    else:
        assert set(rows) == {"onnxruntime"} and rows["onnxruntime"]["xnnpack"] is None
    assert all(row["ok"] and row["golden_vectors"] == 2 for row in rows.values())
