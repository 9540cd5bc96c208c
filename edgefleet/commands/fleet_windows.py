"""``edgefleet fleet windows``: maintenance windows per device group (tag), when rollouts may change it.

Spoken to a running fleet server's HTTP API like the rest of ``edgefleet
fleet`` (its ``FleetApi``, handed over by click). Any token lists windows;
setting and clearing them takes an operator's. A rollout sends a device its
new bundle only while each of the device's tags that has windows is inside
one; ``fleet rollout create --ignore-windows`` sends at once (an emergency,
recorded in the rollout's timeline and the audit log).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from edgefleet.commands._console import make_console

if TYPE_CHECKING:
    from edgefleet.commands.fleet import FleetApi

__all__ = ["waiting_line", "windows"]

_SYNTAX = """\b
A window is one of:
  [DAYS] HH:MM-HH:MM ZONE      e.g. "Sun 02:00-04:00 Europe/Paris", "Mon-Fri 22:00-06:00 UTC"
  cron M H DOM MON DOW DURATION ZONE   e.g. "cron 0 2 * * Sun 2h Europe/Paris"
DAYS: Mon..Sun, lists (Sat,Sun), ranges (Mon-Fri), or daily (the default).
An end at or before the start runs past midnight; ZONE is an IANA time zone."""


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("tag", "window", "open now", "next opens")
    for row in rows:
        for i, window in enumerate(row["windows"]):
            table.add_row(
                row["tag"] if i == 0 else "",
                window["spec"],
                "yes" if window["open_now"] else "no",
                window["next_open"] or "never (within the search horizon)",
            )
    return table


@click.group("windows")
def windows() -> None:
    """Maintenance windows per device group (tag): when rollouts may change its models.

    \b
    Examples:
      edgefleet fleet windows set line-3 "Sun 02:00-04:00 Europe/Paris"
      edgefleet fleet windows set line-4 "Mon-Fri 22:00-06:00 Europe/Paris" "Sat,Sun 00:00-24:00 Europe/Paris"
      edgefleet fleet windows list
      edgefleet fleet windows clear line-3
    """


@windows.command("set", epilog=_SYNTAX)
@click.argument("tag")
@click.argument("specs", nargs=-1, required=True, metavar="WINDOW...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def set_windows(api: FleetApi, tag: str, specs: tuple[str, ...], as_json: bool) -> None:
    """Give TAG these maintenance windows (replacing those it had).

    Rollouts created from now on send a device carrying TAG its bundle only
    inside one of them; running rollouts keep the windows they started with.
    """
    reply = api.request(
        "PUT", f"/windows/{urllib.parse.quote(tag, safe='')}", {"windows": list(specs)}
    )
    if as_json:
        _print_json(reply)
        return
    console = make_console()
    console.print(f"maintenance windows of {tag}: {len(reply['windows'])}")
    console.print(_table([reply]))


@windows.command("list")
@click.option("--tag", "tags", multiple=True, help="Only this tag (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def list_windows(api: FleetApi, tags: tuple[str, ...], as_json: bool) -> None:
    """Every tag's maintenance windows: open now, or when they next open (in their zone)."""
    query = urllib.parse.urlencode([("tag", t) for t in tags])
    rows = api.request("GET", "/windows" + (f"?{query}" if query else ""))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        make_console().print("no maintenance windows: rollouts may change any device at any time")
        return
    make_console().print(_table(rows))


@windows.command("clear")
@click.argument("tag")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def clear_windows(api: FleetApi, tag: str, as_json: bool) -> None:
    """Remove TAG's maintenance windows: rollouts may then change its devices at any time."""
    reply = api.request("DELETE", f"/windows/{urllib.parse.quote(tag, safe='')}")
    if as_json:
        _print_json(reply)
        return
    removed = reply["removed"]
    make_console().print(
        f"maintenance windows of {tag} cleared ({removed} removed)"
        if removed
        else f"{tag} had no maintenance windows"
    )


def waiting_line(planner: dict[str, Any]) -> str:
    """What ``rollout status`` says of devices waiting for their maintenance windows."""
    ids = planner.get("waiting_for_window") or []
    opens = planner.get("next_window_opens") or "never, within the search horizon"
    shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
    return f"{len(ids)} devices wait for their maintenance window (next opens {opens}): {shown}"
