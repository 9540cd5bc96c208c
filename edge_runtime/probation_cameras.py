"""A multi-camera device's cameras as probation sees them: alive or dead at activation.

The update agent asks each camera's frame age when it activates a new
bundle; a camera that had sent no frame for ``health.max_frame_age_s`` is
left out of that bundle's judgement (``update.exclude_dead_cameras``). Which
cameras the latest activated bundle was not judged on is shown on
``/healthz`` (``details.probation_excluded``) and ``/metrics``
(``edgefleet_camera_probation_excluded{camera}``) until the next activation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric

from edge_runtime.cameras import WakingSlot
from edge_runtime.health import HealthState
from edge_runtime.metrics import MetricsRegistry

if TYPE_CHECKING:
    from edge_runtime.agent import UpdateAgent

__all__ = ["ProbationExclusionCollector", "frame_age", "watch_cameras"]


def frame_age(slot: WakingSlot) -> Callable[[], float | None]:
    """Seconds since ``slot`` got its newest frame (None before the first), when asked."""

    def age() -> float | None:
        last = slot.last_put
        return None if last is None else time.monotonic() - last

    return age


class ProbationExclusionCollector:
    """``edgefleet_camera_probation_excluded{camera}``: 1 for a camera the latest bundle was not judged on."""

    NAME = "edgefleet_camera_probation_excluded"

    def __init__(self, cameras: Sequence[str], excluded: Callable[[], Mapping[str, str]]) -> None:
        self._cameras = list(cameras)
        self._excluded = excluded

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        excluded = self._excluded()
        family = GaugeMetricFamily(
            self.NAME,
            "1 for a camera the latest activated bundle was not judged on (it had sent no frame "
            "for health.max_frame_age_s at activation), else 0.",
            labels=["camera"],
        )
        for camera in self._cameras:
            family.add_metric([camera], 1.0 if camera in excluded else 0.0)
        return [family]


def watch_cameras(
    agent: UpdateAgent,
    slots: Mapping[str, WakingSlot],
    health: HealthState,
    registry: MetricsRegistry,
) -> None:
    """Tell ``agent`` how old each camera's newest frame is, and show whom probation left out."""
    for camera, slot in slots.items():
        agent.watch_camera(camera, frame_age(slot))
    health.add_detail("probation_excluded", lambda: dict(agent.probation_excluded))
    registry.register(ProbationExclusionCollector(list(slots), lambda: agent.probation_excluded))
