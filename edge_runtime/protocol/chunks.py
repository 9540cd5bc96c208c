"""Bundle delivery messages: a device's chunk request and the server's bundle meta.

"Bundle delivery: receiver-driven chunks" in ``docs/protocol.md``: a device
asks for a window of chunks on ``PREFIX/devices/<id>/download``
(:class:`DownloadRequest`); the server publishes, retained, how the bundle is
cut and each chunk's sha256 on ``PREFIX/bundles/<sha256>/meta``
(:class:`ChunkMeta`), then the chunks themselves as raw bytes.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, ClassVar, Final, Literal

from pydantic import AfterValidator, Field, model_validator

from edge_runtime.protocol._wire import PROTOCOL_VERSION, DeviceReport, Sha256, WireMessage

__all__ = [
    "CHUNK_SIZE",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MAX_META_BYTES",
    "MAX_REQUEST_BYTES",
    "WINDOW",
    "ChunkMeta",
    "DownloadRequest",
]

MAX_CHUNK_SIZE: Final = 256 * 1024
"""No chunk is larger (the protocol's limit, well under every broker's message size limit)."""
CHUNK_SIZE: Final = MAX_CHUNK_SIZE
"""The cut the server uses unless told otherwise."""
WINDOW: Final = 16
"""The most chunks a device has asked for and not yet received."""
MAX_CHUNKS: Final = 65536
"""The most chunks one bundle is cut into (16 GiB at the default chunk size)."""
MAX_REQUEST_BYTES: Final = 4096
"""A real request (at most :data:`WINDOW` ranges) is well under 2 KiB."""
MAX_META_BYTES: Final = 5 * 1024 * 1024
"""A meta listing :data:`MAX_CHUNKS` hashes is about 4.4 MiB."""


def _check_range(value: list[int]) -> list[int]:
    start, end = value
    if not 0 <= start < end:
        raise ValueError("a range is [start, end) with 0 <= start < end")
    return value


ChunkRange = Annotated[
    list[Annotated[int, Field(ge=0, le=MAX_CHUNKS)]],
    Field(min_length=2, max_length=2),
    AfterValidator(_check_range),
]
"""``[start, end]``: the chunk indices ``start`` to ``end - 1``."""


class DownloadRequest(DeviceReport):
    """``PREFIX/devices/<id>/download``: the chunks of one bundle a device asks for now."""

    kind_name: ClassVar[str] = "download request"
    max_bytes: ClassVar[int] = MAX_REQUEST_BYTES

    protocol: Literal[1] = PROTOCOL_VERSION
    bundle: Sha256
    want: list[ChunkRange] = Field(min_length=1, max_length=WINDOW)
    """Half-open index ranges, at most :data:`WINDOW` of them."""
    have: int = Field(default=0, ge=0, le=MAX_CHUNKS)
    """How many chunks the device has stored (informative)."""

    def indices(self) -> list[int]:
        """Every chunk index the ranges cover, in order."""
        return [i for start, end in self.want for i in range(start, end)]

    def count(self) -> int:
        """How many chunks the ranges cover (computed, never materialised)."""
        return sum(end - start for start, end in self.want)


class ChunkMeta(WireMessage):
    """The retained ``PREFIX/bundles/<sha256>/meta`` message: how a bundle is cut, each chunk's sha256.

    Read by devices with :meth:`parse`: ``chunks`` and the number of
    ``chunk_sha256`` must both be ``ceil(length / chunk_size)``.
    """

    kind_name: ClassVar[str] = "bundle meta"
    max_bytes: ClassVar[int] = MAX_META_BYTES

    protocol: Literal[1] = PROTOCOL_VERSION
    sha256: Sha256
    """The whole bundle's sha256."""
    length: int = Field(gt=0, le=MAX_CHUNKS * MAX_CHUNK_SIZE)
    """The bundle's length in bytes."""
    chunk_size: int = Field(gt=0, le=MAX_CHUNK_SIZE)
    """Every chunk but the last is exactly this long."""
    chunks: int = Field(gt=0, le=MAX_CHUNKS)
    """Number of chunks: ``ceil(length / chunk_size)``."""
    chunk_sha256: list[Sha256] = Field(max_length=MAX_CHUNKS)
    """The sha256 of each chunk, in order."""

    @model_validator(mode="after")
    def _consistent(self) -> ChunkMeta:
        expected = math.ceil(self.length / self.chunk_size)
        if len(self.chunk_sha256) != expected:
            raise ValueError(
                f"chunk_sha256 must list {expected} hashes for {self.length} bytes"
                f" in chunks of {self.chunk_size}, not {len(self.chunk_sha256)}"
            )
        if self.chunks != expected:
            raise ValueError(f"chunks is {self.chunks}; {self.length} bytes make {expected}")
        return self

    @classmethod
    def parse(cls, payload: object) -> ChunkMeta:
        """Read a meta message (bytes, or a decoded value); :class:`MalformedMessageError` if bad."""
        return cls._read(payload, "bundle meta")

    @classmethod
    def for_bytes(cls, data: bytes, chunk_size: int = CHUNK_SIZE) -> ChunkMeta:
        """Cut ``data`` into chunks and describe them."""
        hashes = [
            hashlib.sha256(data[start : start + chunk_size]).hexdigest()
            for start in range(0, len(data), chunk_size)
        ]
        return cls(
            sha256=hashlib.sha256(data).hexdigest(),
            length=len(data),
            chunk_size=chunk_size,
            chunks=len(hashes),
            chunk_sha256=hashes,
        )

    def chunk_length(self, index: int) -> int:
        """Exact length of chunk ``index``."""
        return min(self.chunk_size, self.length - index * self.chunk_size)
