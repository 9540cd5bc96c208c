"""Command groups that are designed but not built yet.

Each is listed in ``edgefleet --help`` so the shape of the tool is visible;
running one says plainly that it is not available in this version and which
issue tracks it, and exits with status 2 without doing anything.
"""

from __future__ import annotations

import click

__all__ = ["bench"]


def _planned(name: str, summary: str, issue: int) -> click.Command:
    @click.command(
        name=name,
        help=f"{summary}\n\nNot available in this version yet (tracked in issue #{issue}).",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.pass_context
    def command(ctx: click.Context) -> None:
        click.secho(
            f"edgefleet {name}: not available in this version yet (tracked in issue #{issue}). "
            "See `edgefleet --help` for what works today.",
            fg="yellow",
            err=True,
        )
        ctx.exit(2)

    return command


bench = _planned("bench", "Latency and fleet-scale benchmarks.", 7)
