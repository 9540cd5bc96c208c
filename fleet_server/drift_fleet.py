"""Drift over a whole fleet: every device and every group (tag) judged in one pass. Pure.

:func:`assess` takes plain values (each device's window, the groups, the
bundles' baselines, the previous statuses) and returns each subject's new
status with the alert it raises or clears. A group is judged on the pool of
its devices that run the group's most used bundle (during a rollout the
others run another model, with another baseline). The alert texts say what
moved, since when, and, for a group, that it is a candidate for retraining.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleet_server.drift import (
    DriftStatus,
    DriftThresholds,
    Scope,
    WindowFigures,
    judge,
    measure,
    next_status,
    pool,
)
from fleet_server.quality_figures import Baseline

__all__ = ["Change", "FleetDriftInputs", "alert_message", "assess"]


@dataclass(frozen=True)
class FleetDriftInputs:
    """What a pass over the fleet reads: windows per device, groups, baselines per bundle."""

    windows: Mapping[str, WindowFigures]
    """Device id -> what it predicted in the window (devices without telemetry: absent)."""
    groups: Mapping[str, Sequence[str]]
    """Tag -> its devices."""
    baselines: Mapping[str, Baseline]
    """Bundle sha256 -> the baseline its manifest carries."""
    bundle_names: Mapping[str, str]
    """Bundle sha256 -> ``name version``, for the alerts."""
    confidence_baselines: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Bundle sha256 -> its quality report's confidence histogram (bundles without one: absent)."""


@dataclass(frozen=True)
class Change:
    """A subject's new status, and the alert to record (``raised``/``cleared``) or None."""

    status: DriftStatus
    alert: str | None
    message: str | None


def _group_window(windows: Sequence[WindowFigures]) -> WindowFigures | None:
    by_bundle: dict[str | None, list[WindowFigures]] = {}
    for window in windows:
        by_bundle.setdefault(window.bundle, []).append(window)
    if not by_bundle:
        return None
    dominant = max(by_bundle.values(), key=lambda ws: (sum(w.predictions for w in ws), len(ws)))
    return pool(dominant)


def assess(
    inputs: FleetDriftInputs,
    thresholds: DriftThresholds,
    previous: Mapping[tuple[str, str], DriftStatus],
    now: float,
) -> list[Change]:
    """Every device with a window, and every group with one, judged against its baseline."""
    subjects: list[tuple[Scope, str, WindowFigures]] = [
        ("device", device_id, window) for device_id, window in sorted(inputs.windows.items())
    ]
    for tag, members in sorted(inputs.groups.items()):
        group = _group_window([inputs.windows[d] for d in members if d in inputs.windows])
        if group is not None:
            subjects.append(("group", tag, group))
    changes = []
    for scope, name, window in subjects:
        before = previous.get((scope, name))
        baseline = None if window.bundle is None else inputs.baselines.get(window.bundle)
        figures = measure(
            window,
            baseline,
            None if window.bundle is None else inputs.confidence_baselines.get(window.bundle),
        )
        drifting = before is not None and before.drifting and before.bundle == window.bundle
        verdict = judge(figures, thresholds, drifting)
        status, alert = next_status(before, scope, name, figures=figures, verdict=verdict, now=now)
        message = None
        if alert is not None:
            bundle = inputs.bundle_names.get(window.bundle or "", (window.bundle or "?")[:12])
            message = alert_message(status, alert, bundle, thresholds)
        changes.append(Change(status, alert, message))
    return changes


def _since(at: float | None) -> str:
    return "?" if at is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def alert_message(status: DriftStatus, alert: str, bundle: str, thresholds: DriftThresholds) -> str:
    """The timeline's line for a raised or cleared drift alert."""
    who = f"device {status.name}" if status.scope == "device" else f"group {status.name}"
    if alert == "cleared":
        return f"{who} no longer drifts from {bundle}'s baseline"
    figures = status.figures
    shift = figures.get("biggest_shift")
    moved = ""
    if isinstance(shift, list) and len(shift) == 2:
        moved = f"; {shift[0]} {float(shift[1]) * 100:+.0f} points of the class mix"
    window = f"over the last {thresholds.window_s:.0f} s"
    text = (
        f"{who} drifts from {bundle}'s baseline since {_since(status.since)} {window}: "
        f"{'; '.join(status.reasons)}{moved}"
    )
    if status.scope == "group":
        text += (
            f"; {figures.get('devices', 0)} devices: a candidate for retraining "
            f"(collect its frames: edgefleet fleet field-data enable {status.name})"
        )
    return text
