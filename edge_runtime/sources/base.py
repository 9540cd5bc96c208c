"""The frame-source interface, its config's base, the frame record, and frame pacing.

A source delivers BGR ``uint8`` ``H x W x 3`` images, one per :meth:`FrameSource.read`;
the capture thread stamps them into :class:`Frame` records. Sources are used from one
thread; only :meth:`FrameSource.interrupt` may be called from another.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

__all__ = ["Frame", "FrameSource", "Pacer", "SourceSettings", "mask_credentials"]


class SourceSettings(BaseModel):
    """The base of every source's config: frozen, unknown keys refused, ``type`` picks the source.

    A subclass narrows ``type`` to its entry point's name, ``type: Literal["folder"] = "folder"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


@dataclass(frozen=True, eq=False, slots=True)
class Frame:
    """One captured image with its capture times.

    ``frame_id`` counts the valid frames the capture produced (from 0, across reconnects),
    so a gap between two frames a consumer takes is the number of frames it missed.
    """

    image: npt.NDArray[np.uint8]
    """``H x W x 3`` BGR."""
    frame_id: int
    captured_monotonic: float
    """``time.monotonic()`` when the read returned."""
    captured_wall: float
    """``time.time()`` when the read returned."""


class FrameSource(ABC):
    """A camera, stream, file, folder or generator that yields BGR frames.

    Subclasses set ``name`` (a human description that never holds credentials) and
    override ``native_fps`` and ``finite`` where they know better than the defaults.

    A source is a plug-in: its module holds its config (a :class:`SourceSettings`
    subclass, named by ``config_type``) and the class, whose ``__init__`` takes that
    config; one line in the ``edgefleet.sources`` entry-point group declares it
    under the config's ``type``.
    """

    config_type: ClassVar[type[SourceSettings]]
    """The config this source is built from; its ``type`` literal is the entry point's name."""
    name: str

    @abstractmethod
    def open(self) -> None:
        """Open (or reopen) the source; raise ``SourceError`` naming it when that fails."""

    @abstractmethod
    def read(self) -> npt.NDArray[np.uint8] | None:
        """The next BGR frame; ``None`` at the clean end of a finite source.

        Raises ``SourceError`` when the source fails (stream lost, read timed out).
        """

    @abstractmethod
    def close(self) -> None:
        """Release the source; never raises, safe to call twice or before ``open``."""

    @property
    def native_fps(self) -> float | None:
        """The rate the source delivers frames at, when it knows it."""
        return None

    @property
    def finite(self) -> bool:
        """Whether ``read`` returning ``None`` is a clean end (file, folder without loop)."""
        return False

    def interrupt(self) -> None:  # noqa: B027 - optional hook, only paced sources wait
        """Wake a ``read`` waiting for its pacing time (thread-safe); it returns early."""

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'name', '?')!r})"


class Pacer:
    """Releases frames at ``fps``, frame ``k`` at ``start + k / fps``, so delays never accumulate.

    A source that falls more than ``max_lag_s`` behind (a stall) restarts the schedule
    instead of bursting to catch up. ``fps=None`` never waits.
    """

    def __init__(self, fps: float | None, *, max_lag_s: float = 1.0) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._max_lag_s = max_lag_s
        self._start: float | None = None
        self._count = 0
        self._wake = threading.Event()

    def reset(self) -> None:
        """Start a new schedule at the next ``wait`` (call when the source opens)."""
        self._start = None
        self._count = 0
        self._wake.clear()

    def wait(self) -> None:
        """Sleep until the next frame is due (or until :meth:`interrupt`)."""
        if self.fps is None:
            return
        now = time.monotonic()
        if self._start is None:
            self._start, self._count = now, 0
        due = self._start + self._count / self.fps
        if now - due > self._max_lag_s:
            self._start, self._count, due = now, 0, now
        self._count += 1
        if due > now:
            self._wake.wait(due - now)

    def interrupt(self) -> None:
        """Stop waiting, now and in later calls, until the next :meth:`reset`."""
        self._wake.set()


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_PARAMS = re.compile(
    r"(?i)\b(user-pw|user-id|password|passwd|pwd|token|access_token|api_key|apikey|auth)=[^&\s!]+"
)


def mask_credentials(text: str) -> str:
    """``text`` (a URL or GStreamer pipeline) with user info and secret parameters masked."""
    return _SECRET_PARAMS.sub(r"\1=***", _USERINFO.sub("***@", text))
