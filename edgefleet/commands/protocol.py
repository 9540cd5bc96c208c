"""``edgefleet protocol``: the MQTT protocol's messages as JSON Schema."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["protocol"]


@click.group()
def protocol() -> None:
    """The MQTT protocol's messages (docs/protocol.md), as JSON Schema."""


@protocol.command("schema")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the schema to this file (e.g. docs/protocol.schema.json) instead of stdout.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 when the file given with --out is not the current schema.",
)
def schema(out: Path | None, check: bool) -> None:
    """Print (or write) the JSON Schema of every message, with its topic, QoS and retain flag."""
    from edge_runtime.protocol import schema_text

    text = schema_text()
    if check:
        if out is None:
            raise click.UsageError("--check needs --out FILE")
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current != text:
            click.echo(f"{out} is not the current protocol schema; regenerate it with", err=True)
            click.echo(f"  edgefleet protocol schema --out {out}", err=True)
            sys.exit(1)
        click.echo(f"{out} is current")
        return
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")
