"""``edgefleet demo``: the main job end to end on one machine."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import click

from edgefleet.commands._console import make_console

__all__ = ["demo"]


def _quiet_libraries() -> None:
    """TensorFlow's C++ and Python chatter would bury the demo's own output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".edgefleet-demo"),
    show_default=True,
    help="Where the demo writes everything (emptied at the start of a run).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Use a labelled image folder with train/ and val/ (e.g. ../shared/datasets/trashnet) "
    "instead of generated data.",
)
@click.option(
    "--fast", is_flag=True, help="Smaller data, shorter training and health windows (for CI)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for data and training.")
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the fleet (server, console, cameras) running at the end, until Ctrl-C, to click "
    "through what happened in the operator's console.",
)
@click.option(
    "--console-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port of the operator's console on 127.0.0.1 (a free one when taken; 0: any).",
)
def demo(
    workdir: Path, data: Path | None, fast: bool, seed: int, keep: bool, console_port: int
) -> None:
    """Run the whole loop on one machine: data to models to a fleet rolling versions out.

    \b
    1. data: the synthetic conveyor set (or --data DIR) and a conveyor video
    2-3. train v1 briefly and v2 longer; convert each to int8 TFLite and ONNX
       with an HTML parity report against the float model
    4. v3: v2's model packed with v1's golden vectors (deliberately bad)
    5. TUF keys; the release key signs the bundles
    6. the fleet server with its embedded MQTT broker, and five cameras, each
       an `edgefleet device run` process reading the video
    7. v1 to every camera; v2 through a canary and two waves; v3, whose
       canary refuses it, so the rollout stops and rolls back

    A live view shows the cameras, their versions and the waves; then a
    summary, and WORKDIR/report.html (parity reports, rollouts, latency) and
    WORKDIR/summary.json. The operator's console is served while the fleet
    runs: its URL and a login token are printed when the fleet starts (the
    token is also in WORKDIR/console-token); --keep leaves it all running at
    the end. Ctrl-C stops the cameras, the server and the broker.
    """
    _quiet_libraries()
    from edgefleet.demo import DemoOptions, run_demo

    options = DemoOptions(
        workdir=workdir, data=data, fast=fast, seed=seed, keep=keep, console_port=console_port
    )
    status = run_demo(options, make_console())
    raise SystemExit(status)
