"""Generated frames for tests, demos and benchmarks: no camera, no files.

Frame ``k`` depends only on the seed, the size and ``k``: a scrolling colour gradient
with a few moving rectangles, cheap to draw and different from frame to frame.
"""

from __future__ import annotations

import logging
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from edge_runtime.errors import SourceError
from edge_runtime.sources.base import FrameSource, Pacer, SourceSettings

__all__ = ["SyntheticSource", "SyntheticSourceConfig"]

logger = logging.getLogger(__name__)

_RECTANGLES = 3


class SyntheticSourceConfig(SourceSettings):
    """Deterministic generated BGR frames of a fixed size, at a fixed rate."""

    type: Literal["synthetic"] = "synthetic"
    width: int = Field(default=640, ge=1, le=8192)
    height: int = Field(default=480, ge=1, le=8192)
    fps: float | None = Field(default=30.0, gt=0, description="None: as fast as possible")
    frames: int | None = Field(default=None, ge=0, description="None: endless")
    seed: int = 0


class SyntheticSource(FrameSource):
    """Draws frame after frame from the config; ``open`` starts again at frame 0."""

    config_type = SyntheticSourceConfig

    def __init__(self, config: SyntheticSourceConfig) -> None:
        self.config = config
        rate = "as fast as possible" if config.fps is None else f"{config.fps:g} fps"
        self.name = f"synthetic {config.width}x{config.height} {rate} seed {config.seed}"
        self._pacer = Pacer(config.fps)
        self._strip: npt.NDArray[np.uint8] | None = None
        self._index = 0
        rng = np.random.default_rng(config.seed)
        w, h = config.width, config.height
        self._colors = rng.integers(0, 256, (_RECTANGLES, 3)).tolist()
        self._sizes = [
            (
                max(1, int(rng.integers(w // 10, w // 4 + 1))),
                max(1, int(rng.integers(h // 10, h // 4 + 1))),
            )
            for _ in range(_RECTANGLES)
        ]
        self._starts = rng.integers(0, [w, h], (_RECTANGLES, 2)).tolist()
        self._speeds = rng.integers(1, 9, (_RECTANGLES, 2)).tolist()
        self._ends = rng.integers(0, 256, (2, 3)).astype(np.float32)

    @property
    def native_fps(self) -> float | None:
        """The configured rate (``None``: as fast as possible)."""
        return self.config.fps

    @property
    def finite(self) -> bool:
        """A source with a frame count ends after that many frames."""
        return self.config.frames is not None

    def open(self) -> None:
        """Draw the background and start at frame 0."""
        w, h = self.config.width, self.config.height
        ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[:, None]
        row = self._ends[0] + (self._ends[1] - self._ends[0]) * ramp
        # A gradient there and back (period 2w) plus one more frame width, so a frame-wide
        # window can start anywhere in one period without wrapping.
        row = np.concatenate([row, row[::-1], row])
        self._strip = np.ascontiguousarray(
            np.broadcast_to(row.astype(np.uint8)[None], (h, 3 * w, 3))
        )
        self._index = 0
        self._pacer.reset()
        logger.debug("opened %s", self.name)

    def read(self) -> npt.NDArray[np.uint8] | None:
        """The next generated frame; ``None`` after ``frames`` frames."""
        if self._strip is None:
            raise SourceError(f"{self.name} is not open")
        if self.config.frames is not None and self._index >= self.config.frames:
            return None
        image = self.frame(self._index)
        self._index += 1
        self._pacer.wait()
        return image

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """Frame number ``index`` (the same for the same config, whenever it is drawn)."""
        if self._strip is None:
            raise SourceError(f"{self.name} is not open")
        w, h = self.config.width, self.config.height
        shift = (index * 4) % (2 * w)
        image: npt.NDArray[np.uint8] = self._strip[:, shift : shift + w].copy()
        for (rw, rh), (x0, y0), (vx, vy), color in zip(
            self._sizes, self._starts, self._speeds, self._colors, strict=True
        ):
            x = (x0 + vx * index) % max(1, w - rw + 1)
            y = (y0 + vy * index) % max(1, h - rh + 1)
            cv2.rectangle(image, (x, y), (x + rw - 1, y + rh - 1), color, thickness=-1)
        return image

    def close(self) -> None:
        """Drop the background."""
        self._strip = None

    def interrupt(self) -> None:
        """Wake a read waiting for its pacing time."""
        self._pacer.interrupt()
