"""A shadow wave's reports summed: the figures its gate judges and the API shows.

Pure: :class:`~edge_runtime.protocol.shadow.ShadowReport` values in (parsed at
the boundary), :class:`ShadowFigures` out, with each camera's figures on
multi-camera devices (:class:`CameraFigures`: compared and agreed frames, and,
from devices that report them, both models' class counts and mean
confidences). :mod:`fleet_server.shadow_gate` judges them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edge_runtime.protocol.shadow import ShadowCamera, ShadowReport

__all__ = ["CAMERA_MIN_FRAMES", "CameraFigures", "ShadowFigures", "sum_reports"]

CAMERA_MIN_FRAMES = 20
"""A camera's agreement and class shift are judged once it has at least this many compared
frames."""


def _class_shift(
    candidate: dict[str, int], active: dict[str, int], compared: int
) -> tuple[str, float] | None:
    """The class whose share moved most between the two models' answers, and by how much."""
    labels = sorted(set(candidate) | set(active))
    if not compared or not labels:
        return None
    shift, label = max(
        (abs(candidate.get(label, 0) - active.get(label, 0)) / compared, label) for label in labels
    )
    return label, shift


def _add(counts: dict[str, int], more: dict[str, int]) -> None:
    for label, count in more.items():
        counts[label] = counts.get(label, 0) + count


@dataclass
class CameraFigures:
    """One camera's share of a shadow wave's figures."""

    compared: int = 0
    agreed: int = 0
    counted: int = 0
    """Compared frames of the windows that reported class counts and confidences (newer
    devices); the means are over these."""
    candidate_confidence_sum: float = 0.0
    active_confidence_sum: float = 0.0
    candidate_classes: dict[str, int] = field(default_factory=dict)
    active_classes: dict[str, int] = field(default_factory=dict)

    def add(self, camera: ShadowCamera) -> None:
        """Add one window's figures of this camera."""
        self.compared += camera.compared
        self.agreed += camera.agreed
        if camera.candidate_classes or camera.active_classes:
            self.counted += camera.compared
            n = camera.compared
            self.candidate_confidence_sum += (camera.candidate_confidence or 0.0) * n
            self.active_confidence_sum += (camera.active_confidence or 0.0) * n
            _add(self.candidate_classes, camera.candidate_classes)
            _add(self.active_classes, camera.active_classes)

    def class_shift(self) -> tuple[str, float] | None:
        """As :meth:`ShadowFigures.class_shift`, on this camera's counted frames."""
        return _class_shift(self.candidate_classes, self.active_classes, self.counted)

    def as_dict(self) -> dict[str, object]:
        shift = self.class_shift()
        c = self.counted
        return {
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement": self.agreed / self.compared if self.compared else None,
            "candidate_confidence": self.candidate_confidence_sum / c if c else None,
            "active_confidence": self.active_confidence_sum / c if c else None,
            "candidate_classes": dict(sorted(self.candidate_classes.items())),
            "active_classes": dict(sorted(self.active_classes.items())),
            "largest_class_shift": None if shift is None else {"class": shift[0], "by": shift[1]},
        }


@dataclass
class ShadowFigures:
    """A shadow wave's reports summed (per device where it matters)."""

    devices_running: set[str] = field(default_factory=set)
    """Devices that reported at least one running window."""
    failures: dict[str, str] = field(default_factory=dict)
    """Devices that could not run the candidate, with why."""
    windows: int = 0
    offered: int = 0
    compared: int = 0
    agreed: int = 0
    skipped: int = 0
    errors: int = 0
    last_error: str = ""
    candidate_confidence_sum: float = 0.0
    active_confidence_sum: float = 0.0
    candidate_classes: dict[str, int] = field(default_factory=dict)
    active_classes: dict[str, int] = field(default_factory=dict)
    candidate_ms_sum: float = 0.0
    active_ms_sum: float = 0.0
    candidate_p95_ms: float | None = None
    """The worst window's p95."""
    cameras: dict[str, CameraFigures] = field(default_factory=dict)
    """``device/camera`` -> its figures, for multi-camera devices."""

    def weakest_camera(self) -> tuple[str, int, int] | None:
        """The camera with the lowest agreement among those with enough frames:
        (``device/camera``, compared, agreed); None when there is none."""
        judged = [
            (c.agreed / c.compared, name, c.compared, c.agreed)
            for name, c in self.cameras.items()
            if c.compared >= CAMERA_MIN_FRAMES
        ]
        if not judged:
            return None
        _, name, compared, agreed = min(judged)
        return name, compared, agreed

    def most_shifted_camera(self) -> tuple[str, str, float] | None:
        """Among the cameras with enough frames and class counts (devices that report them),
        the one where a class's share moved most: (``device/camera``, class, by); None when
        there is none."""
        shifts = [
            (shift[1], name, shift[0])
            for name, c in self.cameras.items()
            if c.compared >= CAMERA_MIN_FRAMES and (shift := c.class_shift()) is not None
        ]
        if not shifts:
            return None
        by, name, label = max(shifts)
        return name, label, by

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def mean(self, total: float) -> float | None:
        return total / self.compared if self.compared else None

    def class_shift(self) -> tuple[str, float] | None:
        """The class whose share moved most between the active model's and the candidate's
        answers, and by how much (0..1)."""
        return _class_shift(self.candidate_classes, self.active_classes, self.compared)

    def as_dict(self) -> dict[str, object]:
        """The figures for the API and the console."""
        shift = self.class_shift()
        return {
            "devices_running": sorted(self.devices_running),
            "failures": dict(self.failures),
            "windows": self.windows,
            "offered": self.offered,
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement": self.agreement,
            "skipped": self.skipped,
            "errors": self.errors,
            "candidate_confidence": self.mean(self.candidate_confidence_sum),
            "active_confidence": self.mean(self.active_confidence_sum),
            "candidate_classes": dict(sorted(self.candidate_classes.items())),
            "active_classes": dict(sorted(self.active_classes.items())),
            "largest_class_shift": None if shift is None else {"class": shift[0], "by": shift[1]},
            "candidate_ms": self.mean(self.candidate_ms_sum),
            "active_ms": self.mean(self.active_ms_sum),
            "candidate_p95_ms": self.candidate_p95_ms,
            "cameras": {name: c.as_dict() for name, c in sorted(self.cameras.items())},
        }


def sum_reports(reports: Iterable[ShadowReport]) -> ShadowFigures:
    """The figures of ``reports`` together (any order; a device's later ``running`` report
    clears its earlier failure, as a retried run does)."""
    figures = ShadowFigures()
    for report in sorted(reports, key=lambda r: r.window_end):
        device = report.device_id
        if report.status == "failed":
            figures.failures[device] = report.reason or "failed (no reason given)"
            continue
        if report.status != "running":
            continue
        figures.failures.pop(device, None)
        figures.devices_running.add(device)
        figures.windows += 1
        figures.offered += report.offered
        figures.compared += report.compared
        figures.agreed += report.agreed
        figures.skipped += report.skipped_budget + report.skipped_busy
        figures.errors += report.errors
        figures.last_error = report.last_error or figures.last_error
        n = report.compared
        figures.candidate_confidence_sum += (report.candidate_confidence or 0.0) * n
        figures.active_confidence_sum += (report.active_confidence or 0.0) * n
        figures.candidate_ms_sum += (report.candidate_ms or 0.0) * n
        figures.active_ms_sum += (report.active_ms or 0.0) * n
        for label, count in report.candidate_classes.items():
            figures.candidate_classes[label] = figures.candidate_classes.get(label, 0) + count
        for label, count in report.active_classes.items():
            figures.active_classes[label] = figures.active_classes.get(label, 0) + count
        for camera, counts in report.cameras.items():
            figures.cameras.setdefault(f"{device}/{camera}", CameraFigures()).add(counts)
        if report.candidate_p95_ms is not None:
            figures.candidate_p95_ms = max(figures.candidate_p95_ms or 0.0, report.candidate_p95_ms)
    return figures
