"""``edgefleet demo``: placeholder until written."""

from __future__ import annotations

import click


@click.command()
def demo() -> None:
    """Run the main job end to end."""
