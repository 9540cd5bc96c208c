"""Hostile bundles: every way an archive can lie is refused with a typed error naming the culprit.

Tests that tamper with the tar structure build plain ustar bundles
(``plain_bundle``, ``compress=False``) so that they edit what they mean to;
the gzip layer of a canonical bundle (``valid_bundle``) has its own section.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import struct
import tarfile
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.bundle import MANIFEST_NAME, BundleLimits, parse_bundle, read_bundle
from edge_runtime.bundle.compression import gzip_archive
from edge_runtime.bundle.ustar import pack_members, sha256_hex, unpack_members
from edge_runtime.errors import (
    BundleArchiveError,
    BundleError,
    BundleTooLargeError,
    DuplicateMemberError,
    EdgefleetError,
    HashMismatchError,
    ManifestError,
    MemberContentError,
    MissingMemberError,
    UnexpectedMemberError,
    UnsafeMemberError,
    UnsupportedSchemaVersionError,
)


def tar_with(
    members: dict[str, bytes], *extra: tarfile.TarInfo, fmt: int = tarfile.USTAR_FORMAT
) -> bytes:
    """A tar made by Python's tarfile: the bundle's members plus hand-made entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return buffer.getvalue()


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    return info


def with_manifest(valid: bytes, edit: Callable[[dict], None]) -> dict[str, bytes]:
    members = unpack_members(valid)
    manifest = json.loads(members[MANIFEST_NAME])
    edit(manifest)
    members[MANIFEST_NAME] = json.dumps(manifest).encode()
    return members


def refuse(
    data: bytes, error: type[BundleError], *words: str, limits: BundleLimits | None = None
) -> str:
    with pytest.raises(error) as caught:
        parse_bundle(data, limits)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# --- archive level -----------------------------------------------------------


def test_path_traversal(plain_bundle: bytes) -> None:
    refuse(
        tar_with(unpack_members(plain_bundle), entry("golden/../../etc/cron.d/x", size=1)),
        UnsafeMemberError,
        "golden/../../etc/cron.d/x",
        "traversal",
    )


def test_absolute_path(plain_bundle: bytes) -> None:
    refuse(
        tar_with(unpack_members(plain_bundle), entry("/etc/passwd", size=1)),
        UnsafeMemberError,
        "/etc/passwd",
        "absolute",
    )


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_links_and_devices(plain_bundle: bytes, kind: bytes, words: str) -> None:
    evil = entry(
        "model-link", kind, link="/etc/shadow" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    )
    refuse(tar_with(unpack_members(plain_bundle), evil), UnsafeMemberError, "model-link", words)


def test_pax_headers_are_refused(plain_bundle: bytes) -> None:
    members = unpack_members(plain_bundle)
    members["golden/" + "x" * 120 + ".npy"] = b"1"
    refuse(tar_with(members, fmt=tarfile.PAX_FORMAT), BundleArchiveError, "pax")


@pytest.fixture(params=["plain", "gzip"])
def either_bundle(request: pytest.FixtureRequest, plain_bundle: bytes) -> bytes:
    """The valid bundle, plain and compressed: caps hold for both."""
    return plain_bundle if request.param == "plain" else gzip_archive(plain_bundle)


def test_archive_over_cap(either_bundle: bytes) -> None:
    refuse(either_bundle, BundleTooLargeError, "cap", limits=BundleLimits(max_archive_bytes=4096))


def test_member_over_cap_is_refused_before_reading(either_bundle: bytes) -> None:
    refuse(either_bundle, BundleTooLargeError, "cap", limits=BundleLimits(max_member_bytes=200))


def test_manifest_over_cap(either_bundle: bytes) -> None:
    refuse(
        either_bundle,
        BundleTooLargeError,
        MANIFEST_NAME,
        limits=BundleLimits(max_manifest_bytes=100),
    )


def test_too_many_members(plain_bundle: bytes) -> None:
    members = unpack_members(plain_bundle)
    members.update({f"junk/{i}": b"" for i in range(70)})
    refuse(pack_members(members.items()), BundleTooLargeError, "more than 64 members")


def test_huge_declared_size_is_refused_without_allocation(plain_bundle: bytes) -> None:
    # a header that claims 8 GiB in a 10 KiB archive
    data = bytearray(plain_bundle)
    header = bytearray(data[:512])
    header[124:136] = b"77777777777\0"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    data[:512] = header
    refuse(bytes(data), BundleTooLargeError, MANIFEST_NAME)


def test_duplicate_member(plain_bundle: bytes) -> None:
    members = unpack_members(plain_bundle)
    data = tar_with(members, entry("model.onnx", size=3))
    refuse(data, DuplicateMemberError, "model.onnx")


def test_truncated_archive(plain_bundle: bytes) -> None:
    refuse(plain_bundle[:1500], BundleArchiveError, "truncated")


def test_empty_and_tiny_input() -> None:
    refuse(b"", BundleArchiveError, "too short")
    refuse(b"PK\x03\x04" + b"\0" * 2000, BundleArchiveError, "checksum")


def test_trailing_garbage(plain_bundle: bytes) -> None:
    refuse(plain_bundle + b"appended" + b"\0" * 504, BundleArchiveError, "after its end")


def test_bad_header_checksum(plain_bundle: bytes) -> None:
    data = bytearray(plain_bundle)
    data[5] ^= 0x01  # inside the first member's name
    refuse(bytes(data), BundleArchiveError, "checksum")


# --- gzip layer ------------------------------------------------------------------------


def gzip_bomb(expanded_mib: int) -> bytes:
    """A gzip stream of ``expanded_mib`` MiB of zeros, built in milliseconds (about 1 KiB per MiB).

    One MiB of zeros is deflated once, ending in a full flush (byte-aligned and
    independent of what came before), and that segment is repeated. Its CRC and
    length fields are wrong: a reader must refuse it long before it gets there.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + segment * expanded_mib + compressor.flush() + struct.pack("<II", 0, 0)


def test_gzip_bomb_is_refused_without_expanding_it() -> None:
    bomb = gzip_bomb(1024)  # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        started = time.perf_counter()
        refuse(bomb, BundleTooLargeError, "expands to more than", f"{512 * 1024 * 1024}-byte cap")
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        # with a device's own smaller cap, memory follows the cap, not the bomb
        refuse(bomb, BundleTooLargeError, "cap", limits=BundleLimits(max_archive_bytes=8 << 20))
        _, small_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 520 * 1024 * 1024, f"peak {peak} bytes: the bomb was expanded past the cap"
    assert small_peak < 12 * 1024 * 1024, f"peak {small_peak} bytes with an 8 MiB cap"
    assert elapsed < 30, f"took {elapsed:.1f} s"


def test_archive_over_cap_only_once_decompressed(plain_bundle: bytes) -> None:
    compressed = gzip_archive(plain_bundle)
    cap = (len(compressed) + len(plain_bundle)) // 2
    assert len(compressed) < cap < len(plain_bundle)
    refuse(
        compressed,
        BundleTooLargeError,
        "expands to more than",
        limits=BundleLimits(max_archive_bytes=cap),
    )
    assert parse_bundle(compressed).archive_size == len(plain_bundle)


def test_truncated_gzip(valid_bundle: bytes) -> None:
    for end in (2, 10, 11, len(valid_bundle) // 2, len(valid_bundle) - 8, len(valid_bundle) - 1):
        refuse(valid_bundle[:end], BundleArchiveError, "gzip")


def test_corrupt_gzip_data(valid_bundle: bytes) -> None:
    data = bytearray(valid_bundle)
    data[len(data) // 2] ^= 0xFF
    refuse(bytes(data), BundleArchiveError, "gzip")


def test_gzip_crc_and_length_are_checked(plain_bundle: bytes) -> None:
    good = gzip_archive(plain_bundle)
    bad_crc = good[:-8] + struct.pack("<I", (zlib.crc32(plain_bundle) + 1) & 0xFFFFFFFF) + good[-4:]
    refuse(bad_crc, BundleArchiveError, "corrupt", "data check")
    bad_length = good[:-4] + struct.pack("<I", len(plain_bundle) + 512)
    refuse(bad_length, BundleArchiveError, "corrupt", "length check")


def test_bad_gzip_header(valid_bundle: bytes) -> None:
    refuse(valid_bundle[:2] + b"\x07" + valid_bundle[3:], BundleArchiveError, "gzip")  # not deflate
    refuse(b"\x1f\x8b", BundleArchiveError, "truncated")


def test_concatenated_gzip_members_are_refused(plain_bundle: bytes, valid_bundle: bytes) -> None:
    refuse(valid_bundle + valid_bundle, BundleArchiveError, "more than one gzip member")
    # `cat a.gz b.gz` would let gzip -d see one archive that our reader never read in full
    refuse(valid_bundle + gzip.compress(b"\0" * 1024), BundleArchiveError, "gzip member")


def test_trailing_bytes_after_gzip_stream(valid_bundle: bytes) -> None:
    refuse(valid_bundle + b"\0", BundleArchiveError, "1 bytes after its gzip stream")
    refuse(valid_bundle + b"#!/bin/sh appended", BundleArchiveError, "after its gzip stream")


def test_gzip_made_by_other_tools_is_read(plain_bundle: bytes) -> None:
    """A header with a file name and mtime (as gzip(1) writes) is fine; the archive decides."""
    buffer = io.BytesIO()
    with gzip.GzipFile("model.tar", "wb", fileobj=buffer, mtime=1_700_000_000) as handle:
        handle.write(plain_bundle)
    bundle = parse_bundle(buffer.getvalue())
    assert bundle.compressed and bundle.archive_size == len(plain_bundle)
    assert bundle.manifest == parse_bundle(plain_bundle).manifest


@pytest.mark.parametrize(
    ("make_hostile", "error"),
    [
        (
            lambda plain: tar_with(unpack_members(plain), entry("../escape", size=1)),
            UnsafeMemberError,
        ),
        (
            lambda plain: tar_with(unpack_members(plain), entry("x", tarfile.SYMTYPE, link="/")),
            UnsafeMemberError,
        ),
        (lambda plain: plain + b"appended" + b"\0" * 504, BundleArchiveError),
        (lambda plain: plain[:1500], BundleArchiveError),
    ],
)
def test_hostile_archive_inside_gzip_is_refused_the_same(
    plain_bundle: bytes, make_hostile: Callable[[bytes], bytes], error: type[BundleError]
) -> None:
    hostile = make_hostile(plain_bundle)
    with pytest.raises(error) as plain_error:
        parse_bundle(hostile)
    refuse(gzip_archive(hostile), error, str(plain_error.value))


# --- member set and hashes ---------------------------------------------------------


def test_missing_manifest(plain_bundle: bytes) -> None:
    members = unpack_members(plain_bundle)
    del members[MANIFEST_NAME]
    refuse(pack_members(members.items()), MissingMemberError, MANIFEST_NAME)


def test_missing_member(plain_bundle: bytes) -> None:
    members = unpack_members(plain_bundle)
    del members["golden/001.npy"]
    refuse(pack_members(members.items()), MissingMemberError, "golden/001.npy")


def test_extra_member(plain_bundle: bytes) -> None:
    members = unpack_members(plain_bundle)
    members["payload.sh"] = b"#!/bin/sh\nrm -rf /\n"
    refuse(pack_members(members.items()), UnexpectedMemberError, "payload.sh")


def test_listed_but_unused_member(plain_bundle: bytes) -> None:
    def add(manifest: dict) -> None:
        manifest["files"]["notes.txt"] = {"size": 2, "sha256": sha256_hex(b"hi")}

    members = with_manifest(plain_bundle, add)
    members["notes.txt"] = b"hi"
    refuse(pack_members(members.items()), UnexpectedMemberError, "notes.txt")


def test_tampered_model_bytes(plain_bundle: bytes) -> None:
    members = unpack_members(plain_bundle)
    model = bytearray(members["model.onnx"])
    model[-1] ^= 0xFF
    members["model.onnx"] = bytes(model)
    refuse(pack_members(members.items()), HashMismatchError, "model.onnx", "tampered")


def test_size_mismatch(plain_bundle: bytes) -> None:
    members = unpack_members(plain_bundle)
    members["golden/000.npy"] += b"\0"
    refuse(pack_members(members.items()), HashMismatchError, "golden/000.npy", "bytes")


# --- manifest ------------------------------------------------------------------------


def test_schema_error_names_the_field(plain_bundle: bytes) -> None:
    def bad_dtype(manifest: dict) -> None:
        manifest["model"]["inputs"][0]["dtype"] = "complex128"

    refuse(
        pack_members(with_manifest(plain_bundle, bad_dtype).items()),
        ManifestError,
        "model.inputs.0.dtype",
    )


def test_unknown_field_is_refused(plain_bundle: bytes) -> None:
    def typo(manifest: dict) -> None:
        manifest["preprocessing"]["colour_order"] = "rgb"

    refuse(
        pack_members(with_manifest(plain_bundle, typo).items()),
        ManifestError,
        "preprocessing.colour_order",
    )


def test_unknown_schema_version(plain_bundle: bytes) -> None:
    def future(manifest: dict) -> None:
        manifest["schema_version"] = 2

    refuse(
        pack_members(with_manifest(plain_bundle, future).items()),
        UnsupportedSchemaVersionError,
        "schema_version 2",
    )


def test_missing_schema_version(plain_bundle: bytes) -> None:
    refuse(
        pack_members(with_manifest(plain_bundle, lambda m: m.pop("schema_version")).items()),
        ManifestError,
        "schema_version",
    )


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"schema_version": 1, "schema_version": 1}', "appears twice"),
        (b'{"schema_version": NaN}', "NaN"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100000 + b"]" * 100000, "deeply"),
    ],
)
def test_malformed_manifest(plain_bundle: bytes, raw: bytes, words: str) -> None:
    members = unpack_members(plain_bundle)
    members[MANIFEST_NAME] = raw
    refuse(pack_members(members.items()), ManifestError, MANIFEST_NAME, words)


def test_traversal_inside_manifest_reference(plain_bundle: bytes) -> None:
    def point_outside(manifest: dict) -> None:
        manifest["model"]["file"] = "../model.onnx"

    refuse(
        pack_members(with_manifest(plain_bundle, point_outside).items()),
        ManifestError,
        "model.file",
    )


# --- member content ---------------------------------------------------------------


def test_model_without_format_magic(make_bundle: Callable[..., bytes], tflite_model: bytes) -> None:
    from edge_runtime.bundle import build_bundle
    from tests.conftest import manifest_for, members_for

    with pytest.raises(MemberContentError, match=r"model\.tflite"):
        build_bundle(
            manifest_for("tflite"), members_for(b"\x08\x01 this is not a flatbuffer", "tflite")
        )
    with pytest.raises(MemberContentError, match=r"model\.onnx"):
        build_bundle(manifest_for("onnx"), members_for(tflite_model, "onnx"))


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((4, 4, 3), np.float32), "dtype"),
        (np.zeros((4, 4), np.uint8), "H x W x 3"),
        (np.array([{"a": 1}], dtype=object), "golden/000.npy"),
    ],
)
def test_bad_golden_frames(plain_bundle: bytes, array: np.ndarray, words: str) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    members = unpack_members(plain_bundle)
    members["golden/000.npy"] = buffer.getvalue()

    def rehash(manifest: dict) -> None:
        manifest["files"]["golden/000.npy"] = {
            "size": len(buffer.getvalue()),
            "sha256": sha256_hex(buffer.getvalue()),
        }

    members[MANIFEST_NAME] = with_manifest(pack_members(members.items()), rehash)[MANIFEST_NAME]
    refuse(pack_members(members.items()), MemberContentError, words)


def test_read_bundle_names_the_file(
    tmp_path: Path, plain_bundle: bytes, valid_bundle: bytes
) -> None:
    path = tmp_path / "broken.efb"
    path.write_bytes(plain_bundle[:2000])
    with pytest.raises(BundleArchiveError, match=r"broken\.efb"):
        read_bundle(path)
    path.write_bytes(valid_bundle[:2000])
    with pytest.raises(BundleArchiveError, match=r"broken\.efb: gzip stream is truncated"):
        read_bundle(path)
    with pytest.raises(BundleArchiveError, match="cannot read"):
        read_bundle(tmp_path / "absent.efb")
    with pytest.raises(BundleArchiveError, match="not a regular file"):
        read_bundle(tmp_path)


# --- fuzzing ------------------------------------------------------------------------

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**31), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**31), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 2**31), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 2**31), st.integers(1, 600)),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_random_mutations_raise_only_our_errors(
    plain_bundle: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    # Bias positions towards the headers and the manifest, where parsing is most intricate.
    data = mutate(plain_bundle, mutations, lambda p, n: p % n if p % 3 else p % 2048 % n)
    with contextlib.suppress(EdgefleetError):
        parse_bundle(data)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_random_mutations_of_the_gzip_stream_raise_only_our_errors(
    valid_bundle: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    # Bias positions towards the gzip header and the CRC/length trailer.
    data = mutate(
        valid_bundle,
        mutations,
        lambda p, n: p % n if p % 3 else (p % 16 if p % 2 else n - 1 - p % 16) % n,
    )
    with contextlib.suppress(EdgefleetError):
        parse_bundle(data)


def mutate(
    original: bytes, mutations: list[tuple[str, int, int]], where: Callable[[int, int], int]
) -> bytes:
    data = bytearray(original)
    for kind, position, value in mutations:
        index = where(position, len(data) or 1)
        if kind == "flip" and data:
            data[index] ^= value
        elif kind == "truncate":
            del data[index:]
        elif kind == "insert":
            data.insert(index, value)
        elif kind == "delete":
            del data[index : index + value]
    return bytes(data)


def png_bundle(plain_bundle: bytes, png: bytes) -> bytes:
    """The valid bundle with golden/000.npy replaced by a PNG member (manifest rehashed)."""
    members = unpack_members(plain_bundle)
    del members["golden/000.npy"]
    members["golden/000.png"] = png
    manifest = json.loads(members[MANIFEST_NAME])
    del manifest["files"]["golden/000.npy"]
    manifest["files"]["golden/000.png"] = {"size": len(png), "sha256": sha256_hex(png)}
    manifest["golden"]["vectors"][0]["input"] = "golden/000.png"
    members[MANIFEST_NAME] = json.dumps(manifest).encode()
    return pack_members(members.items())


def test_png_golden_frames_are_checked_without_decoding(plain_bundle: bytes) -> None:
    import cv2

    from edge_runtime.bundle import decode_frame, encode_frame_png
    from tests.conftest import golden_frame

    frame = golden_frame(0)
    good = encode_frame_png(frame)
    bundle = parse_bundle(png_bundle(plain_bundle, good))
    np.testing.assert_array_equal(bundle.golden_frames()[0], frame)  # lossless
    np.testing.assert_array_equal(decode_frame(good, "x.png"), frame)

    corrupt = bytearray(good)
    corrupt[20] ^= 0xFF  # inside IHDR: the header CRC no longer matches
    refuse(
        png_bundle(plain_bundle, bytes(corrupt)), MemberContentError, "golden/000.png", "checksum"
    )
    rgba = cv2.imencode(".png", np.zeros((4, 4, 4), np.uint8))[1].tobytes()
    refuse(png_bundle(plain_bundle, rgba), MemberContentError, "without alpha")
    refuse(png_bundle(plain_bundle, b"GIF89a" + b"\0" * 40), MemberContentError, "not a PNG")
    truncated_body = good[:40] + b"\0" * 10  # header fine, data corrupt: caught when decoded
    with pytest.raises(MemberContentError, match="corrupt"):
        decode_frame(truncated_body, "golden/000.png")
