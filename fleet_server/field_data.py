"""Field data on the server: the content-addressed image files, the sample records, the export.

Each uploaded image is one file ``<folder>/<sha256[:2]>/<sha256>.<ext>``,
written atomically, so the same frame uploaded twice (a device resends what
was not acknowledged) is stored once. The database keeps what each one is
(:mod:`fleet_server.registry.field_data`); :class:`FieldRetention` bounds
how many are kept; :func:`export_folder` writes the labelled ones as
``<out>/<label>/<sha256>.jpg``, the layout ``edgefleet convert --parity``
and ``train-reference`` read, with what each one is in ``<out>/samples.jsonl``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.atomic import atomic_write_bytes
from fleet_server.errors import FleetError

__all__ = [
    "EXPORT_METADATA",
    "FieldDataError",
    "FieldRetention",
    "FieldSampleInfo",
    "FieldStore",
    "export_folder",
]

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{64}$")
_EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$")
EXPORT_METADATA = "samples.jsonl"
"""The file of an export that says what each image is."""
_EXPORTED = (
    "sha256",
    "true_label",
    "label",
    "confidence",
    "reason",
    "device_id",
    "camera_id",
    "bundle_name",
    "bundle_version",
    "bundle_sha256",
    "captured_at",
    "labelled_by",
)


class FieldDataError(FleetError):
    """A field-data request the server cannot honour (a bad label, a missing image)."""


def check_label(label: str) -> str:
    """A label usable as a folder name (letters, digits, space, ``._-``; 1-128 characters)."""
    if not _LABEL.match(label) or label in {".", ".."}:
        raise FieldDataError(
            f"label {label[:40]!r} is not a usable class name (letters, digits, ' ._-', up to 128)"
        )
    return label


@dataclass(frozen=True)
class FieldSampleInfo:
    """A stored field sample: what the device answered, and what a person said, if anyone did."""

    sha256: str
    device_id: str
    image_format: str
    size: int
    captured_at: float
    received_at: float
    reason: str
    label: str
    confidence: float | None
    top_k: Sequence[Any]
    bundle_sha256: str
    bundle_name: str
    bundle_version: str
    uploads: int
    true_label: str | None
    labelled_by: str | None
    labelled_at: float | None
    camera_id: str | None = None
    """The camera that took it on a multi-camera device (None: the device named none)."""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON values."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class FieldRetention:
    """How many field samples the server keeps: unlabelled ones age out, then the oldest go.

    Labelled samples (a person's work) are never aged out, and go only when
    they alone exceed ``max_samples``.
    """

    max_samples: int = 20_000
    max_age_s: float | None = 30 * 86400.0


class FieldStore:
    """The image files, by sha256, under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str, image_format: str) -> Path:
        """Where the image with this hash lives."""
        if not _SHA.match(sha256):
            raise FieldDataError(f"not a sha256: {sha256[:70]!r}")
        extension = _EXTENSIONS.get(image_format)
        if extension is None:
            raise FieldDataError(f"unknown image format {image_format!r}")
        return self.folder / sha256[:2] / f"{sha256}{extension}"

    def put(self, sha256: str, image_format: str, data: bytes) -> bool:
        """Store an image (its hash already checked); False when it was there already."""
        path = self.path(sha256, image_format)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return True

    def read(self, sha256: str, image_format: str) -> bytes:
        """The image's bytes; :class:`FieldDataError` when the file is gone."""
        try:
            return self.path(sha256, image_format).read_bytes()
        except FileNotFoundError as exc:
            raise FieldDataError(f"field sample {sha256[:12]}'s image is missing") from exc

    def delete(self, samples: Iterable[tuple[str, str]]) -> int:
        """Remove the files of ``(sha256, format)`` pairs; how many were there."""
        removed = 0
        for sha256, image_format in samples:
            path = self.path(sha256, image_format)
            if path.exists():
                path.unlink()
                removed += 1
        return removed


def export_folder(
    samples: Iterable[FieldSampleInfo],
    images: Iterable[bytes],
    out: Path,
    *,
    unreviewed: bool = False,
) -> dict[str, int]:
    """Write labelled samples as ``out/<true label>/<sha256>.<ext>``; images per label written.

    ``images`` yields each sample's bytes in the same order. A sample
    without a person's label is skipped; with ``unreviewed``, it goes in the
    folder of the device's answer instead (a folder for a person to review,
    not yet a parity set: its ``true_label`` stays null). What each written image is goes to
    ``out/`` :data:`EXPORT_METADATA` (one JSON object a line: its ``file``
    under ``out``, the person's ``true_label``, the device's answer, the device
    and camera, the bundle, when it was taken); the parity loader reads only the
    class folders.
    """
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    lines: list[str] = []
    for sample, data in zip(samples, images, strict=True):
        if sample.true_label is None and not unreviewed:
            continue
        label = check_label(sample.true_label or sample.label)
        folder = out / label
        folder.mkdir(exist_ok=True)
        name = f"{sample.sha256}{_EXTENSIONS[sample.image_format]}"
        atomic_write_bytes(folder / name, data)
        written[label] = written.get(label, 0) + 1
        record = {key: getattr(sample, key) for key in _EXPORTED}
        lines.append(json.dumps({"file": f"{label}/{name}", **record}, sort_keys=True))
    atomic_write_bytes(out / EXPORT_METADATA, "".join(f"{line}\n" for line in lines).encode())
    return dict(sorted(written.items()))
