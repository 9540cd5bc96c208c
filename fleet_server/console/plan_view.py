"""The rollout page's plan as JSON: each wave's spec, progress, verdict and devices.

A pure function of the planner's :class:`~fleet_server.rollout_plan.RolloutState`
(no database): :class:`~fleet_server.registry.console_views.ConsoleViews` adds it
to the rollout's row.
"""

from __future__ import annotations

from typing import Any

from fleet_server.rollout_plan import RolloutState

__all__ = ["plan_view"]


def plan_view(plan: RolloutState | None) -> dict[str, Any]:
    """The plan's waves, their devices and the approvals (empty waves for a rollout without one)."""
    if plan is None:
        return {"waves": [], "skipped": {}, "approved_by": [], "ignore_windows": False}
    waves = []
    for index, (spec, wave) in enumerate(zip(plan.spec.waves, plan.waves, strict=True)):
        devices = []
        for device_id in wave.devices:
            progress = plan.devices[device_id]
            devices.append(
                {
                    "id": device_id,
                    "status": progress.status.value,
                    "reason": progress.reason or None,
                    "phase": progress.phase,
                    "sent_at": progress.sent_at,
                    "finished_at": progress.finished_at,
                }
            )
        waves.append(
            {
                "index": index + 1,
                "spec": spec.model_dump(mode="json", exclude_defaults=False),
                "status": wave.status.value,
                "started_at": wave.started_at,
                "settled_at": wave.settled_at,
                "watch_until": wave.watch_until,
                "finished_at": wave.finished_at,
                "reason": wave.reason or None,
                "verdict": None if wave.verdict is None else wave.verdict.model_dump(mode="json"),
                "devices": devices,
            }
        )
    return {
        "waves": waves,
        "current_wave": plan.current_wave + 1,
        "skipped": dict(plan.skipped),
        "approved_by": list(plan.approved_by),
        "approvals_required": (
            plan.spec.waves[plan.current_wave].approvals_required
            if plan.current_wave < len(plan.spec.waves)
            else 1
        ),
        "ignore_windows": plan.spec.ignore_windows,
        "started_at": plan.started_at,
        "finished_at": plan.finished_at,
    }
