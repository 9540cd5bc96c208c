"""Model bundles: build one from a manifest and its members, read one without trusting it.

A bundle is one immutable file, identified by the sha256 of its bytes: a
ustar archive of ``manifest.json`` followed by the members it lists, in
sorted order, with fixed metadata, compressed with gzip (deterministically),
so that the same inputs always give the same bytes. :func:`parse_bundle`
reads compressed and plain archives alike; it checks the compression, the
archive, the manifest schema, the member set, every member's size and hash,
the model's format magic and every golden frame before it returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.bundle.compression import gunzip_archive, gzip_archive, is_gzip
from edge_runtime.bundle.golden import check_frame_member, decode_frame
from edge_runtime.bundle.manifest import (
    MANIFEST_NAME,
    FileEntry,
    ManifestSpec,
    dump_manifest,
    load_manifest,
)
from edge_runtime.bundle.ustar import ArchiveLimits, pack_members, sha256_hex, unpack_members
from edge_runtime.errors import (
    BundleArchiveError,
    BundleError,
    BundleTooLargeError,
    HashMismatchError,
    ManifestError,
    MemberContentError,
    MissingMemberError,
    UnexpectedMemberError,
)

__all__ = [
    "BUNDLE_SUFFIX",
    "Bundle",
    "BundleLimits",
    "build_bundle",
    "parse_bundle",
    "read_bundle",
    "write_bundle",
]

BUNDLE_SUFFIX = ".efb"
"""Conventional file extension of an edgefleet bundle."""

_TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class BundleLimits(ArchiveLimits):
    """Caps for reading a bundle: the archive caps plus one for the manifest."""

    max_manifest_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    """A bundle that passed every check: its manifest, member bytes and identity.

    ``sha256`` and ``size`` are those of the file (what TUF signs and a device
    downloads); ``archive_size`` is the size of the ustar archive inside it,
    equal to ``size`` when the bundle is not compressed.
    """

    manifest: ManifestSpec
    members: Mapping[str, bytes] = field(repr=False)
    sha256: str
    size: int
    archive_size: int
    compressed: bool

    @property
    def id(self) -> str:
        """``sha256:<hex>``, the bundle's identity everywhere in edgefleet."""
        return f"sha256:{self.sha256}"

    @property
    def model_bytes(self) -> bytes:
        """The TFLite flatbuffer or ONNX protobuf."""
        return self.members[self.manifest.model.file]

    def golden_frames(self) -> list[npt.NDArray[np.uint8]]:
        """The golden frames, in the manifest's order (already checked when parsed)."""
        if self.manifest.golden is None:
            return []
        return [
            decode_frame(self.members[vector.input], vector.input)
            for vector in self.manifest.golden.vectors
        ]


def build_bundle(
    manifest: ManifestSpec, members: Mapping[str, bytes], *, compress: bool = True
) -> bytes:
    """Canonical bundle bytes for ``manifest`` and ``members``.

    The manifest's ``files`` table is computed here from ``members`` (any given
    one is replaced), so callers describe the content and never hashes. The
    canonical ustar archive is wrapped in deterministic gzip unless
    ``compress`` is false (a plain archive, which runtimes that predate
    compressed bundles can also read).
    The result is checked with :func:`parse_bundle` before it is returned: a
    bundle this function makes is always one the runtime accepts.
    """
    if MANIFEST_NAME in members:
        raise UnexpectedMemberError(f"{MANIFEST_NAME!r} is written from the manifest argument")
    files = {
        name: FileEntry(size=len(data), sha256=sha256_hex(data))
        for name, data in sorted(members.items())
    }
    try:
        complete = ManifestSpec.model_validate({**manifest.model_dump(), "files": files})
    except ValueError as exc:
        raise ManifestError(f"manifest does not match the members given: {exc}") from exc
    ordered = [(MANIFEST_NAME, dump_manifest(complete))]
    ordered.extend((name, members[name]) for name in sorted(members))
    data = pack_members(ordered)
    if compress:
        data = gzip_archive(data)
    parse_bundle(data)
    return data


def parse_bundle(data: bytes, limits: BundleLimits | None = None) -> Bundle:
    """Validate bundle bytes completely and return the :class:`Bundle`; never trusts the input.

    ``data`` is a gzip-compressed (``1f 8b``) or a plain ustar archive; the
    archive inside a compressed one is capped at ``limits.max_archive_bytes``
    while it is decompressed, before it can take more memory than that.
    """
    limits = limits or BundleLimits()
    if len(data) > limits.max_archive_bytes:
        raise BundleTooLargeError(
            f"bundle is {len(data)} bytes, over the {limits.max_archive_bytes}-byte cap"
        )
    compressed = is_gzip(data)
    archive = gunzip_archive(data, limits.max_archive_bytes) if compressed else data
    members = unpack_members(archive, limits)
    raw_manifest = members.get(MANIFEST_NAME)
    if raw_manifest is None:
        raise MissingMemberError(f"archive has no {MANIFEST_NAME}")
    if len(raw_manifest) > limits.max_manifest_bytes:
        raise BundleTooLargeError(
            f"{MANIFEST_NAME} is {len(raw_manifest)} bytes, "
            f"over the {limits.max_manifest_bytes}-byte cap"
        )
    manifest = load_manifest(raw_manifest)
    listed = set(manifest.files)
    present = set(members) - {MANIFEST_NAME}
    if missing := sorted(listed - present):
        raise MissingMemberError(
            f"listed in {MANIFEST_NAME} but missing from the archive: {missing}"
        )
    if extra := sorted(present - listed):
        raise UnexpectedMemberError(f"in the archive but not listed in {MANIFEST_NAME}: {extra}")
    if unused := sorted(listed - set(manifest.referenced_members())):
        raise UnexpectedMemberError(f"listed in {MANIFEST_NAME} but used by nothing: {unused}")
    for name in sorted(listed):
        _check_member(name, members[name], manifest.files[name])
    _check_model_magic(manifest, members[manifest.model.file])
    if manifest.golden is not None:
        for vector in manifest.golden.vectors:
            check_frame_member(members[vector.input], vector.input)
    return Bundle(
        manifest=manifest,
        members=MappingProxyType(dict(members)),
        sha256=sha256_hex(data),
        size=len(data),
        archive_size=len(archive),
        compressed=compressed,
    )


def read_bundle(path: str | os.PathLike[str], limits: BundleLimits | None = None) -> Bundle:
    """Read and validate the bundle file at ``path`` (size capped before reading)."""
    limits = limits or BundleLimits()
    target = Path(path)
    try:
        size = target.stat().st_size
        if not target.is_file():
            raise BundleArchiveError(f"{target} is not a regular file")
        if size > limits.max_archive_bytes:
            raise BundleTooLargeError(
                f"{target} is {size} bytes, over the {limits.max_archive_bytes}-byte cap"
            )
        with target.open("rb") as handle:
            data = handle.read(limits.max_archive_bytes + 1)
    except OSError as exc:
        raise BundleArchiveError(f"cannot read bundle {target}: {exc.strerror or exc}") from exc
    try:
        return parse_bundle(data, limits)
    except BundleError as exc:
        raise type(exc)(f"{target.name}: {exc}") from exc


def write_bundle(
    path: str | os.PathLike[str],
    manifest: ManifestSpec,
    members: Mapping[str, bytes],
    *,
    compress: bool = True,
) -> Bundle:
    """Build the bundle and write it atomically to ``path``; return what was written."""
    data = build_bundle(manifest, members, compress=compress)
    atomic_write_bytes(path, data)
    return parse_bundle(data)


def _check_member(name: str, data: bytes, entry: FileEntry) -> None:
    if len(data) != entry.size:
        raise HashMismatchError(
            f"member {name!r} is {len(data)} bytes but the manifest says {entry.size}"
        )
    actual = sha256_hex(data)
    if actual != entry.sha256:
        raise HashMismatchError(
            f"member {name!r} has sha256 {actual[:16]}..., "
            f"the manifest says {entry.sha256[:16]}... (tampered or corrupt)"
        )


def _check_model_magic(manifest: ManifestSpec, model: bytes) -> None:
    name = manifest.model.file
    if manifest.model.format == "tflite" and model[4:8] != _TFLITE_IDENTIFIER:
        raise MemberContentError(f"{name}: not a TFLite flatbuffer (no TFL3 identifier)")
    if manifest.model.format == "onnx" and (len(model) < 2 or model[0] != 0x08):
        # An ONNX ModelProto starts with field 1 (ir_version, varint): tag byte 0x08.
        raise MemberContentError(f"{name}: not an ONNX model (does not start with ir_version)")
