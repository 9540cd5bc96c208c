"""Frame sources behind one interface, found through the ``edgefleet.sources`` entry points.

A source is an OpenCV capture (camera, file, stream, GStreamer pipeline), an image
folder, a synthetic generator, or any installed plug-in. :class:`CaptureThread` reads
one into a :class:`LatestFrameSlot` with reconnects and backoff.

Adding a source takes one module (its :class:`SourceSettings` config and its
:class:`FrameSource` class, which names the config in ``config_type``) and one
entry-point line, ``name = "package.module:Class"``, where ``name`` is the config's
``type``. A config is checked against the source its ``type`` names, and only that
source's module is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, get_args

from pydantic import BeforeValidator

from edge_runtime.errors import SourceError
from edge_runtime.plugins import (
    SOURCES_GROUP,
    describe_installed,
    find_entry_point,
    installed_names,
    load_entry_point,
)
from edge_runtime.sources.base import Frame, FrameSource, Pacer, SourceSettings, mask_credentials
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
    "SOURCES_GROUP",
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
    "SourceSettings",
    "SyntheticSource",
    "SyntheticSourceConfig",
    "VideoSource",
    "VideoSourceConfig",
    "create_source",
    "is_valid_frame",
    "mask_credentials",
    "source_class",
    "source_names",
]


def source_names() -> list[str]:
    """The declared sources' ``type`` names, sorted (nothing is imported)."""
    return installed_names(SOURCES_GROUP)


def source_class(name: str) -> type[FrameSource]:
    """The source class declared under ``name`` (imports its module)."""
    ep = find_entry_point(SOURCES_GROUP, name)
    if ep is None:
        raise SourceError(
            f"unknown source type {name!r}: no entry point in group {SOURCES_GROUP!r}"
            f" ({describe_installed(SOURCES_GROUP)})"
        )
    cls = load_entry_point(ep, "frame source", SourceError)
    if not (isinstance(cls, type) and issubclass(cls, FrameSource)):
        raise SourceError(f"frame source {name!r} ({ep.value}) is not a FrameSource subclass")
    config_type = getattr(cls, "config_type", None)
    if not (isinstance(config_type, type) and issubclass(config_type, SourceSettings)):
        raise SourceError(
            f"frame source {name!r} ({ep.value}) names no SourceSettings subclass in config_type"
        )
    declared = get_args(config_type.model_fields["type"].annotation)
    if declared != (name,):
        raise SourceError(
            f"frame source entry point {name!r} names {ep.value}, whose config's type is "
            f"{' or '.join(map(repr, declared)) or 'not a Literal'}"
        )
    return cls


def _validate_source(value: Any) -> Any:
    """Parse a source's config with the config class of the source its ``type`` names."""
    if isinstance(value, SourceSettings) or not isinstance(value, Mapping):
        return value  # an already built config; anything else fails as "not a mapping"
    name = value.get("type")
    if not isinstance(name, str):
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueError per field; TypeError would escape
            f"a source needs a type, one of: {', '.join(source_names()) or '(none installed)'}"
        )
    try:
        cls = source_class(name)
    except SourceError as exc:
        raise ValueError(str(exc)) from exc
    return cls.config_type.model_validate(value)


SourceConfig = Annotated[SourceSettings, BeforeValidator(_validate_source)]
"""Any source's config: its ``type`` picks the declared source whose config class checks the rest."""


def create_source(config: SourceSettings) -> FrameSource:
    """The (unopened) source that ``config`` describes."""
    cls = source_class(config.type)
    if not isinstance(config, cls.config_type):
        raise SourceError(
            f"source {config.type!r} takes a {cls.config_type.__name__}, "
            f"not a {type(config).__name__}"
        )
    factory: Any = cls  # each source's __init__ takes its own config type
    source: FrameSource = factory(config)
    return source
