"""The on-device bundle store: verified bundles by sha256, partial downloads, the update state.

Layout under the store's root::

    bundles/<sha256>.efb   verified bundles only, each named by the hash of its bytes
    downloads/             partial downloads (their content belongs to the downloader)
    state.json             the persisted :class:`UpdateState`
    state.json.bak         the copy it replaced

Every write is atomic (temp file in the same folder, fsync, ``os.replace``),
so a power cut leaves the old file or the new one, never half of one. A full
disk is a :class:`DiskFullError` and leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from edge_runtime.atomic import fsync_dir
from edge_runtime.bundle.model_bundle import BUNDLE_SUFFIX, Bundle, BundleLimits, read_bundle
from edge_runtime.errors import BundleError, DiskFullError, RuntimeTooOldError, StoreError
from edge_runtime.update.lifecycle import UpdateState, protected_bundles

__all__ = ["BundleStore"]

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COPY_CHUNK = 1024 * 1024
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
STATE_NAME = "state.json"
BACKUP_NAME = "state.json.bak"


def _store_error(exc: OSError, doing: str) -> StoreError:
    """The typed error for an ``OSError`` met while ``doing`` something."""
    if exc.errno in _FULL_ERRNOS:
        return DiskFullError(f"disk full: cannot {doing} ({exc.strerror})")
    return StoreError(f"cannot {doing}: {exc.strerror or exc}")


def _write_temp(folder: Path, name: str, fill: Callable[[BinaryIO], object]) -> Path:
    """A fsynced temp file in ``folder`` written by ``fill``; removed again if anything fails."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return Path(tmp_name)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class BundleStore:
    """Verified bundles, partial downloads and the persisted update state under one folder.

    One device agent owns a store; it is not meant for concurrent writers.
    Opening it removes temp files that an interrupted write left behind.
    """

    def __init__(self, root: str | os.PathLike[str], *, reserve_bytes: int = 1024 * 1024) -> None:
        self.root = Path(root)
        self.bundles_dir = self.root / "bundles"
        self.downloads_dir = self.root / "downloads"
        self.state_path = self.root / STATE_NAME
        self.backup_path = self.root / BACKUP_NAME
        self.reserve_bytes = reserve_bytes
        """Space :meth:`check_space` keeps free for state writes and logs."""
        self.state_source = "none"
        """Where the last :meth:`load_state` found the state: state.json, state.json.bak or fresh."""
        try:
            self.bundles_dir.mkdir(parents=True, exist_ok=True)
            self.downloads_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _store_error(exc, f"create the bundle store in {self.root}") from exc
        self._remove_leftovers()

    # --- bundles --------------------------------------------------------------------

    def path(self, sha256: str) -> Path:
        """Where the bundle with this sha256 lives (whether or not it is there)."""
        if not _SHA256_RE.match(sha256):
            raise StoreError(f"{sha256!r} is not a bundle sha256 (64 lowercase hex digits)")
        return self.bundles_dir / f"{sha256}{BUNDLE_SUFFIX}"

    def download_path(self, sha256: str) -> Path:
        """The conventional partial-download file for this bundle, under ``downloads/``."""
        self.path(sha256)
        return self.downloads_dir / f"{sha256}.part"

    def has(self, sha256: str) -> bool:
        """True when the bundle is in the store."""
        return self.path(sha256).is_file()

    def bundles(self) -> list[str]:
        """The sha256s in the store, newest first."""
        found: list[tuple[float, str]] = []
        for entry in self.bundles_dir.glob(f"*{BUNDLE_SUFFIX}"):
            sha256 = entry.name.removesuffix(BUNDLE_SUFFIX)
            if _SHA256_RE.match(sha256):
                with contextlib.suppress(FileNotFoundError):
                    found.append((entry.stat().st_mtime, sha256))
        return [sha256 for _, sha256 in sorted(found, reverse=True)]

    def install(self, download_path: str | os.PathLike[str], sha256: str) -> Path:
        """Move a verified download into the store (atomically) and return its new path.

        The file's hash is checked once more, so the store holds only files
        named by their content. On the same filesystem this is a rename; from
        another one the bytes are copied to a temp file in ``bundles/`` first.
        """
        dest = self.path(sha256)
        source = Path(download_path)
        try:
            actual = _sha256_file(source)
        except OSError as exc:
            raise _store_error(exc, f"read the download {source}") from exc
        if actual != sha256:
            raise StoreError(
                f"download {source.name} has sha256 {actual[:16]}..., not {sha256[:16]}...; "
                "refusing to store it"
            )
        try:
            if dest.is_file():
                source.unlink()
                return dest
            with source.open("rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(source, 0o444)
            try:
                os.replace(source, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._copy_in(source, dest)
                source.unlink()
        except OSError as exc:
            raise _store_error(exc, f"store bundle {sha256[:12]}...") from exc
        fsync_dir(self.bundles_dir)
        log.info("stored bundle %s (%d bytes)", sha256, dest.stat().st_size)
        return dest

    def add(self, data: bytes) -> Path:
        """Write bundle bytes (already trusted by the caller) into the store; return the path."""
        sha256 = hashlib.sha256(data).hexdigest()
        dest = self.path(sha256)
        if dest.is_file():
            return dest
        try:
            tmp = _write_temp(self.bundles_dir, dest.name, lambda handle: handle.write(data))
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except OSError as exc:
            raise _store_error(exc, f"store bundle {sha256[:12]}...") from exc
        fsync_dir(self.bundles_dir)
        return dest

    def load(self, sha256: str, limits: BundleLimits | None = None) -> Bundle:
        """Read and validate a stored bundle; a missing or corrupt one is a :class:`StoreError`."""
        path = self.path(sha256)
        if not path.is_file():
            raise StoreError(f"bundle {sha256} is not in the store")
        try:
            bundle = read_bundle(path, limits)
        except RuntimeTooOldError as exc:  # intact, but for a newer runtime
            raise StoreError(f"stored bundle {sha256} cannot be used here: {exc}") from exc
        except BundleError as exc:
            raise StoreError(f"stored bundle {sha256} is corrupt: {exc}") from exc
        if bundle.sha256 != sha256:
            raise StoreError(
                f"stored bundle {sha256} is corrupt: its bytes hash to {bundle.sha256[:16]}..."
            )
        return bundle

    def remove(self, sha256: str) -> bool:
        """Delete a stored bundle; False when it was not there."""
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _store_error(exc, f"remove bundle {sha256[:12]}...") from exc
        return True

    def prune(self, keep: Iterable[str], max_bundles: int = 3) -> list[str]:
        """Delete the oldest bundles beyond ``max_bundles``; return the sha256s deleted.

        Never deletes a bundle in ``keep`` nor one the persisted state still
        names (active, last good, target), even when those alone exceed
        ``max_bundles``.
        """
        protected = set(keep)
        state, _, _ = self._read_state()
        if state is not None:
            protected |= protected_bundles(state)
        stored = self.bundles()
        room = max(0, max_bundles - sum(1 for sha256 in stored if sha256 in protected))
        doomed = [sha256 for sha256 in stored if sha256 not in protected][room:]
        for sha256 in doomed:
            self.remove(sha256)
            log.info("pruned bundle %s", sha256)
        return doomed

    # --- space ------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Bytes an unprivileged process can still write on the store's filesystem."""
        try:
            stats = os.statvfs(self.root)
        except OSError as exc:
            raise _store_error(exc, f"read free space of {self.root}") from exc
        return stats.f_bavail * stats.f_frsize

    def check_space(self, needed_bytes: int, what: str = "the download") -> None:
        """Raise :class:`DiskFullError` unless ``needed_bytes`` fit beside the reserve."""
        free = self.free_bytes()
        if needed_bytes + self.reserve_bytes > free:
            raise DiskFullError(
                f"disk full: {what} needs {needed_bytes} bytes but {self.root} has {free} free "
                f"(keeping {self.reserve_bytes} in reserve)"
            )

    # --- update state ---------------------------------------------------------------

    def save_state(self, state: UpdateState) -> None:
        """Persist ``state`` atomically; the copy it replaces (if valid) becomes state.json.bak."""
        data = state.model_dump_json(indent=2).encode("utf-8") + b"\n"
        tmp: Path | None = None
        try:
            tmp = _write_temp(self.root, STATE_NAME, lambda handle: handle.write(data))
            if self._readable_state(self.state_path) is not None:
                self._keep_backup()
            os.replace(tmp, self.state_path)  # state.json is there at every moment
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            raise _store_error(exc, f"save the update state in {self.root}") from exc
        fsync_dir(self.root)

    def _keep_backup(self) -> None:
        """The valid state.json becomes state.json.bak, and stays where it is until replaced
        (a hard link, else a copy): a reader never finds state.json missing."""
        staged = self.backup_path.with_name(self.backup_path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        try:
            os.link(self.state_path, staged)
        except OSError:  # a filesystem without hard links (FAT on some SD cards)
            shutil.copyfile(self.state_path, staged)
        os.replace(staged, self.backup_path)

    def load_state(self, now: float = 0.0) -> UpdateState:
        """The persisted state: state.json, else state.json.bak, else a fresh idle state.

        Falling back is logged with the reason (missing or corrupt), and
        :attr:`state_source` says which copy was used.
        """
        state, source, problems = self._read_state()
        self.state_source = source
        if state is not None:
            if problems:
                log.warning("update state: %s; using %s", "; ".join(problems), source)
            return state
        if all(problem.endswith("is missing") for problem in problems):
            log.info("no update state in %s yet; starting idle", self.root)
        else:
            log.warning("update state: %s; starting from a fresh idle state", "; ".join(problems))
        return UpdateState.initial(now=now)

    def _read_state(self) -> tuple[UpdateState | None, str, list[str]]:
        problems: list[str] = []
        for path in (self.state_path, self.backup_path):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                problems.append(f"{path.name} is missing")
                continue
            except OSError as exc:
                problems.append(f"{path.name} is unreadable ({exc.strerror or exc})")
                continue
            try:
                return UpdateState.model_validate_json(raw), path.name, problems
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "(top level)"
                problems.append(f"{path.name} is corrupt ({where}: {first['msg']})")
        return None, "fresh", problems

    @staticmethod
    def _readable_state(path: Path) -> UpdateState | None:
        try:
            return UpdateState.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            return None

    # --- housekeeping ---------------------------------------------------------------

    def _copy_in(self, source: Path, dest: Path) -> None:
        def fill(handle: BinaryIO) -> None:
            with source.open("rb") as src:
                while chunk := src.read(_COPY_CHUNK):
                    handle.write(chunk)

        tmp = _write_temp(self.bundles_dir, dest.name, fill)
        try:
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def _remove_leftovers(self) -> None:
        """Temp files of writes that a crash interrupted (never a complete file)."""
        for folder in (self.root, self.bundles_dir):
            for leftover in folder.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
                    log.info("removed %s left by an interrupted write", leftover)
