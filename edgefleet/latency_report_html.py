"""The HTML report of ``edgefleet bench latency``, with PNG plots drawn by matplotlib.

Lives outside ``edge_runtime`` so a device needs no plotting library:
matplotlib comes with the ``plot`` extra. Without it the HTML is still
written (tables only) and :class:`PlotsUnavailableError` says what to install.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.atomic import atomic_write_text
from edge_runtime.bench.report import BenchReport, ConfigResult
from edge_runtime.errors import EdgefleetError

__all__ = ["PLOTS", "PlotsUnavailableError", "write_html_report", "write_plots"]

PLOTS = ("latency-cdf.png", "fp32-vs-int8.png", "stages.png")
_STAGES = ("decode", "preprocess", "invoke", "postprocess")
_DPI = 72
_RESULT_HEADERS = (
    "bundle", "format", "precision", "backend", "threads", "init", "first", "min", "mean ± std",
    "p50", "p90", "p95", "p99", "max", "invoke p50", "bare p50", "invoke/bare", "fps", "CPU",
    "peak RSS MB", "accuracy", "budget", "runs",
)  # fmt: skip


class PlotsUnavailableError(EdgefleetError):
    """matplotlib is not installed (the ``plot`` extra)."""


def _label(r: ConfigResult) -> str:
    return f"{r.format} {r.precision} {r.backend} x{r.threads}"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotsUnavailableError(
            "plots need matplotlib, which is in the 'plot' extra: pip install 'edgefleet[plot]'"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: BenchReport, out_dir: Path) -> list[Path]:
    """Latency CDFs, fp32 vs int8 bars and per-stage stacked bars as PNGs in ``out_dir``."""
    plt = _pyplot()
    paths = [out_dir / name for name in PLOTS]
    _cdf(plt, report.results, paths[0])
    _precision_bars(plt, report.results, paths[1])
    _stage_bars(plt, report.results, paths[2])
    return paths


def _cdf(plt: Any, results: list[ConfigResult], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for r in results:
        data = np.sort(np.asarray(r.samples.end_to_end))
        ax.plot(data, np.arange(1, data.size + 1) / data.size, label=_label(r), linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency per frame, ms (log)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Latency CDF per configuration")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def _precision_bars(plt: Any, results: list[ConfigResult], path: Path) -> None:
    groups = sorted({(r.bundle_name, r.format, r.backend, r.threads) for r in results})
    precisions = sorted({r.precision for r in results}, key=lambda p: (p != "fp32", p))
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / max(1, len(precisions))
    for i, precision in enumerate(precisions):
        p50, p95 = [], []
        for name, fmt, backend, threads in groups:
            match = [
                r
                for r in results
                if (r.bundle_name, r.format, r.backend, r.threads, r.precision)
                == (name, fmt, backend, threads, precision)
            ]
            p50.append(match[0].stages.end_to_end.p50 if match else np.nan)
            p95.append(match[0].stages.end_to_end.p95 if match else np.nan)
        x = np.arange(len(groups)) + i * width
        ax.bar(x, p50, width, label=f"{precision} p50")
        ax.errorbar(
            x, p50, yerr=[np.zeros(len(p50)), np.subtract(p95, p50)], fmt="none", ecolor="black"
        )
    ax.set_xticks(np.arange(len(groups)) + width * (len(precisions) - 1) / 2)
    ax.set_xticklabels([f"{f} {b}\nx{t}" for _, f, b, t in groups], fontsize=8)
    ax.set_ylabel("end-to-end ms (bar p50, whisker p95)")
    ax.set_title("fp32 vs int8")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def _stage_bars(plt: Any, results: list[ConfigResult], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.42 * len(results)))
    y = np.arange(len(results))
    left = np.zeros(len(results))
    for stage in _STAGES:
        values = np.array(
            [
                getattr(r.stages, stage).p50 if getattr(r.stages, stage) is not None else 0.0
                for r in results
            ]
        )
        ax.barh(y, values, left=left, label=stage)
        left += values
    ax.scatter(
        [r.bare.bare_invoke.p50 for r in results],
        y,
        marker="|",
        s=250,
        color="black",
        label="bare invoke p50",
        zorder=3,
    )
    ax.set_yticks(y)
    ax.set_yticklabels([_label(r) for r in results], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame (stage p50)")
    ax.set_title("Per-stage breakdown", pad=22)
    ax.legend(fontsize=7, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _results_rows(report: BenchReport) -> list[list[str]]:
    rows = []
    for r in report.results:
        e, b = r.stages.end_to_end, r.bare
        budget = "-"
        if r.budget_p95_ms is not None:
            budget = f"{'pass' if r.budget_pass else 'FAIL'} (p95 ≤ {r.budget_p95_ms:g})"
        rows.append(
            [
                f"{r.bundle_name} {r.bundle_version}",
                r.format,
                r.precision,
                r.backend + (" (XNNPACK)" if r.xnnpack else ""),
                str(r.threads),
                _f(r.init_ms, 1),
                _f(r.first_inference_ms),
                _f(e.min),
                f"{_f(e.mean)} ± {_f(e.std)}",
                _f(e.p50),
                _f(e.p90),
                _f(e.p95),
                _f(e.p99),
                _f(e.max),
                _f(r.stages.invoke.p50),
                _f(b.bare_invoke.p50),
                f"{b.invoke_ratio:.3f} [{b.invoke_ratio_low:.3f}, {b.invoke_ratio_high:.3f}]"
                + ("" if b.matches_bare else " !"),
                f"{r.throughput_fps:.1f}",
                f"{r.cpu_percent:.0f}%",
                _f(r.peak_rss_mb, 0),
                "-" if r.accuracy is None else f"{100 * r.accuracy:.1f}% of {r.accuracy_images}",
                budget,
                str(r.runs),
            ]
        )
    return rows


def _stage_rows(report: BenchReport) -> list[list[str]]:
    rows = []
    for r in report.results:
        cells = [_label(r)]
        for stage in (*_STAGES, "end_to_end"):
            s = getattr(r.stages, stage)
            cells.append("-" if s is None else f"{s.p50:.3f} / {s.p95:.3f}")
        rows.append(cells)
    return rows


def write_html_report(report: BenchReport, out_dir: Path, *, plots: bool = True) -> Path:
    """Write ``report.html`` (and, with ``plots``, the PNGs it shows) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = write_plots(report, out_dir) if plots else []
    env = report.environment
    libraries = ", ".join(f"{k} {v}" for k, v in sorted(env.libraries.items()))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>edgefleet latency report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px;margin:0.6em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#f0f0f0}td:first-child{text-align:left}img{max-width:100%}</style>",
        "</head><body><h1>edgefleet latency report</h1>",
        f"<p>{html.escape(report.created_at)} &middot; inputs: {html.escape(report.inputs)}"
        + (f" &middot; profile: {html.escape(report.profile)}" if report.profile else "")
        + "</p>",
        f"<p><b>Machine</b>: {html.escape(env.cpu_model)}, {env.logical_cores} logical cores "
        f"({env.usable_cores} usable), {html.escape(env.machine)}, {html.escape(env.system)}, "
        f"Python {html.escape(env.python)}<br><b>Libraries</b>: {html.escape(libraries)}</p>",
        f"<p><b>Command</b>: <code>{html.escape(str(report.settings.get('command', '')))}</code></p>",
        "<h2>Results</h2><p>Milliseconds per frame, end to end = decode + preprocess + invoke "
        "+ postprocess. <i>bare</i> is the runtime's own invoke on one fixed preprocessed tensor, "
        "measured in blocks alternating with the pipeline's; <i>invoke/bare</i> is the ratio of "
        "medians with its 95% bootstrap interval (! marks an interval outside "
        f"1 &plusmn; {report.results[0].bare.tolerance if report.results else 0.05:g}). "
        "CPU % is process CPU time over wall time during the pipeline blocks (100% = one core). "
        "Peak RSS is the whole bench process, reset before each configuration.</p>",
        _table(list(_RESULT_HEADERS), _results_rows(report)),
        "<h2>Per-stage latency (p50 / p95, ms)</h2>",
        _table(
            ["configuration", *_STAGES, "end to end"],
            _stage_rows(report),
        ),
    ]
    singles = [r for r in report.results if r.single_stream is not None]
    if singles:
        parts.append("<h2>Single stream (MLPerf-style)</h2>")
        parts.append(
            _table(
                ["configuration", "p90 (headline)", "queries", "duration s", "valid"],
                [
                    [
                        _label(r),
                        f"{r.single_stream.p90_ms:.3f}",
                        f"{r.single_stream.queries} (min {r.single_stream.min_queries})",
                        f"{r.single_stream.duration_s:.1f} (min {r.single_stream.min_duration_s:g})",
                        "VALID" if r.single_stream.valid else "INVALID",
                    ]
                    for r in singles
                    if r.single_stream is not None
                ],
            )
        )
    if images:
        parts.append("<h2>Plots</h2>")
        parts.extend(f"<p><img src='{p.name}' alt='{p.stem}'></p>" for p in images)
    else:
        parts.append(
            "<p><i>No plots: matplotlib is not installed (pip install 'edgefleet[plot]').</i></p>"
        )
    parts.append("</body></html>\n")
    path = out_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
