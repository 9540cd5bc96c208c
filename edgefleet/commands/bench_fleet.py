"""``edgefleet bench fleet``: a simulated staged rollout to N devices through a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgefleet.commands._console import make_console

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
    workdir: Path | None,
    json_path: Path | None,
) -> None:
    """Time a staged rollout to DEVICES simulated devices, and what it costs the server.

    \b
    Starts Mosquitto (or uses --broker) and `edgefleet serve` as its own
    process, provisions the devices over the HTTP API, connects simulated
    devices (each with its own MQTT connection and TUF client, downloading
    and verifying the bundle chunk by chunk; they run no model), then times
    a canary wave followed by everyone, from the rollout's creation until
    the server reports every device committed. Prints the wall time, the
    devices' commit-time percentiles and the server's and broker's peak RSS
    and CPU.

    \b
    Example:
      edgefleet bench fleet --devices 1000 --bundle-size 2.6 --json fleet.json
    """
    from rich.table import Table

    from edgefleet.rollout_benchmark import FleetBenchOptions, run_fleet_bench

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
        ),
        console,
    )
    table = Table("figure", "value", title=f"Rollout to {devices} simulated devices")
    commit = report["device_commit_s"]
    server, broker = report["server"], report["broker"]
    table.add_row("bundle", f"{report['bundle_bytes'] / 1e6:.2f} MB ({report['bundle']})")
    table.add_row("rollout", f"{report['rollout_status']}, {report['committed']} committed")
    table.add_row("start -> all committed", f"{report['wall_s']:.1f} s (target <= 60 s)")
    table.add_row(
        "device commit p50 / p90 / max", f"{commit['p50']} / {commit['p90']} / {commit['max']} s"
    )
    table.add_row("delivered", f"{report['delivered_mb']} MB")
    table.add_row(
        "server peak RSS / CPU",
        f"{server['peak_rss_mb']} MB / {server['cpu_s']} s "
        f"(mean {server['cpu_mean_pct']}%, peak {server['cpu_peak_pct']}% of a core)",
    )
    if broker is not None:
        table.add_row(
            "mosquitto peak RSS / CPU",
            f"{broker['peak_rss_mb']} MB / {broker['cpu_s']} s (mean {broker['cpu_mean_pct']}%)",
        )
    sim = report["simulator"]
    table.add_row("simulator CPU", f"{sim['cpu_s']} s in {sim['processes']} processes")
    table.add_row("device errors", str(report["device_errors"]))
    console.print(table)
    console.print("[green]target met[/]" if report["met"] else "[red]target missed[/]")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {json_path}")
