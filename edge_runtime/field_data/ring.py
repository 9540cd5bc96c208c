"""The device's bounded ring of field samples on disk, written atomically, read back after a restart.

One file a sample, ``<sequence>-<sha256>.sample``, holding the exact payload
the uploader sends (:class:`~edge_runtime.protocol.field_data.FieldSample`),
written with a temporary file, fsync and ``os.replace``: a power cut leaves
whole samples or none. Past ``max_bytes`` the oldest samples are dropped
(counted in ``dropped``); an acknowledged sample is removed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from edge_runtime.atomic import atomic_write_bytes

__all__ = ["SampleRing"]

log = logging.getLogger(__name__)

_SUFFIX = ".sample"


class SampleRing:
    """Samples waiting for upload in ``folder``, oldest first, at most ``max_bytes`` in all."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.dropped = 0
        """Samples dropped, oldest first, to stay under ``max_bytes``."""
        self._lock = threading.Lock()
        for stale in self.folder.glob(".*.tmp"):  # a write a power cut interrupted
            stale.unlink(missing_ok=True)
        self._files: dict[str, tuple[int, Path, int]] = {}
        for path in sorted(self.folder.glob(f"*{_SUFFIX}")):
            sequence, _, sha256 = path.stem.partition("-")
            if sequence.isdigit() and len(sha256) == 64:
                self._files[sha256] = (int(sequence), path, path.stat().st_size)
        self._next = max((seq for seq, _, _ in self._files.values()), default=-1) + 1

    @property
    def total_bytes(self) -> int:
        """Bytes the ring holds."""
        with self._lock:
            return sum(size for _, _, size in self._files.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    def put(self, sha256: str, payload: bytes) -> bool:
        """Keep a sample (a repeat of one held is ignored); False when it cannot fit at all."""
        if len(payload) > self.max_bytes:
            self.dropped += 1
            return False
        with self._lock:
            if sha256 in self._files:
                return True
            while self._files and self._bytes() + len(payload) > self.max_bytes:
                oldest = min(self._files, key=lambda k: self._files[k][0])
                self._files.pop(oldest)[1].unlink(missing_ok=True)
                self.dropped += 1
            path = self.folder / f"{self._next:012d}-{sha256}{_SUFFIX}"
            atomic_write_bytes(path, payload)
            self._files[sha256] = (self._next, path, len(payload))
            self._next += 1
        return True

    def _bytes(self) -> int:
        return sum(size for _, _, size in self._files.values())

    def oldest(self, count: int, skip: set[str] | None = None) -> list[tuple[str, bytes]]:
        """Up to ``count`` samples, oldest first, as ``(sha256, payload)`` (``skip``: not these)."""
        with self._lock:
            order = sorted(self._files.items(), key=lambda item: item[1][0])
            wanted = [(sha, path) for sha, (_, path, _) in order if not skip or sha not in skip]
        found = []
        for sha256, path in wanted[:count]:
            try:
                found.append((sha256, path.read_bytes()))
            except FileNotFoundError:  # removed (acked, dropped) meanwhile
                continue
        return found

    def remove(self, sha256: str) -> bool:
        """Forget an acknowledged sample; False when it was not held."""
        with self._lock:
            entry = self._files.pop(sha256, None)
        if entry is None:
            return False
        entry[1].unlink(missing_ok=True)
        return True
