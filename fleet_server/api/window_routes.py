"""The API's maintenance windows: ``/windows``, per device group (tag); any token reads, operators change.

A rollout sends a device its new bundle only while each of the device's
tags that has windows is inside one (:mod:`fleet_server.windows` for the
spec syntax); a rollout created with ``ignore_windows`` sends at once.
Changing a tag's windows affects rollouts created afterwards: a running
rollout keeps the windows it was created with.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi import Path as FastApiPath
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fleet_server.api.auth import Guards
from fleet_server.errors import NotFoundError
from fleet_server.records import check_name
from fleet_server.registry import Registry, TagWindows
from fleet_server.registry.windows import MAX_WINDOWS_PER_TAG
from fleet_server.windows import MAX_SPEC_CHARS, describe_time, parse_window

__all__ = ["TagWindowsView", "WindowView", "WindowsCleared", "WindowsRequest", "window_routes"]

Tag = Annotated[str, AfterValidator(lambda v: check_name(v, "tag"))]
TagPath = Annotated[
    str, FastApiPath(min_length=1, max_length=64), AfterValidator(lambda v: check_name(v, "tag"))
]


class WindowsRequest(BaseModel):
    """A tag's maintenance windows, replacing those it had (each a spec such as
    ``Sun 02:00-04:00 Europe/Paris`` or ``cron 0 2 * * Sun 2h Europe/Paris``)."""

    model_config = ConfigDict(extra="forbid")

    windows: list[Annotated[str, Field(min_length=1, max_length=MAX_SPEC_CHARS)]] = Field(
        min_length=1, max_length=MAX_WINDOWS_PER_TAG
    )


class WindowView(BaseModel):
    """One window: its canonical spec, whether it is open now, and when it next opens."""

    model_config = ConfigDict(extra="forbid")

    spec: str
    open_now: bool
    next_open_at: float | None
    """Now when open; None when it does not open within its search horizon."""
    next_open: str | None
    """``now``, or the next opening in the window's own zone (``Sun 02:00 Europe/Paris``)."""


class TagWindowsView(BaseModel):
    """A tag's maintenance windows and when they were set."""

    model_config = ConfigDict(extra="forbid")

    tag: str
    windows: list[WindowView]
    set_at: float

    @classmethod
    def of(cls, found: TagWindows, now: float) -> TagWindowsView:
        views = []
        for spec in found.windows:
            window = parse_window(spec)
            at = window.next_open(now)
            views.append(
                WindowView(
                    spec=spec,
                    open_now=at == now,
                    next_open_at=at,
                    next_open=None
                    if at is None
                    else "now"
                    if at == now
                    else describe_time(at, window.zone_name, now),
                )
            )
        return cls(tag=found.tag, windows=views, set_at=found.set_at)


class WindowsCleared(BaseModel):
    """What ``DELETE /windows/{tag}`` removed."""

    model_config = ConfigDict(extra="forbid")

    tag: str
    removed: int


def window_routes(app: FastAPI, registry: Registry, guards: Guards) -> None:
    """``GET /windows``, ``GET|PUT|DELETE /windows/{tag}``."""

    @app.get("/windows", tags=["windows"], dependencies=guards.viewer)
    def list_windows(tag: Annotated[list[Tag] | None, Query()] = None) -> list[TagWindowsView]:
        """Every tag's maintenance windows (or those of the ``tag`` given), by tag."""
        now = time.time()
        return [TagWindowsView.of(w, now) for w in registry.windows(tag)]

    @app.get("/windows/{tag}", tags=["windows"], dependencies=guards.viewer)
    def get_windows(tag: TagPath) -> TagWindowsView:
        """One tag's maintenance windows; 404 when it has none."""
        found = registry.windows([tag])
        if not found:
            raise NotFoundError(f"tag {tag!r} has no maintenance windows")
        return TagWindowsView.of(found[0], time.time())

    @app.put("/windows/{tag}", tags=["windows"], dependencies=guards.operator)
    def set_windows(tag: TagPath, body: WindowsRequest) -> TagWindowsView:
        """Replace the tag's maintenance windows (a bad spec is a 400 naming what is wrong)."""
        return TagWindowsView.of(registry.set_windows(tag, body.windows), time.time())

    @app.delete("/windows/{tag}", tags=["windows"], dependencies=guards.operator)
    def clear_windows(tag: TagPath) -> WindowsCleared:
        """Remove the tag's maintenance windows: its devices may change models at any time."""
        return WindowsCleared(tag=tag, removed=registry.clear_windows(tag))
