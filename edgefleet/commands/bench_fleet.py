"""``edgefleet bench fleet``: a simulated staged rollout to N devices through a real broker."""

from __future__ import annotations

import click

__all__ = ["fleet_bench"]


@click.command("fleet")
@click.option("--devices", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--bundle-size", "bundle_mb", type=click.FloatRange(0.01), default=2.6)
@click.pass_context
def fleet_bench(ctx: click.Context, devices: int, bundle_mb: float) -> None:
    """Time a rollout to DEVICES simulated devices (being built; issue #6)."""
    del devices, bundle_mb
    click.secho("edgefleet bench fleet: being built (issue #6).", fg="yellow", err=True)
    ctx.exit(2)
