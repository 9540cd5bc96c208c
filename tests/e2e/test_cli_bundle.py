"""The CLI as a user runs it: `edgefleet bundle ...` in a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.bundle import Compatibility, write_bundle
from tests.conftest import manifest_for, members_for
from tests.models import tflite_tensor_names

EDGEFLEET = [sys.executable, "-m", "edgefleet"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    return subprocess.run(
        [*EDGEFLEET, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.fixture
def tflite_bundle(tflite_model: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "tiny-1.0.0.efb"
    names = tflite_tensor_names(tflite_model)
    write_bundle(path, manifest_for("tflite", names=names), members_for(tflite_model, "tflite"))
    return path


@pytest.fixture
def plain_tflite_bundle(tflite_bundle: Path, tmp_path: Path) -> Path:
    """The same bundle as a plain ustar archive, for corruptions of the tar structure."""
    path = tmp_path / "tiny-1.0.0-plain.efb"
    path.write_bytes(gzip.decompress(tflite_bundle.read_bytes()))
    return path


def test_help_lists_every_group() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for group in ("convert", "release", "serve", "fleet", "device", "bench", "demo", "bundle"):
        assert f"\n  {group} " in result.stdout, group


def test_help_does_not_import_tensorflow() -> None:
    script = "import sys; from edgefleet.cli import cli; cli.main(['--help'], standalone_mode=False); print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip().endswith("False"), result.stdout + result.stderr


def test_inspect_prints_a_readable_summary(tflite_bundle: Path) -> None:
    result = run("bundle", "inspect", str(tflite_bundle))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tiny-classifier 1.0.0" in out
    assert "sha256:" in out
    assert "tflite, fp32" in out
    assert "serving_default_image:0" in out and "1x32x32x3" in out
    assert "32x32 stretch, linear, RGB, NHWC" in out
    assert "cardboard, glass, metal, paper, plastic, trash" in out
    assert "2 frames" in out
    assert "KiB uncompressed)" in out
    assert "runtime >= 0.1.0" in out and "refuse" not in out


def test_inspect_says_when_this_runtime_is_too_old(tflite_model: bytes, tmp_path: Path) -> None:
    path = tmp_path / "future.efb"
    names = tflite_tensor_names(tflite_model)
    manifest = manifest_for(
        "tflite", names=names, compatibility=Compatibility(min_runtime_version="99.0.0")
    )
    write_bundle(path, manifest, members_for(tflite_model, "tflite"))
    result = run("bundle", "inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "runtime >= 99.0.0" in result.stdout
    assert "the bundle needs edge_runtime >= 99.0.0; this runtime is 0.1.0" in result.stdout


def test_inspect_json_is_the_manifest(tflite_bundle: Path) -> None:
    result = run("bundle", "inspect", "--json", str(tflite_bundle))
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["schema_version"] == 1
    assert manifest["model"]["format"] == "tflite"
    assert set(manifest["files"]) == {"model.tflite", "golden/000.npy", "golden/001.npy"}


def recompress(edit):
    """Corrupt the archive inside a compressed bundle, then compress it again."""
    return lambda data: gzip.compress(edit(gzip.decompress(data)), mtime=0)


@pytest.mark.parametrize(
    ("corrupt", "words"),
    [
        (lambda data: data[: len(data) // 3], "gzip stream is truncated"),
        (lambda data: data + b"#!/bin/sh appended", "after its gzip stream"),
        (lambda data: data + data, "more than one gzip member"),
        (lambda data: flip(data, len(data) // 2), "gzip stream is corrupt"),
        (recompress(lambda data: flip(data, data.index(b"TFL3") + 100)), "tampered"),
        (recompress(lambda data: data.replace(b"TFL3", b"TFL4", 1)), "model.tflite"),
        (lambda data: b"", "too short"),
    ],
)
def test_inspect_refuses_a_corrupt_bundle(tflite_bundle: Path, corrupt, words: str) -> None:
    _assert_inspect_refuses(tflite_bundle, corrupt, words)


def _assert_inspect_refuses(bundle: Path, corrupt, words: str) -> None:
    bundle.write_bytes(corrupt(bundle.read_bytes()))
    result = run("bundle", "inspect", str(bundle))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {bundle.name}:")
    assert words in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("corrupt", "words"),
    [
        (lambda data: data[: len(data) // 3], "truncated"),
        (lambda data: data + b"#!/bin/sh appended", "after its end"),
        (lambda data: flip(data, data.index(b"TFL3") + 100), "tampered"),
        (lambda data: data.replace(b"TFL3", b"TFL4", 1), "model.tflite"),
    ],
)
def test_inspect_refuses_a_corrupt_plain_bundle(
    plain_tflite_bundle: Path, corrupt, words: str
) -> None:
    assert plain_tflite_bundle.name == "tiny-1.0.0-plain.efb"
    _assert_inspect_refuses(plain_tflite_bundle, corrupt, words)


def test_unpack_then_pack_gives_the_same_bytes(tflite_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "unpacked"
    assert run("bundle", "unpack", str(tflite_bundle), str(folder)).returncode == 0
    assert (folder / "manifest.json").is_file() and (folder / "golden" / "001.npy").is_file()
    refused = run("bundle", "unpack", str(tflite_bundle), str(folder))
    assert refused.returncode == 1 and "not empty" in refused.stderr

    # A hand-writer drops the files table and edits the description; pack recomputes hashes.
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    repacked = tmp_path / "repacked.efb"
    result = run("bundle", "pack", str(folder), "-o", str(repacked))
    assert result.returncode == 0, result.stderr
    assert repacked.read_bytes() == tflite_bundle.read_bytes()
    plain = tmp_path / "plain.efb"
    result = run("bundle", "pack", str(folder), "-o", str(plain), "--no-compress")
    assert result.returncode == 0, result.stderr
    assert plain.read_bytes() == gzip.decompress(tflite_bundle.read_bytes())
    assert run("bundle", "inspect", str(plain)).returncode == 0

    (folder / "model.tflite").unlink()
    missing = run("bundle", "pack", str(folder), "-o", str(tmp_path / "x.efb"))
    assert missing.returncode == 1 and "model.tflite" in missing.stderr
    assert not (tmp_path / "x.efb").exists()
