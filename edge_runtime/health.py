"""Is the runtime healthy? Frames must keep arriving and no inference may hang.

:class:`HealthState` is pure bookkeeping on monotonic timestamps: the pipeline
reports what happens, ``/healthz`` (and a watchdog) ask :meth:`HealthState.evaluate`.
Every method takes an optional ``now`` so tests drive it with plain values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HealthReport", "HealthState"]


@dataclass(frozen=True)
class HealthReport:
    """The verdict at one moment: healthy or not, why not, and the numbers behind it."""

    healthy: bool
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``"ok"`` or ``"unhealthy"``."""
        return "ok" if self.healthy else "unhealthy"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: ``{"status", "reasons", "details"}``."""
        return {"status": self.status, "reasons": list(self.reasons), "details": dict(self.details)}


class HealthState:
    """Tracks frame arrivals and in-flight inference against configured limits.

    Unhealthy when no frame arrived for more than ``max_frame_age_s``, when an
    inference has been running for more than ``max_inference_s``, or when no
    frame arrived at all within ``startup_grace_s`` of start. One inference is
    tracked at a time: the pipeline classifies frames one by one.
    """

    def __init__(
        self,
        *,
        max_frame_age_s: float = 5.0,
        max_inference_s: float = 2.0,
        startup_grace_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        started_at: float | None = None,
    ) -> None:
        for name, value in (
            ("max_frame_age_s", max_frame_age_s),
            ("max_inference_s", max_inference_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not startup_grace_s >= 0:
            raise ValueError(f"startup_grace_s must not be negative, got {startup_grace_s}")
        self.max_frame_age_s = max_frame_age_s
        self.max_inference_s = max_inference_s
        self.startup_grace_s = startup_grace_s
        self._clock = clock
        self._lock = threading.Lock()
        self._started_at = clock() if started_at is None else started_at
        self._last_frame: float | None = None
        self._frames = 0
        self._inference_since: float | None = None
        self._inferences = 0
        self._last_inference_s: float | None = None
        self._bundle: dict[str, str] | None = None
        self._checks: list[tuple[Callable[[], str | None], bool]] = []
        self._details: dict[str, Callable[[], Any]] = {}

    def add_check(self, check: Callable[[], str | None], *, fatal: bool = True) -> None:
        """A probe asked on every verdict (a worker thread alive, the store writable).

        It returns None when all is well, else a sentence: a fatal check's
        sentence makes the runtime unhealthy, another's is listed under
        ``details["warnings"]`` (the camera still classifies).
        """
        with self._lock:
            self._checks.append((check, fatal))

    def add_detail(self, name: str, detail: Callable[[], Any]) -> None:
        """A JSON-friendly value asked on every verdict and shown as ``details[name]`` (counts, states)."""
        with self._lock:
            self._details[name] = detail

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def frame_received(self, now: float | None = None) -> None:
        """A frame reached the pipeline."""
        now = self._now(now)
        with self._lock:
            self._frames += 1
            if self._last_frame is None or now > self._last_frame:
                self._last_frame = now

    def inference_started(self, now: float | None = None) -> None:
        """The classifier started on a frame."""
        now = self._now(now)
        with self._lock:
            self._inference_since = now

    def inference_finished(self, now: float | None = None) -> None:
        """The classifier returned (with an answer or an error)."""
        now = self._now(now)
        with self._lock:
            if self._inference_since is not None:
                self._last_inference_s = max(0.0, now - self._inference_since)
                self._inferences += 1
            self._inference_since = None

    def set_active_bundle(self, name: str, version: str, sha256: str) -> None:
        """Name the bundle now classifying, for the report's details."""
        with self._lock:
            self._bundle = {"name": name, "version": version, "sha256": sha256}

    def evaluate(self, now: float | None = None) -> HealthReport:
        """The health verdict at ``now``."""
        now = self._now(now)
        with self._lock:
            started_at, last_frame, frames = self._started_at, self._last_frame, self._frames
            inference_since, inferences = self._inference_since, self._inferences
            last_inference_s = self._last_inference_s
            bundle = None if self._bundle is None else dict(self._bundle)
        reasons: list[str] = []
        uptime = max(0.0, now - started_at)
        frame_age = None if last_frame is None else max(0.0, now - last_frame)
        if frame_age is None:
            if uptime > self.startup_grace_s:
                reasons.append(
                    f"no frame received yet ({uptime:.1f} s since start, "
                    f"grace {self.startup_grace_s:g} s)"
                )
        elif frame_age > self.max_frame_age_s:
            reasons.append(f"no frame for {frame_age:.1f} s (limit {self.max_frame_age_s:g} s)")
        running = None if inference_since is None else max(0.0, now - inference_since)
        if running is not None and running > self.max_inference_s:
            reasons.append(
                f"inference running for {running:.1f} s (limit {self.max_inference_s:g} s)"
            )
        details: dict[str, Any] = {
            "uptime_s": round(uptime, 3),
            "frames_received": frames,
            "last_frame_age_s": None if frame_age is None else round(frame_age, 3),
            "inference_running_s": None if running is None else round(running, 3),
            "inferences": inferences,
            "last_inference_s": None if last_inference_s is None else round(last_inference_s, 6),
            "active_bundle": bundle,
            "limits": {
                "max_frame_age_s": self.max_frame_age_s,
                "max_inference_s": self.max_inference_s,
                "startup_grace_s": self.startup_grace_s,
            },
        }
        warnings: list[str] = []
        with self._lock:
            checks = list(self._checks)
        for check, fatal in checks:
            problem = check()
            if problem is not None:
                (reasons if fatal else warnings).append(problem)
        with self._lock:
            extra = dict(self._details)
        for name, detail in extra.items():
            details[name] = detail()
        if warnings:
            details["warnings"] = warnings
        return HealthReport(healthy=not reasons, reasons=reasons, details=details)
