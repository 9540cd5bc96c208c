"""The chunk server's inputs and outputs as plain values.

Device ``download`` requests parsed (:func:`parse_request`), bundle files
described and read chunk by chunk (:func:`describe`, :func:`read_chunk`),
the delivery counters (:class:`DeliveryStats`), and the fault hook tests
use to corrupt a chunk on its way out (:class:`FaultInjector`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edge_runtime.errors import MalformedMessageError
from edge_runtime.protocol import ChunkMeta, DownloadRequest
from fleet_server.errors import DeliveryServerError, MalformedRequestError

__all__ = [
    "BundleDeliveryStats",
    "BundleFolder",
    "ChunkRequest",
    "CorruptChunkOnce",
    "DeliveryStats",
    "FaultInjector",
    "describe",
    "parse_request",
    "read_chunk",
]


@dataclass(frozen=True)
class ChunkRequest:
    """A device's ``download`` request: which chunks of which bundle it still wants."""

    device_id: str
    bundle: str
    want: tuple[tuple[int, int], ...]
    have: int

    def indices(self) -> list[int]:
        """Every chunk index the ranges cover, in order."""
        return [i for start, end in self.want for i in range(start, end)]


def parse_request(topic: str, payload: bytes, prefix: str) -> ChunkRequest:
    """Read a request from ``PREFIX/devices/<id>/download``; :class:`MalformedRequestError` if bad."""
    head = f"{prefix}/devices/"
    device_id = topic[len(head) : -len("/download")]
    if not (topic.startswith(head) and topic.endswith("/download")) or not device_id:
        raise MalformedRequestError(f"not a download topic: {topic[:200]!r}")
    try:
        request = DownloadRequest.parse(payload, device_id)
    except MalformedMessageError as e:
        raise MalformedRequestError(str(e)) from e
    return ChunkRequest(
        device_id, request.bundle, tuple((start, end) for start, end in request.want), request.have
    )


class FaultInjector(Protocol):
    """Test hook: sees every chunk payload just before it is published and may alter it."""

    def chunk_payload(self, sha256: str, index: int, data: bytes) -> bytes:
        """The bytes to publish for chunk ``index`` of bundle ``sha256``."""
        ...


class CorruptChunkOnce:
    """A :class:`FaultInjector` that flips one byte of chunk ``index`` the first time it goes out."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.fired = False

    def chunk_payload(self, sha256: str, index: int, data: bytes) -> bytes:
        """Corrupt the chosen chunk once; pass everything else through."""
        if index != self.index or self.fired:
            return data
        self.fired = True
        return bytes([data[0] ^ 0xFF]) + data[1:]


@dataclass
class BundleDeliveryStats:
    """Per bundle: requests answered, chunks and bytes published, meta publishes, devices seen."""

    requests: int = 0
    chunks_published: int = 0
    bytes_published: int = 0
    metas_published: int = 0
    devices: set[str] = field(default_factory=set)


@dataclass
class DeliveryStats:
    """Totals, and one :class:`BundleDeliveryStats` per bundle sha256."""

    requests: int = 0
    malformed: int = 0
    dropped: int = 0
    errors: int = 0
    chunks_published: int = 0
    bytes_published: int = 0
    bundles: dict[str, BundleDeliveryStats] = field(default_factory=dict)

    def bundle(self, sha256: str) -> BundleDeliveryStats:
        """The stats of one bundle (created empty on first use)."""
        return self.bundles.setdefault(sha256, BundleDeliveryStats())


def describe(path: Path, chunk_size: int) -> ChunkMeta:
    """Read ``path`` once: its sha256 and each chunk's."""
    whole = hashlib.sha256()
    hashes: list[str] = []
    length = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(chunk_size):
                whole.update(chunk)
                hashes.append(hashlib.sha256(chunk).hexdigest())
                length += len(chunk)
    except OSError as e:
        raise DeliveryServerError(f"cannot read bundle file {path}: {e}") from e
    if length == 0:
        raise DeliveryServerError(f"bundle file {path} is empty")
    return ChunkMeta(
        sha256=whole.hexdigest(),
        length=length,
        chunk_size=chunk_size,
        chunks=len(hashes),
        chunk_sha256=hashes,
    )


def read_chunk(path: Path, meta: ChunkMeta, index: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(index * meta.chunk_size)
            data = handle.read(meta.chunk_length(index))
    except OSError as e:
        raise DeliveryServerError(f"cannot read chunk {index} of {path}: {e}") from e
    if len(data) != meta.chunk_length(index):
        raise DeliveryServerError(f"{path} changed size while being served")
    return data


class BundleFolder(Mapping[str, Path]):
    """sha256 -> ``<folder>/<sha256>.efb``, read from the folder at each lookup, so a bundle one
    server replica imported is served by every replica that shares the folder."""

    _SHA = re.compile(r"^[0-9a-f]{64}$")

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __getitem__(self, sha256: str) -> Path:
        path = self.folder / f"{sha256}.efb"
        if not self._SHA.match(sha256) or not path.is_file():
            raise KeyError(sha256)
        return path

    def __iter__(self) -> Iterator[str]:
        return (p.stem for p in sorted(self.folder.glob("*.efb")) if self._SHA.match(p.stem))

    def __len__(self) -> int:
        return sum(1 for _ in self)
