"""The fleet benchmark's report: a JSON-ready dict, and the tables the command prints."""

from __future__ import annotations

import os
import platform
import statistics
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime import __version__
from edgefleet.rollout_benchmark.sampling import machine_window

if TYPE_CHECKING:
    from edgefleet.rollout_benchmark.counters import Counters
    from edgefleet.rollout_benchmark.engine import Measured

__all__ = ["TARGET_S", "build_report", "render_report"]

TARGET_S = 60.0
"""Issue #6's target: a staged rollout to 1,000 devices in a minute."""


def _spread(values: list[float]) -> dict[str, float]:
    times = np.asarray(values) if values else np.asarray([np.nan])
    return {
        "min": round(float(np.min(times)), 2),
        "p50": round(float(np.percentile(times, 50)), 2),
        "p90": round(float(np.percentile(times, 90)), 2),
        "max": round(float(np.max(times)), 2),
    }


def build_report(m: Measured) -> dict[str, Any]:
    """The report of one run (what ``--json`` writes)."""
    options = m.options
    bundle_bytes = m.bundle_path.stat().st_size
    committed = len(m.commit_times)
    window = (m.started, m.finished)
    counters: list[Counters | None] = [*m.counters] or [None] * len(m.replicas)
    replicas = [
        _replica(replica.replica_id, sampler.window(*window), sampler.peak_rss, counted)
        | dict(zip(("log_errors", "first_log_error"), replica.log_errors(), strict=True))
        for replica, sampler, counted in zip(m.replicas, m.servers, counters, strict=True)
    ]
    _shares(replicas)
    server_cpu = round(sum(r["cpu_s"] for r in replicas), 2)
    database = m.database_sampler.window(*window) if m.database_sampler is not None else None
    floors = [
        f.as_dict() | {"broker": m.broker.window(*f.window) if m.broker is not None else None}
        for f in m.floors
    ]
    timed = [f.seconds for f in m.floors if f.seconds is not None]
    floor_s = statistics.fmean(timed) if timed and len(timed) == len(m.floors) else None
    ratio = round(m.elapsed / floor_s, 2) if floor_s else None

    def per_device(cpu: float) -> float | None:
        return round(1000 * cpu / committed, 1) if committed else None

    status = m.view.get("status")
    ours = sum(
        s.window(*window)["cpu_s"]
        for s in [*m.servers, *m.simulators, m.broker, m.database_sampler]
        if s is not None
    )
    return {
        "benchmark": "fleet-rollout",
        "devices": options.devices,
        "replicas": options.replicas,
        "database": m.database,
        "bundle_bytes": bundle_bytes,
        "bundle": "synthetic payload" if options.bundle is None else str(options.bundle),
        "bundle_sha256": m.bundle_sha256,
        "rollout_status": status,
        "timed_out": m.timed_out,
        "device_counts": m.view.get("counts") or {},
        "committed": committed,
        "wall_s": round(m.elapsed, 2),
        "floor_s": None if floor_s is None else round(floor_s, 4),
        "floor_ratio": ratio,
        "target_s": TARGET_S,
        "met": bool(
            status == "completed" and committed == options.devices and m.elapsed <= TARGET_S
        ),
        "device_commit_s": _spread(m.commit_times),
        "finish_lag_s": round(m.elapsed - m.commit_times[-1], 2) if m.commit_times else None,
        "delivered_mb": round(committed * bundle_bytes / 1e6, 1),
        "device_fetch": _fetches(m.fetches),
        "server": {
            "cpu_s": server_cpu,
            "cpu_ms_per_committed_device": per_device(server_cpu),
            "peak_rss_mb": round(sum(r["peak_rss_mb"] for r in replicas), 1),
            "peak_rss_mb_run": round(sum(r["peak_rss_mb_run"] for r in replicas), 1),
            "cpu_mean_pct": round(sum(r["cpu_mean_pct"] for r in replicas), 1),
            "cpu_peak_pct": max(r["cpu_peak_pct"] for r in replicas),
        },
        "server_replicas": replicas,
        "database_process": None
        if database is None
        else database | {"cpu_ms_per_committed_device": per_device(database["cpu_s"])},
        "broker": m.broker.window(*window) if m.broker is not None else None,
        "floor": {
            "runs": floors,
            "what": (
                "the same bundle bytes, cut into the same chunks, published once (QoS 1, at most"
                " WINDOW awaiting PUBACK) through the same broker to as many plain paho"
                " subscribers as devices, laid out as the simulated fleet"
            ),
        },
        "simulator": {
            "processes": len(m.simulators),
            "cpu_s": round(sum(p.window(*window)["cpu_s"] for p in m.simulators), 2),
        },
        "device_errors": len(m.errors),
        "device_error_samples": m.errors[:5],
        "environment": {
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "edgefleet": __version__,
        },
        "machine_during_rollout": None if m.machine is None else machine_window(*m.machine, ours),
        "waves": ["canary", "100%"],
        "notes": "health windows 0 s and no quality gate: simulated devices send no telemetry",
    }


def _fetches(fetches: list[tuple[int, int, int]]) -> dict[str, Any] | None:
    """What the devices' downloads took: requests, and chunk messages received (duplicates too)."""
    if not fetches:
        return None
    requests = [f[0] for f in fetches]
    received = [f[1] + f[2] for f in fetches]
    duplicates = sum(f[2] for f in fetches)
    return {
        "requests": sum(requests),
        "requests_per_device_max": max(requests),
        "chunk_messages": sum(received),
        "chunk_messages_per_device": _spread([float(r) for r in received]),
        "duplicate_chunks": duplicates,
        "duplicate_share": round(duplicates / max(1, sum(received)), 3),
    }


def _replica(
    replica_id: str, window: dict[str, float], peak_rss: int, counters: Counters | None
) -> dict[str, Any]:
    def total(name: str) -> int | None:
        return None if counters is None else counters.total(name)

    chunk_bytes = total("chunk_bytes_served")
    return {
        "id": replica_id,
        **window,
        "peak_rss_mb_run": round(peak_rss / 2**20, 1),
        "reports": total("reports"),
        "reports_by_kind": None if counters is None else counters.by_label("reports"),
        "reports_dropped": total("reports_dropped"),
        "chunk_requests": total("chunk_requests"),
        "chunks_served": total("chunks_served"),
        "chunk_mb_served": None if chunk_bytes is None else round(chunk_bytes / 1e6, 1),
    }


def _shares(replicas: list[dict[str, Any]]) -> None:
    """Each replica's share of the reports and chunk requests all replicas handled."""
    for key in ("reports", "chunk_requests"):
        counts = [r[key] for r in replicas]
        total = sum(c for c in counts if c is not None)
        for replica, count in zip(replicas, counts, strict=True):
            replica[f"{key}_share"] = (
                None if count is None or not total else round(count / total, 3)
            )


def render_report(report: dict[str, Any], console: Any) -> None:
    """Print the summary table, and the replicas' table, of one report."""
    from rich.table import Table

    table = Table("figure", "value", title=f"Rollout to {report['devices']} simulated devices")
    commit, server, broker = report["device_commit_s"], report["server"], report["broker"]
    replicas = report["replicas"]
    table.add_row("bundle", f"{report['bundle_bytes'] / 1e6:.2f} MB ({report['bundle']})")
    table.add_row(
        "servers",
        f"{replicas} edgefleet serve process{'es' if replicas > 1 else ''}, {report['database']}",
    )
    counts = report["device_counts"]
    told = "" if counts == {"committed": report["committed"]} else f" (the servers count {counts})"
    table.add_row(
        "rollout",
        f"{report['rollout_status']}, {report['committed']} devices say committed{told}",
    )
    if report["timed_out"]:
        table.add_row(
            "start -> all committed", f"[red]not finished after {report['wall_s']:.0f} s[/]"
        )
    else:
        table.add_row("start -> all committed", f"{report['wall_s']:.1f} s (target <= 60 s)")
    for floor in report["floor"]["runs"]:
        wall = "incomplete" if floor["wall_s"] is None else _seconds(floor["wall_s"])
        table.add_row(
            f"transport floor ({floor['when']})",
            f"{wall}: {floor['chunks']} chunks to each of {floor['subscribers']} plain subscribers"
            + (f" ({floor['error']})" if floor["error"] else ""),
        )
    if report["floor_ratio"] is not None:
        table.add_row(
            "[bold]rollout / floor[/]",
            f"[bold]{report['floor_ratio']:.2f}[/] (floor {_seconds(report['floor_s'])})",
        )
    table.add_row(
        "device commit first / p50 / p90 / max",
        f"{commit['min']} / {commit['p50']} / {commit['p90']} / {commit['max']} s",
    )
    if report["finish_lag_s"] is not None:
        table.add_row("last commit -> rollout finished", f"{report['finish_lag_s']} s")
    table.add_row("delivered", f"{report['delivered_mb']} MB")
    fetch = report["device_fetch"]
    if fetch is not None:
        per = fetch["chunk_messages_per_device"]
        table.add_row(
            "chunk messages per device p50 / max",
            f"{per['p50']:.0f} / {per['max']:.0f} ({100 * fetch['duplicate_share']:.0f}% duplicates;"
            f" {fetch['requests']} requests)",
        )
    table.add_row(
        "server CPU / per committed device",
        f"{server['cpu_s']} s / {server['cpu_ms_per_committed_device']} ms"
        f" (mean {server['cpu_mean_pct']}%, peak {server['cpu_peak_pct']}% of a core)",
    )
    table.add_row("server peak RSS", f"{server['peak_rss_mb']} MB")
    database = report["database_process"]
    if database is not None:
        table.add_row(
            "PostgreSQL CPU / per device / RSS",
            f"{database['cpu_s']} s / {database['cpu_ms_per_committed_device']} ms"
            f" / {database['peak_rss_mb']} MB (all its processes)",
        )
    if broker is not None:
        table.add_row(
            "mosquitto peak RSS / CPU",
            f"{broker['peak_rss_mb']} MB / {broker['cpu_s']} s (mean {broker['cpu_mean_pct']}%)",
        )
    sim = report["simulator"]
    processes = f"{sim['processes']} process{'es' if sim['processes'] != 1 else ''}"
    table.add_row("simulator CPU", f"{sim['cpu_s']} s in {processes}")
    table.add_row("device errors", str(report["device_errors"]))
    machine = report["machine_during_rollout"]
    if machine is not None:
        table.add_row(
            "machine during the rollout",
            f"{machine['busy_pct']}% busy, {machine['others_pct']}% by other work"
            f" ({machine['others_cpu_s']} CPU s); load {machine['load_1m_start']}"
            f" -> {machine['load_1m_end']}",
        )
    console.print(table)
    console.print(_replicas_table(report))
    console.print("[green]target met[/]" if report["met"] else "[red]target missed[/]")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{1000 * value:.0f} ms"


def _replicas_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    def share(count: int | None, fraction: float | None) -> str:
        if count is None:
            return "not on /metrics"
        return f"{count}" + ("" if fraction is None else f" ({100 * fraction:.0f}%)")

    table = Table(
        "replica",
        "CPU s",
        "peak RSS MB",
        "reports (share)",
        "by kind",
        "chunk requests (share)",
        "chunks served",
        "errors logged",
        title="Each server over the rollout",
    )
    for r in report["server_replicas"]:
        kinds = r["reports_by_kind"]
        table.add_row(
            r["id"],
            f"{r['cpu_s']}",
            f"{r['peak_rss_mb']}",
            share(r["reports"], r["reports_share"]),
            "-" if not kinds else ", ".join(f"{k} {v}" for k, v in kinds.items()),
            share(r["chunk_requests"], r["chunk_requests_share"]),
            "-"
            if r["chunks_served"] is None
            else f"{r['chunks_served']} ({r['chunk_mb_served']} MB)",
            f"[red]{r['log_errors']}[/]" if r["log_errors"] else "0",
        )
    return table
