"""What the bench feeds the pipeline: encoded images, a video file, or synthetic frames.

Images are read from disk once and held encoded in memory, so the decode
stage measures ``cv2.imdecode`` and never the disk. A video is decoded
frame by frame as a camera box would (reopened, untimed, at its end).
Synthetic frames are generated up front and have no decode stage.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_runtime.errors import SourceError
from edge_runtime.sources.synthetic import SyntheticSource, SyntheticSourceConfig

__all__ = [
    "IMAGE_SUFFIXES",
    "BenchFrame",
    "BenchInputs",
    "ImageInputs",
    "SyntheticInputs",
    "VideoInputs",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass(frozen=True)
class BenchFrame:
    """One frame ready for the pipeline, how long its decode took, and its true label if known."""

    image: npt.NDArray[np.uint8]
    decode_ms: float | None
    index: int
    truth: str | None


class BenchInputs(ABC):
    """An endless, deterministic stream of frames for one configuration."""

    description: str
    has_decode: bool
    size: int
    """Distinct frames (the stream cycles through them)."""

    @abstractmethod
    def next(self) -> BenchFrame:
        """The next frame (cycling at the end)."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Start again from the first frame."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the inputs hold open."""

    def truth_of(self, index: int) -> str | None:
        """The true label of frame ``index``, when the inputs are labelled."""
        return None

    def frame_at(self, index: int) -> npt.NDArray[np.uint8] | None:
        """Frame ``index`` decoded, for an untimed accuracy pass (``None`` where not random-access)."""
        return None


class ImageInputs(BenchInputs):
    """Image files (recursively); labelled when they sit in one sub-folder per class."""

    has_decode = True

    def __init__(self, folder: Path) -> None:
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise SourceError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._encoded = [np.frombuffer(p.read_bytes(), dtype=np.uint8) for p in files]
        parts = [p.relative_to(folder).parts for p in files]
        self._truths = [part[0] if len(part) > 1 else None for part in parts]
        self.labelled = all(t is not None for t in self._truths)
        self.classes = sorted({t for t in self._truths if t is not None})
        self.size = len(files)
        self.description = f"{self.size} images from {folder}" + (
            f" ({len(self.classes)} labelled classes)" if self.labelled else ""
        )
        self._names = [str(p.relative_to(folder)) for p in files]
        self._next = 0

    def _decode(self, index: int) -> npt.NDArray[np.uint8]:
        image = cv2.imdecode(self._encoded[index], cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot decode image {self._names[index]}")
        return np.asarray(image, dtype=np.uint8)

    def next(self) -> BenchFrame:
        index = self._next
        self._next = (self._next + 1) % self.size
        started = time.perf_counter()
        image = self._decode(index)
        decode_ms = (time.perf_counter() - started) * 1e3
        return BenchFrame(image, decode_ms, index, self._truths[index])

    def reset(self) -> None:
        self._next = 0

    def truth_of(self, index: int) -> str | None:
        return self._truths[index]

    def frame_at(self, index: int) -> npt.NDArray[np.uint8] | None:
        return self._decode(index)


class VideoInputs(BenchInputs):
    """A video file decoded frame by frame with OpenCV; reopened (untimed) at its end."""

    has_decode = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cap = self._open()
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.size = max(count, 1)
        self.description = f"video {path.name}" + (f" ({count} frames)" if count > 0 else "")
        self._index = 0

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise SourceError(f"cannot open video {self.path}")
        return cap

    def next(self) -> BenchFrame:
        for _attempt in range(2):
            started = time.perf_counter()
            ok, image = self._cap.read()
            decode_ms = (time.perf_counter() - started) * 1e3
            if ok and image is not None:
                index = self._index
                self._index += 1
                return BenchFrame(np.asarray(image, dtype=np.uint8), decode_ms, index, None)
            self.reset()
        raise SourceError(f"{self.path} decoded no frames")

    def reset(self) -> None:
        self._cap.release()
        self._cap = self._open()
        self._index = 0

    def close(self) -> None:
        self._cap.release()


class SyntheticInputs(BenchInputs):
    """Generated conveyor-like frames (the runtime's synthetic source); nothing to decode."""

    has_decode = False

    def __init__(self, width: int = 640, height: int = 480, count: int = 32) -> None:
        source = SyntheticSource(SyntheticSourceConfig(width=width, height=height, fps=None))
        source.open()
        self._frames = [source.frame(i) for i in range(count)]
        source.close()
        self.size = count
        self.description = f"{count} synthetic {width}x{height} frames"
        self._next = 0

    def next(self) -> BenchFrame:
        index = self._next
        self._next = (self._next + 1) % self.size
        return BenchFrame(self._frames[index], None, index, None)

    def reset(self) -> None:
        self._next = 0
