"""Receiving one bundle in chunks: the partial file, its persisted bitmap and the request windows.

The device side of "Bundle delivery: receiver-driven chunks" in
``docs/protocol.md``, without any network: :class:`ChunkDownload` takes the
meta message and chunk payloads as plain values, says which window of chunks
to ask for next, and keeps its progress on disk so that a killed process
resumes where it stopped. ``edge_runtime.chunk_fetch`` drives it over MQTT.

On disk, in the download folder:

- ``<sha256>.part``: the bundle's bytes at their offsets, pre-sized to the
  signed length (space reserved with ``posix_fallocate`` where possible);
- ``<sha256>.chunks``: which chunks are in, replaced atomically after each
  chunk (the part file is fsynced first, so the bitmap never claims bytes
  that are not on disk);
- ``<sha256>.download``: the assembled file after :meth:`ChunkDownload.finish`,
  which the caller verifies against the TUF target before anything reads it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from edge_runtime.atomic import atomic_write_bytes, fsync_dir
from edge_runtime.errors import ChunkIntegrityError, DeliveryError, MalformedMessageError
from edge_runtime.protocol import (
    CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    PROTOCOL_VERSION,
    WINDOW,
    ChunkMeta,
    DownloadRequest,
)

__all__ = [
    "CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "PROTOCOL_VERSION",
    "WINDOW",
    "ChunkDownload",
    "ChunkMeta",
    "bundle_topic",
    "chunk_ranges",
]

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BITMAP_FORMAT = 1
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_RESERVE = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}


def bundle_topic(prefix: str, sha256: str, leaf: str) -> str:
    """``{prefix}/bundles/{sha256}/{leaf}`` (``meta``, ``chunks/<i>`` or ``#``)."""
    return f"{prefix}/bundles/{sha256}/{leaf}"


def chunk_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as half-open ``[start, end]`` ranges: ``[0, 1, 2, 5]`` -> ``[[0, 3], [5, 6]]``."""
    ranges: list[list[int]] = []
    for index in sorted(indices):
        if ranges and ranges[-1][1] == index:
            ranges[-1][1] = index + 1
        else:
            ranges.append([index, index + 1])
    return ranges


class ChunkDownload:
    """One bundle being received: partial file, persisted bitmap, request windows. Not thread-safe.

    ``signed_length`` comes from the verified TUF target; the meta message must
    agree with it, and no byte beyond it is ever written. ``chunk_size`` is the
    cut assumed until the meta arrives (the meta's own, at most 256 KiB, wins).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        sha256: str,
        signed_length: int,
        chunk_size: int = CHUNK_SIZE,
        *,
        window: int = WINDOW,
        window_timeout: float = 10.0,
        reserve: bool = True,
    ) -> None:
        if not _SHA256.match(sha256):
            raise DeliveryError(f"not a lowercase hex sha256: {sha256!r}")
        if signed_length <= 0:
            raise DeliveryError(f"signed length must be positive, got {signed_length}")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise DeliveryError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
        if not 0 < window <= WINDOW:
            raise DeliveryError(f"window must be 1..{WINDOW}, got {window}")
        self.folder = Path(folder)
        self.sha256 = sha256
        self.signed_length = signed_length
        self.window = window
        self.window_timeout = window_timeout
        self.retry_delay = min(1.0, window_timeout)
        """Wait before asking again for chunks that arrived corrupt (they were refused)."""
        self.part_path = self.folder / f"{sha256}.part"
        self.bitmap_path = self.folder / f"{sha256}.chunks"
        self.download_path = self.folder / f"{sha256}.download"
        self.timeouts = 0
        """Windows asked for again because nothing arrived within ``window_timeout``."""
        self.refused = 0
        """Chunks refused (bad length, bad hash); each is asked for again."""
        self._meta: ChunkMeta | None = None
        self._chunk_size = chunk_size
        self._have = bytearray(self._bitmap_bytes())
        self._count = 0
        self._window: frozenset[int] = frozenset()
        self._refused_in_window: set[int] = set()
        self._last_progress = 0.0
        self._fd: int | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        self._open(reserve)

    # --- state -----------------------------------------------------------------

    @property
    def chunks(self) -> int:
        """Number of chunks under the current cut."""
        return math.ceil(self.signed_length / self._chunk_size)

    @property
    def chunk_size(self) -> int:
        """The cut in use: the meta's once it arrived, else the one given at construction."""
        return self._chunk_size

    @property
    def meta(self) -> ChunkMeta | None:
        """The accepted meta message, or ``None`` before it arrived."""
        return self._meta

    @property
    def have(self) -> int:
        """Chunks stored."""
        return self._count

    @property
    def missing(self) -> int:
        """Chunks still to receive."""
        return self.chunks - self._count

    @property
    def complete(self) -> bool:
        """Every chunk is stored; the caller still verifies the whole file against TUF."""
        return self._count == self.chunks

    def has_chunk(self, index: int) -> bool:
        """Whether chunk ``index`` is stored."""
        return bool(self._have[index >> 3] & (1 << (index & 7)))

    # --- protocol ----------------------------------------------------------------

    def on_meta(self, meta: object) -> None:
        """Accept the bundle's meta message (its bytes, a decoded value or a :class:`ChunkMeta`);
        refuse one that is malformed or disagrees with the signed target."""
        if isinstance(meta, ChunkMeta):
            parsed = meta
        else:
            try:
                parsed = ChunkMeta.parse(meta)
            except MalformedMessageError as e:
                raise ChunkIntegrityError(str(e)) from e
        if parsed.sha256 != self.sha256:
            raise ChunkIntegrityError(
                f"meta for bundle {parsed.sha256[:12]} arrived for bundle {self.sha256[:12]}"
            )
        if parsed.length != self.signed_length:
            raise ChunkIntegrityError(
                f"bundle {self.sha256[:12]}: meta says {parsed.length} bytes,"
                f" the signed target {self.signed_length}"
            )
        if parsed == self._meta:
            return
        if parsed.chunk_size != self._chunk_size:
            log.info(
                "bundle %s is cut in chunks of %d bytes, not %d; starting its bitmap over",
                self.sha256[:12],
                parsed.chunk_size,
                self._chunk_size,
            )
            self._chunk_size = parsed.chunk_size
            self._have = bytearray(self._bitmap_bytes())
            self._count = 0
            self._window = frozenset()
            self._meta = parsed
            self._persist()
            return
        self._meta = parsed
        if self._count:
            # Chunks stored before this meta (a resume, or a changed meta) were
            # checked against nothing or against other hashes: check them now.
            self._verify_stored()

    def on_chunk(self, index: int, data: bytes, now: float | None = None) -> bool:
        """Store chunk ``index``; True if it was new. Refusals raise :class:`ChunkIntegrityError`.

        A chunk that arrives before the meta cannot be checked and is dropped
        (False); it is asked for again with the window.
        """
        now = time.monotonic() if now is None else now
        if not 0 <= index < self.chunks:
            raise ChunkIntegrityError(
                f"bundle {self.sha256[:12]}: chunk index {index} is outside 0..{self.chunks - 1}"
            )
        if self._meta is None:
            log.debug("bundle %s: chunk %d before the meta; dropped", self.sha256[:12], index)
            return False
        expected = self._meta.chunk_length(index)
        if len(data) != expected:
            self._refuse(index, now)
            raise ChunkIntegrityError(
                f"bundle {self.sha256[:12]}: chunk {index} is {len(data)} bytes, expected {expected}"
            )
        if self.has_chunk(index):
            return False
        if hashlib.sha256(data).hexdigest() != self._meta.chunk_sha256[index]:
            self._refuse(index, now)
            raise ChunkIntegrityError(
                f"bundle {self.sha256[:12]}: chunk {index} does not match its sha256 in the meta"
            )
        self._write(index, data)
        self._set(index)
        try:
            self._persist()
        except DeliveryError:
            self._clear(index)
            raise
        if index in self._window:
            self._last_progress = now
            self._refused_in_window.discard(index)
        return True

    def next_request(
        self, now: float | None = None, *, force: bool = False
    ) -> DownloadRequest | None:
        """The ``download`` request to publish now, or ``None`` while the current window is pending.

        When the current window is complete, the next one is the lowest
        missing chunks (at most ``window``). A window whose chunks stop coming
        for ``window_timeout`` seconds, or whose missing chunks all arrived
        corrupt (after ``retry_delay``), is asked for again: only what it
        still misses. ``force`` (after a reconnect) starts a fresh window at once.
        """
        now = time.monotonic() if now is None else now
        if self.complete:
            return None
        pending = sorted(i for i in self._window if not self.has_chunk(i))
        if pending and not force:
            idle = now - self._last_progress
            if all(i in self._refused_in_window for i in pending):
                if idle < self.retry_delay:
                    return None
            elif idle < self.window_timeout:
                return None
            else:
                self.timeouts += 1
                log.info(
                    "bundle %s: %d chunks of the window did not arrive in %.1f s; asking again",
                    self.sha256[:12],
                    len(pending),
                    self.window_timeout,
                )
            wanted = pending
        else:
            wanted = self._lowest_missing(self.window)
            self._window = frozenset(wanted)
        self._refused_in_window.clear()
        self._last_progress = now
        return DownloadRequest(bundle=self.sha256, want=chunk_ranges(wanted), have=self._count)

    # --- end of the download -----------------------------------------------------

    def finish(self) -> Path:
        """Move the complete part file to ``<sha256>.download`` atomically and return its path."""
        if not self.complete:
            raise DeliveryError(
                f"bundle {self.sha256[:12]} is not complete: {self.missing} chunks missing"
            )
        fd = self._require_fd()
        try:
            os.fsync(fd)
            self.close()
            os.replace(self.part_path, self.download_path)
            fsync_dir(self.folder)
            self.bitmap_path.unlink(missing_ok=True)
        except OSError as e:
            raise DeliveryError(f"cannot assemble bundle {self.sha256[:12]}: {e}") from e
        return self.download_path

    def close(self) -> None:
        """Release the part file; progress stays on disk for a later resume."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Forget this download: close and delete the part file and the bitmap."""
        self.close()
        for path in (self.part_path, self.bitmap_path):
            path.unlink(missing_ok=True)
        self._have = bytearray(self._bitmap_bytes())
        self._count = 0

    # --- internals -------------------------------------------------------------

    def _open(self, reserve: bool) -> None:
        created = not self.part_path.exists()
        try:
            self._fd = os.open(self.part_path, os.O_RDWR | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_size != self.signed_length:
                os.ftruncate(self._fd, self.signed_length)
            if reserve and hasattr(os, "posix_fallocate"):
                self._reserve()
        except OSError as e:
            self.close()
            if created:
                self.part_path.unlink(missing_ok=True)
            raise self._disk_error(f"cannot pre-size {self.part_path}", e) from e
        if not created:
            self._load_bitmap()
        if self._count:
            log.info(
                "resuming bundle %s: %d of %d chunks already on disk",
                self.sha256[:12],
                self._count,
                self.chunks,
            )

    def _reserve(self) -> None:
        """Allocate the whole file now, so a full disk shows before the first chunk, not the last."""
        try:
            os.posix_fallocate(self._require_fd(), 0, self.signed_length)
        except OSError as e:
            if e.errno not in _NO_RESERVE:
                raise
            log.debug("%s cannot reserve space (%s); the part file stays sparse", self.folder, e)

    def _load_bitmap(self) -> None:
        try:
            record = json.loads(self.bitmap_path.read_bytes())
            if not isinstance(record, dict):
                raise TypeError("not an object")
            chunk_size = record["chunk_size"]
            have = bytes.fromhex(record["have"])
            if (
                record["format"] != _BITMAP_FORMAT
                or record["sha256"] != self.sha256
                or record["length"] != self.signed_length
                or not isinstance(chunk_size, int)
                or not 0 < chunk_size <= MAX_CHUNK_SIZE
                or len(have) != (math.ceil(self.signed_length / chunk_size) + 7) // 8
            ):
                raise ValueError("describes another download")
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.warning(
                "ignoring unusable chunk bitmap %s (%s); starting over", self.bitmap_path, e
            )
            return
        self._chunk_size = chunk_size
        self._have = bytearray(have)
        self._count = sum(self.has_chunk(i) for i in range(self.chunks))

    def _persist(self) -> None:
        record = {
            "format": _BITMAP_FORMAT,
            "sha256": self.sha256,
            "length": self.signed_length,
            "chunk_size": self._chunk_size,
            "have": self._have.hex(),
        }
        try:
            atomic_write_bytes(self.bitmap_path, json.dumps(record).encode("ascii"))
        except OSError as e:
            raise self._disk_error(f"cannot record progress in {self.bitmap_path}", e) from e

    def _write(self, index: int, data: bytes) -> None:
        fd = self._require_fd()
        offset = index * self._chunk_size
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
            os.fsync(fd)
        except OSError as e:
            raise self._disk_error(f"cannot store chunk {index} in {self.part_path}", e) from e

    def _verify_stored(self) -> None:
        """Check chunks recorded before this meta (a resume) against its hashes; forget bad ones."""
        assert self._meta is not None
        fd = self._require_fd()
        dropped = 0
        for index in range(self.chunks):
            if not self.has_chunk(index):
                continue
            data = os.pread(fd, self._meta.chunk_length(index), index * self._chunk_size)
            if hashlib.sha256(data).hexdigest() != self._meta.chunk_sha256[index]:
                self._clear(index)
                dropped += 1
        if dropped:
            log.warning(
                "bundle %s: %d stored chunks did not match the meta; asking for them again",
                self.sha256[:12],
                dropped,
            )
            self._persist()

    def _refuse(self, index: int, now: float) -> None:
        self.refused += 1
        if index in self._window and not self.has_chunk(index):
            self._refused_in_window.add(index)
            self._last_progress = now

    def _lowest_missing(self, limit: int) -> list[int]:
        wanted: list[int] = []
        for index in range(self.chunks):
            if not self.has_chunk(index):
                wanted.append(index)
                if len(wanted) == limit:
                    break
        return wanted

    def _set(self, index: int) -> None:
        self._have[index >> 3] |= 1 << (index & 7)
        self._count += 1

    def _clear(self, index: int) -> None:
        self._have[index >> 3] &= ~(1 << (index & 7)) & 0xFF
        self._count -= 1

    def _bitmap_bytes(self) -> int:
        return (self.chunks + 7) // 8

    def _require_fd(self) -> int:
        if self._fd is None:
            raise DeliveryError(f"download of bundle {self.sha256[:12]} is closed")
        return self._fd

    def _disk_error(self, what: str, error: OSError) -> DeliveryError:
        if error.errno in _DISK_FULL:
            return DeliveryError(f"disk is full: {what} ({error.strerror})")
        return DeliveryError(f"{what}: {error}")
