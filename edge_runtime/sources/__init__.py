"""Frame sources behind one interface, chosen by their config's ``type`` through a registry.

A source is an OpenCV capture (camera, file, stream, GStreamer pipeline), an image
folder or a synthetic generator. :class:`CaptureThread` reads one into a
:class:`LatestFrameSlot` with reconnects and backoff. Adding a source takes a module
with its config and class, one member in :data:`SourceConfig` and one registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field

from edge_runtime.errors import SourceError
from edge_runtime.sources.base import Frame, FrameSource, Pacer, mask_credentials
from edge_runtime.sources.capture import (
    CaptureStats,
    CaptureThread,
    LatestFrameSlot,
    ReconnectPolicy,
    is_valid_frame,
)
from edge_runtime.sources.folder import FolderSource, FolderSourceConfig
from edge_runtime.sources.synthetic import SyntheticSource, SyntheticSourceConfig
from edge_runtime.sources.video import VideoSource, VideoSourceConfig

__all__ = [
    "SOURCES",
    "CaptureStats",
    "CaptureThread",
    "FolderSource",
    "FolderSourceConfig",
    "Frame",
    "FrameSource",
    "LatestFrameSlot",
    "Pacer",
    "ReconnectPolicy",
    "SourceConfig",
    "SyntheticSource",
    "SyntheticSourceConfig",
    "VideoSource",
    "VideoSourceConfig",
    "create_source",
    "is_valid_frame",
    "mask_credentials",
]

# Union rather than ``|``: pydantic evaluates this alias at runtime on Python 3.10.
SourceConfig = Annotated[
    Union[VideoSourceConfig, FolderSourceConfig, SyntheticSourceConfig],  # noqa: UP007
    Field(discriminator="type"),
]
"""Any source's config; its ``type`` field picks the class."""

SOURCES: dict[str, Callable[[Any], FrameSource]] = {
    "video": VideoSource,
    "folder": FolderSource,
    "synthetic": SyntheticSource,
}
"""Source class by config ``type``; each class takes its own config."""


def create_source(config: SourceConfig) -> FrameSource:
    """The (unopened) source that ``config`` describes."""
    factory = SOURCES.get(config.type)
    if factory is None:
        raise SourceError(f"unknown source type {config.type!r}; known: {', '.join(SOURCES)}")
    return factory(config)
