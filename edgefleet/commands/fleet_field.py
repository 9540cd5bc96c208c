"""``edgefleet fleet field-data``: collect frames from the line, label them, export a parity set.

Spoken to a running fleet server's HTTP API like the rest of ``edgefleet
fleet`` (its ``FleetApi``, handed over by click). Collection is off until an
operator enables it for a group (tag); the devices then keep the frames the
rules choose (under a confidence, chosen classes, a random fraction), within
the caps, and upload them. A person confirms or corrects each label; the
export writes ``OUT/<label>/<sha256>.jpg``, which ``edgefleet convert
--parity OUT`` and ``train-reference`` read.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from edgefleet.commands._console import make_console

if TYPE_CHECKING:
    from collections.abc import Iterator

    from edgefleet.commands.fleet import FleetApi

__all__ = ["field_data"]

_PAGE = 1000


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.group("field-data")
def field_data() -> None:
    """Frames the cameras collected for retraining: enable per group, list, label, export.

    \b
    Examples:
      edgefleet fleet field-data enable line-3 --below-confidence 0.6 --per-minute 4
      edgefleet fleet field-data list --device cam-7 --reason low-confidence
      edgefleet fleet field-data label 3fa9c2... glass      (or --confirm: the device was right)
      edgefleet fleet field-data export parity-line-3 --labels cardboard,glass,metal,paper,plastic,trash
      edgefleet convert model.keras --parity parity-line-3 ...
    """


@field_data.command("enable")
@click.argument("tag")
@click.option(
    "--below-confidence",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Keep frames answered with less confidence than this.",
)
@click.option(
    "--class", "classes", multiple=True, help="Keep frames answered with this class (repeatable)."
)
@click.option(
    "--random",
    "random_fraction",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Keep this fraction of all frames, at random.",
)
@click.option(
    "--shadow-disagreement",
    is_flag=True,
    help="Keep the frames a candidate running in shadow answers otherwise (docs/shadow.md).",
)
@click.option("--per-minute", type=click.IntRange(0), default=6, show_default=True)
@click.option("--per-day", type=click.IntRange(0), default=500, show_default=True)
@click.option(
    "--max-disk-mb",
    type=click.IntRange(0),
    default=64,
    show_default=True,
    help="The device's local ring of samples waiting for upload.",
)
@click.option(
    "--upload-kib-s",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Upload bandwidth per device.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def enable(
    api: FleetApi,
    tag: str,
    below_confidence: float,
    classes: tuple[str, ...],
    random_fraction: float,
    shadow_disagreement: bool,
    per_minute: int,
    per_day: int,
    max_disk_mb: int,
    upload_kib_s: int,
    as_json: bool,
) -> None:
    """Collect frames on the devices of TAG (replacing its previous rules)."""
    body = {
        "enabled": True,
        "below_confidence": below_confidence,
        "classes": list(classes),
        "random_fraction": random_fraction,
        "shadow_disagreement": shadow_disagreement,
        "per_minute": per_minute,
        "per_day": per_day,
        "max_disk_bytes": max_disk_mb * 1024 * 1024,
        "upload_bytes_per_s": upload_kib_s * 1024,
    }
    reply = api.request("PUT", f"/field-data/settings/{urllib.parse.quote(tag, safe='')}", body)
    if as_json:
        _print_json(reply)
        return
    make_console().print(
        f"field data on for {tag}: confidence under {below_confidence}"
        + (f", classes {', '.join(classes)}" if classes else "")
        + (f", {random_fraction:.2%} at random" if random_fraction else "")
        + (", shadow disagreements" if shadow_disagreement else "")
        + f"; at most {per_minute}/min and {per_day}/day per device"
    )


@field_data.command("disable")
@click.argument("tag")
@click.pass_obj
def disable(api: FleetApi, tag: str) -> None:
    """Stop collecting frames on the devices of TAG."""
    reply = api.request("DELETE", f"/field-data/settings/{urllib.parse.quote(tag, safe='')}")
    make_console().print(
        f"field data off for {tag}" if reply["removed"] else f"{tag} was not collecting"
    )


@field_data.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def settings(api: FleetApi, as_json: bool) -> None:
    """Every group's collection settings."""
    reply = api.request("GET", "/field-data/settings")
    if as_json:
        _print_json(reply)
        return
    if not reply:
        make_console().print("no group collects field data")
        return
    table = Table("tag", "under conf.", "classes", "random", "per min", "per day")
    for tag, s in reply.items():
        table.add_row(
            tag,
            str(s["below_confidence"]),
            ", ".join(s["classes"]),
            str(s["random_fraction"]),
            str(s["per_minute"]),
            str(s["per_day"]),
        )
    make_console().print(table)


def _samples(api: FleetApi, query: dict[str, str], limit: int | None) -> Iterator[dict[str, Any]]:
    offset, seen = 0, 0
    while limit is None or seen < limit:
        page = min(_PAGE, limit - seen) if limit is not None else _PAGE
        params = urllib.parse.urlencode({**query, "limit": page, "offset": offset})
        rows = api.request("GET", f"/field-data/samples?{params}")
        yield from rows
        seen += len(rows)
        offset += len(rows)
        if len(rows) < page:
            return


def _filters(
    device: str | None,
    version: str | None,
    reason: str | None,
    labelled: bool | None,
    camera: str | None = None,
) -> dict[str, str]:
    query = {"device": device, "version": version, "reason": reason, "camera": camera}
    found = {k: v for k, v in query.items() if v is not None}
    if labelled is not None:
        found["labelled"] = "true" if labelled else "false"
    return found


@field_data.command("list")
@click.option("--device", help="Only this device's samples.")
@click.option("--camera", help="Only this camera's samples (its id on a multi-camera device).")
@click.option("--version", help="Only samples taken with this bundle version.")
@click.option(
    "--reason", type=click.Choice(["low-confidence", "class", "random", "shadow-disagreement"])
)
@click.option(
    "--labelled/--unlabelled", default=None, help="Only those a person labelled (or not)."
)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def list_samples(
    api: FleetApi,
    device: str | None,
    version: str | None,
    reason: str | None,
    labelled: bool | None,
    limit: int,
    as_json: bool,
    camera: str | None,
) -> None:
    """Collected samples, newest first."""
    rows = list(_samples(api, _filters(device, version, reason, labelled, camera), limit))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        make_console().print("no field samples")
        return
    table = Table(
        "sample", "device", "camera", "version", "received", "reason", "answer", "conf.", "label"
    )
    for row in rows:
        confidence = row["confidence"]
        table.add_row(
            row["sha256"][:12],
            row["device_id"],
            row.get("camera_id") or "",
            row["bundle_version"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["received_at"])),
            row["reason"],
            row["label"],
            "" if confidence is None else f"{confidence:.2f}",
            row["true_label"] or "",
        )
    make_console().print(table)


def _resolve(api: FleetApi, sample: str) -> dict[str, Any]:
    if len(sample) == 64:
        found: dict[str, Any] = api.request("GET", f"/field-data/samples/{sample}")
        return found
    matches = [row for row in _samples(api, {}, 10_000) if row["sha256"].startswith(sample)]
    if len(matches) != 1:
        raise click.UsageError(
            f"{len(matches)} samples start with {sample!r}: give more of the sha256"
        )
    return matches[0]


@field_data.command("label")
@click.argument("sample")
@click.argument("label", required=False)
@click.option("--confirm", is_flag=True, help="The device's answer was right: label it so.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def label(api: FleetApi, sample: str, label: str | None, confirm: bool, as_json: bool) -> None:
    """Say what SAMPLE (a sha256 or its start) shows: LABEL, or --confirm the device's answer."""
    if confirm == (label is not None):
        raise click.UsageError("give a LABEL, or --confirm (not both)")
    row = _resolve(api, sample)
    chosen = row["label"] if confirm else label
    reply = api.request("PUT", f"/field-data/samples/{row['sha256']}/label", {"label": chosen})
    if as_json:
        _print_json(reply)
        return
    verb = "confirmed" if chosen == row["label"] else f"corrected from {row['label']}"
    make_console().print(f"{row['sha256'][:12]}: {reply['true_label']} ({verb})")


@field_data.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", help="Only this device's samples.")
@click.option("--camera", help="Only this camera's samples.")
@click.option("--version", help="Only samples taken with this bundle version.")
@click.option(
    "--labels",
    help="Comma-separated classes the parity set must cover (the bundle's labels): a class "
    "without any labelled sample is an error, as `convert --parity` would refuse the folder.",
)
@click.pass_obj
def export(
    api: FleetApi,
    out: Path,
    device: str | None,
    version: str | None,
    labels: str | None,
    camera: str | None,
) -> None:
    """Write the labelled samples to OUT/<label>/<sha256>.jpg (a parity or training folder),
    and what each one is (device, camera, the device's answer, bundle) to OUT/samples.jsonl."""
    from fleet_server.field_data import export_folder

    rows = list(_samples(api, _filters(device, version, None, True, camera), None))
    if not rows:
        raise click.ClickException("no labelled field samples to export: label some first")
    from fleet_server.field_data import FieldSampleInfo

    infos = [FieldSampleInfo(**row) for row in rows]
    images = (
        api.request_bytes("GET", f"/field-data/samples/{info.sha256}/image") for info in infos
    )
    written = export_folder(infos, images, out)
    console = make_console()
    for name, count in written.items():
        console.print(f"  {name}: {count}")
    console.print(f"exported {sum(written.values())} labelled samples to {out}")
    if labels:
        missing = [name for name in labels.split(",") if name and name not in written]
        if missing:
            raise click.ClickException(
                f"no labelled sample of {', '.join(missing)}: `convert --parity {out}` needs "
                "every class; label some, or collect more (--class)"
            )
