"""Per-device token buckets: how many reports that add rows one device may make, and how fast.

A device reports a handful of events per update and one telemetry snapshot
every few seconds; a device (or anyone publishing under its id) that sends
thousands a second must not grow the database at that rate. Each device gets
``burst`` tokens refilled at ``per_minute`` a minute; a report without a token
is dropped and counted. Pure bookkeeping on a clock the caller passes in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["ROW_ADDING_REPORTS", "DeviceRateLimiter"]

ROW_ADDING_REPORTS = frozenset({"events", "telemetry", "availability"})
"""Device report kinds that add database rows: the ones the fleet server limits per device."""

log = logging.getLogger(__name__)


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class DeviceRateLimiter:
    """Token buckets keyed by (device, kind of report); at most ``max_devices`` tracked."""

    per_minute: float = 120.0
    burst: float = 240.0
    max_devices: int = 100_000
    limited: frozenset[str] | None = None
    """The kinds of report :meth:`admit` limits (None: every kind)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Kind of report -> how many were dropped."""
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.per_minute > 0 and self.burst >= 1):
            raise ValueError("per_minute must be positive and burst at least 1")

    def admit(self, device_id: str, kind: str, now: float) -> bool:
        """:meth:`allow` for the ``limited`` kinds (others always pass), logging drops sparingly."""
        if (self.limited is not None and kind not in self.limited) or self.allow(
            device_id, kind, now
        ):
            return True
        dropped = self.dropped[kind]
        if dropped == 1 or dropped % 1000 == 0:
            log.warning(
                "dropping %s from %s: over %g a minute (%d dropped so far)",
                kind,
                device_id[:64],
                self.per_minute,
                dropped,
            )
        return False

    def allow(self, device_id: str, kind: str, now: float) -> bool:
        """Take a token for one report of ``kind`` from ``device_id`` at ``now`` (seconds)."""
        key = (device_id, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_devices:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.per_minute / 60.0)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        return False

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled completely: they hold no state worth keeping."""
        refill_s = 60.0 * self.burst / self.per_minute
        for key in [k for k, b in self._buckets.items() if now - b.updated >= refill_s]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_devices:  # still full: forget the stalest half
            stalest = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for key in stalest[: len(stalest) // 2]:
                del self._buckets[key]
