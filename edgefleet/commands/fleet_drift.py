"""``edgefleet fleet drift``: which devices and groups drift from their bundle's baseline, since when.

Spoken to a running fleet server's HTTP API like the rest of ``edgefleet
fleet`` (its ``FleetApi``, handed over by click). The server judges drift
every minute from the devices' telemetry (``docs/operations.md``, "Drift");
``--check`` runs a pass at once (an operator's token).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from edgefleet.commands._console import make_console

if TYPE_CHECKING:
    from edgefleet.commands.fleet import FleetApi

__all__ = ["drift"]


def _figure(value: Any, digits: int = 3) -> str:
    return "" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def _since(at: Any) -> str:
    if not isinstance(at, int | float):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "scope",
        "name",
        "state",
        "since",
        "predictions",
        "JS",
        "PSI",
        "conf. drop",
        "conf. JS",
        "why",
    )
    for row in rows:
        figures = row.get("figures") or {}
        table.add_row(
            row["scope"],
            row["name"],
            row["state"],
            _since(row.get("since")),
            _figure(figures.get("predictions"), 0),
            _figure(figures.get("class_divergence")),
            _figure(figures.get("psi")),
            _figure(figures.get("confidence_drop")),
            _figure(figures.get("confidence_divergence")),
            "; ".join(row.get("reasons") or []),
        )
    return table


@click.group("drift", invoke_without_command=True)
@click.option(
    "--scope", type=click.Choice(["device", "group"]), help="Only devices, or only groups (tags)."
)
@click.option("--all", "show_all", is_flag=True, help="Every subject, not only those drifting.")
@click.option("--check", is_flag=True, help="Run a pass over the fleet now (operator token).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def drift(
    ctx: click.Context, scope: str | None, show_all: bool, check: bool, as_json: bool
) -> None:
    """Devices and groups whose live class mix or confidence drifted from their bundle's baseline.

    \b
    Examples:
      edgefleet fleet drift                 who drifts now, and since when
      edgefleet fleet drift --all --scope group
      edgefleet fleet drift --check         judge the fleet now, then list
      edgefleet fleet drift alerts          the alerts raised and cleared
      edgefleet fleet drift limits --max-class-divergence 0.15 --window-s 900
    """
    if ctx.invoked_subcommand is not None:
        return
    api: FleetApi = ctx.obj
    alerts: list[str] = []
    if check:
        alerts = api.request("POST", "/drift/check")["alerts"]
    query = urllib.parse.urlencode(
        [*([("scope", scope)] if scope else []), ("drifting", "false" if show_all else "true")]
    )
    rows = api.request("GET", f"/drift?{query}")
    if as_json:
        click.echo(json.dumps({"alerts": alerts, "subjects": rows} if check else rows, indent=2))
        return
    console = make_console()
    for alert in alerts:
        console.print(f"alert: {alert}")
    if not rows:
        console.print("no device or group drifts" if not show_all else "no drift figures yet")
        return
    console.print(_table(rows))
    if any(row["scope"] == "group" and row["state"] == "drifting" for row in rows):
        console.print(
            "a drifting group is a candidate for retraining: collect its frames with "
            "`edgefleet fleet field-data enable TAG`"
        )


@drift.command("alerts")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def alerts(api: FleetApi, limit: int, as_json: bool) -> None:
    """Drift alerts raised and cleared, oldest first."""
    rows = api.request("GET", f"/drift/alerts?limit={limit}")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        make_console().print("no drift alert yet")
        return
    table = Table("at", "kind", "alert")
    for row in rows:
        table.add_row(_since(row["at"]), row["kind"], row["message"])
    make_console().print(table)


@drift.command("limits")
@click.option("--window-s", type=click.FloatRange(min=1), help="The sliding window, in seconds.")
@click.option("--min-predictions", type=click.IntRange(1), help="Predictions needed for a verdict.")
@click.option(
    "--max-class-divergence", type=float, help="Jensen-Shannon limit (0..1; 0 switches it off)."
)
@click.option("--max-psi", type=float, help="Population stability index limit (0: off).")
@click.option("--max-confidence-drop", type=float, help="Confidence drop limit (0..1; 0: off).")
@click.option(
    "--max-confidence-divergence",
    type=float,
    help="Jensen-Shannon limit on the confidence histogram (0..1; 0: off).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def limits(
    api: FleetApi,
    window_s: float | None,
    min_predictions: int | None,
    max_class_divergence: float | None,
    max_psi: float | None,
    max_confidence_drop: float | None,
    max_confidence_divergence: float | None,
    as_json: bool,
) -> None:
    """Show the limits drift is judged by; with options, change them (operator token)."""
    current: dict[str, Any] = api.request("GET", "/drift/thresholds")
    changes = {
        "window_s": window_s,
        "min_predictions": min_predictions,
        "max_class_divergence": max_class_divergence,
        "max_psi": max_psi,
        "max_confidence_drop": max_confidence_drop,
        "max_confidence_divergence": max_confidence_divergence,
    }
    wanted: dict[str, float | None] = {k: v for k, v in changes.items() if v is not None}
    if wanted:
        for key in (
            "max_class_divergence",
            "max_psi",
            "max_confidence_drop",
            "max_confidence_divergence",
        ):
            if wanted.get(key) == 0:
                wanted[key] = None  # 0 switches the check off
        current = api.request("PUT", "/drift/thresholds", {**current, **wanted})
    if as_json:
        click.echo(json.dumps(current, indent=2, sort_keys=True))
        return
    for key, value in current.items():
        make_console().print(f"{key}: {'off' if value is None else value}")
