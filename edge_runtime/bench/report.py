"""The latency report as typed data: what ``bench latency`` writes and ``bench compare`` reads.

One JSON document (schema ``edgefleet.bench.latency/1``) holds the
environment, the settings and one :class:`ConfigResult` per bundle x backend
x threads, including the raw samples, so a later comparison can bootstrap
from them. The CSV is the same results flattened to one row each.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.bench.stats import LatencySummary as Summary
from edge_runtime.errors import ConfigError

__all__ = [
    "SCHEMA",
    "BareComparison",
    "BenchReport",
    "ConfigResult",
    "EnvironmentInfo",
    "Samples",
    "SingleStream",
    "StageBreakdown",
    "Summary",
    "load_report",
    "report_csv",
    "write_report",
]

SCHEMA: Final = "edgefleet.bench.latency/1"
STAGE_NAMES = ("decode", "preprocess", "invoke", "postprocess", "end_to_end")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageBreakdown(_Model):
    """Per-stage latency; ``decode`` is absent for frames that need none (synthetic)."""

    decode: Summary | None
    preprocess: Summary
    invoke: Summary
    postprocess: Summary
    end_to_end: Summary


class BareComparison(_Model):
    """Our invoke stage against the bare runtime invoke measured alternately in the same run."""

    bare_invoke: Summary
    invoke_ratio: float = Field(description="median(our invoke) / median(bare invoke)")
    invoke_ratio_low: float
    invoke_ratio_high: float
    end_to_end_ratio: float = Field(description="median(end to end) / median(bare invoke)")
    tolerance: float
    matches_bare: bool = Field(
        description="the ratio's 95% bootstrap interval reaches within 1 +- tolerance"
    )


class SingleStream(_Model):
    """MLPerf-style single-stream result: p90 of back-to-back queries, and whether it is valid."""

    p90_ms: float
    queries: int
    duration_s: float
    min_queries: int
    min_duration_s: float
    valid: bool


class Samples(_Model):
    """Raw warm measurements in milliseconds, in the order they were taken."""

    end_to_end: list[float]
    invoke: list[float]
    bare_invoke: list[float]


class ConfigResult(_Model):
    """Everything measured for one bundle x backend x thread count."""

    bundle: str
    bundle_name: str
    bundle_version: str
    bundle_sha256: str
    format: str
    precision: str
    input_size: str
    backend: str
    threads: int
    xnnpack: bool | None
    load_ms: float
    init_ms: float
    first_inference_ms: float
    warmup: int
    runs: int
    duration_s: float
    stages: StageBreakdown
    bare: BareComparison
    throughput_fps: float
    cpu_percent: float
    peak_rss_mb: float | None
    accuracy: float | None
    accuracy_images: int
    budget_p95_ms: float | None
    budget_pass: bool | None
    single_stream: SingleStream | None
    samples: Samples

    @property
    def key(self) -> str:
        """What makes two reports' results the same configuration (not the bundle's hash)."""
        return f"{self.bundle_name} {self.format} {self.precision} {self.backend} x{self.threads}"


class EnvironmentInfo(_Model):
    """The machine and libraries, as collected on the device."""

    cpu_model: str
    logical_cores: int
    usable_cores: int
    machine: str
    system: str
    python: str
    libraries: dict[str, str]


class BenchReport(_Model):
    """A whole ``bench latency`` run."""

    schema_: Literal["edgefleet.bench.latency/1"] = Field(default=SCHEMA, alias="schema")
    created_at: str
    inputs: str
    profile: str | None
    settings: dict[str, Any]
    environment: EnvironmentInfo
    results: list[ConfigResult]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> str:
        """The report as indented JSON."""
        return self.model_dump_json(indent=2, by_alias=True) + "\n"


def load_report(path: Path) -> BenchReport:
    """Read a report written by ``bench latency``; :class:`ConfigError` naming the problem if not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read bench report {path}: {exc}") from exc
    try:
        return BenchReport.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path} is not a bench latency report ({SCHEMA}): {where}: {first['msg']}"
        ) from exc


_CSV_FIELDS = (
    "bundle", "bundle_name", "bundle_version", "format", "precision", "input_size", "backend",
    "threads", "xnnpack", "load_ms", "init_ms", "first_inference_ms", "runs", "duration_s",
)  # fmt: skip


def _row(result: ConfigResult) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(result, name) for name in _CSV_FIELDS}
    for stage in STAGE_NAMES:
        summary: Summary | None = getattr(result.stages, stage)
        for stat in ("min", "mean", "std", "p50", "p90", "p95", "p99", "max"):
            row[f"{stage}_{stat}_ms"] = "" if summary is None else round(getattr(summary, stat), 4)
    bare = result.bare
    row.update(
        bare_invoke_p50_ms=round(bare.bare_invoke.p50, 4),
        invoke_vs_bare=round(bare.invoke_ratio, 4),
        invoke_vs_bare_low=round(bare.invoke_ratio_low, 4),
        invoke_vs_bare_high=round(bare.invoke_ratio_high, 4),
        end_to_end_vs_bare=round(bare.end_to_end_ratio, 4),
        matches_bare=bare.matches_bare,
        throughput_fps=round(result.throughput_fps, 3),
        cpu_percent=round(result.cpu_percent, 1),
        peak_rss_mb=result.peak_rss_mb,
        accuracy=result.accuracy,
        accuracy_images=result.accuracy_images,
        budget_p95_ms=result.budget_p95_ms,
        budget_pass=result.budget_pass,
        single_stream_p90_ms=result.single_stream.p90_ms if result.single_stream else "",
        single_stream_valid=result.single_stream.valid if result.single_stream else "",
        bundle_sha256=result.bundle_sha256,
    )
    return {k: "" if v is None else v for k, v in row.items()}


def report_csv(report: BenchReport) -> str:
    """One CSV row per configuration (samples left out)."""
    rows = [_row(r) for r in report.results]
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def write_report(report: BenchReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``latency.json`` and ``latency.csv`` into ``out_dir`` atomically; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "latency.json", out_dir / "latency.csv"
    atomic_write_bytes(json_path, report.to_json().encode())
    atomic_write_bytes(csv_path, report_csv(report).encode())
    return json_path, csv_path
