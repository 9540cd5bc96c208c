"""The gzip wrapper around a bundle's ustar archive: deterministic to write, strict to read.

A canonical bundle is its ustar archive compressed as one gzip member
(RFC 1952) with a fixed header: no file name, no comment, mtime 0, OS byte
255 (unknown) and deflate at level 9, so the same archive always gives the
same bytes with the same zlib. ``tar xzf`` and ``gzip -d`` read it.

Reading trusts nothing: the output is decompressed in bounded steps and
refused as soon as it would exceed the archive cap (a gzip bomb costs at most
the cap in memory, never its claimed size), and a corrupt or truncated
stream, a bad CRC or length, a second gzip member or anything after the
stream is a :class:`~edge_runtime.errors.BundleArchiveError`.

Pure: bytes in, bytes out; only the standard library's ``zlib``.
"""

from __future__ import annotations

import struct
import zlib

from edge_runtime.errors import BundleArchiveError, BundleError, BundleTooLargeError

__all__ = ["GZIP_MAGIC", "gunzip_archive", "gzip_archive", "is_gzip"]

GZIP_MAGIC = b"\x1f\x8b"
_LEVEL = 9
# ID1 ID2, CM=8 (deflate), FLG=0 (no name, comment, extra or header CRC), MTIME=0,
# XFL=2 (maximum compression), OS=255 (unknown): the same on every platform.
_HEADER = GZIP_MAGIC + b"\x08\x00" + b"\x00\x00\x00\x00" + b"\x02\xff"
_IN_STEP = 64 * 1024  # compressed bytes handed to zlib at a time
_OUT_STEP = 1024 * 1024  # most decompressed bytes taken from zlib at a time


def is_gzip(data: bytes) -> bool:
    """Whether ``data`` starts with the gzip magic (``1f 8b``)."""
    return data[:2] == GZIP_MAGIC


def gzip_archive(archive: bytes) -> bytes:
    """``archive`` as one deterministic gzip member (fixed header, level 9)."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(archive) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(archive), len(archive) & 0xFFFFFFFF)
    return _HEADER + body + trailer


def gunzip_archive(data: bytes, max_bytes: int) -> bytes:
    """The archive inside gzip ``data``, refused once it would exceed ``max_bytes``.

    Inflating stops as soon as the output would pass ``max_bytes``, whatever
    the stream claims, so it never holds more than ``max_bytes`` plus one step
    (and twice the archive, briefly, while a valid one is joined); raises :class:`BundleTooLargeError` over the cap and
    :class:`BundleArchiveError` for anything but exactly one intact gzip member.
    """
    chunks: list[bytes] = []
    try:
        end = _inflate(data, max_bytes, chunks)
    except zlib.error as exc:
        chunks.clear()  # what was inflated is not kept alive by the exception's traceback
        raise BundleArchiveError(f"gzip stream is corrupt: {exc}") from exc
    except BundleError:
        chunks.clear()
        raise
    if end < len(data):
        chunks.clear()
        if data[end : end + 2] == GZIP_MAGIC:
            raise BundleArchiveError(
                "bundle holds more than one gzip member; a bundle is exactly one"
            )
        raise BundleArchiveError(f"bundle has {len(data) - end} bytes after its gzip stream")
    return b"".join(chunks)


def _inflate(data: bytes, max_bytes: int, chunks: list[bytes]) -> int:
    """Inflate the first gzip member of ``data`` into ``chunks``; return where it ends."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    view = memoryview(data)
    total = 0
    position = 0  # input handed to zlib so far
    pending: bytes | memoryview = b""
    while True:
        if not pending and position < len(view):
            pending = view[position : position + _IN_STEP]
            position += len(pending)
        out = decompressor.decompress(pending, min(_OUT_STEP, max_bytes + 1 - total))
        pending = decompressor.unconsumed_tail
        total += len(out)
        if total > max_bytes:
            raise BundleTooLargeError(
                f"compressed archive expands to more than the {max_bytes}-byte cap "
                f"(stopped after {position} of {len(view)} compressed bytes)"
            )
        chunks.append(out)
        if decompressor.eof:
            return position - len(decompressor.unused_data)
        if not out and not pending and position >= len(view):
            raise BundleArchiveError(
                f"gzip stream is truncated ({len(view)} bytes end before the stream does)"
            )
