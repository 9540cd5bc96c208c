"""A camera that exists only in tests: generated frames, and the faults a real camera has.

It is a frame source like any other, declared in the ``edgefleet.sources``
entry-point group as ``fake-camera``, so a device config can name it::

    source:
      type: fake-camera
      width: 64
      height: 48
      fps: 30
      refuse_opens: 2      # the first two opens fail, like a camera still booting
      drop_after: 100      # every connection drops after 100 frames, like a flaky RTSP link

Frame ``k`` is one solid BGR colour that depends only on ``k`` (or on ``colors``
when given), so a test knows what every frame looks like: :meth:`FakeCamera.frame`.
:meth:`FakeCamera.unplug` pulls its cable while it runs.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from edge_runtime.errors import SourceError, SourceUnavailableError
from edge_runtime.sources.base import FrameSource, Pacer, SourceSettings

__all__ = ["FakeCamera", "FakeCameraConfig"]


class FakeCameraConfig(SourceSettings):
    """Generated frames of a fixed size, optionally paced, ending, refusing opens or dropping."""

    type: Literal["fake-camera"] = "fake-camera"
    width: int = Field(default=64, ge=1, le=4096)
    height: int = Field(default=48, ge=1, le=4096)
    fps: float | None = Field(default=None, gt=0, description="None: a frame whenever asked")
    frames: int | None = Field(
        default=None, ge=0, description="frames in all, then a clean end; None: endless"
    )
    colors: list[tuple[int, int, int]] = Field(
        default_factory=list, description="BGR colours cycled frame by frame; empty: derived from k"
    )
    refuse_opens: int = Field(default=0, ge=0, description="the first opens that fail")
    drop_after: int | None = Field(
        default=None, ge=1, description="frames per connection before the stream is lost"
    )


class FakeCamera(FrameSource):
    """Plays :class:`FakeCameraConfig`, and counts what was done to it for the test to check."""

    config_type = FakeCameraConfig

    def __init__(self, config: FakeCameraConfig | None = None) -> None:
        self.config = config if config is not None else FakeCameraConfig()
        self.name = f"fake camera {self.config.width}x{self.config.height}"
        self.opens: list[float] = []
        """``time.monotonic()`` of every open attempt, refused ones included."""
        self.delivered = 0
        """Frames returned by ``read`` in all, across connections."""
        self.is_open = False
        self.unplugged = False
        """Set by :meth:`unplug`: the stream is lost and every open is refused from then on."""
        self._left_in_connection: int | None = None
        self._pacer = Pacer(self.config.fps)
        self._lock = threading.Lock()

    @property
    def native_fps(self) -> float | None:
        """The configured rate (``None``: a frame whenever asked)."""
        return self.config.fps

    @property
    def finite(self) -> bool:
        """A camera with a frame count ends after that many frames."""
        return self.config.frames is not None

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """Frame number ``index``: one solid colour, the same whenever it is drawn."""
        colors = self.config.colors
        bgr = (
            colors[index % len(colors)]
            if colors
            else ((index * 37) % 256, (index * 67 + 85) % 256, (index * 101 + 170) % 256)
        )
        image = np.empty((self.config.height, self.config.width, 3), np.uint8)
        image[:] = bgr
        return image

    def open(self) -> None:
        """Connect; the first ``refuse_opens`` attempts fail with ``SourceUnavailableError``."""
        with self._lock:
            self.opens.append(time.monotonic())
            if self.unplugged:
                raise SourceUnavailableError(f"{self.name}: no answer (unplugged)")
            if len(self.opens) <= self.config.refuse_opens:
                raise SourceUnavailableError(
                    f"{self.name}: connection refused (attempt {len(self.opens)})"
                )
            self._left_in_connection = self.config.drop_after
            self.is_open = True
        self._pacer.reset()

    def read(self) -> npt.NDArray[np.uint8] | None:
        """The next frame; ``None`` after ``frames``; ``SourceError`` when the connection drops."""
        with self._lock:
            if not self.is_open:
                raise SourceError(f"{self.name} is not open")
            if self.config.frames is not None and self.delivered >= self.config.frames:
                return None
            if self._left_in_connection == 0 or self.unplugged:
                self.is_open = False
                raise SourceError(f"{self.name}: stream lost")
            if self._left_in_connection is not None:
                self._left_in_connection -= 1
            image = self.frame(self.delivered)
            self.delivered += 1
        self._pacer.wait()
        return image

    def unplug(self) -> None:
        """Pull the cable: the next read loses the stream, and no open succeeds any more."""
        with self._lock:
            self.unplugged = True
        self._pacer.interrupt()

    def close(self) -> None:
        """Disconnect (safe to call twice, or before ``open``)."""
        with self._lock:
            self.is_open = False

    def interrupt(self) -> None:
        """Wake a read waiting for its pacing time."""
        self._pacer.interrupt()
