"""The bundle format: round trips, canonical bytes, compatibility with tar(1) and gzip(1)."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import (
    MANIFEST_NAME,
    QualityReport,
    build_bundle,
    decode_frame,
    load_manifest,
    parse_bundle,
    read_bundle,
    write_bundle,
)
from edge_runtime.bundle.ustar import pack_members, sha256_hex, unpack_members
from tests.conftest import golden_frame, manifest_for, members_for
from tests.models import LABELS, tflite_tensor_names


def test_round_trip_keeps_manifest_members_and_frames(onnx_model: bytes) -> None:
    manifest = manifest_for("onnx")
    data = build_bundle(manifest, members_for(onnx_model))
    bundle = parse_bundle(data)
    assert bundle.manifest.model == manifest.model
    assert bundle.manifest.labels == LABELS
    assert bundle.model_bytes == onnx_model
    assert bundle.sha256 == sha256_hex(data)
    assert bundle.id == f"sha256:{bundle.sha256}"
    frames = bundle.golden_frames()
    assert [f.shape for f in frames] == [(48, 64, 3), (48, 64, 3)]
    np.testing.assert_array_equal(frames[1], golden_frame(1))
    # the files table is computed from the members, never taken from the caller
    assert bundle.manifest.files["model.onnx"].sha256 == sha256_hex(onnx_model)
    assert bundle.manifest.files["model.onnx"].size == len(onnx_model)


def test_real_tflite_model_bundle(tflite_model: bytes, tmp_path: Path) -> None:
    names = tflite_tensor_names(tflite_model)
    written = write_bundle(
        tmp_path / "tiny.efb",
        manifest_for("tflite", names=names),
        members_for(tflite_model, "tflite"),
    )
    again = read_bundle(tmp_path / "tiny.efb")
    assert again.sha256 == written.sha256
    assert written.compressed and written.size == (tmp_path / "tiny.efb").stat().st_size
    plain = write_bundle(
        tmp_path / "plain.efb",
        manifest_for("tflite", names=names),
        members_for(tflite_model, "tflite"),
        compress=False,
    )
    assert not plain.compressed and plain.manifest == written.manifest
    assert (tmp_path / "plain.efb").read_bytes() == gzip.decompress(
        (tmp_path / "tiny.efb").read_bytes()
    )
    assert again.manifest.model.inputs[0].name == names[0]
    assert again.model_bytes[4:8] == b"TFL3"


@pytest.mark.parametrize("compress", [True, False])
def test_same_inputs_give_identical_bytes(onnx_model: bytes, compress: bool) -> None:
    members = members_for(onnx_model)
    first = build_bundle(manifest_for(), members, compress=compress)
    reordered = dict(reversed(list(members.items())))
    second = build_bundle(manifest_for(), reordered, compress=compress)
    assert first == second
    changed = build_bundle(manifest_for(version="1.0.1"), members, compress=compress)
    assert changed != first


@pytest.mark.parametrize("mode", ["r:gz", "r:"])
def test_archive_is_canonical_ustar_readable_by_tarfile(
    valid_bundle: bytes, plain_bundle: bytes, mode: str
) -> None:
    data = valid_bundle if mode == "r:gz" else plain_bundle
    with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as archive:
        infos = archive.getmembers()
    assert [i.name for i in infos] == [
        MANIFEST_NAME,
        "golden/000.npy",
        "golden/001.npy",
        "model.onnx",
    ]
    assert {(i.mtime, i.uid, i.gid, i.mode, i.uname, i.gname) for i in infos} == {
        (0, 0, 0, 0o644, "", "")
    }
    assert len(plain_bundle) % 10240 == 0


def test_canonical_archive_bytes_are_pinned() -> None:
    """The writer's exact bytes, so no refactor (or a switch to tarfile) changes bundle ids.

    A bundle's id is the sha256 of its bytes: if the writer changed, rebuilding a
    released bundle from the same inputs would no longer match its signed hash.
    Python's tarfile, for one, writes empty device fields (since 3.8) and splits
    long names at the first '/' that fits, not the last (docs/bundle.md).
    """
    long_name = "golden/" + "a" * 60 + "/" + "b" * 60 + ".png"
    archive = pack_members(
        [
            (MANIFEST_NAME, b"{}\n"),
            ("golden/000.npy", b"\x93NUMPY" + bytes(200)),
            ("model.onnx", b"\x08\x07" + bytes(3000)),
            (long_name, b"1"),
        ]
    )
    assert sha256_hex(archive) == "c002ce2cbc1ceefda5407de9129b1545b9234467cd6c44672ea8ab8ef23af566"
    first = archive[:512]
    assert first[100:148] == b"0000644\x000000000\x000000000\x0000000000003\x0000000000000\x00"
    assert first[329:345] == b"0000000\x000000000\x00"  # devmajor, devminor: zeros, not empty
    last = archive[512 * 11 : 512 * 12]  # after 3 headers and 1 + 1 + 6 data blocks
    assert last[:100].rstrip(b"\0") == b"b" * 60 + b".png"
    assert last[345:500].rstrip(b"\0") == b"golden/" + b"a" * 60  # prefix: up to the last '/'


def test_canonical_bundle_is_the_plain_archive_in_deterministic_gzip(
    valid_bundle: bytes, plain_bundle: bytes
) -> None:
    assert gzip.decompress(valid_bundle) == plain_bundle
    # one member; no name, comment or extra field; mtime 0; best compression; OS unknown
    assert valid_bundle[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    assert len(valid_bundle) < len(plain_bundle)
    compressed, plain = parse_bundle(valid_bundle), parse_bundle(plain_bundle)
    assert compressed.compressed and not plain.compressed
    assert (compressed.size, compressed.archive_size) == (len(valid_bundle), len(plain_bundle))
    assert (plain.size, plain.archive_size) == (len(plain_bundle), len(plain_bundle))
    assert compressed.sha256 == sha256_hex(valid_bundle) != plain.sha256
    assert compressed.manifest == plain.manifest
    assert dict(compressed.members) == dict(plain.members)


def test_tar_xzf_extracts_a_bundle(valid_bundle: bytes, tmp_path: Path) -> None:
    path = tmp_path / "tiny.efb"
    path.write_bytes(valid_bundle)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(path), "-C", str(out)], check=True)
    for name, data in unpack_members(gzip.decompress(valid_bundle)).items():
        assert (out / name).read_bytes() == data


@pytest.mark.parametrize("compress", [False, True])
def test_tar_cli_bundle_is_accepted(plain_bundle: bytes, tmp_path: Path, compress: bool) -> None:
    """A bundle re-made by GNU tar in ustar format (as a hand-writer would) still reads."""
    members = unpack_members(plain_bundle)
    src = tmp_path / "src"
    for name, data in members.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    out = tmp_path / "by-tar.efb"
    subprocess.run(
        [
            "tar",
            "--format=ustar",
            "-C",
            str(src),
            "-czf" if compress else "-cf",
            str(out),
            "manifest.json",
            "golden",
            "model.onnx",
        ],
        check=True,
    )
    bundle = read_bundle(out)
    assert bundle.compressed == compress
    assert bundle.manifest == parse_bundle(plain_bundle).manifest


def test_manifest_dump_is_canonical_json(plain_bundle: bytes) -> None:
    raw = unpack_members(plain_bundle)[MANIFEST_NAME]
    assert raw.endswith(b"\n")
    manifest = load_manifest(raw)
    assert manifest.schema_version == 1
    assert raw.decode().index('"compatibility"') < raw.decode().index('"model"')


def test_quality_report_round_trips(make_bundle: Callable[..., bytes]) -> None:
    report = QualityReport.model_validate(
        {
            "dataset": {"name": "trashnet/val", "sha256": "a" * 64, "num_images": 328},
            "float_accuracy": 0.81,
            "accuracy": 0.805,
            "top1_agreement": 0.985,
            "accuracy_drop_points": 0.5,
            "per_class": [
                {"label": "glass", "support": 50, "float_accuracy": 0.8, "accuracy": 0.78}
            ],
            "confusion": [[1, 0], [0, 1]],
            "passed": True,
            "thresholds": {"max_accuracy_drop": 1.0, "min_agreement": 0.98},
        }
    )
    bundle = parse_bundle(make_bundle(quality=report))
    assert bundle.manifest.quality == report


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"labels": ["a", "b"]}, "6 classes but 2 labels"),
        ({"labels": ["a", "a", "b", "c", "d", "e"]}, "appears twice"),
        ({"version": "one"}, "version"),
        ({"name": "Has Spaces"}, "name"),
    ],
)
def test_inconsistent_manifest_is_refused_when_built(
    make_bundle: Callable[..., bytes], override: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        make_bundle(**override)


def test_frame_encoding_round_trips() -> None:
    from edge_runtime.bundle import encode_frame

    frame = golden_frame(3, 7, 5)
    np.testing.assert_array_equal(decode_frame(encode_frame(frame), "x.npy"), frame)
