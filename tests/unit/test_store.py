"""The on-device bundle store: atomic state with a backup, verified bundles, pruning, full disks.

Power cuts are simulated by SIGKILLing a real process at each step of a
state write; a full disk is a real, tiny tmpfs mounted in a user+mount
namespace (``unshare -Urm``, no root needed), and a file-size limit
(``RLIMIT_FSIZE``) in a subprocess where namespaces are not allowed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge_runtime.bundle import parse_bundle
from edge_runtime.errors import DiskFullError, StoreError
from edge_runtime.update import BundleRef, BundleStore, UpdatePhase, UpdateState

A = BundleRef(sha256="a" * 64, name="sorter", version="1.0.0")
B = BundleRef(sha256="b" * 64, name="sorter", version="1.1.0")
T0 = 1_800_000_000.0
ROOT = Path(__file__).parents[2]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probation_state() -> UpdateState:
    state = UpdateState.initial(A, now=T0).assignment_seen(B, 4, T0 + 1).state
    for advance in ("download_complete", "verified", "smoke_started", "smoke_passed", "activated"):
        state = getattr(state, advance)(T0 + 2).state
    assert state.phase is UpdatePhase.PROBATION
    return state


def run_python(script: str, *args: str, prefix: list[str] | None = None) -> dict[str, object]:
    """Run ``script`` in a fresh interpreter (optionally under ``prefix``); return its JSON output."""
    result = subprocess.run(
        [*(prefix or []), sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


# --- bundles ---------------------------------------------------------------------------


def test_layout_add_load_and_identity(tmp_path: Path, valid_bundle: bytes) -> None:
    store = BundleStore(tmp_path / "store")
    assert (tmp_path / "store" / "bundles").is_dir()
    assert (tmp_path / "store" / "downloads").is_dir()
    digest = sha(valid_bundle)
    assert not store.has(digest)
    path = store.add(valid_bundle)
    assert path == tmp_path / "store" / "bundles" / f"{digest}.efb"
    assert store.has(digest) and store.bundles() == [digest]
    assert path.stat().st_mode & 0o222 == 0  # stored bundles are read-only
    bundle = store.load(digest)
    assert bundle.sha256 == digest and bundle.manifest.name == "tiny-classifier"
    assert store.add(valid_bundle) == path  # idempotent


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "abc", ""])
def test_paths_are_only_ever_made_from_a_sha256(tmp_path: Path, bad: str) -> None:
    store = BundleStore(tmp_path)
    with pytest.raises(StoreError, match="is not a bundle sha256"):
        store.path(bad)
    with pytest.raises(StoreError):
        store.has(bad)


def test_install_moves_a_verified_download_atomically(tmp_path: Path, valid_bundle: bytes) -> None:
    store = BundleStore(tmp_path)
    digest = sha(valid_bundle)
    download = store.download_path(digest)
    download.write_bytes(valid_bundle)
    path = store.install(download, digest)
    assert path == store.path(digest) and path.read_bytes() == valid_bundle
    assert not download.exists()
    assert [p.name for p in store.bundles_dir.iterdir()] == [f"{digest}.efb"]
    # the same download again (a QoS 1 repeat) is simply absorbed
    download.write_bytes(valid_bundle)
    assert store.install(download, digest) == path and not download.exists()


def test_install_refuses_bytes_that_are_not_the_named_bundle(
    tmp_path: Path, valid_bundle: bytes
) -> None:
    store = BundleStore(tmp_path)
    download = store.download_path("f" * 64)
    download.write_bytes(valid_bundle)
    with pytest.raises(StoreError, match="refusing to store it"):
        store.install(download, "f" * 64)
    assert download.exists() and store.bundles() == []
    with pytest.raises(StoreError, match="cannot read the download"):
        store.install(tmp_path / "missing.part", "f" * 64)


def test_install_across_filesystems_copies_then_replaces(
    tmp_path: Path, valid_bundle: bytes
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) here")
    download = shm / f"edgefleet-test-{os.getpid()}.part"
    download.write_bytes(valid_bundle)
    try:
        store = BundleStore(tmp_path)
        path = store.install(download, sha(valid_bundle))
        assert path.read_bytes() == valid_bundle and not download.exists()
        assert [p.name for p in store.bundles_dir.iterdir()] == [path.name]
    finally:
        download.unlink(missing_ok=True)


def test_corrupt_or_missing_stored_bundle_is_a_store_error_naming_it(
    tmp_path: Path, valid_bundle: bytes
) -> None:
    store = BundleStore(tmp_path)
    digest = sha(valid_bundle)
    with pytest.raises(StoreError, match=f"bundle {digest} is not in the store"):
        store.load(digest)
    path = store.add(valid_bundle)
    path.chmod(0o644)
    path.write_bytes(valid_bundle[:-700])  # bit rot / truncation after it was stored
    with pytest.raises(StoreError, match=f"stored bundle {digest} is corrupt"):
        store.load(digest)
    # a file whose bytes are a valid bundle, but not the one its name says
    other = store.path("e" * 64)
    other.write_bytes(valid_bundle)
    with pytest.raises(StoreError, match="its bytes hash to"):
        store.load("e" * 64)
    assert parse_bundle(valid_bundle).sha256 == digest


# --- pruning ---------------------------------------------------------------------------


def fill_store(store: BundleStore, count: int) -> list[str]:
    """``count`` stored bundles, oldest first (distinct mtimes)."""
    digests = []
    for index in range(count):
        path = store.add(f"bundle {index}".encode())
        os.utime(path, (T0 + index, T0 + index))
        digests.append(path.name.removesuffix(".efb"))
    return digests


def test_prune_deletes_the_oldest_unprotected_bundles(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    d = fill_store(store, 6)
    removed = store.prune(keep={d[0]}, max_bundles=3)
    assert removed == [d[3], d[2], d[1]]  # the protected oldest one stays, so do the 2 newest
    assert set(store.bundles()) == {d[0], d[4], d[5]}
    assert store.prune(keep={d[0]}, max_bundles=3) == []


def test_prune_never_deletes_what_the_persisted_state_names(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    d = fill_store(store, 5)
    active = BundleRef(sha256=d[0], name="m", version="1.0.0")
    staged = BundleRef(sha256=d[1], name="m", version="1.1.0")
    state = UpdateState.initial(active, now=T0).assignment_seen(staged, 1, T0).state
    state = state.download_complete(T0).state.verified(T0).state
    store.save_state(state)
    removed = store.prune(keep=set(), max_bundles=1)
    assert set(store.bundles()) == {d[0], d[1]}  # active/last good and staged, over the limit
    assert sorted(removed) == sorted(d[2:])
    assert store.prune(keep=set(), max_bundles=0) == []


# --- update state ----------------------------------------------------------------------


def test_state_round_trip_keeps_the_previous_copy(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    fresh = store.load_state(now=T0)
    assert fresh == UpdateState.initial(now=T0, epoch=fresh.epoch)
    assert len(fresh.epoch) == 16 and fresh.epoch != UpdateState.initial(now=T0).epoch
    assert store.state_source == "fresh"
    first = UpdateState.initial(A, now=T0)
    second = probation_state()
    store.save_state(first)
    assert not store.backup_path.exists()
    store.save_state(second)
    assert store.load_state() == second and store.state_source == "state.json"
    assert UpdateState.model_validate_json(store.backup_path.read_bytes()) == first
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_reader_always_finds_the_state_while_it_is_saved(tmp_path: Path) -> None:
    """Saving moves the old copy to the backup without ever taking state.json away (a status
    page or a test polling the file never sees it missing)."""
    store = BundleStore(tmp_path)
    store.save_state(UpdateState.initial(A, now=T0))
    missing = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                UpdateState.model_validate_json(store.state_path.read_bytes())
            except FileNotFoundError:
                missing.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            store.save_state(UpdateState.initial(A, now=T0 + i))
    finally:
        stop.set()
        reader.join()
    assert missing == []
    assert UpdateState.model_validate_json(store.backup_path.read_bytes()).updated_at == T0 + 298
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_killed_mid_write_boots_from_the_backup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BundleStore(tmp_path)
    old, new = UpdateState.initial(A, now=T0), probation_state()
    store.save_state(old)
    store.save_state(new)
    # the power cut: a temp file of a third write, and a state.json torn in half
    leftover = tmp_path / ".state.json.k1l2m3.tmp"
    leftover.write_bytes(b'{"phase": "comm')
    raw = store.state_path.read_bytes()
    store.state_path.write_bytes(raw[: len(raw) // 2])
    caplog.set_level(logging.WARNING, "edge_runtime.update.store")
    rebooted = BundleStore(tmp_path)
    assert not leftover.exists()
    assert rebooted.load_state() == old
    assert rebooted.state_source == "state.json.bak"
    assert "state.json is corrupt" in caplog.text and "using state.json.bak" in caplog.text
    # the next save must not replace the good backup with the torn file
    rebooted.save_state(new)
    assert UpdateState.model_validate_json(rebooted.backup_path.read_bytes()) == old
    assert rebooted.load_state() == new


def test_both_copies_unusable_gives_a_fresh_idle_state_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BundleStore(tmp_path)
    store.state_path.write_text('{"phase": "exploded"}')
    store.backup_path.write_bytes(b"\x00\x00\x00")
    caplog.set_level(logging.WARNING, "edge_runtime.update.store")
    state = store.load_state(now=T0)
    assert state == UpdateState.initial(now=T0, epoch=state.epoch)
    assert store.state_source == "fresh"
    assert "state.json is corrupt (phase:" in caplog.text
    assert "state.json.bak is corrupt" in caplog.text
    assert "fresh idle state" in caplog.text


KILL_SCRIPT = """
    import json, os, signal, sys
    from edge_runtime.update import BundleRef, BundleStore, UpdateState

    root, kill_at = sys.argv[1], int(sys.argv[2])
    store = BundleStore(root)
    a = BundleRef(sha256="a" * 64, name="m", version="1.0.0")
    b = BundleRef(sha256="b" * 64, name="m", version="1.1.0")
    store.save_state(UpdateState.initial(a, now=1.0))
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # the power cut, before this rename
        real_replace(src, dst)

    os.replace = replace
    store.save_state(UpdateState.initial(a, now=1.0).assignment_seen(b, 1, 2.0).state)
    os.kill(os.getpid(), signal.SIGKILL)  # after the last rename, before anything else
"""


@pytest.mark.parametrize(
    ("kill_at", "phase"),
    [(1, UpdatePhase.IDLE), (2, UpdatePhase.IDLE), (3, UpdatePhase.DOWNLOADING)],
    ids=["before-rotating-backup", "between-renames", "after-both-renames"],
)
def test_power_cut_at_each_step_of_a_state_write(
    tmp_path: Path, kill_at: int, phase: UpdatePhase
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL_SCRIPT), str(tmp_path), str(kill_at)],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == -9, result.stderr
    store = BundleStore(tmp_path)
    state = store.load_state()
    assert state.phase is phase  # the old state or the new one, never a torn one
    assert not list(tmp_path.glob(".*.tmp"))


# --- space -----------------------------------------------------------------------------


def test_free_space_and_check_space(tmp_path: Path) -> None:
    store = BundleStore(tmp_path, reserve_bytes=4096)
    free = store.free_bytes()
    assert 0 < free == shutil.disk_usage(tmp_path).free
    store.check_space(1024)
    with pytest.raises(DiskFullError, match=r"disk full: the download needs \d+ bytes"):
        store.check_space(free)


FULL_DISK_SCRIPT = """
    import json, os, subprocess, sys
    from pathlib import Path
    from edge_runtime.errors import DiskFullError
    from edge_runtime.update import BundleRef, BundleStore, UpdateState

    mount, outside = Path(sys.argv[1]), Path(sys.argv[2])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    store = BundleStore(mount / "store", reserve_bytes=0)
    a = BundleRef(sha256="a" * 64, name="m", version="1.0.0")
    b = BundleRef(sha256="b" * 64, name="m", version="1.1.0")
    old = UpdateState.initial(a, now=1.0)
    store.save_state(old)
    filler = mount / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"x" * 4096)
        except OSError as exc:
            errno_seen = exc.errno
    out = {"errno": errno_seen, "free": store.free_bytes()}
    new = old.assignment_seen(b, 1, 2.0).state
    for name, action in [
        ("save_state", lambda: store.save_state(new)),
        ("add", lambda: store.add(os.urandom(64 * 1024))),
        ("install", lambda: store.install(outside, sha256=sys.argv[3])),
        ("check_space", lambda: store.check_space(64 * 1024)),
    ]:
        try:
            action()
            out[name] = "no error"
        except DiskFullError as exc:
            out[name] = str(exc)
    out["files"] = sorted(
        str(p.relative_to(mount)) for p in mount.rglob("*") if p.is_file() and p != filler
    )
    out["state_after"] = store.load_state().phase.value
    out["download_kept"] = outside.exists()
    filler.unlink()
    store.save_state(new)
    out["state_after_freeing"] = store.load_state().phase.value
    out["install_after_freeing"] = store.install(outside, sha256=sys.argv[3]).name
    print(json.dumps(out))
"""


def _unshare_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "-Urm", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="user+mount namespaces are not allowed here")
def test_real_full_disk_is_a_disk_full_error_and_leaves_nothing_half_written(
    tmp_path: Path,
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    data = os.urandom(96 * 1024)
    outside = tmp_path / "download.part"  # another filesystem: install must copy
    outside.write_bytes(data)
    out = run_python(
        FULL_DISK_SCRIPT, str(mount), str(outside), sha(data), prefix=["unshare", "-Urm"]
    )
    assert out["errno"] == 28  # ENOSPC from the kernel, not an injected one
    for action in ("save_state", "add", "install"):
        assert str(out[action]).startswith("disk full: cannot "), out
        assert "No space left on device" in str(out[action])
    assert str(out["check_space"]).startswith("disk full: the download needs 65536 bytes")
    assert out["files"] == ["store/state.json"]  # no temp file, no partial bundle
    assert out["state_after"] == "idle"  # the old state survived the failed write
    assert out["download_kept"] is True
    assert out["state_after_freeing"] == "downloading"
    assert out["install_after_freeing"] == f"{sha(data)}.efb"


FSIZE_SCRIPT = """
    import json, resource, signal, sys
    from pathlib import Path
    from edge_runtime.errors import DiskFullError, StoreError
    from edge_runtime.update import BundleStore

    store = BundleStore(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))
    try:
        store.add(b"y" * (64 * 1024))
        print(json.dumps({"error": None}))
    except StoreError as exc:
        files = sorted(p.name for p in Path(sys.argv[1]).rglob("*") if p.is_file())
        print(json.dumps({"error": str(exc), "type": type(exc).__name__, "files": files}))
"""


def test_write_cut_short_by_a_file_size_limit_leaves_no_partial_file(tmp_path: Path) -> None:
    out = run_python(FSIZE_SCRIPT, str(tmp_path))
    assert out["type"] == "StoreError"  # EFBIG is not "disk full", but is just as clean
    assert str(out["error"]).startswith("cannot store bundle")
    assert out["files"] == []
