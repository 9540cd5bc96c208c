"""Labelled image folders (one sub-folder per class), read with bounded memory.

Images are decoded one at a time with OpenCV into the BGR frames a camera
would deliver; files that do not decode are skipped and counted, or are
fatal with ``strict=True``. The folder's content hash goes into a bundle's
provenance and quality report.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from converter.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "LabelledFolder"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass
class LabelledFolder:
    """``root/<label>/*.jpg``: the image paths per class, in a stable order."""

    root: Path
    labels: list[str]
    items: list[tuple[Path, int]]
    skipped: list[Path] = field(default_factory=list)

    @classmethod
    def scan(cls, root: Path, labels: list[str] | None = None) -> LabelledFolder:
        """Find the images; with ``labels`` the sub-folders must match them exactly."""
        if not root.is_dir():
            raise DatasetError(f"{root} is not a folder of class sub-folders")
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if labels is None:
            labels = found
        elif set(found) != set(labels):
            missing, extra = sorted(set(labels) - set(found)), sorted(set(found) - set(labels))
            raise DatasetError(
                f"{root}: class folders do not match the labels"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
            )
        items: list[tuple[Path, int]] = []
        for index, label in enumerate(labels):
            files = sorted(
                p for p in (root / label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise DatasetError(
                    f"{root / label} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            items.extend((path, index) for path in files)
        if not labels:
            raise DatasetError(f"{root} has no class sub-folders")
        return cls(root=root, labels=list(labels), items=items)

    def balanced(self, count: int, seed: int = 0, shuffle: bool = False) -> LabelledFolder:
        """At most ``count`` images, as even across classes as the folder allows.

        Sorted by class unless ``shuffle``: calibration wants the classes mixed,
        because a moving-average range estimate favours the last images it sees.
        """
        rng = np.random.default_rng(seed)
        per_class = [[item for item in self.items if item[1] == k] for k in range(len(self.labels))]
        for group in per_class:
            rng.shuffle(group)  # type: ignore[arg-type,unused-ignore]
        chosen: list[tuple[Path, int]] = []
        round_index = 0
        while len(chosen) < count and any(round_index < len(g) for g in per_class):
            for group in per_class:
                if round_index < len(group) and len(chosen) < count:
                    chosen.append(group[round_index])
            round_index += 1
        return LabelledFolder(
            self.root, self.labels, sorted(chosen, key=lambda i: (i[1], str(i[0])))
        )

    def frames(self, strict: bool = False) -> Iterator[tuple[Path, npt.NDArray[np.uint8], int]]:
        """Decode each image (BGR uint8) lazily; undecodable files are skipped or fatal."""
        for path, label in self.items:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                if strict:
                    raise DatasetError(f"cannot decode image {path}")
                log.warning("skipping %s: not a decodable image", path)
                self.skipped.append(path)
                continue
            yield path, np.asarray(frame, dtype=np.uint8), label

    def sha256(self) -> str:
        """Hash of the labels, relative paths and bytes of every image: the data set's identity."""
        digest = hashlib.sha256()
        for path, label in self.items:
            digest.update(f"{self.labels[label]}/{path.name}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()
