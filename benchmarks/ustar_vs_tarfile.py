"""The hand-written ustar codec against Python's tarfile plus a strict validator (issue #16).

    .venv/bin/python benchmarks/ustar_vs_tarfile.py [--sizes-mb 5,20] [--repeats 11]

``edge_runtime/bundle/ustar.py`` writes and reads bundle archives itself. The
alternative measured here (below, ``tar_pack_members`` and
``tar_unpack_members``) is the best tarfile-based version we could write with
the same interface and the same typed errors: tarfile writes and parses, and
a validator refuses what tarfile lets through. Both sides run in this one
process, side by side:

1. bytes: the same members packed by each writer (canonical bundles, names
   over 100 bytes, empty and block-sized members), and tarfile's bytes on
   every other ``python3.X`` on PATH;
2. hostile input: each refusal case of ``tests/unit/test_bundle_hostile.py``
   and some tarfile is known to accept (base-256 and negative sizes, a bad
   header after the first, v7 headers, pax path overrides), read by each;
3. speed and peak memory (tracemalloc) packing and unpacking realistic
   bundles of ``--sizes-mb`` (a model of random bytes, three PNG-sized
   golden frames, a manifest), median of ``--repeats`` interleaved runs;
4. lines of code of each, counting only code (no docstrings, comments,
   blank lines, imports), without what both share (``ArchiveLimits``).

With the prototype swapped in for ``ustar.pack_members``/``unpack_members``,
``tests/unit/test_bundle_hostile.py`` and ``tests/unit/test_bundle_format.py``
passed 76 of 76 (December 2026), fuzzing included; only the pinned-bytes test
added afterwards fails with it. The figures and the decision are in
``docs/bundle.md`` ("Why a hand-written codec, not tarfile").
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import time
import tokenize
import tracemalloc
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.bundle import ustar
from edge_runtime.bundle.manifest import is_safe_member_name
from edge_runtime.bundle.ustar import ArchiveLimits
from edge_runtime.errors import (
    BundleArchiveError,
    BundleError,
    BundleTooLargeError,
    DuplicateMemberError,
    UnsafeMemberError,
)

Members = list[tuple[str, bytes]]

# --- the alternative: tarfile plus a strict validator (counted by `code_lines`) ------------

_TAR_BLOCK = 512
_TAR_LINKS = {tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link"}
_TAR_DEVICES = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}
_TAR_EXTENDED = {
    tarfile.XHDTYPE: "pax extended header",
    tarfile.XGLTYPE: "pax global header",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link name",
}


def tar_pack_members(members: Iterable[tuple[str, bytes]]) -> bytes:
    """Canonical ustar bytes for ``(name, data)`` pairs, written by tarfile."""
    buffer = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict"
    ) as archive:
        for name, data in members:
            if not is_safe_member_name(name):
                raise UnsafeMemberError(f"refusing to write unsafe member name {name!r}")
            if name in seen:
                raise DuplicateMemberError(f"member {name!r} given twice")
            seen.add(name)
            info = tarfile.TarInfo(name)  # mode 0644, uid/gid 0, mtime 0, no owner names
            info.size = len(data)
            try:
                archive.addfile(info, io.BytesIO(data))
            except ValueError as exc:  # name too long, size past 11 octal digits
                raise BundleArchiveError(f"member {name!r} cannot be written: {exc}") from exc
    return buffer.getvalue()


def _tar_check_name(name: str) -> None:
    if name.startswith("/"):
        raise UnsafeMemberError(f"member {name!r} has an absolute path")
    if ".." in name.split("/"):
        raise UnsafeMemberError(f"member {name!r} has a '..' component (path traversal)")
    if not is_safe_member_name(name):
        raise UnsafeMemberError(f"member {name!r} is not a safe relative path")


def _tar_check_header(data: bytes, info: tarfile.TarInfo) -> None:
    """What tarfile accepts but a bundle must not carry; some of it only the raw header shows."""
    where, name = f"header at byte {info.offset}", info.name
    raw = data[info.offset : info.offset + _TAR_BLOCK]
    if info.offset_data - info.offset != _TAR_BLOCK or info.pax_headers:
        kind = _TAR_EXTENDED.get(raw[156:157], "an extended header")
        raise BundleArchiveError(
            f"{where}: {kind} is not supported in bundles; "
            "write the archive with `edgefleet bundle pack` or `tar --format=ustar`"
        )
    if raw[257:263] not in {b"ustar\0", b"ustar "}:
        raise BundleArchiveError(f"{where}: not a ustar header (no ustar magic)")
    if raw[124] & 0x80:  # a GNU base-256 size, which tarfile reads (negative ones too)
        raise BundleArchiveError(f"{where}: size field is not an octal number (not a ustar file)")
    if info.type in _TAR_LINKS:
        raise UnsafeMemberError(f"member {name!r} is a {_TAR_LINKS[info.type]}; links are refused")
    if info.type in _TAR_DEVICES:
        raise UnsafeMemberError(f"member {name!r} is a {_TAR_DEVICES[info.type]}; refused")
    if not (info.isreg() or info.isdir()) or info.type == tarfile.GNUTYPE_SPARSE:
        raise UnsafeMemberError(f"member {name!r} has unknown type flag {info.type!r}")
    _tar_check_name(name)
    if info.isdir() and info.size:
        raise BundleArchiveError(f"directory member {name!r} claims {info.size} bytes")


def _tar_check_caps(
    info: tarfile.TarInfo, members: dict[str, bytes], limits: ArchiveLimits
) -> None:
    if len(members) >= limits.max_members:
        raise BundleTooLargeError(f"archive holds more than {limits.max_members} members")
    if info.size > limits.max_member_bytes:
        raise BundleTooLargeError(
            f"member {info.name!r} is {info.size} bytes, "
            f"over the {limits.max_member_bytes}-byte cap"
        )
    if info.name in members:
        raise DuplicateMemberError(f"member {info.name!r} appears twice in the archive")


def tar_unpack_members(data: bytes, limits: ArchiveLimits | None = None) -> dict[str, bytes]:
    """Read a bundle archive with tarfile into ``{name: bytes}``, then check what it let through."""
    limits = limits or ArchiveLimits()
    if len(data) > limits.max_archive_bytes:
        raise BundleTooLargeError(
            f"archive is {len(data)} bytes, over the {limits.max_archive_bytes}-byte cap"
        )
    if len(data) < 2 * _TAR_BLOCK:
        raise BundleArchiveError(f"archive is {len(data)} bytes, too short to be a ustar archive")
    members: dict[str, bytes] = {}
    end = 0  # where the last member (and its padding) ends
    try:
        with tarfile.open(
            fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="strict"
        ) as archive:
            for info in archive:  # lazily: each header is checked before the next is read
                _tar_check_header(data, info)
                end = info.offset_data
                if info.isdir():
                    continue
                _tar_check_caps(info, members, limits)
                stop = info.offset_data + info.size
                if stop > len(data):  # tarfile notices only when it seeks to the next header
                    raise BundleArchiveError(
                        f"archive is truncated inside member {info.name!r} "
                        f"({len(data) - info.offset_data} of {info.size} bytes present)"
                    )
                members[info.name] = data[info.offset_data : stop]
                end = stop + (-info.size % _TAR_BLOCK)
                if any(data[stop:end]):
                    raise BundleArchiveError(
                        f"padding after member {info.name!r} is not zero (corrupt archive)"
                    )
    except tarfile.ReadError as exc:  # raised only for byte 0 (see below)
        raise BundleArchiveError(f"not a ustar archive ({exc})") from exc
    except UnicodeDecodeError as exc:  # a name, link name or owner name
        raise UnsafeMemberError("a header field is not UTF-8") from exc
    # After byte 0 tarfile ends the archive without a word at a header it cannot parse
    # (bad checksum, a number that is not octal, a short block): only the end marker may follow.
    if data[end : end + 2 * _TAR_BLOCK] != b"\0" * (2 * _TAR_BLOCK):
        raise BundleArchiveError(
            f"archive is corrupt or truncated at byte {end}: "
            "neither a valid header nor the end-of-archive marker"
        )
    if any(data[end:]):
        raise BundleArchiveError("archive has data after its end-of-archive marker")
    return members


# --- inputs -------------------------------------------------------------------------------


def realistic_members(total_mb: float, seed: int = 16) -> Members:
    """A bundle's members: manifest, a model of random bytes, three PNG-sized golden frames."""
    rng = random.Random(seed)  # noqa: S311 (test data, not a secret)
    frames = [(f"golden/{i:03d}.png", rng.randbytes(60_000 + 1_111 * i)) for i in range(3)]
    manifest = ("manifest.json", b'{"schema_version": 1, ' + b'"pad": "x", ' * 150 + b"}\n")
    model_size = int(total_mb * 1_000_000) - sum(len(d) for _, d in [*frames, manifest])
    return [manifest, ("model.tflite", rng.randbytes(model_size)), *frames]


def identity_cases() -> dict[str, Members]:
    """Member lists to pack with both writers."""
    deep = "golden/" + "a" * 60 + "/" + "b" * 60 + ".png"  # 132 bytes, two places to split
    return {
        "canonical bundle (test fixture shape)": [
            ("manifest.json", b"{}\n"),
            ("golden/000.npy", b"\x93NUMPY" + bytes(200)),
            ("golden/001.npy", b"\x93NUMPY" + bytes(201)),
            ("model.onnx", b"\x08\x07" + bytes(3000)),
        ],
        "realistic 5 MB bundle": realistic_members(5),
        "empty and block-sized members": [("a", b""), ("b", bytes(512)), ("c/d", b"x" * 1024)],
        "name of 106 bytes, one '/'": [("golden/" + "x" * 95 + ".npy", b"1")],
        "name of 132 bytes, two '/'": [(deep, b"1")],
    }


def tarfile_sha_elsewhere(python: str, members: Members) -> str:
    """sha256 of tarfile's archive for ``members`` under another interpreter (stdlib only)."""
    script = (
        "import hashlib, io, struct, sys, tarfile\n"
        "raw = sys.stdin.buffer.read(); pos = 0; buf = io.BytesIO()\n"
        "with tarfile.open(fileobj=buf, mode='w', format=tarfile.USTAR_FORMAT,"
        " encoding='utf-8', errors='strict') as tar:\n"
        "    while pos < len(raw):\n"
        "        n, m = struct.unpack('<II', raw[pos:pos + 8]); pos += 8\n"
        "        info = tarfile.TarInfo(raw[pos:pos + n].decode()); pos += n\n"
        "        info.size = m; tar.addfile(info, io.BytesIO(raw[pos:pos + m])); pos += m\n"
        "print(hashlib.sha256(buf.getvalue()).hexdigest())\n"
    )
    framed = b"".join(
        struct.pack("<II", len(name.encode()), len(data)) + name.encode() + data
        for name, data in members
    )
    result = subprocess.run(
        [python, "-c", script], input=framed, capture_output=True, check=True, timeout=120
    )
    return result.stdout.decode().strip()


def default_pythons() -> list[str]:
    """``python3.10`` to ``python3.14`` where PATH has them."""
    return [path for minor in range(10, 15) if (path := shutil.which(f"python3.{minor}"))]


def version_of(python: str) -> str | None:
    """``python``'s version, or None when it does not start (as a pyenv shim may not)."""
    version = "import sys; print(sys.version.split()[0])"
    result = subprocess.run([python, "-c", version], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def bundle_fixture() -> bytes:
    """A small, valid plain archive (what the hostile cases start from)."""
    return ustar.pack_members(identity_cases()["canonical bundle (test fixture shape)"])


def tar_with(*extra: tarfile.TarInfo, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    """The fixture's members plus hand-made entries, written by tarfile (as the tests do)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in ustar.unpack_members(bundle_fixture()).items():
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
    info.type, info.size, info.linkname = kind, size, link
    return info


def edit_header(data: bytes, at: int, field: slice, value: bytes) -> bytes:
    """``data`` with one header field replaced and the header's checksum made right again."""
    out = bytearray(data)
    header = bytearray(out[at : at + 512])
    header[field] = value
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    out[at : at + 512] = header
    return bytes(out)


def second_header(data: bytes) -> int:
    return 512 + (int(data[124:135], 8) + 511) // 512 * 512


def end_of_members(data: bytes) -> int:
    """Where the end-of-archive marker of a valid archive starts."""
    offset = 0
    while any(data[offset : offset + 512]):
        offset += 512 + (int(data[offset + 124 : offset + 135], 8) + 511) // 512 * 512
    return offset


SECRET = b"root:x:0:0:hunter2:/root:/bin/sh\n"


def hostile_cases() -> dict[str, tuple[bytes, ArchiveLimits | None]]:
    """Each refusal case of the hostile-bundle tests (at the archive level), and a few more."""
    good = bundle_fixture()
    two = second_header(good)
    pax = tarfile.TarInfo("evil")
    pax.pax_headers = {"path": "../../etc/cron.d/x"}
    pax.size = 1
    sparse = entry("sparse", tarfile.GNUTYPE_SPARSE)
    cases: dict[str, tuple[bytes, ArchiveLimits | None]] = {
        "path traversal": (tar_with(entry("golden/../../etc/cron.d/x", size=1)), None),
        "absolute path": (tar_with(entry("/etc/passwd", size=1)), None),
        "symbolic link": (tar_with(entry("l", tarfile.SYMTYPE, link="/etc/shadow")), None),
        "hard link": (tar_with(entry("l", tarfile.LNKTYPE, link="/etc/shadow")), None),
        "character device": (tar_with(entry("d", tarfile.CHRTYPE)), None),
        "block device": (tar_with(entry("d", tarfile.BLKTYPE)), None),
        "FIFO": (tar_with(entry("d", tarfile.FIFOTYPE)), None),
        "pax long name": (tar_with(entry("g/" + "x" * 120, size=1), fmt=tarfile.PAX_FORMAT), None),
        "pax path override to ../..": (tar_with(pax, fmt=tarfile.PAX_FORMAT), None),
        "GNU long name": (tar_with(entry("g/" + "x" * 120, size=1), fmt=tarfile.GNU_FORMAT), None),
        "GNU sparse file": (tar_with(sparse, fmt=tarfile.GNU_FORMAT), None),
        "member over cap": (good, ArchiveLimits(max_member_bytes=200)),
        "archive over cap": (good, ArchiveLimits(max_archive_bytes=4096)),
        "70 members (cap 64)": (
            ustar.pack_members((f"junk/{i}", b"") for i in range(70)),
            None,
        ),
        "8 GiB declared in 10 KiB": (edit_header(good, 0, slice(124, 136), b"77777777777\0"), None),
        "base-256 size (GNU)": (
            edit_header(good, 0, slice(124, 136), b"\x80" + bytes(10) + b"\x03"),
            None,
        ),
        "negative base-256 size": (edit_header(good, 0, slice(124, 136), b"\xff" * 12), None),
        "duplicate member": (tar_with(entry("model.onnx", size=3)), None),
        "truncated in a header": (good[:1500], None),
        "truncated in member data": (good[: two + 512 + 100], None),
        "empty input": (b"", None),
        "a zip file": (b"PK\x03\x04" + b"\0" * 2000, None),
        "a text file (must not be quoted)": (SECRET * 200, None),
        "trailing garbage": (good + b"appended" + b"\0" * 504, None),
        "bad checksum, first header": (good[:5] + b"#" + good[6:], None),
        "bad checksum, second header": (good[: two + 5] + b"#" + good[two + 6 :], None),
        "not octal: mtime, second header": (
            edit_header(good, two, slice(136, 148), b"zzzzzzzzzzz\0"),
            None,
        ),
        "v7 header (no ustar magic)": (edit_header(good, 0, slice(257, 265), bytes(8)), None),
        "non-UTF-8 name": (edit_header(good, 0, slice(0, 4), b"\xff\xfe\xfd\xfc"), None),
        "non-zero padding": (good[: two - 1] + b"!" + good[two:], None),
        "directory claiming bytes": (tar_with(entry("golden", tarfile.DIRTYPE, size=0)), None),
        "member hidden after one zero block": (
            good[: end_of_members(good)]
            + bytes(512)
            + ustar.pack_members([("hidden.sh", b"#!/bin/sh")])[:1024]
            + bytes(1024),
            None,
        ),
    }
    directory = cases["directory claiming bytes"][0]
    at = directory.rindex(b"golden/\0")
    cases["directory claiming bytes"] = (
        edit_header(directory, at, slice(124, 136), b"00000001000\0"),
        None,
    )
    return cases


def outcome(
    read: Callable[..., dict[str, bytes]], data: bytes, limits: ArchiveLimits | None
) -> str:
    try:
        read(data, limits)
    except BundleError as exc:
        leaked = " LEAKS INPUT" if b"hunter2" in data and "hunter2" in str(exc) else ""
        return f"{type(exc).__name__}: {exc}{leaked}"
    except Exception as exc:  # noqa: BLE001 (a crash is a finding here, not a failure)
        return f"CRASH {type(exc).__name__}: {exc}"
    return "ACCEPTED"


# --- speed and memory ---------------------------------------------------------------------


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def peak_bytes(call: Callable[[], object]) -> int:
    """Peak memory allocated by ``call`` beyond what was allocated before it."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


# --- lines of code ------------------------------------------------------------------------


def code_lines(path: Path, keep: Callable[[str], bool]) -> int:
    """Lines holding code in the top-level definitions whose names ``keep`` accepts.

    Docstrings, comments, blank lines and imports do not count.
    """
    source = path.read_text()
    tree = ast.parse(source)
    wanted: set[int] = set()
    for top in tree.body:
        names: list[str] = []
        if isinstance(top, ast.FunctionDef | ast.ClassDef):
            names = [top.name]
        elif isinstance(top, ast.Assign):
            names = [t.id for t in top.targets if isinstance(t, ast.Name)]
        if names and all(keep(name) for name in names):
            first = min([top.lineno, *(d.lineno for d in getattr(top, "decorator_list", []))])
            wanted.update(range(first, (top.end_lineno or top.lineno) + 1))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for statement in body:  # a bare string statement: a docstring
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    end = statement.end_lineno or statement.lineno
                    docstrings.update(range(statement.lineno, end + 1))
    code: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip and token.type != tokenize.ENDMARKER:
            code.update(range(token.start[0], token.end[0] + 1))
    return len(code & wanted - docstrings)


# --- the run ------------------------------------------------------------------------------


def row(cells: Iterable[object], widths: list[int]) -> str:
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def compare_bytes(pythons: list[str]) -> None:
    others = {version: path for path in pythons if (version := version_of(path))}
    widths = [40, 10, 10, 10, 30]
    print(row(["members", "hand", "tarfile", "identical", "tarfile on other Pythons"], widths))
    for label, members in identity_cases().items():
        hand, tar = ustar.pack_members(members), tar_pack_members(members)
        here = hashlib.sha256(tar).hexdigest()
        same = [v for v, path in others.items() if tarfile_sha_elsewhere(path, members) == here]
        differ = [v for v in others if v not in same]
        across = "; ".join(
            f"{word} on {', '.join(versions)}"
            for word, versions in (("same", same), ("DIFFERS", differ))
            if versions
        )
        sha = hashlib.sha256(hand).hexdigest()[:8]
        identical = "yes" if hand == tar else "no"
        print(row([label, sha, here[:8], identical, across or "(none found)"], widths))


def compare_refusals(width: int) -> None:
    widths = [34, width, width]
    print(row(["case", "hand-written ustar.py", "tarfile + validator"], widths))
    cases = hostile_cases()
    refused = [0, 0]
    for label, (data, limits) in cases.items():
        said = [outcome(read, data, limits) for read in (ustar.unpack_members, tar_unpack_members)]
        for index, text in enumerate(said):
            refused[index] += not text.startswith(("ACCEPTED", "CRASH"))
        print(row([label, *(text[:width] for text in said)], widths))
    total = len(cases)
    print(row(["refused with a typed error", *(f"{n} of {total}" for n in refused)], widths))


def compare_speed(sizes_mb: list[float], repeats: int) -> None:
    widths = [9, 9, 9, 11, 7, 13, 16]
    headers = ["bundle", "operation", "hand ms", "tarfile ms", "ratio", "hand peak MB"]
    print(row([*headers, "tarfile peak MB"], widths))
    for size in sizes_mb:
        members = realistic_members(size)
        archive = ustar.pack_members(members)
        assert tar_unpack_members(archive) == ustar.unpack_members(archive) == dict(members)
        operations: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "pack": (partial(ustar.pack_members, members), partial(tar_pack_members, members)),
            "unpack": (
                partial(ustar.unpack_members, archive),
                partial(tar_unpack_members, archive),
            ),
        }
        for name, (hand_call, tar_call) in operations.items():
            hand_times, tar_times = [], []
            for _ in range(repeats):  # interleaved, so drift hits both alike
                hand_times.append(timed(hand_call))
                tar_times.append(timed(tar_call))
            hand_ms = statistics.median(hand_times) * 1000
            tar_ms = statistics.median(tar_times) * 1000
            hand_peak, tar_peak = peak_bytes(hand_call), peak_bytes(tar_call)
            cells = [f"{len(archive) / 1e6:.1f} MB", name, f"{hand_ms:.2f}", f"{tar_ms:.2f}"]
            ratio = f"{tar_ms / hand_ms:.2f}x"
            print(row([*cells, ratio, f"{hand_peak / 1e6:.1f}", f"{tar_peak / 1e6:.1f}"], widths))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", default="5,20", help="bundle sizes to time (MB, decimal)")
    parser.add_argument("--repeats", type=int, default=11, help="timed runs per operation")
    parser.add_argument("--width", type=int, default=64, help="characters of each message shown")
    parser.add_argument(
        "--python",
        action="append",
        help="another interpreter to check tarfile's bytes on (repeatable; default: python3.X on PATH)",
    )
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]} on {sys.platform}")
    print("\n1. Same members, same bytes? (sha256 prefixes)")
    compare_bytes(args.python or default_pythons())
    print("\n2. Hostile and malformed archives: what each reader says")
    compare_refusals(args.width)
    print(f"\n3. Speed (median of {args.repeats}, interleaved) and peak memory (tracemalloc)")
    compare_speed([float(s) for s in args.sizes_mb.split(",")], args.repeats)
    print("\n4. Lines of code (code only; without ArchiveLimits and sha256_hex, which both use)")
    hand_lines = code_lines(
        ROOT / "edge_runtime" / "bundle" / "ustar.py",
        lambda n: n not in {"ArchiveLimits", "sha256_hex", "__all__"},
    )
    tar_lines = code_lines(Path(__file__), lambda n: n.startswith(("tar_", "_tar_", "_TAR_")))
    print(f"hand-written ustar.py: {hand_lines}    tarfile + validator: {tar_lines}")


if __name__ == "__main__":
    main()
