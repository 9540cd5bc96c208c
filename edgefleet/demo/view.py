"""The operator's live view: cameras, the versions they run, the rollout's waves, recent events."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edgefleet.demo.predictions import PredictionLog
from fleet_server.registry import Registry
from fleet_server.shadow_gate import sum_reports

__all__ = ["FleetView"]

_STATUS_STYLE = {
    "completed": "green",
    "passed": "green",
    "skipped": "dim",
    "committed": "green",
    "running": "yellow",
    "sent": "yellow",
    "in-progress": "yellow",
    "watching": "yellow",
    "pending": "dim",
    "failed": "red",
    "aborted": "red",
    "rolled-back": "red",
    "timed-out": "red",
}


def _styled(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


@dataclass
class FleetView:
    """Renders the fleet from the server's database and the cameras' predictions."""

    registry: Registry
    logs: Mapping[str, PredictionLog]
    versions: Mapping[str, str]
    """bundle sha256 -> version, for people."""
    step: str = ""
    rollout_id: int | None = None
    started: float = field(default_factory=time.monotonic)
    _rates: dict[str, tuple[float, int]] = field(default_factory=dict)

    def version(self, sha256: str | None) -> str:
        """A bundle's version, or '-'."""
        if sha256 is None:
            return "-"
        return self.versions.get(sha256, sha256[:12])

    def render(self) -> RenderableType:
        """The whole view, fresh from the database."""
        parts: list[RenderableType] = [self._devices()]
        if self.rollout_id is not None:
            parts.append(self._rollout(self.rollout_id))
        parts.append(self._events())
        title = f"edgefleet demo: {self.step}  ({time.monotonic() - self.started:.0f} s)"
        return Panel(Group(*parts), title=title, title_align="left")

    def _rate(self, device_id: str, count: int) -> float:
        now = time.monotonic()
        then, before = self._rates.get(device_id, (now, count))
        if now - then >= 2.0 or device_id not in self._rates:
            self._rates[device_id] = (now, count)
        return (count - before) / (now - then) if now > then else 0.0

    def _devices(self) -> Table:
        table = Table(
            "camera", "link", "update phase", "runs", "target", "predictions", "per s", box=None
        )
        for device in self.registry.devices():
            log = self.logs.get(device.id)
            count = log.count if log is not None else 0
            table.add_row(
                device.id,
                Text(device.availability, style="" if device.availability == "online" else "red"),
                device.phase or "-",
                self.version(device.active_bundle),
                self.version(device.target_bundle),
                str(count),
                f"{self._rate(device.id, count):.1f}",
            )
        return table

    def _rollout(self, rollout_id: int) -> Table:
        info = self.registry.rollout(rollout_id)
        statuses = {d.device_id: d.status for d in self.registry.wave_devices(rollout_id)}
        table = Table(
            "wave",
            "status",
            "cameras",
            box=None,
            title=f"rollout {rollout_id}: {self.version(info.bundle_sha256)} "
            f"(rollback to {self.version(info.previous_sha256)}): {info.status}"
            + (f" - {info.reason}" if info.reason else ""),
            title_justify="left",
        )
        waves = self.registry.waves(rollout_id)
        shadow = self._shadow(rollout_id)
        for wave in waves:
            if shadow is not None and wave.index == 0:
                table.add_row("shadow", _styled(wave.status), shadow)
                continue
            cameras = Text(", ").join(
                Text(
                    f"{d} {statuses.get(d, '?')}", style=_STATUS_STYLE.get(statuses.get(d, ""), "")
                )
                for d in wave.device_ids
            )
            table.add_row(
                "all"
                if len(waves) == 1
                else "canary"
                if wave.index == (0 if shadow is None else 1)
                else f"wave {wave.index + 1}",
                _styled(wave.status),
                cameras,
            )
        return table

    def _shadow(self, rollout_id: int) -> Text | None:
        """A shadow wave's cameras and what they saw: agreement with the active version."""
        state = self.registry.rollout_state(rollout_id)
        if state is None or state.spec.waves[0].shadow is None:
            return None
        wave, stage = state.waves[0], state.spec.waves[0].shadow
        cameras = ", ".join(wave.devices)
        if wave.started_at is None:
            return Text(f"{cameras}: not started")
        figures = sum_reports(
            self.registry.shadow_reports(state.spec.bundle, wave.devices, wave.started_at)
        )
        if figures.agreement is None:
            return Text(
                f"{cameras}: {self.version(state.spec.bundle)} starting beside the active version"
            )
        candidate = figures.mean(figures.candidate_confidence_sum) or 0.0
        active = figures.mean(figures.active_confidence_sum) or 0.0
        return Text(
            f"{cameras}: {self.version(state.spec.bundle)} agrees with the active version on "
            f"{figures.agreement:.0%} of {figures.compared} frames (needs {stage.min_agreement:.0%}); "
            f"confidence {candidate:.0%} vs {active:.0%}"
        )

    def _events(self) -> Table:
        table = Table(box=None)
        table.add_column("recent events", no_wrap=True, overflow="ellipsis")
        for item in self.registry.timeline(limit=6):
            stamp = time.strftime("%H:%M:%S", time.localtime(item.at))
            who = item.device_id
            message = (
                item.message
                if who is None or item.message.startswith(who)
                else f"{who} {item.message}"
            )
            table.add_row(f"{stamp} {message}")
        return table
