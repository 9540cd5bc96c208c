"""The leader lease is renewed on its own thread while the server's worker beats, and left to
expire when the worker is stuck (so another replica takes over)."""

from __future__ import annotations

import time
from collections.abc import Callable

from fleet_server.leadership import Leadership, LeaseKeeper
from fleet_server.registry import Registry

TTL_S = 2.0
STALL_S = 2.0


def test_the_lease_is_kept_while_the_worker_beats_and_lapses_when_it_is_stuck(
    open_registry: Callable[..., Registry],
) -> None:
    registry = open_registry(clock=time.time)
    mine = Leadership(registry, "a", TTL_S)
    assert mine.renew(time.monotonic()).gained
    epoch = mine.fence.epoch if mine.fence else None

    def renew() -> None:
        mine.renew(time.monotonic())

    keeper = LeaseKeeper(mine, renew, stall_s=STALL_S)
    other = Leadership(open_registry(clock=time.time), "b", TTL_S)
    keeper.start()
    try:
        until = time.monotonic() + 2 * TTL_S  # several lease lifetimes, the worker beating
        while time.monotonic() < until:
            keeper.beat()
            assert not other.renew(time.monotonic()).leading
            time.sleep(0.05)
        assert mine.fence is not None and mine.fence.epoch == epoch  # never lapsed
        assert keeper.health().alive

        stuck_at = time.monotonic()  # the worker stops beating: renewals stop after stall_s
        while not other.renew(time.monotonic()).leading:
            assert time.monotonic() - stuck_at < STALL_S + TTL_S + 10.0, "the lease never lapsed"
            time.sleep(0.05)
        assert time.monotonic() - stuck_at >= STALL_S  # not before the worker counted as stuck
        held = registry.lease("rollouts")
        assert held is not None and held.holder == "b" and held.epoch == (epoch or 0) + 1
    finally:
        keeper.stop()
