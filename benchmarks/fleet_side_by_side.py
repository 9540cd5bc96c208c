"""`edgefleet bench fleet` configurations side by side: runs in ABBA order, medians and ratios.

Usage (from the repository root):

    .venv/bin/python benchmarks/fleet_side_by_side.py --devices 1000 --repeats 2 \\
        --config "1 replica, SQLite=" --config "2 replicas, PostgreSQL=--replicas 2" \\
        --out benchmarks/reports/fleet-replicas

Each ``--config LABEL=ARGS`` is a set of extra arguments to ``edgefleet bench
fleet``. Repeat r runs the configurations in order when r is even and in
reverse when odd (A B B A ...), so a drift in the machine's load hits each
the same. Every run's JSON report is kept in ``--out``; ``summary.json`` and
the printed lines give each configuration's medians over its runs that
finished (a run that did not is listed apart, its work folder kept for its
logs and database; the others go on).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """The figures compared across configurations, from one run's report."""
    replicas = report["server_replicas"]
    database = report.get("database_process") or {}
    machine = report.get("machine_during_rollout") or {}
    return {
        "finished": report["rollout_status"] == "completed" and not report.get("timed_out"),
        "committed": report["committed"],
        "wall_s": report["wall_s"],
        "floor_s": report["floor_s"],
        "floor_ratio": report["floor_ratio"],
        "commit_p50_s": report["device_commit_s"]["p50"],
        "commit_max_s": report["device_commit_s"]["max"],
        "finish_lag_s": report.get("finish_lag_s"),
        "server_cpu_s": report["server"]["cpu_s"],
        "server_cpu_ms_per_device": report["server"]["cpu_ms_per_committed_device"],
        "database_cpu_ms_per_device": database.get("cpu_ms_per_committed_device"),
        "server_peak_rss_mb": report["server"]["peak_rss_mb"],
        "broker_cpu_s": (report.get("broker") or {}).get("cpu_s"),
        "chunks_served": sum(r["chunks_served"] or 0 for r in replicas),
        "reports_share": [r["reports_share"] for r in replicas],
        "replica_cpu_s": [r["cpu_s"] for r in replicas],
        "log_errors": sum(r["log_errors"] for r in replicas),
        "others_pct": machine.get("others_pct"),
    }


def _run(label: str, args: list[str], devices: int, out: Path, index: int) -> dict[str, Any]:
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    report_path = out / f"{slug}-{index}.json"
    workdir = out / f"{slug}-{index}-work"
    shutil.rmtree(workdir, ignore_errors=True)
    command = [
        sys.executable, "-m", "edgefleet", "bench", "fleet", "--devices", str(devices),
        "--json", str(report_path), "--workdir", str(workdir), *args,
    ]  # fmt: skip
    print(f"== {label} #{index}: {shlex.join(command[1:])}", flush=True)
    started = time.monotonic()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "160"},
    )
    took = round(time.monotonic() - started, 1)
    if not report_path.exists():
        tail = (result.stdout + result.stderr)[-1500:]
        print(f"   failed (exit {result.returncode}) after {took} s:\n{tail}", flush=True)
        return {"label": label, "index": index, "failed": tail, "exit": result.returncode}
    figures = _figures(json.loads(report_path.read_text()))
    if figures["finished"]:
        shutil.rmtree(workdir, ignore_errors=True)  # kept (logs, database) when it did not finish
    print(
        f"   {figures['wall_s']} s, floor {figures['floor_s']} s, ratio {figures['floor_ratio']},"
        f" server CPU {figures['server_cpu_ms_per_device']} ms/device,"
        f" others {figures['others_pct']}% (exit {result.returncode}, {took} s in all)",
        flush=True,
    )
    return {"label": label, "index": index, "exit": result.returncode, **figures}


_COMPARED = (
    "wall_s",
    "floor_s",
    "floor_ratio",
    "commit_p50_s",
    "commit_max_s",
    "finish_lag_s",
    "server_cpu_s",
    "server_cpu_ms_per_device",
    "database_cpu_ms_per_device",
    "server_peak_rss_mb",
    "broker_cpu_s",
    "chunks_served",
    "others_pct",
)
"""The figures whose medians the summary gives."""


def _summary(runs: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for label in labels:
        mine = [r for r in runs if r["label"] == label and r.get("finished")]
        summary[label] = {
            "runs": len([r for r in runs if r["label"] == label]),
            "finished": len(mine),
            "not_finished": [
                {k: r.get(k) for k in ("index", "exit", "committed", "wall_s", "failed")}
                for r in runs
                if r["label"] == label and not r.get("finished")
            ],
            **{f"median_{key}": _median([r[key] for r in mine]) for key in _COMPARED},
            "reports_share": [r["reports_share"] for r in mine],
            "log_errors": [r["log_errors"] for r in mine],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--config", action="append", required=True, metavar="LABEL=ARGS")
    parser.add_argument("--out", type=Path, default=Path("fleet-side-by-side"))
    options = parser.parse_args()
    configs = [
        (label.strip(), shlex.split(args))
        for label, _, args in (c.partition("=") for c in options.config)
    ]
    options.out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for repeat in range(options.repeats):
        for label, args in configs if repeat % 2 == 0 else configs[::-1]:
            runs.append(_run(label, args, options.devices, options.out, repeat + 1))
    summary = _summary(runs, [label for label, _ in configs])
    (options.out / "summary.json").write_text(
        json.dumps({"devices": options.devices, "runs": runs, "summary": summary}, indent=2) + "\n"
    )
    print()
    for label, figures in summary.items():
        print(f"{label}: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
