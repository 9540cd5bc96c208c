"""``edgefleet bench fleet``: a simulated staged rollout to N devices through a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgefleet.commands._console import make_console
from edgefleet.rollout_benchmark.options import FLOOR_ORDERS, FloorOrder

__all__ = ["fleet_bench"]


@click.command("fleet")
@click.option(
    "--devices",
    type=click.IntRange(1, 20000),
    default=1000,
    show_default=True,
    help="How many simulated devices.",
)
@click.option(
    "--bundle-size",
    "bundle_mb",
    type=click.FloatRange(0.01, 500),
    default=2.6,
    show_default=True,
    help="Size of the synthetic bundle in MB (ignored with --bundle).",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Roll out this real bundle instead of a synthetic payload.",
)
@click.option(
    "--broker",
    "broker_url",
    metavar="mqtt://HOST:PORT",
    help="Use this broker (anonymous) instead of starting Mosquitto on loopback.",
)
@click.option(
    "--canary",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Devices in the canary wave (then everyone).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Threads the simulated devices share.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1),
    default=600.0,
    show_default=True,
    help="Give up after this many seconds.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="edgefleet serve processes sharing the database and the broker (more than one needs"
    " PostgreSQL: --db, or a throw-away cluster the benchmark starts).",
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="The servers' database (default: SQLite in the state folder, or a throw-away"
    " PostgreSQL cluster with --replicas > 1 or --postgres). A PostgreSQL database given here"
    " must be empty.",
)
@click.option(
    "--postgres",
    is_flag=True,
    help="Start a throw-away PostgreSQL cluster for the servers even with one replica.",
)
@click.option(
    "--floor",
    type=click.Choice(FLOOR_ORDERS),
    default="both",
    show_default=True,
    help="When to measure the transport floor: before and after the rollout (their mean is the"
    " floor), before or after only, or not at all.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep keys, repository, logs and device state here (default: a temp folder).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report as JSON to this file.",
)
def fleet_bench(
    devices: int,
    bundle_mb: float,
    bundle: Path | None,
    broker_url: str | None,
    canary: int,
    workers: int,
    timeout_s: float,
    replicas: int,
    db_url: str | None,
    postgres: bool,
    floor: FloorOrder,
    workdir: Path | None,
    json_path: Path | None,
) -> None:
    """Time a staged rollout to DEVICES simulated devices against the transport's own floor.

    \b
    Starts Mosquitto (or uses --broker) and --replicas `edgefleet serve`
    processes (one database; PostgreSQL when more than one), provisions the
    devices over the HTTP API, connects simulated devices (each with its own
    MQTT connection and TUF client, downloading and verifying the bundle
    chunk by chunk; they run no model), then times a canary wave followed by
    everyone, from the rollout's creation until the servers report every
    device committed.

    \b
    Before and after the rollout it measures the transport floor: the same
    bundle bytes, cut into the same chunks, fanned out through the same
    broker to as many plain MQTT subscribers (no TUF, no lifecycle). The
    rollout's time over the floor's is the figure to drive down: it holds
    still when the machine's speed does not.

    \b
    Prints the times, the ratio, the devices' commit-time percentiles, CPU
    per committed device, each server's share of the reports and chunk
    requests (from its /metrics), and the broker's and database's RSS and CPU.

    \b
    Examples:
      edgefleet bench fleet --devices 1000 --json fleet.json
      edgefleet bench fleet --devices 1000 --replicas 2 --json fleet-2.json
    """
    from edgefleet.rollout_benchmark import FleetBenchOptions, render_report, run_fleet_bench

    console = make_console()
    report = run_fleet_bench(
        FleetBenchOptions(
            devices=devices,
            bundle_mb=bundle_mb,
            bundle=bundle,
            broker_url=broker_url,
            workdir=workdir,
            canary=canary,
            workers=workers,
            timeout_s=timeout_s,
            keep=workdir is not None,
            replicas=replicas,
            db_url=db_url,
            postgres=postgres,
            floor=floor,
        ),
        console,
    )
    render_report(report, console)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {json_path}")
    if report["timed_out"]:
        console.print(
            f"[red]the rollout did not finish within {timeout_s:.0f} s"
            f" ({report['committed']}/{devices} devices committed)[/]"
        )
        raise SystemExit(1)
