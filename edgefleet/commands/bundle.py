"""``edgefleet bundle``: inspect, pack and unpack model bundles."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from edge_runtime.bundle import (
    MANIFEST_NAME,
    Bundle,
    QualityReport,
    TensorSpec,
    dump_manifest,
    load_manifest,
    read_bundle,
    write_bundle,
)
from edge_runtime.errors import BundleError
from edgefleet.commands._console import make_console

__all__ = ["bundle", "print_summary"]


@click.group()
def bundle() -> None:
    """Inspect, pack and unpack model bundles (.efb files).

    A bundle is one immutable file, identified by its sha256, holding the
    model, its preprocessing contract, labels, golden vectors and quality
    report. Reading one never trusts it: every check runs before anything is
    shown. The format is documented in docs/bundle.md.
    """


@bundle.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead.")
def inspect(path: Path, as_json: bool) -> None:
    """Check a bundle and print a readable summary of it.

    Exits with status 1 and says what is wrong when the bundle is corrupt,
    unsafe or inconsistent.
    """
    loaded = read_bundle(path)
    if as_json:
        sys.stdout.write(dump_manifest(loaded.manifest).decode("utf-8"))
        return
    print_summary(loaded, make_console())


@bundle.command()
@click.argument(
    "folder", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR"
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Bundle file to write (conventionally NAME-VERSION.efb).",
)
@click.option(
    "--no-compress",
    is_flag=True,
    help="Write a plain ustar archive instead of a gzip-compressed one "
    "(for devices whose runtime predates compressed bundles).",
)
def pack(folder: Path, output: Path, no_compress: bool) -> None:
    """Pack DIR (a manifest.json and the files it names) into a canonical bundle.

    The manifest's "files" table may be left out: sizes and hashes are
    computed here. Only the files the manifest references are packed, into a
    ustar archive compressed with gzip (unless --no-compress); the output is
    written atomically and is byte-identical for the same input.
    """
    manifest_path = folder / MANIFEST_NAME
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {manifest_path}: {exc.strerror or exc}") from exc
    manifest = load_manifest(raw)
    members: dict[str, bytes] = {}
    for name in manifest.referenced_members():
        member_path = folder / name
        if not member_path.is_file():
            raise BundleError(f"{manifest_path} references {name!r}, but {member_path} is missing")
        members[name] = member_path.read_bytes()
    written = write_bundle(output, manifest, members, compress=not no_compress)
    click.echo(f"wrote {output} ({written.size} bytes, {written.id})")


@bundle.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), metavar="DIR")
@click.option("--force", is_flag=True, help="Write into DIR even if it is not empty.")
def unpack(path: Path, folder: Path, force: bool) -> None:
    """Check a bundle, then write its manifest and members into DIR."""
    loaded = read_bundle(path)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise BundleError(f"{folder} is not empty; pass --force to write into it")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).write_bytes(dump_manifest(loaded.manifest))
    for name, data in loaded.members.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    click.echo(f"unpacked {len(loaded.members) + 1} files into {folder}")


def _tensor_row(kind: str, spec: TensorSpec) -> tuple[str, ...]:
    quant = "-"
    if spec.quantization is not None:
        q = spec.quantization
        if len(q.scale) == 1:
            quant = f"scale={q.scale[0]:.6g} zero_point={q.zero_point[0]}"
        else:
            quant = f"per-channel ({len(q.scale)} scales, axis {q.axis})"
    shape = "x".join("?" if dim == -1 else str(dim) for dim in spec.shape) or "scalar"
    return kind, spec.name, shape, spec.dtype, quant


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _print_quality(console: Console, quality: QualityReport) -> None:
    console.print(
        f"[bold]Quality[/] on {quality.dataset.name} ({quality.dataset.num_images} images, "
        f"sha256 {quality.dataset.sha256[:12]}…)"
    )
    drop = quality.accuracy_drop_points
    verdict = {True: "[green]passed[/]", False: "[red]FAILED[/]", None: "-"}[quality.passed]
    console.print(
        f"  float accuracy {_pct(quality.float_accuracy)}, this model {_pct(quality.accuracy)}"
        + (f" (drop {drop:.2f} points)" if drop is not None else "")
        + f", top-1 agreement {_pct(quality.top1_agreement)}, gate {verdict}"
    )
    if quality.per_class:
        table = Table("class", "images", "float acc", "accuracy", box=None, padding=(0, 2))
        for row in quality.per_class:
            table.add_row(row.label, str(row.support), _pct(row.float_accuracy), _pct(row.accuracy))
        console.print(table)


def print_summary(loaded: Bundle, console: Console) -> None:
    m = loaded.manifest
    console.print(f"[bold]{m.name} {m.version}[/]  {loaded.id}")
    if m.description:
        console.print(f"  {m.description}")
    model_size = len(loaded.model_bytes)
    console.print(
        f"[bold]Model[/] {m.model.file}: {m.model.format}, {m.model.precision}, "
        f"{model_size / 1024:.1f} KiB (bundle {loaded.size / 1024:.1f} KiB"
        + (f", {loaded.archive_size / 1024:.1f} KiB uncompressed)" if loaded.compressed else ")")
    )
    tensors = Table("", "tensor", "shape", "dtype", "quantisation", box=None, padding=(0, 2))
    for spec in m.model.inputs:
        tensors.add_row(*_tensor_row("in", spec))
    for spec in m.model.outputs:
        tensors.add_row(*_tensor_row("out", spec))
    console.print(tensors)
    p = m.preprocessing
    crop = f" {p.crop_fraction:g}" if p.resize == "center-crop" else ""
    console.print(
        f"[bold]Preprocessing[/] {p.height}x{p.width} {p.resize}{crop}, {p.interpolation}, "
        f"{p.color_order.upper()}, {p.layout.upper()}, (x - {list(p.mean)}) / {list(p.std)}"
    )
    post = m.postprocessing
    console.print(f"[bold]Labels[/] ({len(m.labels)}): {', '.join(m.labels)}")
    console.print(
        f"[bold]Postprocessing[/] softmax {'on' if post.apply_softmax else 'off'}, "
        f"top-{post.top_k}, below {post.confidence_threshold:g} -> {post.uncertain_label!r}"
    )
    if m.golden is not None:
        console.print(
            f"[bold]Golden vectors[/] {len(m.golden.vectors)} frames, tolerance {m.golden.atol:g}"
        )
    else:
        console.print("[bold]Golden vectors[/] none (the device smoke test will only load it)")
    if m.quality is not None:
        _print_quality(console, m.quality)
    else:
        console.print("[bold]Quality[/] no report")
    prov = m.provenance
    hashes = [
        f"{what} {value[:12]}…"
        for what, value in (
            ("source", prov.source_model_sha256),
            ("calibration", prov.calibration_data_sha256),
            ("parity", prov.parity_data_sha256),
        )
        if value
    ]
    console.print(
        f"[bold]Provenance[/] by {prov.created_by}"
        + (f" at {prov.created_at}" if prov.created_at else "")
        + (f"; {', '.join(hashes)}" if hashes else "")
    )
    if prov.tools:
        console.print("  " + ", ".join(f"{k} {v}" for k, v in sorted(prov.tools.items())))
    comp = m.compatibility
    budget = f"{comp.latency_budget_ms:g} ms" if comp.latency_budget_ms else "none"
    console.print(
        f"[bold]Compatibility[/] runtime >= {comp.min_runtime_version}, "
        f"backends {', '.join(comp.backends) or 'any'}, "
        f"profiles {', '.join(comp.device_profiles) or 'any'}, latency budget {budget}"
    )
    from edge_runtime.bundle.compat import compatibility_problem

    too_old = compatibility_problem(comp.min_runtime_version)
    if too_old is not None:  # this machine's runtime would refuse it
        console.print(f"  [yellow]{too_old}[/]: devices like it refuse the bundle")
