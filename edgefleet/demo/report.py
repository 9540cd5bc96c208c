"""What the demo leaves behind: ``summary.json`` (every figure it measured) and ``report.html``.

The rollout outcomes come from the fleet server's database (the same rows
``edgefleet fleet rollout status`` shows); predictions and latencies come
from the cameras' own prediction files. Nothing here is computed twice: the
HTML and the closing table are both rendered from the summary.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edge_runtime.atomic import atomic_write_text
from fleet_server.records import TimelineItem
from fleet_server.registry import Registry
from fleet_server.shadow_gate import sum_reports

__all__ = ["RolloutOutcome", "print_summary", "write_reports"]


@dataclass(frozen=True)
class DeviceOutcome:
    """Where one camera ended in one rollout, and why (the device's or the server's reason)."""

    device_id: str
    wave: int
    status: str
    reason: str | None
    events: list[str]


@dataclass(frozen=True)
class RolloutOutcome:
    """One rollout as the fleet server recorded it."""

    rollout_id: int
    version: str
    bundle_sha256: str
    previous_version: str | None
    status: str
    reason: str | None
    started_at: float
    duration_s: float
    waves: list[dict[str, Any]]
    devices: list[DeviceOutcome]
    timeline: list[str]
    shadow: dict[str, Any] | None = None
    """The shadow wave, when the rollout began with one: its cameras, verdict and figures."""

    @classmethod
    def collect(
        cls,
        registry: Registry,
        rollout_id: int,
        version: str,
        started_at: float,
        versions: Mapping[str, str],
    ) -> RolloutOutcome:
        """Read the rollout, its waves, devices and timeline from the registry."""
        info = registry.rollout(rollout_id)
        timeline = registry.timeline(rollout_id=rollout_id, limit=500)
        devices = []
        for row in registry.wave_devices(rollout_id):
            own = [
                t
                for t in timeline
                if t.device_id == row.device_id and t.kind in {"device-event", "device-refused"}
            ]
            devices.append(
                DeviceOutcome(
                    row.device_id,
                    row.wave_index,
                    row.status,
                    _device_reason(own) or row.reason,
                    [t.message for t in own],
                )
            )
        waves = [
            {
                "index": w.index,
                "status": w.status,
                "devices": list(w.device_ids),
                "started_at": w.started_at,
                "finished_at": w.finished_at,
            }
            for w in registry.waves(rollout_id)
        ]
        return cls(
            rollout_id=rollout_id,
            version=version,
            bundle_sha256=info.bundle_sha256,
            previous_version=versions.get(info.previous_sha256 or ""),
            status=info.status,
            reason=info.reason or _rollout_reason(timeline),
            started_at=started_at,
            duration_s=round(info.updated_at - started_at, 1),
            waves=waves,
            devices=sorted(devices, key=lambda d: (d.wave, d.device_id)),
            timeline=[
                f"{time.strftime('%H:%M:%S', time.localtime(t.at))} {t.message}" for t in timeline
            ],
            shadow=_shadow(registry, rollout_id),
        )

    def device_lines(self) -> list[str]:
        """One line per wave: its cameras and how each ended; failures with their reason."""
        lines = []
        for wave in self.waves:
            if self.shadow is not None and wave["index"] == 0:
                cameras = ", ".join(self.shadow["devices"])
                lines.append(f"shadow {wave['status']} on {cameras}: {self.shadow['verdict']}")
                continue
            label = _wave_name(wave["index"] - (self.shadow is not None), len(self.waves))
            outcomes = [d for d in self.devices if d.wave == wave["index"]]
            shown = ", ".join(f"{d.device_id} {d.status}" for d in outcomes)
            lines.append(f"{label} {wave['status']}: {shown}")
            for d in outcomes:
                if d.status not in {"committed", "pending"} and d.reason:
                    lines.append(f"  {d.device_id}: {d.reason}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def _device_reason(events: list[TimelineItem]) -> str | None:
    """Why the device itself rolled back or failed: the reason its last such event gives."""
    for item in reversed(events):
        data = item.data or {}
        if data.get("to") in {"rolled-back", "failed"} or item.kind == "device-refused":
            reason = data.get("reason")
            if reason:
                return str(reason)
    return None


def _rollout_reason(timeline: list[TimelineItem]) -> str | None:
    """Why the server stopped the rollout (its abort entry), if it did."""
    for item in reversed(timeline):
        if item.kind == "aborted":
            return item.message
    return None


def write_reports(workdir: Path, summary: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``summary.json`` and ``report.html`` into ``workdir``; returns their paths."""
    paths = {"summary": workdir / "summary.json", "report": workdir / "report.html"}
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2, sort_keys=False) + "\n")
    atomic_write_text(paths["report"], render_html(workdir, summary))
    return paths


def _shadow(registry: Registry, rollout_id: int) -> dict[str, Any] | None:
    state = registry.rollout_state(rollout_id)
    if state is None or state.spec.waves[0].shadow is None:
        return None
    wave = state.waves[0]
    reports = (
        []
        if wave.started_at is None
        else registry.shadow_reports(state.spec.bundle, wave.devices, wave.started_at)
    )
    return {
        "devices": list(wave.devices),
        "status": wave.status.value,
        "verdict": wave.verdict.reason if wave.verdict is not None else wave.reason,
        "figures": sum_reports(reports).as_dict(),
    }


def _wave_name(index: int, waves: int) -> str:
    if waves == 1:
        return "all"
    return "canary" if index == 0 else f"wave {index + 1}"


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(workdir: Path, summary: Mapping[str, Any]) -> str:
    """The demo's report as one self-contained HTML page (links are relative to ``workdir``)."""

    def link(path: str) -> str:
        rel = os.path.relpath(path, workdir)
        return f'<a href="{_e(rel)}">{_e(Path(path).name)}</a>'

    conversions = []
    for version, made in summary["bundles"].items():
        for c in made["conversions"]:
            conversions.append(
                [
                    _e(version),
                    _e(f"{c['format']} {c['precision']}"),
                    _e(made["epochs"]),
                    f"{100 * (c['float_accuracy'] or 0):.1f}%",
                    f"{100 * c['accuracy']:.1f}%",
                    f"{100 * (c['top1_agreement'] or 0):.1f}%",
                    f"{c['model_bytes'] / 1024:.0f} KiB",
                    f"{c['host_latency_p50_ms']:.3f} ms",
                    link(c["report"]),
                    link(c["bundle"]) if c["bundle"] else "-",
                ]
            )
    rollouts = []
    for r in summary["rollouts"]:
        shadow = r.get("shadow")
        waves = "<br>".join(
            _e(
                f"shadow {w['status']}: {', '.join(shadow['devices'])}: {shadow['verdict']}"
                if shadow is not None and w["index"] == 0
                else f"{_wave_name(w['index'] - (shadow is not None), len(r['waves']))} "
                f"{w['status']}: " + ", ".join(w["devices"])
            )
            for w in r["waves"]
        )
        why = "<br>".join(
            _e(f"{d['device_id']} {d['status']}: {d['reason']}")
            for d in r["devices"]
            if d["status"] not in {"committed", "pending"} and d["reason"]
        )
        rollouts.append(
            [
                _e(r["rollout_id"]),
                _e(r["version"]),
                _e(r["status"]) + (f"<br><small>{_e(r['reason'])}</small>" if r["reason"] else ""),
                waves,
                why or "-",
                f"{r['duration_s']:.0f} s",
            ]
        )
    devices = []
    latency = []
    for device_id, d in summary["devices"].items():
        devices.append(
            [
                _e(device_id),
                _e(d["active_version"] or "-"),
                _e(d["predictions"]),
                _e(", ".join(f"{v}: {n}" for v, n in d["predictions_by_version"].items())),
                f"{d['max_gap_s']:.2f} s",
                link(d["predictions_file"]),
            ]
        )
        for version, figures in d["latency_ms"].items():
            latency.append(
                [
                    _e(device_id),
                    _e(version),
                    _e(figures["predictions"]),
                    f"{figures['p50']:.3f}",
                    f"{figures['p95']:.3f}",
                    f"{figures['max']:.3f}",
                ]
            )
    timeline = "".join(
        f"<h3>rollout {_e(r['rollout_id'])}: {_e(r['version'])}</h3><pre>"
        + _e("\n".join(r["timeline"]))
        + "</pre>"
        for r in summary["rollouts"]
    )
    outcome = "finished" if summary["ok"] else f"<b>failed</b>: {_e(summary['error'] or 'unknown')}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgefleet demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 80em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} pre {{ background: #f7f7f7; padding: 0.6em; overflow-x: auto; }}
</style></head><body>
<h1>edgefleet demo</h1>
<p>Run {outcome} in {summary["elapsed_s"]:.0f} s ({"--fast" if summary["fast"] else "normal"};
data: {_e(summary["data"])}). Fleet server database: <code>{_e(summary["database"])}</code>;
every figure below is measured: conversions by the converter on the validation images,
rollouts from the fleet server's database, predictions and latencies from each camera's
prediction file. Machine-readable: <a href="summary.json">summary.json</a>.</p>
<h2>Conversions and parity reports</h2>
<p>Each int8 model is compared with its float model on the validation images (HTML parity
report per conversion). Latency budget on the camera: {summary["latency_budget_ms"]:g} ms.</p>
{_table(["version", "model", "epochs", "float acc", "int8 acc", "agreement", "size", "host p50", "parity report", "bundle"], conversions)}
<h2>Rollouts</h2>
{_table(["id", "version", "status", "waves", "rolled back / failed, and why", "took"], rollouts)}
<h2>Cameras</h2>
{_table(["camera", "runs", "predictions", "by version", "longest gap", "predictions file"], devices)}
<h2>Latency on the cameras</h2>
<p>Per prediction (preprocess + invoke + postprocess), from the cameras' prediction files.</p>
{_table(["camera", "version", "predictions", "p50 ms", "p95 ms", "max ms"], latency)}
<h2>Timelines</h2>
{timeline}
<p>Timings (s): {_e(json.dumps(summary["timings_s"]))}</p>
</body></html>
"""


def print_summary(summary: Mapping[str, Any], paths: Mapping[str, Path], console: Console) -> None:
    """The closing tables: what each camera runs and served, each rollout and why it ended so."""
    if summary["devices"]:
        table = Table(
            "camera",
            "runs",
            "predictions",
            "by version",
            "longest gap",
            "p50 ms (last version)",
            title="Cameras",
            title_justify="left",
        )
        for device_id, d in summary["devices"].items():
            last = d["latency_ms"].get(d["active_version"] or "", {})
            table.add_row(
                device_id,
                d["active_version"] or "-",
                str(d["predictions"]),
                ", ".join(f"{v}: {n}" for v, n in d["predictions_by_version"].items()),
                f"{d['max_gap_s']:.2f} s",
                f"{last['p50']:.3f}" if last else "-",
            )
        console.print(table)
    if summary["rollouts"]:
        table = Table("rollout", "version", "status", "why", title="Rollouts", title_justify="left")
        for r in summary["rollouts"]:
            reasons = [
                f"{d['device_id']} {d['status']}: {d['reason']}"
                for d in r["devices"]
                if d["status"] not in {"committed", "pending"} and d["reason"]
            ]
            table.add_row(
                str(r["rollout_id"]),
                r["version"],
                r["status"],
                "\n".join(filter(None, [r["reason"], *reasons])) or "-",
            )
        console.print(table)
    _print_field_data(summary.get("field_data"), console)
    state = "[green]done[/]" if summary["ok"] else f"[red]failed[/]: {summary['error']}"
    console.print(
        f"{state} in {summary['elapsed_s']:.0f} s. Report: {paths['report']}  "
        f"summary: {paths['summary']}"
    )


def _print_field_data(field_data: Mapping[str, Any] | None, console: Console) -> None:
    """Where the uncertain frames the cameras collected went (a folder per answer)."""
    if not field_data:
        return
    answers = ", ".join(f"{k}: {n}" for k, n in field_data["by_answer"].items()) or "none"
    console.print(
        f"Uncertain frames: {field_data['samples']} collected on {field_data['group']} "
        f"(confidence under {field_data['below_confidence']:.0%}) -> [bold]{field_data['folder']}[/] "
        f"(folders by the cameras' answers: {answers}; confirm or correct them with "
        "`edgefleet fleet field-data label`, then the folder is a parity set)",
        soft_wrap=True,
    )
