"""``edgefleet bench``: latency reports per bundle x backend x threads, comparisons, swap gap, fleet."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from edgefleet.commands._console import make_console, progress_bar
from edgefleet.commands.bench_fleet import fleet_bench

__all__ = ["bench"]

_PROFILES_DIR = Path("devices") / "profiles"
REGRESSION_EXIT = 3


@click.group()
def bench() -> None:
    """Measure how fast bundles run: latency reports, regressions, hot-swap gap, fleet rollouts.

    \b
    edgefleet bench latency m-fp32.efb m-int8.efb --threads 1,2 --images val/ --out report/
    edgefleet bench compare before/latency.json after/latency.json --threshold 5
    edgefleet bench swap m-fp32.efb m-int8.efb --swaps 5
    """


bench.add_command(fleet_bench)


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _threads(value: str) -> list[int]:
    try:
        counts = [int(part) for part in _csv(value)]
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: give thread counts like 1,2,4") from exc
    if not counts or any(not 1 <= c <= 64 for c in counts):
        raise click.BadParameter(f"{value!r}: thread counts must lie in 1..64")
    return counts


def _profile_path(value: str) -> Path:
    path = Path(value)
    if path.exists() or path.suffix:
        return path
    return _PROFILES_DIR / f"{value}.yaml"


def _configurations(
    bundles: list[Path], backends: list[str], console: Console
) -> list[tuple[Path, str, str, str, int | None]]:
    """(bundle, backend, name, precision, input side) per bundle and each backend that reads it."""
    from edge_runtime.backends import available_backends, backend_classes
    from edge_runtime.bundle import read_bundle
    from edge_runtime.errors import BackendError, BackendUnavailableError

    known = backend_classes()
    for name in backends:
        if name != "auto" and name not in known:
            raise BackendError(f"unknown backend {name!r}; known: auto, {', '.join(known)}")
    configs: list[tuple[Path, str, str, str, int | None]] = []
    for path in bundles:
        manifest = read_bundle(path).manifest
        fmt = manifest.model.format
        installed = available_backends(fmt)
        chosen: list[str] = []
        for requested in backends:
            name = (installed[0] if installed else requested) if requested == "auto" else requested
            if name == "auto" or fmt not in known[name].formats or name in chosen:
                continue
            if name not in installed:
                console.print(
                    f"[yellow]skipping {name} for {path.name}: pip install {known[name].package}[/]"
                )
                continue
            chosen.append(name)
        if not chosen:
            raise BackendUnavailableError(
                f"no requested backend ({', '.join(backends)}) runs {path.name} ({fmt}); "
                f"installed for {fmt}: {', '.join(installed) or 'none'}"
            )
        contract = manifest.preprocessing
        side = contract.width if contract.width == contract.height else None
        precision = manifest.model.precision
        configs.extend((path, name, manifest.name, precision, side) for name in chosen)
    return configs


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _results_table(report: Any) -> Table:
    table = Table(
        "model",
        "backend",
        "thr",
        "init",
        "first",
        "p50",
        "p90",
        "p95",
        "p99",
        "mean±sd",
        "invoke",
        "bare",
        "inv/bare",
        "fps",
        "CPU",
        "RSS",
        "acc",
        "budget p95",
        title="latency per frame, ms (end to end = decode + preprocess + invoke + postprocess; "
        "bare = the runtime's invoke alone, alternated in the same run)",
        title_justify="left",
        box=None,
        padding=(0, 1),
        pad_edge=False,
    )
    for r in report.results:
        e2e, bare = r.stages.end_to_end, r.bare
        ratio = f"{bare.invoke_ratio:.3f}"
        budget = "-"
        if r.budget_p95_ms is not None:
            budget = f"{'[green]pass' if r.budget_pass else '[red]FAIL'} ≤{r.budget_p95_ms:g}[/]"
        table.add_row(
            f"{r.format} {r.precision}",
            r.backend.replace("onnxruntime", "ort") + ("+xnn" if r.xnnpack else ""),
            str(r.threads),
            _ms(r.init_ms),
            _ms(r.first_inference_ms),
            _ms(e2e.p50),
            _ms(e2e.p90),
            _ms(e2e.p95),
            _ms(e2e.p99),
            f"{_ms(e2e.mean)}±{_ms(e2e.std)}",
            _ms(r.stages.invoke.p50),
            _ms(bare.bare_invoke.p50),
            ratio if bare.matches_bare else f"[yellow]{ratio}[/]",
            f"{r.throughput_fps:.1f}",
            f"{r.cpu_percent:.0f}%",
            "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f} MB",
            "-" if r.accuracy is None else f"{100 * r.accuracy:.1f}%",
            budget,
        )
    return table


def _stages_table(report: Any) -> Table:
    table = Table(
        "bundle",
        "backend",
        "thr",
        "decode",
        "preprocess",
        "invoke",
        "postprocess",
        "end to end",
        "runs",
        title="per-stage p50, ms",
        title_justify="left",
        box=None,
        padding=(0, 1),
        pad_edge=False,
    )
    for r in report.results:
        s = r.stages
        table.add_row(
            f"{r.bundle_name} {r.format} {r.precision}",
            r.backend,
            str(r.threads),
            "-" if s.decode is None else _ms(s.decode.p50),
            _ms(s.preprocess.p50),
            _ms(s.invoke.p50),
            _ms(s.postprocess.p50),
            _ms(s.end_to_end.p50),
            str(r.runs),
        )
    return table


def _single_stream_table(report: Any) -> Table | None:
    rows = [r for r in report.results if r.single_stream is not None]
    if not rows:
        return None
    table = Table(
        "bundle",
        "backend",
        "thr",
        "p90 (headline)",
        "queries",
        "duration",
        "valid",
        title="single stream (MLPerf-style)",
        title_justify="left",
        box=None,
        padding=(0, 1),
        pad_edge=False,
    )
    for r in rows:
        ss = r.single_stream
        table.add_row(
            f"{r.bundle_name} {r.format} {r.precision}",
            r.backend,
            str(r.threads),
            f"{ss.p90_ms:.2f} ms",
            f"{ss.queries} (min {ss.min_queries})",
            f"{ss.duration_s:.1f} s (min {ss.min_duration_s:g} s)",
            "[green]VALID[/]" if ss.valid else "[red]INVALID[/]",
        )
    return table


@bench.command("latency")
@click.argument(
    "bundles", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--backends",
    help="Comma-separated backends (auto, litert, tflite-runtime, tf-lite, onnxruntime); each "
    "bundle runs on those that read its format. Default: the profile's, else auto.",
)
@click.option("--threads", "threads_text", help="Comma-separated thread counts, e.g. 1,2,4 "
              "(default: the profile's, else 1).")  # fmt: skip
@click.option(
    "--warmup", type=click.IntRange(0), default=10, show_default=True, help="Untimed frames first."
)
@click.option(
    "--runs", type=click.IntRange(1), help="Timed frames per configuration (default 200)."
)
@click.option(
    "--seconds", type=click.FloatRange(0, min_open=True), help="Timed seconds per configuration."
)
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of images (class sub-folders give accuracy).",
)
@click.option(
    "--video", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Video file."
)
@click.option(
    "--profile",
    "profile_ref",
    help="Device profile: devices/profiles/NAME.yaml or just NAME (threads, backends, budgets).",
)
@click.option(
    "--single-stream",
    is_flag=True,
    help="MLPerf-style: run each configuration until --min-queries and --min-duration; p90 headline.",
)
@click.option("--min-queries", type=click.IntRange(1), default=1024, show_default=True)
@click.option(
    "--min-duration",
    type=click.FloatRange(0),
    default=600.0,
    show_default=True,
    help="Seconds (MLPerf's single-stream minimum is 600).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-report"),
    show_default=True,
    help="Folder for latency.json, latency.csv, report.html and the plots.",
)
@click.option(
    "--check-budget", is_flag=True, help="Exit with status 3 if a configuration misses its budget."
)
def latency(
    bundles: tuple[Path, ...],
    backends: str | None,
    threads_text: str | None,
    warmup: int,
    runs: int | None,
    seconds: float | None,
    images: Path | None,
    video: Path | None,
    profile_ref: str | None,
    single_stream: bool,
    min_queries: int,
    min_duration: float,
    out: Path,
    check_budget: bool,
) -> None:
    """Latency of each BUNDLE on each backend and thread count, against a bare invoke loop.

    Per configuration: init time, first inference, warm min/mean/std/p50/p90/
    p95/p99/max, per-stage breakdown, throughput, CPU %, peak RSS, accuracy
    on labelled images, and the runtime's bare invoke measured in alternating
    blocks in the same run. Writes JSON, CSV and an HTML report with plots
    (plots need `pip install 'edgefleet[plot]'`).
    """
    from edge_runtime.bench import (
        BenchReport,
        BenchSettings,
        ImageInputs,
        SyntheticInputs,
        VideoInputs,
        bench_configuration,
        collect_environment,
        load_profile,
        write_report,
    )
    from edge_runtime.bench.report import EnvironmentInfo

    if images is not None and video is not None:
        raise click.UsageError("give --images or --video, not both")
    console = make_console()
    profile = load_profile(_profile_path(profile_ref)) if profile_ref else None
    backend_names = _csv(backends) if backends else (profile.backends if profile else ["auto"])
    thread_counts = (
        _threads(threads_text) if threads_text else (profile.threads if profile else [1])
    )
    settings = BenchSettings(
        warmup=warmup,
        runs=runs,
        seconds=seconds,
        single_stream=single_stream,
        min_queries=min_queries,
        min_duration_s=min_duration,
    )
    if images is not None:
        inputs: Any = ImageInputs(images)
    elif video is not None:
        inputs = VideoInputs(video)
    else:
        inputs = SyntheticInputs()
    configs = _configurations(list(bundles), backend_names, console)
    console.print(
        f"{len(configs) * len(thread_counts)} configurations on {inputs.description}"
        + (f", profile {profile.name}" if profile else "")
    )
    results = []
    try:
        with progress_bar(make_console(stderr=True)) as bar:
            for path, backend, name, precision, side in configs:
                for threads in thread_counts:
                    task = bar.add_task(f"{path.name} {backend} x{threads}", total=None)
                    budget = profile.budget_for(name, precision, side) if profile else None

                    def advance(done: int, total: int, task: Any = task) -> None:
                        bar.update(task, completed=done, total=total)

                    results.append(
                        bench_configuration(
                            path,
                            backend,
                            threads,
                            inputs,
                            settings,
                            budget_p95_ms=budget,
                            progress=advance,
                        )
                    )
                    bar.remove_task(task)
    finally:
        inputs.close()
    env = collect_environment()
    report = BenchReport(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        inputs=inputs.description,
        profile=profile.name if profile else None,
        settings={
            "warmup": warmup,
            "runs": runs,
            "seconds": seconds,
            "block": settings.block,
            "single_stream": single_stream,
            "min_queries": min_queries,
            "min_duration_s": min_duration,
            "bare_tolerance": settings.tolerance,
            "command": " ".join(["edgefleet", *sys.argv[1:]]),
        },
        environment=EnvironmentInfo(**env.__dict__),
        results=results,
    )
    console.print(_results_table(report))
    console.print(_stages_table(report))
    single = _single_stream_table(report)
    if single is not None:
        console.print(single)
    json_path, csv_path = write_report(report, out)
    console.print(f"wrote {json_path} and {csv_path}")
    _write_html(report, out, console)
    if check_budget and any(r.budget_pass is False for r in results):
        click.secho("error: a configuration missed its latency budget", fg="red", err=True)
        raise SystemExit(REGRESSION_EXIT)


def _write_html(report: Any, out: Path, console: Console) -> None:
    from edgefleet.latency_report_html import PlotsUnavailableError, write_html_report

    try:
        html = write_html_report(report, out)
    except PlotsUnavailableError as exc:
        html = write_html_report(report, out, plots=False)
        console.print(f"no plots: {exc}", style="yellow", markup=False)
    console.print(f"wrote {html}")


@bench.command("report")
@click.argument("report_json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.html and the plots (default: next to the JSON).",
)
def report_command(report_json: Path, out: Path | None) -> None:
    """Render the HTML report and plots from a latency.json (e.g. one made on a device).

    A device needs only `edgefleet[device]` to measure; plotting needs the
    `plot` extra, so copy latency.json to a workstation and render it there.
    """
    from edge_runtime.bench import load_report

    report = load_report(report_json)
    console = make_console()
    console.print(_results_table(report))
    _write_html(report, out or report_json.parent, console)


@bench.command("compare")
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--threshold",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Percent slower that counts as a regression (exit status 3) when the CI excludes zero.",
)
@click.option(
    "--metric",
    type=click.Choice(["end_to_end", "invoke"]),
    default="end_to_end",
    show_default=True,
)
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True)
@click.option("--seed", type=int, default=20240607, show_default=True, help="Bootstrap seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(
    baseline: Path,
    candidate: Path,
    threshold: float,
    metric: str,
    confidence: float,
    seed: int,
    as_json: bool,
) -> None:
    """Compare CANDIDATE's latency report against BASELINE's, configuration by configuration.

    For each configuration in both (same bundle name, format, precision,
    backend, threads), the change in median latency with a bootstrap
    confidence interval. Exits with status 3 when a configuration is slower
    by more than --threshold percent and the interval excludes zero.
    """
    from edge_runtime.bench import compare_reports, load_report
    from edge_runtime.errors import ConfigError

    comparison = compare_reports(
        load_report(baseline),
        load_report(candidate),
        threshold_pct=threshold,
        metric="invoke" if metric == "invoke" else "end_to_end",
        confidence=confidence,
        seed=seed,
    )
    if not comparison.rows:
        raise ConfigError(
            f"{baseline.name} and {candidate.name} share no configuration "
            f"(only in baseline: {comparison.only_a}; only in candidate: {comparison.only_b})"
        )
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "metric": comparison.metric,
                    "threshold_pct": threshold,
                    "confidence": confidence,
                    "rows": [row.__dict__ for row in comparison.rows],
                    "only_baseline": comparison.only_a,
                    "only_candidate": comparison.only_b,
                },
                indent=2,
            )
            + "\n"
        )
    else:
        console = make_console()
        table = Table(
            "configuration",
            "baseline p50",
            "candidate p50",
            "change",
            f"{100 * confidence:g}% CI",
            "verdict",
            title=f"{metric} median, regression threshold {threshold:g}%",
            title_justify="left",
        )
        colours = {"slower": "red", "faster": "green", "same": "white"}
        for row in comparison.rows:
            table.add_row(
                row.key,
                f"{row.median_a_ms:.3f} ms",
                f"{row.median_b_ms:.3f} ms",
                f"{row.change_pct:+.1f}%",
                f"[{row.ci_low_pct:+.1f}%, {row.ci_high_pct:+.1f}%]",
                f"[{colours[row.verdict]}]{row.verdict}[/]",
            )
        console.print(table)
        for key in comparison.only_a:
            console.print(f"only in baseline: {key}")
        for key in comparison.only_b:
            console.print(f"only in candidate: {key}")
    if comparison.regressions:
        click.secho(
            f"regression: {len(comparison.regressions)} configuration(s) slower than "
            f"{threshold:g}% with the {100 * confidence:g}% CI above zero",
            fg="red",
            err=True,
        )
        raise SystemExit(REGRESSION_EXIT)


@bench.command("swap")
@click.argument(
    "bundles", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--swaps", type=click.IntRange(1), default=5, show_default=True)
@click.option("--fps", type=click.FloatRange(1, 240), default=30.0, show_default=True)
@click.option("--backend", default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--max-ratio",
    type=click.FloatRange(1),
    default=2.0,
    show_default=True,
    help="Target: worst gap over the steady frame interval.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def swap(
    bundles: tuple[Path, ...],
    swaps: int,
    fps: float,
    backend: str,
    threads: int,
    max_ratio: float,
    json_path: Path | None,
) -> None:
    """The hot-swap gap: worst pause between predictions while a new bundle is swapped in live.

    A paced synthetic camera (--fps) feeds the device pipeline; SWAPS times,
    the next of BUNDLES (cyclically; one bundle swaps to a fresh copy) is
    loaded in the background and swapped in between frames. Reports the
    largest gap between predictions around each swap against the steady
    interval (the update target is <= 2x). Exit status 3 past --max-ratio.
    """
    from edge_runtime.bench import bench_swap

    console = make_console()
    with progress_bar(make_console(stderr=True)) as bar:
        task = bar.add_task("swaps", total=swaps)
        summary = bench_swap(
            list(bundles),
            swaps=swaps,
            fps=fps,
            backend=backend,
            threads=threads,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    table = Table("swap", "to", "load", "max gap", "steady interval", "ratio", "predictions")
    for index, run in enumerate(summary.runs, 1):
        table.add_row(
            str(index),
            run.to_bundle,
            f"{run.load_ms:.0f} ms",
            f"{run.max_gap_ms:.1f} ms",
            f"{run.steady_interval_ms:.1f} ms",
            f"{run.gap_ratio:.2f}x",
            str(run.predictions_in_window),
        )
    console.print(table)
    met = summary.worst_gap_ratio <= max_ratio
    console.print(
        f"worst gap {summary.worst_gap_ms:.1f} ms = {summary.worst_gap_ratio:.2f}x the steady "
        f"interval at {fps:g} fps (target <= {max_ratio:g}x): {'met' if met else 'MISSED'}"
    )
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {
                    "fps": fps,
                    "backend": backend,
                    "threads": threads,
                    "worst_gap_ms": summary.worst_gap_ms,
                    "worst_gap_ratio": summary.worst_gap_ratio,
                    "runs": [run.__dict__ for run in summary.runs],
                },
                indent=2,
            )
            + "\n"
        )
    if not met:
        raise SystemExit(REGRESSION_EXIT)
