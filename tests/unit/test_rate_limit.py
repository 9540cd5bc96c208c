"""Per-device token buckets for reports that add database rows (issue #15, item 10)."""

from __future__ import annotations

import pytest

from fleet_server.rate_limit import DeviceRateLimiter


def test_a_burst_then_the_steady_rate_per_device_and_kind() -> None:
    limiter = DeviceRateLimiter(per_minute=60, burst=5)
    assert [limiter.allow("cam-1", "events", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("cam-1", "telemetry", 0.0)  # another kind has its own bucket
    assert limiter.allow("cam-2", "events", 0.0)  # so has another device
    assert not limiter.allow("cam-1", "events", 0.5)
    assert limiter.allow("cam-1", "events", 1.5)  # one token a second comes back
    assert not limiter.allow("cam-1", "events", 1.6)
    assert limiter.dropped == {"events": 4}
    assert [limiter.allow("cam-1", "events", 3600.0) for _ in range(6)].count(True) == 5


def test_the_number_of_tracked_devices_is_bounded() -> None:
    limiter = DeviceRateLimiter(per_minute=60, burst=2, max_devices=100)
    for i in range(1000):
        limiter.allow(f"id-{i}", "events", float(i) / 1000)
    assert len(limiter._buckets) <= 100
    with pytest.raises(ValueError, match="per_minute must be positive"):
        DeviceRateLimiter(per_minute=0)
