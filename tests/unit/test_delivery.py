"""ChunkDownload without a network: windows, resume after a kill, refusals, completion, disk full."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_runtime.chunk_download import (
    MAX_CHUNK_SIZE,
    WINDOW,
    ChunkDownload,
    ChunkMeta,
    chunk_ranges,
)
from edge_runtime.errors import ChunkIntegrityError, DeliveryError
from fleet_server.chunk_server import parse_request
from fleet_server.errors import MalformedRequestError

CHUNK = 1024
REPO = Path(__file__).resolve().parents[2]


def source_bytes(size: int, seed: int = 7) -> bytes:
    return bytes((i * 131 + seed) % 251 for i in range(size))


DATA = source_bytes(40 * CHUNK + 300)  # 41 chunks, the last one 300 bytes
META = ChunkMeta.for_bytes(DATA, CHUNK)
SHA = META.sha256


def chunk(i: int, data: bytes = DATA, size: int = CHUNK) -> bytes:
    return data[i * size : (i + 1) * size]


def new_download(folder: Path, **kwargs: object) -> ChunkDownload:
    options: dict[str, object] = {"window_timeout": 5.0, **kwargs}
    return ChunkDownload(folder, SHA, len(DATA), CHUNK, **options)  # type: ignore[arg-type]


def test_meta_for_bytes_and_ranges() -> None:
    assert META.chunks == 41
    assert META.chunk_length(40) == 300
    assert ChunkMeta.parse(META.to_dict()) == META
    assert chunk_ranges([5, 0, 1, 2, 9, 10]) == [[0, 3], [5, 6], [9, 11]]
    assert chunk_ranges([]) == []


def test_windows_of_at_most_sixteen_then_the_next(tmp_path: Path) -> None:
    download = new_download(tmp_path)
    first = download.next_request(now=0.0)
    assert first is not None  # the wire object is the documented one
    assert first.to_dict() == {"protocol": 1, "bundle": SHA, "want": [[0, WINDOW]], "have": 0}
    assert download.next_request(now=1.0) is None  # still pending, no timeout yet
    download.on_meta(META.to_dict())
    for i in range(WINDOW):
        assert download.on_chunk(i, chunk(i), now=1.0)
    second = download.next_request(now=1.0)
    assert second is not None
    assert second.want == [[16, 32]]
    assert second.have == 16
    assert download.missing == 41 - 16


def test_a_stalled_window_is_asked_again_only_for_what_it_misses(tmp_path: Path) -> None:
    download = new_download(tmp_path)
    download.on_meta(META.to_dict())
    download.next_request(now=0.0)
    for i in (0, 1, 2, 7):
        download.on_chunk(i, chunk(i), now=2.0)
    assert download.next_request(now=6.9) is None  # progress at t=2 restarted the clock
    again = download.next_request(now=7.0)
    assert again is not None
    assert again.want == [[3, 7], [8, 16]]
    assert download.timeouts == 1
    # chunks of someone else's window (shared broadcast) are kept too
    assert download.on_chunk(30, chunk(30), now=7.5)
    assert download.has_chunk(30)


def test_force_starts_a_fresh_window_after_a_reconnect(tmp_path: Path) -> None:
    download = new_download(tmp_path)
    download.on_meta(META.to_dict())
    download.next_request(now=0.0)
    download.on_chunk(0, chunk(0), now=0.1)
    forced = download.next_request(now=0.2, force=True)
    assert forced is not None
    assert forced.want == [[1, 17]]


def test_duplicates_are_idempotent_and_early_chunks_wait_for_the_meta(tmp_path: Path) -> None:
    download = new_download(tmp_path)
    assert download.on_chunk(3, chunk(3)) is False  # before the meta: cannot be checked
    assert download.have == 0
    download.on_meta(META.to_dict())
    download.on_meta(META.to_dict())  # retained meta delivered again
    assert download.on_chunk(3, chunk(3)) is True
    bitmap = download.bitmap_path.read_bytes()
    assert download.on_chunk(3, chunk(3)) is False
    assert download.bitmap_path.read_bytes() == bitmap
    assert download.have == 1


def test_refusals(tmp_path: Path) -> None:
    download = new_download(tmp_path)
    with pytest.raises(ChunkIntegrityError, match="meta says"):
        download.on_meta({**META.to_dict(), "length": len(DATA) + 1})
    too_big = {**META.to_dict(), "chunk_size": MAX_CHUNK_SIZE + 1}
    with pytest.raises(ChunkIntegrityError, match="chunk_size: Input should be less than"):
        download.on_meta(too_big)
    other = ChunkMeta.for_bytes(source_bytes(len(DATA), seed=8), CHUNK)
    with pytest.raises(ChunkIntegrityError, match="arrived for bundle"):
        download.on_meta(other.to_dict())
    with pytest.raises(ChunkIntegrityError, match="chunk_sha256"):
        download.on_meta({**META.to_dict(), "chunk_sha256": ["00" * 32]})
    assert download.meta is None

    download.on_meta(META.to_dict())
    download.next_request(now=0.0)
    with pytest.raises(ChunkIntegrityError, match="outside"):
        download.on_chunk(41, b"x")
    with pytest.raises(ChunkIntegrityError, match="outside"):
        download.on_chunk(-1, b"x")
    with pytest.raises(ChunkIntegrityError, match="expected 1024"):
        download.on_chunk(0, chunk(0) + b"extra")
    with pytest.raises(ChunkIntegrityError, match="expected 300"):
        download.on_chunk(40, DATA[40 * CHUNK :] + b"!")  # nothing past the signed length
    tampered = bytes([chunk(5)[0] ^ 1]) + chunk(5)[1:]
    with pytest.raises(ChunkIntegrityError, match="does not match its sha256"):
        download.on_chunk(5, tampered, now=0.5)
    assert not download.has_chunk(5)
    assert download.refused == 3
    assert download.part_path.stat().st_size == len(DATA)


def test_a_refused_chunk_is_asked_again_once_the_window_settles(tmp_path: Path) -> None:
    download = new_download(tmp_path, window_timeout=30.0)
    download.on_meta(META.to_dict())
    download.next_request(now=0.0)
    for i in range(WINDOW):
        data = chunk(i) if i != 4 else b"\0" * CHUNK
        if i == 4:
            with pytest.raises(ChunkIntegrityError):
                download.on_chunk(i, data, now=0.1)
        else:
            download.on_chunk(i, data, now=0.1)
    assert download.next_request(now=0.5) is None  # retry_delay (1 s), not window_timeout
    retry = download.next_request(now=1.1)
    assert retry is not None
    assert retry.want == [[4, 5]]
    assert download.timeouts == 0


def test_complete_file_equals_the_source(tmp_path: Path) -> None:
    download = new_download(tmp_path)
    download.on_meta(META.to_dict())
    with pytest.raises(DeliveryError, match="not complete"):
        download.finish()
    for i in reversed(range(META.chunks)):
        download.on_chunk(i, chunk(i))
    assert download.complete
    assert download.next_request() is None
    path = download.finish()
    assert path == tmp_path / f"{SHA}.download"
    assert path.read_bytes() == DATA
    assert not download.part_path.exists()
    assert not download.bitmap_path.exists()


def test_resume_after_a_kill_from_the_persisted_bitmap(tmp_path: Path) -> None:
    first = new_download(tmp_path)
    first.on_meta(META.to_dict())
    stored = [0, 1, 2, 17, 40]
    for i in stored:
        first.on_chunk(i, chunk(i))
    # A kill: the object is never closed or finished; a new process starts over from disk.
    record = json.loads(first.bitmap_path.read_text())
    assert record["sha256"] == SHA
    assert record["chunk_size"] == CHUNK

    second = new_download(tmp_path)
    assert second.have == len(stored)
    assert [i for i in range(second.chunks) if second.has_chunk(i)] == stored
    request = second.next_request(now=0.0)
    assert request is not None
    assert request.want == [[3, 17], [18, 20]]
    assert request.have == 5
    second.on_meta(META.to_dict())
    for i in range(META.chunks):
        second.on_chunk(i, chunk(i))
    assert second.finish().read_bytes() == DATA
    first.close()


def test_resume_checks_stored_chunks_against_the_meta(tmp_path: Path) -> None:
    first = new_download(tmp_path)
    first.on_meta(META.to_dict())
    for i in range(4):
        first.on_chunk(i, chunk(i))
    first.close()
    with first.part_path.open("r+b") as handle:  # bytes lost under a lying disk cache
        handle.seek(2 * CHUNK)
        handle.write(b"\0" * 10)
    second = new_download(tmp_path)
    assert second.have == 4
    second.on_meta(META.to_dict())
    assert second.have == 3
    assert not second.has_chunk(2)
    second.discard()
    assert not second.part_path.exists()
    assert not second.bitmap_path.exists()


def test_an_unusable_bitmap_starts_over(tmp_path: Path) -> None:
    first = new_download(tmp_path)
    first.on_meta(META.to_dict())
    first.on_chunk(0, chunk(0))
    first.close()
    first.bitmap_path.write_text("{not json")
    assert new_download(tmp_path).have == 0


def test_the_meta_chunk_size_wins_over_the_assumed_one(tmp_path: Path) -> None:
    download = ChunkDownload(tmp_path, SHA, len(DATA), 4096, window_timeout=5.0)
    assert download.chunks == 11
    download.on_meta(META.to_dict())
    assert download.chunk_size == CHUNK
    assert download.chunks == 41
    for i in range(META.chunks):
        download.on_chunk(i, chunk(i))
    assert download.finish().read_bytes() == DATA


def test_constructor_refuses_nonsense(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError, match="sha256"):
        ChunkDownload(tmp_path, "../../etc/passwd", 10)
    with pytest.raises(DeliveryError, match="chunk_size"):
        ChunkDownload(tmp_path, SHA, 10, MAX_CHUNK_SIZE + 1)
    with pytest.raises(DeliveryError, match="window"):
        ChunkDownload(tmp_path, SHA, 10, window=WINDOW + 1)


def test_request_parsing_refuses_malformed_payloads() -> None:
    topic = "edgefleet/devices/cam-1/download"
    good = {"protocol": 1, "bundle": SHA, "want": [[0, 3], [5, 6]], "have": 2}
    request = parse_request(topic, json.dumps(good).encode(), "edgefleet")
    assert request.device_id == "cam-1"
    assert request.indices() == [0, 1, 2, 5]
    bad_payloads = [
        b"not json",
        b"[1, 2]",
        json.dumps({**good, "protocol": 2}).encode(),
        json.dumps({**good, "bundle": "abc"}).encode(),
        json.dumps({**good, "want": []}).encode(),
        json.dumps({**good, "want": [[3, 3]]}).encode(),
        json.dumps({**good, "want": [[-1, 2]]}).encode(),
        json.dumps({**good, "want": [[0, True]]}).encode(),
        json.dumps({**good, "want": [[0, 1]] * 17}).encode(),
        json.dumps({**good, "have": -1}).encode(),
        b"\xff\xfe",
    ]
    for payload in bad_payloads:
        with pytest.raises(MalformedRequestError):
            parse_request(topic, payload, "edgefleet")
    with pytest.raises(MalformedRequestError):
        parse_request("edgefleet/devices//download", json.dumps(good).encode(), "edgefleet")


# --- disk full, for real ------------------------------------------------------------------

DISK_FULL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from edge_runtime.chunk_download import ChunkDownload, ChunkMeta
    from edge_runtime.errors import DeliveryError

    folder, reserve = sys.argv[1], sys.argv[2] == "1"
    data = bytes(range(256)) * 4096          # 1 MiB
    meta = ChunkMeta.for_bytes(data, 65536)  # 16 chunks of 64 KiB
    result = {"stored": 0}
    try:
        d = ChunkDownload(folder, meta.sha256, len(data), 65536, reserve=reserve)
        d.on_meta(meta.to_dict())
        for i in range(meta.chunks):
            d.on_chunk(i, data[i * 65536:(i + 1) * 65536])
            result["stored"] += 1
        result["outcome"] = "complete"
    except DeliveryError as e:
        result["outcome"] = str(e)
    try:
        again = ChunkDownload(folder, meta.sha256, len(data), 65536, reserve=False)
        result["resumed_have"] = again.have
    except DeliveryError as e:
        result["resumed_have"] = str(e)
    print(json.dumps(result))
    """
)


def run_in_tiny_tmpfs(mountpoint: Path, size: str, reserve: bool) -> dict[str, object]:
    """Run the script on a real full filesystem: a size-capped tmpfs in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    shell = 'mount -t tmpfs -o size="$1" tmpfs "$5" && exec "$2" -c "$3" "$5/dl" "$4"'
    mountpoint.mkdir()
    flag = "1" if reserve else "0"
    command = ["unshare", "-Urm", "sh", "-c", shell, "sh", size, sys.executable, DISK_FULL_SCRIPT]
    result = subprocess.run(
        [*command, flag, str(mountpoint)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    if result.returncode != 0 and "mount" in result.stderr + result.stdout:
        pytest.skip(f"cannot mount a private tmpfs here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_disk_full_while_presizing_is_a_delivery_error(tmp_path: Path) -> None:
    result = run_in_tiny_tmpfs(tmp_path / "mnt", "512k", reserve=True)
    assert result["stored"] == 0
    assert str(result["outcome"]).startswith("disk is full: cannot pre-size")
    assert result["resumed_have"] == 0 or "disk is full" in str(result["resumed_have"])


def test_disk_full_while_writing_leaves_a_consistent_bitmap(tmp_path: Path) -> None:
    result = run_in_tiny_tmpfs(
        tmp_path / "mnt", "512k", reserve=False
    )  # sparse part file, fills up as chunks land
    stored = result["stored"]
    assert isinstance(stored, int)
    assert 0 < stored < 16
    assert str(result["outcome"]).startswith("disk is full")
    # the bitmap is whole and claims exactly the chunks that were stored (never a half-written one)
    assert result["resumed_have"] == stored


def test_file_size_limit_is_reported_like_a_full_disk(tmp_path: Path) -> None:
    limit_script = (
        "import resource, signal, runpy, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))\n"
        "sys.argv = ['x', sys.argv[1], sys.argv[2]]\n"
        f"exec(compile({DISK_FULL_SCRIPT!r}, 'script', 'exec'))\n"
    )
    for reserve in ("1", "0"):
        folder = tmp_path / reserve
        result = subprocess.run(
            [sys.executable, "-c", limit_script, str(folder), reserve],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout.splitlines()[-1])
        assert str(outcome["outcome"]).startswith("disk is full"), outcome
        assert "File too large" in str(outcome["outcome"])


def test_sha_of_the_assembled_file_matches(tmp_path: Path) -> None:
    download = new_download(tmp_path)
    download.on_meta(META.to_dict())
    for i in range(META.chunks):
        download.on_chunk(i, chunk(i))
    assert hashlib.sha256(download.finish().read_bytes()).hexdigest() == SHA
