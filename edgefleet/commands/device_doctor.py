"""``edgefleet device doctor``: prove that a camera box runs exactly the locked set, and can run it."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from edgefleet.commands._console import make_console

__all__ = ["doctor"]

_LIST_AT_MOST = 15


def _packages_section(console: Console, check: Any) -> None:
    comparison = check.comparison
    console.print(f"[bold]packages[/] against {check.lock} ({check.environment})")
    if check.locked_here == 0:
        console.print(
            "  [red]the lock pins nothing for this interpreter/platform[/]: it covers "
            "Linux x86_64/aarch64 with CPython 3.10 to 3.12"
        )
        return
    console.print(
        f"  {len(comparison.matched)} of {check.locked_here} locked packages installed "
        "at the locked version"
    )
    for name in comparison.missing:
        console.print(f"  [red]missing[/]   {name}")
    for name, locked, installed in comparison.different:
        console.print(f"  [red]different[/] {name}: installed {installed}, locked {locked}")
    for name, version in comparison.extra[:_LIST_AT_MOST]:
        console.print(f"  [red]not locked[/] {name} {version}")
    if len(comparison.extra) > _LIST_AT_MOST:
        console.print(f"  [red]... and {len(comparison.extra) - _LIST_AT_MOST} more not locked[/]")
    if comparison.ignored:
        shown = ", ".join(f"{name} {version}" for name, version in comparison.ignored)
        console.print(f"  [dim]not judged: {shown}[/]")
    verdict = "[green]exactly the locked set[/]" if check.ok else "[red]NOT the locked set[/]"
    console.print(f"  {verdict}")


def _bundle_rows(bundle_path: Path, threads: int) -> list[dict[str, Any]]:
    """Smoke-test the bundle on every installed backend that reads its format."""
    from edge_runtime.backends import available_backends
    from edge_runtime.bench.bare import BareInvoke
    from edge_runtime.bundle import read_bundle
    from edge_runtime.errors import EdgefleetError
    from edge_runtime.update.smoke import smoke_test

    bundle = read_bundle(bundle_path)
    rows: list[dict[str, Any]] = []
    backends = available_backends(bundle.manifest.model.format)
    if not backends:
        return [{"backend": "-", "ok": False, "detail": "no installed backend reads this format"}]
    for backend in backends:
        row: dict[str, Any] = {"backend": backend, "ok": False, "xnnpack": None}
        try:
            report = smoke_test(bundle, backend=backend, threads=threads, budget_ms=float("inf"))
        except EdgefleetError as exc:
            row["detail"] = str(exc)
            rows.append(row)
            continue
        classifier = report.classifier
        try:
            frame = (bundle.golden_frames() or [np.zeros((480, 640, 3), np.uint8)])[0]
            bare = BareInvoke(backend, bundle.model_bytes, threads, classifier.preprocessor(frame))
            row["xnnpack"] = bare.xnnpack
        finally:
            classifier.backend.close()
        row.update(
            ok=True,
            golden_vectors=report.golden.vectors,
            golden_max_error=report.golden.max_abs_error,
            invoke_p50_ms=report.invoke_p50_ms,
        )
        rows.append(row)
    return rows


@click.command()
@click.option(
    "--lock",
    "lock_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The lock this box was installed from. Default: $EDGEFLEET_LOCK, then "
    "/opt/edgefleet/device.lock.txt, then ./locks/device.lock.txt.",
)
@click.option(
    "--verify-files",
    is_flag=True,
    help="Also hash every installed file of the locked packages against its wheel's RECORD "
    "(finds files changed after install; a few seconds).",
)
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Smoke-test this bundle on every installed backend for its format (golden vectors, "
    "latency) and say whether LiteRT applies XNNPACK to it.",
)
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Also check the bundle stores of this device config: the box's and each camera "
    "device's (cameras[].fleet): update state, active bundle's hash, free space, writable.",
)
@click.option(
    "--packages-only", is_flag=True, help="Only the package check (what `make` runs after install)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def doctor(
    lock_path: Path | None,
    verify_files: bool,
    bundle_path: Path | None,
    threads: int,
    config_path: Path | None,
    packages_only: bool,
    as_json: bool,
) -> None:
    """Check this box: installed packages against the lock, backends, XNNPACK, CPU features.

    \b
    Exit status 0 when the installed packages are exactly the lock's pins for
    this interpreter (no missing, different or unlocked package; pip,
    setuptools, wheel and edgefleet itself are listed but not judged), no
    installed file differs from its wheel (--verify-files) and the bundle
    passes its smoke test on every backend (--bundle) and every fleet identity's
    bundle store is sound (--config: the box's store and each camera device's);
    1 otherwise.
    """
    from edge_runtime.doctor import (
        check_backends,
        check_files,
        check_packages,
        cpu_info,
        find_lock,
    )

    packages = check_packages(find_lock(lock_path))
    ok = packages.ok
    result: dict[str, Any] = {"packages": asdict(packages) | {"ok": packages.ok}}
    files = None
    if verify_files:
        files = check_files(packages.comparison.matched)
        ok = ok and files.ok
        result["files"] = asdict(files) | {"ok": files.ok}
    if not packages_only:
        result["backends"] = [asdict(b) for b in check_backends()]
        result["cpu"] = asdict(cpu_info())
        result["tensorflow_installed"] = any(
            b["name"] == "tf-lite" and b["installed"] for b in result["backends"]
        )
    if bundle_path is not None:
        result["bundle"] = {
            "path": str(bundle_path),
            "backends": _bundle_rows(bundle_path, threads),
        }
        ok = ok and all(row["ok"] for row in result["bundle"]["backends"])
    if config_path is not None:
        from edge_runtime.config import load_config
        from edge_runtime.store_check import check_stores

        stores = check_stores(load_config(config_path))
        result["stores"] = [asdict(s) | {"ok": s.ok} for s in stores]
        ok = ok and all(s.ok for s in stores)
    result["ok"] = ok
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        _print(make_console(), packages, files, result)
    if not ok:
        sys.exit(1)


def _print(console: Console, packages: Any, files: Any, result: dict[str, Any]) -> None:
    _packages_section(console, packages)
    if files is not None:
        state = "[green]all match[/]" if files.ok else "[red]CHANGED SINCE INSTALL[/]"
        console.print(f"[bold]files[/] {files.checked} hashed against the wheels' RECORD: {state}")
        for line in files.modified[:_LIST_AT_MOST]:
            console.print(f"  [red]modified[/] {line}")
        for line in files.missing[:_LIST_AT_MOST]:
            console.print(f"  [red]missing[/]  {line}")
    if "backends" in result:
        table = Table("backend", "package", "version", "detail", box=None, padding=(0, 2))
        for backend in result["backends"]:
            version = backend["version"] or "[dim]not installed[/]"
            table.add_row(backend["name"], backend["package"], version, backend["detail"])
        console.print("[bold]backends[/]")
        console.print(table)
        tf = "installed (a workstation)" if result["tensorflow_installed"] else "not installed"
        console.print(f"  TensorFlow: {tf}")
        cpu = result["cpu"]
        console.print(
            f"[bold]cpu[/] {cpu['model']} ({cpu['machine']}), {cpu['usable_cores']} of "
            f"{cpu['cores']} cores usable; features: {' '.join(cpu['features']) or 'none found'}; "
            f"int8 dot product: {'yes' if cpu['int8_dot_product'] else 'no'}"
        )
    if "bundle" in result:
        table = Table("backend", "smoke test", "golden max error", "invoke p50 ms", "XNNPACK")
        for row in result["bundle"]["backends"]:
            if row["ok"]:
                xnn = {True: "applied", False: "not applied", None: "-"}[row["xnnpack"]]
                table.add_row(
                    row["backend"],
                    "[green]passed[/]",
                    f"{row['golden_max_error']:.2g} ({row['golden_vectors']} vectors)",
                    f"{row['invoke_p50_ms']:.2f}",
                    xnn,
                )
            else:
                table.add_row(row["backend"], f"[red]failed[/]: {row['detail']}", "", "", "")
        console.print(f"[bold]bundle[/] {result['bundle']['path']}")
        console.print(table)
    if "stores" in result:
        _stores_section(console, result["stores"])
    console.print("[green]doctor: ok[/]" if result["ok"] else "[red]doctor: problems found[/]")


def _stores_section(console: Console, stores: list[dict[str, Any]]) -> None:
    table = Table("device", "camera", "store", "state", "active", "bundles", "free MiB", "verdict")
    for store in stores:
        notes = [f"[red]{p}[/]" for p in store["problems"]] + [
            f"[yellow]{w}[/]" for w in store["warnings"]
        ]
        free = store["free_bytes"]
        table.add_row(
            store["device_id"],
            store["camera"] or "-",
            store["path"],
            f"{store['phase'] or '-'} ({store['state_source']})",
            (store["active"] or "-")[:12],
            str(store["bundles"]),
            "-" if free is None else f"{free / 2**20:.0f}",
            "[green]ok[/]" if store["ok"] else "[red]problem[/]",
        )
        for note in notes:
            table.add_row("", "", f"  {note}", "", "", "", "", "")
    console.print("[bold]bundle stores[/]")
    console.print(table)
