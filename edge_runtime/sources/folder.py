"""A folder of still images played as a camera, in sorted file-name order.

An image that does not decode is logged and skipped (counted in ``skipped``), so one
bad file in a test set does not stop the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from edge_runtime.errors import SourceError, SourceUnavailableError
from edge_runtime.sources.base import FrameSource, Pacer, SourceSettings

__all__ = ["IMAGE_SUFFIXES", "FolderSource", "FolderSourceConfig"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class FolderSourceConfig(SourceSettings):
    """Images (jpg, jpeg, png, bmp, webp) in one folder, read in sorted order."""

    type: Literal["folder"] = "folder"
    path: str = Field(min_length=1)
    fps: float | None = Field(default=None, gt=0, description="None: as fast as possible")
    loop: bool = Field(default=False, description="start again after the last image")


class FolderSource(FrameSource):
    """Decodes each image of a folder in turn with ``cv2.imread`` (BGR)."""

    config_type = FolderSourceConfig

    def __init__(self, config: FolderSourceConfig) -> None:
        self.config = config
        self.name = f"folder {config.path}"
        self.files: list[Path] = []
        self.skipped = 0
        """Files that did not decode (counted again on every pass of a loop)."""
        self._index = 0
        self._pacer = Pacer(config.fps)

    @property
    def native_fps(self) -> float | None:
        """The configured rate (``None``: as fast as possible)."""
        return self.config.fps

    @property
    def finite(self) -> bool:
        """Without ``loop`` the folder ends after its last image."""
        return not self.config.loop

    def open(self) -> None:
        """List the folder's images; raise ``SourceUnavailableError`` if there are none."""
        folder = Path(self.config.path)
        if not folder.is_dir():
            raise SourceUnavailableError(f"image folder {folder} does not exist")
        self.files = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.files:
            raise SourceUnavailableError(
                f"image folder {folder} holds no {', '.join(sorted(IMAGE_SUFFIXES))} files"
            )
        self._index = 0
        self._pacer.reset()
        logger.info("opened %s (%d images)", self.name, len(self.files))

    def read(self) -> npt.NDArray[np.uint8] | None:
        """The next image that decodes; ``None`` after the last one unless ``loop``."""
        if not self.files:
            raise SourceError(f"{self.name} is not open")
        failures = 0
        while True:
            if self._index >= len(self.files):
                if not self.config.loop:
                    return None
                self._index = 0
            if failures >= len(self.files):
                raise SourceError(f"{self.name}: none of its {len(self.files)} images decodes")
            path = self.files[self._index]
            self._index += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                self._pacer.wait()
                return cast("npt.NDArray[np.uint8]", image)
            failures += 1
            self.skipped += 1
            logger.warning("%s: skipping %s, it does not decode as an image", self.name, path.name)

    def close(self) -> None:
        """Forget the file list."""
        self.files = []

    def interrupt(self) -> None:
        """Wake a read waiting for its pacing time."""
        self._pacer.interrupt()
