"""``edgefleet fleet tokens`` and ``edgefleet fleet audit``: API tokens with roles, and who did what.

Spoken to a running fleet server's HTTP API like the rest of ``edgefleet
fleet`` (its ``FleetApi``, handed over by click): ``tokens`` needs an admin
token (the one ``edgefleet serve`` was started with is one), ``audit`` an
operator's or an admin's.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from edgefleet.commands._console import make_console

if TYPE_CHECKING:
    from edgefleet.commands.fleet import FleetApi

__all__ = ["audit", "parse_since", "tokens"]

ROLES = ("viewer", "operator", "admin")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str, now: float) -> float:
    """A Unix time from ``30m``/``2h``/``7d`` (ago), an ISO 8601 date or time (local unless it
    says its zone) or a Unix time; :class:`click.BadParameter` otherwise."""
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: give 30m, 2h or 7d (ago), a date or time such as "
            "2026-12-01 or 2026-12-01T08:00, or a Unix time",
            param_hint="--since",
        ) from None


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# --- tokens ----------------------------------------------------------------------------


@click.group("tokens")
def tokens() -> None:
    """API tokens with roles (needs an admin token).

    \b
    Roles, each holding the rights of the ones before it:
      viewer    read everything (devices, bundles, rollouts, timelines, /metrics)
      operator  also change the fleet: rollouts (pause, resume, approve, abort), pins,
                provisioning, bundle imports; read the audit log (`fleet audit`)
      admin     also API tokens and devices' broker credentials

    \b
    The server keeps only each token's SHA-256: a secret is shown once, when it is made.
    The token `edgefleet serve` was started with is an admin named "bootstrap".

    \b
    Examples:
      export EDGEFLEET_TOKEN=$(edgefleet fleet tokens create alice --role operator)
      edgefleet fleet tokens create prometheus --role viewer > prometheus.token
      edgefleet fleet tokens list
      edgefleet fleet tokens revoke alice
    """


@tokens.command("create")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    required=True,
    help="viewer (read), operator (change the fleet), admin (tokens and credentials).",
)
@_json_option
@click.pass_obj
def create_token(api: FleetApi, name: str, role: str, as_json: bool) -> None:
    """Create the token NAME (who it is in the audit log) and print its secret, once.

    The secret alone goes to stdout (for `$(...)` or a file), the rest to stderr.
    """
    reply = api.request("POST", "/tokens", {"name": name, "role": role})
    if as_json:
        _print_json(reply)
        return
    click.echo(
        f"created the {reply['token']['role']} token {name!r}; its secret follows, shown this "
        "once (the server keeps only its hash):",
        err=True,
    )
    click.echo(reply["secret"])


@tokens.command("list")
@_json_option
@click.pass_obj
def list_tokens(api: FleetApi, as_json: bool) -> None:
    """Every token, active and revoked: role, who made it, when it was last used."""
    rows = api.request("GET", "/tokens")
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "role", "status", "created", "created by", "last used")
    for t in rows:
        status = (
            "active" if t["active"] else f"revoked {_when(t['revoked_at'])} by {t['revoked_by']}"
        )
        table.add_row(
            t["name"],
            t["role"],
            status,
            _when(t["created_at"]),
            t["created_by"],
            "never" if t["last_used_at"] is None else _when(t["last_used_at"]),
        )
    console = make_console()
    console.print(table)
    active = sum(1 for t in rows if t["active"])
    console.print(f"{active} active, {len(rows) - active} revoked (and the bootstrap token)")


@tokens.command("revoke")
@click.argument("name")
@_json_option
@click.pass_obj
def revoke_token(api: FleetApi, name: str, as_json: bool) -> None:
    """Revoke the token NAME: every server refuses it from now on."""
    reply = api.request("DELETE", f"/tokens/{urllib.parse.quote(name, safe='')}")
    if as_json:
        _print_json(reply)
        return
    click.echo(f"revoked the {reply['role']} token {name!r}: it is refused from now on")


# --- the audit log ---------------------------------------------------------------------


@click.command("audit")
@click.option(
    "--since",
    metavar="WHEN",
    help="Only entries since WHEN: 30m, 2h, 7d (ago), 2026-12-01T08:00 (local) or a Unix time.",
)
@click.option("--actor", metavar="NAME", help="Only what the token NAME did.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="The newest this many entries.",
)
@_json_option
@click.pass_obj
def audit(api: FleetApi, since: str | None, actor: str | None, limit: int, as_json: bool) -> None:
    """Who changed what through the API, when, from where, and how it ended (oldest first).

    \b
    Every request that is not a read is recorded, refused ones included:
    401 (no valid token: who is "-"), 403 (a role too low), 404, 409, 422.
    Needs an operator or admin token.
    """
    query: dict[str, Any] = {"limit": limit}
    if since is not None:
        query["since"] = parse_since(since, time.time())
    if actor is not None:
        query["actor"] = actor
    rows = api.request("GET", "/audit?" + urllib.parse.urlencode(query))
    if as_json:
        _print_json(rows)
        return
    table = Table("at", "who", "from", "request", "outcome")
    for e in rows:
        who = "-" if e["actor"] is None else f"{e['actor']} ({e['role']})"
        outcome = str(e["status"]) + (f" {e['error']}" if e.get("error") else "")
        request = f"{e['method']} {e['path']}"
        if e.get("body"):
            body = " ".join(str(e["body"]).split())
            request += f"\n[dim]{escape(body if len(body) <= 48 else body[:45] + '...')}[/]"
        table.add_row(
            _when(e["at"]),
            who,
            e.get("client") or "-",
            request,
            escape(outcome),
            style="red" if e["status"] >= 400 else None,
        )
    console = make_console()
    console.print(table)
    console.print(
        f"{len(rows)} entries" + (" (the newest; raise --limit)" if len(rows) == limit else "")
    )
