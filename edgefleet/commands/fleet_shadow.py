"""Shadow waves from the command line: the options of ``rollout create`` and ``rollout shadow``.

``edgefleet fleet rollout create SHA --shadow 2`` starts the rollout with a
shadow wave of two devices (or ``--shadow-devices cam-1,cam-2``): they run
the bundle beside their active model and report; the wave's gate (its limits
are the ``--shadow-*`` options) lets the rollout go on to the real waves or
aborts it with the figures as the reason. ``edgefleet fleet rollout shadow
ID`` shows what the shadow wave's devices reported (``docs/shadow.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.table import Table

from edgefleet.commands._console import make_console

if TYPE_CHECKING:
    from edgefleet.commands.fleet import FleetApi

__all__ = ["shadow_options", "shadow_view", "shadow_wave"]

_F = TypeVar("_F", bound=Callable[..., Any])

_SETTABLE = {
    "every_nth": int,
    "cpu_budget": float,
    "window_s": float,
    "timeout_s": float,
    "max_error_rate": float,
    "max_latency_ratio": float,
    "max_latency_ms": float,
    "max_budget_ratio": float,
}


def shadow_options(function: _F) -> _F:
    """The ``--shadow*`` options of ``rollout create``."""
    options = [
        click.option(
            "--shadow",
            "shadow_count",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="Begin with a shadow wave of this many devices: they run the bundle beside "
            "their active model, never activating it, and their figures decide whether the "
            "rollout goes on (0: no shadow wave).",
        ),
        click.option(
            "--shadow-devices", help="The shadow wave's devices (a,b,...) instead of a count."
        ),
        click.option(
            "--shadow-min-agreement",
            type=click.FloatRange(0, 1),
            default=0.9,
            show_default=True,
            help="Share of frames on which the candidate must answer as the active model.",
        ),
        click.option(
            "--shadow-max-class-shift",
            type=click.FloatRange(0, 1),
            default=0.1,
            show_default=True,
            help="The most any class's share of the answers may move (0.1: ten points).",
        ),
        click.option(
            "--shadow-min-frames",
            type=click.IntRange(1),
            default=200,
            show_default=True,
            help="Frames compared (all devices) before the shadow wave is judged.",
        ),
        click.option(
            "--shadow-duration",
            type=click.FloatRange(0),
            default=600.0,
            show_default=True,
            help="Seconds the shadow wave runs at least.",
        ),
        click.option(
            "--shadow-set",
            "shadow_set",
            multiple=True,
            metavar="KEY=VALUE",
            help="Another shadow setting: " + ", ".join(sorted(_SETTABLE)) + ".",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def shadow_wave(
    *,
    shadow_count: int,
    shadow_devices: str | None,
    shadow_min_agreement: float,
    shadow_max_class_shift: float,
    shadow_min_frames: int,
    shadow_duration: float,
    shadow_set: tuple[str, ...],
    common: dict[str, Any],
) -> dict[str, Any] | None:
    """The shadow wave's spec for the API (None without ``--shadow``/``--shadow-devices``)."""
    ids = [d.strip() for d in (shadow_devices or "").split(",") if d.strip()]
    if not ids and not shadow_count:
        return None
    stage: dict[str, Any] = {
        "min_agreement": shadow_min_agreement,
        "max_class_shift": shadow_max_class_shift,
        "min_frames": shadow_min_frames,
        "min_duration_s": shadow_duration,
    }
    for item in shadow_set:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in _SETTABLE:
            raise click.BadParameter(
                f"{item!r}: give KEY=VALUE with KEY one of {', '.join(sorted(_SETTABLE))}",
                param_hint="--shadow-set",
            )
        try:
            stage[key] = None if value.strip().lower() == "none" else _SETTABLE[key](value)
        except ValueError as exc:
            raise click.BadParameter(f"{item!r}: {exc}", param_hint="--shadow-set") from exc
    selector: dict[str, Any] = {"devices": ids} if ids else {"count": shadow_count}
    return {**selector, **common, "shadow": stage}


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "n/a"


def _ms(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else ""


def shadow_view(view: dict[str, Any]) -> Table:
    """The shadow wave's figures per device and in all, as a table."""
    figures = view["figures"]
    verdict = view.get("verdict") or {}
    title = f"shadow wave: {view['status']}" + (
        f" - {verdict['reason']}" if verdict.get("reason") else ""
    )
    table = Table(
        "device",
        "compared",
        "agreement",
        "confidence (cand/active)",
        "largest class shift",
        "ms a frame (cand/active)",
        "skipped",
        "errors",
        title=title,
    )

    def row(name: str, f: dict[str, Any], **style: Any) -> None:
        shift = f.get("largest_class_shift")
        table.add_row(
            name,
            str(f["compared"]),
            _pct(f["agreement"]),
            f"{_pct(f['candidate_confidence'])} / {_pct(f['active_confidence'])}",
            "" if not shift else f"{shift['class']} {shift['by'] * 100:.1f} pts",
            f"{_ms(f['candidate_ms'])} / {_ms(f['active_ms'])}",
            str(f["skipped"]),
            str(f["errors"])
            + (f" ({next(iter(f['failures'].values()))})" if f.get("failures") else ""),
            **style,
        )

    for device, f in view["per_device"].items():
        row(device, f)
    row("all", figures, style="bold")
    return table


def rollout_shadow(api: FleetApi, rollout_id: int, as_json: bool) -> None:
    """Print a rollout's shadow figures (the body of ``rollout shadow``)."""
    view = api.request("GET", f"/rollouts/{rollout_id}/shadow")
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    make_console().print(shadow_view(view))
