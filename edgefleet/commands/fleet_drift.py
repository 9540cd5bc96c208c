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
        "scope", "name", "state", "since", "predictions", "JS", "PSI", "conf. drop", "why"
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
            "; ".join(row.get("reasons") or []),
        )
    return table


@click.command("drift")
@click.option(
    "--scope", type=click.Choice(["device", "group"]), help="Only devices, or only groups (tags)."
)
@click.option("--all", "show_all", is_flag=True, help="Every subject, not only those drifting.")
@click.option("--check", is_flag=True, help="Run a pass over the fleet now (operator token).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def drift(api: FleetApi, scope: str | None, show_all: bool, check: bool, as_json: bool) -> None:
    """Devices and groups whose live class mix or confidence drifted from their bundle's baseline.

    \b
    Examples:
      edgefleet fleet drift                 who drifts now, and since when
      edgefleet fleet drift --all --scope group
      edgefleet fleet drift --check         judge the fleet now, then list
    """
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
