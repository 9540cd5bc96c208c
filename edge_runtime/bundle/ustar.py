"""A strict, deterministic POSIX ustar codec for model bundles.

A bundle's archive is a plain ``ustar`` archive (readable by ``tar -tvf``;
``compression.py`` wraps it in gzip), but this module writes and reads only
the subset a bundle needs: regular files with
safe relative names. Writing is canonical (fixed mode, owner and time; the
caller's order), so the same members always give the same bytes. Reading
trusts nothing: every header is checksummed, every size is capped before any
data is touched, and links, devices, extended headers, path traversal,
truncation and trailing garbage are refused with a typed error.

Pure: bytes in, bytes out; no file-system access.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from edge_runtime.bundle.manifest import is_safe_member_name
from edge_runtime.errors import (
    BundleArchiveError,
    BundleTooLargeError,
    DuplicateMemberError,
    UnsafeMemberError,
)

__all__ = ["ArchiveLimits", "pack_members", "unpack_members"]

BLOCK = 512
RECORD = 20 * BLOCK  # what tar(1) pads archives to
_MAX_OCTAL_SIZE = 8**11 - 1  # 11 octal digits in the size field
_REGULAR = {b"0", b"\0", b"7"}  # '7' is a contiguous file, treated as regular by POSIX
_DIRECTORY = b"5"
_LINK_TYPES = {b"1": "hard link", b"2": "symbolic link"}
_DEVICE_TYPES = {b"3": "character device", b"4": "block device", b"6": "FIFO"}
_EXTENDED_TYPES = {
    b"x": "pax extended header",
    b"g": "pax global header",
    b"L": "GNU long name",
    b"K": "GNU long link name",
}


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied while reading an archive, before its data is touched."""

    max_archive_bytes: int = 512 * 1024 * 1024
    max_member_bytes: int = 256 * 1024 * 1024
    max_members: int = 64


def _octal(value: int, width: int) -> bytes:
    """``width``-byte field: zero-padded octal digits and a NUL terminator."""
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def _header(name: str, size: int) -> bytes:
    encoded = name.encode("utf-8")
    prefix = b""
    if len(encoded) > 100:
        split = encoded.rfind(b"/", 0, 156)
        if split <= 0 or len(encoded) - split - 1 > 100:
            raise BundleArchiveError(f"member name {name!r} is too long for a ustar header")
        prefix, encoded = encoded[:split], encoded[split + 1 :]
    if size > _MAX_OCTAL_SIZE:
        raise BundleTooLargeError(f"member {name!r} ({size} bytes) is too large for ustar")
    header = bytearray(BLOCK)
    header[0:100] = encoded.ljust(100, b"\0")
    header[100:108] = _octal(0o644, 8)
    header[108:116] = _octal(0, 8)  # uid
    header[116:124] = _octal(0, 8)  # gid
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(0, 12)  # mtime: fixed, for reproducible bundles
    header[148:156] = b" " * 8
    header[156:157] = b"0"
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[329:337] = _octal(0, 8)  # devmajor
    header[337:345] = _octal(0, 8)  # devminor
    header[345:500] = prefix.ljust(155, b"\0")
    header[148:156] = f"{sum(header):06o}".encode("ascii") + b"\0 "
    return bytes(header)


def pack_members(members: Iterable[tuple[str, bytes]]) -> bytes:
    """Canonical ustar bytes for ``(name, data)`` pairs, in the order given."""
    parts: list[bytes] = []  # joined once at the end: the archive is allocated once, never grown
    seen: set[str] = set()
    for name, data in members:
        if not is_safe_member_name(name):
            raise UnsafeMemberError(f"refusing to write unsafe member name {name!r}")
        if name in seen:
            raise DuplicateMemberError(f"member {name!r} given twice")
        seen.add(name)
        parts += (_header(name, len(data)), data, bytes(-len(data) % BLOCK))
    size = sum(map(len, parts)) + 2 * BLOCK
    parts.append(bytes(2 * BLOCK + (-size % RECORD)))
    return b"".join(parts)


def _parse_octal(field: bytes, what: str, where: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    if not all(48 <= byte <= 55 for byte in text):
        # never quote the bytes: a path that names any file on a server must not echo it
        raise BundleArchiveError(f"{where}: {what} field is not an octal number (not a ustar file)")
    return int(text, 8)


def _checksum_ok(header: bytes, stored: int) -> bool:
    blanked = header[:148] + b" " * 8 + header[156:]
    unsigned = sum(blanked)
    signed = sum(byte - 256 if byte > 127 else byte for byte in blanked)
    return stored in {unsigned, signed}


def _member_name(header: bytes, where: str) -> str:
    raw_name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0]
    raw = prefix + b"/" + raw_name if prefix else raw_name
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeMemberError(f"{where}: a member name is not UTF-8") from exc


@dataclass(frozen=True)
class _Header:
    name: str
    size: int
    is_dir: bool


def _read_header(header: bytes, where: str) -> _Header:
    """Check one 512-byte header block and return what a bundle needs of it."""
    stored = _parse_octal(header[148:156], "checksum", where)
    if not _checksum_ok(header, stored):
        raise BundleArchiveError(f"{where}: header checksum does not match (corrupt archive)")
    if header[257:263] not in {b"ustar\0", b"ustar "}:
        raise BundleArchiveError(f"{where}: not a ustar header (no ustar magic)")
    name = _member_name(header, where)
    typeflag = header[156:157]
    if typeflag in _LINK_TYPES:
        raise UnsafeMemberError(f"member {name!r} is a {_LINK_TYPES[typeflag]}; links are refused")
    if typeflag in _DEVICE_TYPES:
        raise UnsafeMemberError(f"member {name!r} is a {_DEVICE_TYPES[typeflag]}; refused")
    if typeflag in _EXTENDED_TYPES:
        raise BundleArchiveError(
            f"{where}: {_EXTENDED_TYPES[typeflag]} is not supported in bundles; "
            "write the archive with `edgefleet bundle pack` or `tar --format=ustar`"
        )
    if typeflag not in _REGULAR and typeflag != _DIRECTORY:
        raise UnsafeMemberError(f"member {name!r} has unknown type flag {typeflag!r}")
    is_dir = typeflag == _DIRECTORY
    _check_name(name[:-1] if is_dir and name.endswith("/") else name, name)
    size = _parse_octal(header[124:136], "size", f"member {name!r}")
    if is_dir and size:
        raise BundleArchiveError(f"directory member {name!r} claims {size} bytes")
    return _Header(name=name, size=size, is_dir=is_dir)


def _check_name(path: str, name: str) -> None:
    if path.startswith("/"):
        raise UnsafeMemberError(f"member {name!r} has an absolute path")
    if ".." in path.split("/"):
        raise UnsafeMemberError(f"member {name!r} has a '..' component (path traversal)")
    if not is_safe_member_name(path):
        raise UnsafeMemberError(f"member {name!r} is not a safe relative path")


def _check_caps(header: _Header, members: dict[str, bytes], limits: ArchiveLimits) -> None:
    if len(members) >= limits.max_members:
        raise BundleTooLargeError(f"archive holds more than {limits.max_members} members")
    if header.size > limits.max_member_bytes:
        raise BundleTooLargeError(
            f"member {header.name!r} is {header.size} bytes, "
            f"over the {limits.max_member_bytes}-byte cap"
        )
    if header.name in members:
        raise DuplicateMemberError(f"member {header.name!r} appears twice in the archive")


def unpack_members(data: bytes, limits: ArchiveLimits | None = None) -> dict[str, bytes]:
    """Read a bundle archive into ``{name: bytes}``; any defect raises a :class:`BundleError`."""
    limits = limits or ArchiveLimits()
    if len(data) > limits.max_archive_bytes:
        raise BundleTooLargeError(
            f"archive is {len(data)} bytes, over the {limits.max_archive_bytes}-byte cap"
        )
    if len(data) < 2 * BLOCK:
        raise BundleArchiveError(f"archive is {len(data)} bytes, too short to be a ustar archive")
    members: dict[str, bytes] = {}
    offset = 0
    while True:
        if offset + BLOCK > len(data):
            raise BundleArchiveError(f"archive is truncated: header at byte {offset} is incomplete")
        block = data[offset : offset + BLOCK]
        if block == b"\0" * BLOCK:
            break
        header = _read_header(block, f"header at byte {offset}")
        offset += BLOCK
        if header.is_dir:
            continue
        _check_caps(header, members, limits)
        end = offset + header.size
        if end > len(data):
            raise BundleArchiveError(
                f"archive is truncated inside member {header.name!r} "
                f"({len(data) - offset} of {header.size} bytes present)"
            )
        members[header.name] = data[offset:end]
        offset = end + (-header.size % BLOCK)
        if any(data[end:offset]):
            raise BundleArchiveError(
                f"padding after member {header.name!r} is not zero (corrupt archive)"
            )
    end_marker = data[offset + BLOCK : offset + 2 * BLOCK]
    if offset + 2 * BLOCK > len(data) or end_marker != b"\0" * BLOCK:
        raise BundleArchiveError("archive ends without its two end-of-archive blocks")
    if any(data[offset:]):
        raise BundleArchiveError("archive has data after its end-of-archive marker")
    return members


def sha256_hex(data: bytes) -> str:
    """Lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
