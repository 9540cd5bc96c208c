"""``edgefleet demo``: the main job end to end on one machine."""

from __future__ import annotations

from pathlib import Path

import click

from edgefleet.commands._console import make_console

__all__ = ["demo"]


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".edgefleet-demo"),
    show_default=True,
    help="Where the demo writes its data, models and bundles (emptied at the start of a run).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Use a labelled image folder with train/ and val/ (e.g. ../shared/datasets/trashnet) "
    "instead of generated data.",
)
@click.option("--fast", is_flag=True, help="Smaller data and shorter training (for CI).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for data and training.")
def demo(workdir: Path, data: Path | None, fast: bool, seed: int) -> None:
    """Run the main job end to end on one machine with embedded defaults.

    Today this trains a reference model on a generated conveyor data set,
    converts it to TFLite, packs a bundle with golden vectors and a measured
    quality report, verifies and runs it as a device would, and shows a
    tampered copy being refused. The fleet part (server, devices, rollouts)
    arrives with issue #8.
    """
    from edgefleet.demo import DemoOptions, run_demo

    status = run_demo(DemoOptions(workdir=workdir, data=data, fast=fast, seed=seed), make_console())
    raise SystemExit(status)
