"""How much telemetry, timeline and audit log the registry keeps (applied per device or in all, and by age)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AuditRetention", "TelemetryRetention", "TimelineRetention"]


@dataclass(frozen=True)
class _Retention:
    """At most ``max_per_device`` rows per device, none older than ``max_age_s`` seconds
    (``None``: no such bound)."""

    max_per_device: int | None
    max_age_s: float | None

    def __post_init__(self) -> None:
        if self.max_per_device is not None and self.max_per_device < 1:
            raise ValueError(f"max_per_device must be at least 1, got {self.max_per_device}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {self.max_age_s}")


@dataclass(frozen=True)
class TelemetryRetention(_Retention):
    """How much telemetry the registry keeps: snapshots per device, and for how long."""

    max_per_device: int | None = 2_000
    max_age_s: float | None = 7 * 24 * 3600.0


@dataclass(frozen=True)
class TimelineRetention(_Retention):
    """How much of the timeline the registry keeps: entries about each device (its newest),
    and for how long. A rollout's own entries (no device) are its audit trail and only age out.
    """

    max_per_device: int | None = 1_000
    max_age_s: float | None = 365 * 24 * 3600.0


@dataclass(frozen=True)
class AuditRetention:
    """How much of the API's audit log the registry keeps: its newest ``max_entries``, none
    older than ``max_age_s`` seconds (``None``: no such bound)."""

    max_entries: int | None = 100_000
    max_age_s: float | None = 365 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.max_entries is not None and self.max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {self.max_entries}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {self.max_age_s}")
