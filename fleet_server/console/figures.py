"""What the console shows of devices, pure: health in one word, the versions a device ran, telemetry
series for its charts.

Plain values in, plain values out (no database, no clock): the registry's
read side (:mod:`fleet_server.registry.console_views`) hands rows here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleet_server.records import TimelineItem
from fleet_server.statuses import WORKING_PHASES
from fleet_server.telemetry import TelemetrySample, device_figures, read_sample

__all__ = [
    "STALE_AFTER_S",
    "DeviceFigures",
    "DeviceState",
    "Health",
    "VersionRun",
    "class_shares",
    "device_health",
    "latest_figures",
    "telemetry_series",
    "version_runs",
]

STALE_AFTER_S = 300.0
"""An online device that sent nothing for this long is shown ``silent``."""
ERROR_RATE_WARN = 0.01
"""Inference errors per attempt over which a device is shown ``errors`` (the gate's default)."""

_SERVING = frozenset({"activating", "probation", "committed"})
_WORKING = frozenset(phase.value for phase in WORKING_PHASES)
"""Phases in which a new bundle classifies the line's frames."""


class DeviceState(Protocol):
    """What health is judged on: a :class:`~fleet_server.records.DeviceInfo`, or a row of it."""

    @property
    def availability(self) -> str: ...
    @property
    def last_seen(self) -> float | None: ...
    @property
    def phase(self) -> str | None: ...
    @property
    def last_event_reason(self) -> str | None: ...


@dataclass(frozen=True)
class Health:
    """One word for a table cell (``ok``, ``updating``, ``errors``, ...) and why, for its title."""

    status: str
    reason: str


@dataclass(frozen=True)
class DeviceFigures:
    """The model's field figures from a device's newest telemetry snapshot.

    ``latency_p95_ms`` and ``mean_confidence`` are the device's own recent
    figures; ``uncertain_rate`` and ``error_rate`` count since the device
    started (running totals); ``bundle`` is what the snapshot was served by.
    """

    at: float
    latency_p95_ms: float | None
    mean_confidence: float | None
    uncertain_rate: float | None
    error_rate: float | None
    predictions_per_s: float | None
    bundle: str | None


def latest_figures(at: float, snapshot: Mapping[str, Any]) -> DeviceFigures:
    """The figures of one snapshot (a device's newest) received at ``at``."""
    sample = read_sample(snapshot, at)
    frames = sample.frames or 0.0
    errors = sample.errors or 0.0
    bundle = snapshot.get("bundle")
    return DeviceFigures(
        at=at,
        latency_p95_ms=sample.latency_p95_ms,
        mean_confidence=sample.mean_confidence,
        uncertain_rate=(sample.uncertain or 0.0) / frames if frames > 0 else None,
        error_rate=errors / (frames + errors) if frames + errors > 0 else None,
        predictions_per_s=sample.fps,
        bundle=bundle if isinstance(bundle, str) else None,
    )


def device_health(device: DeviceState, figures: DeviceFigures | None, now: float) -> Health:
    """How the device is doing, first problem first: link, update, silence, errors."""
    if device.availability == "unknown" or device.last_seen is None:
        return Health("unknown", "never seen by this server")
    error_rate = None if figures is None else figures.error_rate
    checks = (
        (device.availability == "offline", "offline", "its MQTT link is down (Last Will received)"),
        (
            device.phase == "rolled-back",
            "rolled-back",
            "back on its last good bundle: "
            + (device.last_event_reason or "its last update failed"),
        ),
        (device.phase in _WORKING, "updating", f"update in progress ({device.phase})"),
        (
            now - device.last_seen > STALE_AFTER_S,
            "silent",
            f"nothing received for {now - device.last_seen:.0f} s",
        ),
        (
            (error_rate or 0.0) > ERROR_RATE_WARN,
            "errors",
            f"inference errors on {100 * (error_rate or 0.0):.1f}% of frames",
        ),
    )
    for failing, status, reason in checks:
        if failing:
            return Health(status, reason)
    return Health("ok", "online, classifying")


@dataclass(frozen=True)
class VersionRun:
    """A bundle a device served, from when, until when, and why that ended (None: it still runs)."""

    bundle: str
    started_at: float | None
    ended_at: float | None
    ended_because: str | None
    rollout_id: int | None


def _event(item: TimelineItem) -> tuple[str | None, str | None, str]:
    data = item.data or {}
    bundle = data.get("bundle")
    to = data.get("to")
    reason = data.get("reason")
    return (
        bundle if isinstance(bundle, str) else None,
        to if isinstance(to, str) else None,
        reason if isinstance(reason, str) else "",
    )


def version_runs(
    events: Sequence[TimelineItem], active: str | None, previous_of: Mapping[int, str]
) -> list[VersionRun]:
    """The bundles a device served, oldest first, from its update events (oldest first).

    A bundle starts serving when it is activated; it ends when another one is
    activated (replaced) or when the device rolls it back (with the device's
    reason), and the device is back on the bundle it replaced. The bundle a
    device ran before its first recorded activation is the previous bundle of
    the rollout that sent the new one (``previous_of``: rollout id -> bundle),
    when that rollout names one; its start is unknown (None).
    """
    runs: list[VersionRun] = []
    current: VersionRun | None = None
    replaced: str | None = None
    for item in events:
        bundle, to, reason = _event(item)
        if item.kind != "device-event" or bundle is None or to is None:
            continue
        if to in _SERVING:
            if current is not None and current.bundle == bundle:
                continue
            why = f"replaced by {bundle[:12]}"
            if current is not None:
                runs.append(_ended(current, item.at, why))
                replaced = current.bundle
            elif not runs and item.rollout_id is not None and item.rollout_id in previous_of:
                replaced = previous_of[item.rollout_id]
                runs.append(VersionRun(replaced, None, item.at, why, None))
            current = VersionRun(bundle, item.at, None, None, item.rollout_id)
        elif to == "rolled-back" and current is not None and current.bundle == bundle:
            runs.append(_ended(current, item.at, f"rolled back: {reason or 'no reason given'}"))
            current = None if replaced is None else VersionRun(replaced, item.at, None, None, None)
            replaced = None
    if current is not None:
        runs.append(current)
    if active is not None and (not runs or runs[-1].ended_at is not None):
        runs.append(VersionRun(active, runs[-1].ended_at if runs else None, None, None, None))
    return runs


def _ended(run: VersionRun, at: float, why: str) -> VersionRun:
    return VersionRun(run.bundle, run.started_at, at, why, run.rollout_id)


def telemetry_series(
    rows: Sequence[tuple[float, Mapping[str, Any]]],
) -> list[dict[str, float | str | None]]:
    """One point per snapshot, oldest first: latency p95, mean confidence, rate, uncertain share
    between snapshots, and the bundle that served it (for the device page's charts)."""
    points: list[dict[str, float | str | None]] = []
    previous: TelemetrySample | None = None
    for at, snapshot in rows:
        sample = read_sample(snapshot, at)
        uncertain = None
        if previous is not None and sample.frames is not None and previous.frames is not None:
            frames = sample.frames - previous.frames
            if frames > 0 and sample.uncertain is not None and previous.uncertain is not None:
                uncertain = max(0.0, sample.uncertain - previous.uncertain) / frames
        bundle = snapshot.get("bundle")
        points.append(
            {
                "at": at,
                "latency_p95_ms": sample.latency_p95_ms,
                "mean_confidence": sample.mean_confidence,
                "predictions_per_s": sample.fps,
                "uncertain_rate": uncertain,
                "bundle": bundle if isinstance(bundle, str) else None,
            }
        )
        previous = sample
    return points


def class_shares(
    rows: Sequence[tuple[float, Mapping[str, Any]]],
) -> dict[str, dict[str, float]]:
    """Each bundle's class shares over the snapshots it served (bundle -> label -> share)."""
    by_bundle: dict[str, list[TelemetrySample]] = {}
    for at, snapshot in rows:
        bundle = snapshot.get("bundle")
        if isinstance(bundle, str):
            by_bundle.setdefault(bundle, []).append(read_sample(snapshot, at))
    shares: dict[str, dict[str, float]] = {}
    for bundle, samples in by_bundle.items():
        distribution = device_figures(samples).class_distribution
        if distribution:
            shares[bundle] = distribution
    return shares
