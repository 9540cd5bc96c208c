"""OpenCV ``VideoCapture`` sources: camera index, video file, RTSP/HTTP URL, GStreamer pipeline.

Open and read timeouts go to OpenCV as capture parameters (the FFmpeg and GStreamer
backends honour them); the capture thread's watchdog (``CaptureThread.stuck``) covers
backends that block anyway. Names and log lines never carry URL credentials.
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
from edge_runtime.sources.base import FrameSource, Pacer, SourceSettings, mask_credentials

__all__ = ["VideoKind", "VideoSource", "VideoSourceConfig", "video_kind"]

logger = logging.getLogger(__name__)

VideoKind = Literal["device", "file", "url", "gstreamer"]
_MAX_SANE_FPS = 1000.0


class VideoSourceConfig(SourceSettings):
    """A camera index, video file, RTSP/HTTP URL or GStreamer pipeline (a string with ``!``)."""

    type: Literal["video"] = "video"
    uri: int | str = Field(
        description="camera index, file path, stream URL or GStreamer pipeline ending in appsink"
    )
    open_timeout_s: float = Field(default=10.0, gt=0, le=600)
    read_timeout_s: float = Field(default=5.0, gt=0, le=600)
    loop: bool = Field(default=False, description="files: start again at the end")
    realtime: bool = Field(
        default=True,
        description="files: deliver at the file's frame rate like a camera; false: as fast as possible",
    )
    width: int | None = Field(default=None, ge=1, description="cameras: requested frame width")
    height: int | None = Field(default=None, ge=1, description="cameras: requested frame height")


def video_kind(uri: int | str) -> VideoKind:
    """What ``uri`` names: a camera index (an int or all digits), pipeline, URL or file."""
    if isinstance(uri, int) or uri.strip().isdigit():
        return "device"
    if "!" in uri:
        return "gstreamer"
    if "://" in uri and not uri.startswith("file://"):
        return "url"
    return "file"


class VideoSource(FrameSource):
    """Frames from an OpenCV ``VideoCapture``; files may loop and play at their own frame rate."""

    config_type = VideoSourceConfig

    def __init__(self, config: VideoSourceConfig) -> None:
        self.config = config
        self.kind: VideoKind = video_kind(config.uri)
        if self.kind == "device":
            self._target: int | str = int(config.uri)
            self.name = f"camera {self._target}"
        else:
            uri = str(config.uri)
            self._target = uri.removeprefix("file://") if self.kind == "file" else uri
            self.name = mask_credentials(uri)
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None
        self._pacer = Pacer(None)
        self._reading = False

    @property
    def native_fps(self) -> float | None:
        """The frame rate OpenCV reports (``None`` before ``open`` or when it reports none)."""
        return self._fps

    @property
    def finite(self) -> bool:
        """A file played without ``loop`` ends; cameras, streams and pipelines do not."""
        return self.kind == "file" and not self.config.loop

    def open(self) -> None:
        """Open the capture; raise ``SourceUnavailableError`` saying why it cannot."""
        self.close()
        cap = self._open_capture()
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if 0 < fps <= _MAX_SANE_FPS else None
        paced = self.kind == "file" and self.config.realtime
        if paced and self._fps is None:
            logger.warning("%s reports no frame rate; playing it as fast as possible", self.name)
        self._pacer = Pacer(self._fps if paced else None)
        self._cap = cap
        logger.info(
            "opened %s (%s, backend %s, %sx%s, fps %s)",
            self.name,
            self.kind,
            cap.getBackendName(),
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            self._fps,
        )

    def read(self) -> npt.NDArray[np.uint8] | None:
        """The next frame; ``None`` at the end of a file played without ``loop``."""
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self.name} is not open")
        image = self._grab(cap)
        if cap is not self._cap:
            # A restart reopened this source while the read was stuck; leave it to the new reader.
            raise SourceError(f"{self.name}: the capture was reopened during this read")
        if image is None and self.kind == "file" and self.config.loop:
            image = self._grab(self._rewind(cap))
            if image is None:
                raise SourceError(f"video file {self.name} has no readable frame to loop over")
        if image is None:
            if self.kind == "file":
                return None
            raise SourceError(
                f"{self.name}: no frame within the read timeout "
                f"({self.config.read_timeout_s:g}s) or the stream ended"
            )
        self._pacer.wait()
        return image

    def close(self) -> None:
        """Release the capture (a capture still inside ``read`` on another thread is left to it)."""
        cap, self._cap = self._cap, None
        # Releasing a capture that another (abandoned) thread is reading can crash the
        # backend; dropping our reference lets it be freed when that read returns.
        if cap is not None and not self._reading:
            cap.release()

    def interrupt(self) -> None:
        """Wake a file read waiting for its real-time pacing."""
        self._pacer.interrupt()

    def _open_capture(self) -> cv2.VideoCapture:
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(self.config.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(self.config.read_timeout_s * 1000),
        ]
        if self.kind == "file" and not Path(str(self._target)).is_file():
            raise SourceUnavailableError(f"video file {self.name} does not exist")
        if self.kind == "gstreamer" and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise SourceUnavailableError(
                f"cannot open GStreamer pipeline {self.name}: this OpenCV build has no "
                "GStreamer backend (install an OpenCV built with GStreamer)"
            )
        api = cv2.CAP_GSTREAMER if self.kind == "gstreamer" else cv2.CAP_ANY
        try:
            if isinstance(self._target, int):
                # Camera backends differ in which open parameters they accept; set afterwards.
                cap = cv2.VideoCapture(self._target, api)
            else:
                cap = cv2.VideoCapture(self._target, api, timeouts)
        except cv2.error as exc:
            raise SourceUnavailableError(f"cannot open {self.name}: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailableError(self._open_failure())
        if self.kind == "device":
            self._configure_camera(cap)
        return cap

    def _open_failure(self) -> str:
        if self.kind == "device":
            return f"cannot open {self.name}: no such device, busy, or no permission"
        if self.kind == "file":
            return f"cannot open video file {self.name}: not a video this OpenCV build decodes"
        if self.kind == "url":
            return (
                f"cannot open stream {self.name} within {self.config.open_timeout_s:g}s: "
                "unreachable, refused, or not a video stream"
            )
        return f"cannot open GStreamer pipeline {self.name} (it must end in appsink)"

    def _configure_camera(self, cap: cv2.VideoCapture) -> None:
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.config.read_timeout_s * 1000)
        if self.config.width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        wanted = (self.config.width or got[0], self.config.height or got[1])
        if got != wanted:
            logger.warning(
                "%s delivers %sx%s instead of the requested %sx%s", self.name, *got, *wanted
            )

    def _grab(self, cap: cv2.VideoCapture) -> npt.NDArray[np.uint8] | None:
        self._reading = True
        try:
            ok, image = cap.read()
        except cv2.error as exc:
            raise SourceError(f"{self.name}: read failed: {exc}") from exc
        finally:
            self._reading = False
        if not ok or image is None:
            return None
        return cast("npt.NDArray[np.uint8]", image)

    def _rewind(self, cap: cv2.VideoCapture) -> cv2.VideoCapture:
        if cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return cap
        logger.debug("%s cannot seek; reopening it to loop", self.name)
        cap.release()
        self._cap = None
        self._cap = self._open_capture()
        return self._cap
