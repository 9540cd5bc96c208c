"""``edgefleet``: one command line for the ML engineer, the fleet operator and the line engineer.

Subcommand groups are imported lazily, so ``edgefleet --help`` and the device
commands start without TensorFlow or the server packages.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from edge_runtime import __version__
from edge_runtime.errors import EdgefleetError

__all__ = ["main"]

# name -> (module, attribute, one-line help). Order is the order in --help.
_GROUPS: dict[str, tuple[str, str, str]] = {
    "convert": (
        "edgefleet.commands.convert",
        "convert",
        "ML engineer: quantise a trained model to TFLite/ONNX bundles with a parity gate.",
    ),
    "release": (
        "edgefleet.commands.release",
        "release",
        "Release manager: sign bundles into the TUF targets role with the release key.",
    ),
    "keys": (
        "edgefleet.commands.release",
        "keys",
        "Release manager: create, rotate and revoke the TUF keys.",
    ),
    "serve": (
        "edgefleet.commands.serve",
        "serve",
        "Fleet operator: run the fleet server (database, MQTT, HTTP API).",
    ),
    "fleet": (
        "edgefleet.commands.fleet",
        "fleet",
        "Fleet operator: devices, bundles, staged rollouts, provisioning.",
    ),
    "device": (
        "edgefleet.commands.device",
        "device",
        "Camera box: run the classifier on frames, or classify files once.",
    ),
    "bench": (
        "edgefleet.commands.bench",
        "bench",
        "Line engineer: latency and fleet-scale benchmarks with reports.",
    ),
    "demo": (
        "edgefleet.commands.demo",
        "demo",
        "Run the main job end to end on one machine with embedded defaults.",
    ),
    "bundle": (
        "edgefleet.commands.bundle",
        "bundle",
        "Inspect, pack and unpack model bundles.",
    ),
    "protocol": ("edgefleet.commands.protocol", "protocol", "The MQTT messages' JSON Schema."),
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_GROUPS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _GROUPS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, _ = entry
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, _, help_text) in _GROUPS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgefleetError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(1)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefleet")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    envvar="EDGEFLEET_LOG_LEVEL",
    help="How much the program logs to stderr.",
)
def cli(log_level: str) -> None:
    """edgefleet: image classifiers on fleets of edge cameras.

    \b
    Convert and quantise a trained model into a signed bundle, roll it out to
    cameras over MQTT in staged waves with automatic rollback, run it at low
    latency on each device, and measure how fast it runs.

    Run `edgefleet COMMAND --help` for each command's options.
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    """Console-script entry point."""
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) is noise for CLI users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli(prog_name="edgefleet")
