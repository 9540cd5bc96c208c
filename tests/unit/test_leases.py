"""The rollout leader's lease: one holder at a time, epochs that fence a replaced holder's writes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edge_runtime.bundle import Bundle, parse_bundle
from edgefleet.testing import FakeClock
from fleet_server.coordinator import RolloutCoordinator
from fleet_server.errors import LeaseLostError
from fleet_server.leadership import LEADER_LEASE, Leadership
from fleet_server.records import TargetSelector
from fleet_server.registry import Registry
from fleet_server.rollout_plan import Action, Assign
from fleet_server.rollout_spec import WaveSpec


def test_one_holder_at_a_time_and_each_takeover_bumps_the_epoch(
    open_registry: Callable[..., Registry], clock: FakeClock
) -> None:
    a, b = open_registry(), open_registry()  # two replicas, each with its own engine
    first = a.acquire_lease("rollouts", "a", ttl_s=10)
    assert first is not None and (first.holder, first.epoch) == ("a", 1)
    assert b.acquire_lease("rollouts", "b", ttl_s=10) is None  # held and not expired
    clock.advance(9)
    renewed = a.acquire_lease("rollouts", "a", ttl_s=10)  # a renewal keeps the epoch
    assert renewed is not None and renewed.epoch == 1 and renewed.expires_at == clock.now + 10
    clock.advance(12)  # a renews late (a long batch): nobody took it, so its epoch stays
    late = a.acquire_lease("rollouts", "a", ttl_s=10)
    assert late is not None and late.epoch == 1
    a.check_fence(first.fence)
    clock.advance(9.5)
    assert b.acquire_lease("rollouts", "b", ttl_s=10) is None  # renewed: still a's
    clock.advance(1)
    taken = b.acquire_lease("rollouts", "b", ttl_s=10)  # a stopped renewing: b takes over
    assert taken is not None and (taken.holder, taken.epoch) == ("b", 2)

    # a wakes up: its old fence is refused, and it cannot renew b's lease
    with pytest.raises(LeaseLostError, match=r"held by b \(epoch 2\), not a \(epoch 1\)"):
        a.check_fence(first.fence)
    assert a.acquire_lease("rollouts", "a", ttl_s=10) is None
    b.check_fence(taken.fence)

    # a clean stop hands over at once; until someone takes it, nobody wrote under a newer epoch
    assert b.release_lease(taken.fence)
    b.check_fence(taken.fence)
    back = a.acquire_lease("rollouts", "a", ttl_s=10)
    assert back is not None and back.epoch == 3
    with pytest.raises(LeaseLostError, match=r"held by a \(epoch 3\), not b \(epoch 2\)"):
        b.check_fence(taken.fence)
    assert not b.release_lease(taken.fence)  # not b's any more: nothing to release
    info = b.lease("rollouts")
    assert info is not None and info.holder == "a"
    with pytest.raises(ValueError, match="positive"):
        a.acquire_lease("rollouts", "a", ttl_s=0)


def test_a_replaced_leader_signs_and_saves_nothing(
    open_registry: Callable[..., Registry],
    clock: FakeClock,
    make_bundle: Callable[..., bytes],
) -> None:
    """The fence is checked before actions run and in the same transaction as every save."""
    a, b = open_registry(), open_registry()
    bundle: Bundle = parse_bundle(make_bundle(version="1.0.0"))
    a.import_bundle(bundle)
    for name in ("cam-1", "cam-2"):
        a.provision_device(name, ["line-a"])
    lead_a, lead_b = Leadership(a, "a", ttl_s=10), Leadership(b, "b", ttl_s=10)
    assert lead_a.renew(0.0).gained and not lead_b.renew(0.0).leading
    signed: list[Action] = []
    coordinator = RolloutCoordinator(a, signed.extend, lead_a.fence)
    rollout_id = coordinator.create(
        bundle.sha256, TargetSelector.tags(["line-a"]), [WaveSpec(percent=100)], None, clock.now
    )
    assert signed == [Assign(device_ids=("cam-1", "cam-2"), bundle_sha=bundle.sha256)]
    saved = a.rollout_state(rollout_id)
    assert saved is not None and saved.sequence > 0

    clock.advance(11)  # a is paused past its lease; b takes over and resumes from the database
    turn = lead_b.renew(11.0)
    assert turn.gained and lead_b.fence is not None and lead_b.fence.epoch == 2
    successor = RolloutCoordinator(b, signed.extend, lead_b.fence)
    assert successor.resume(clock.now) == [rollout_id]

    # a wakes up and acts on its stale plan: refused before signing, and nothing is saved
    signed.clear()
    with pytest.raises(LeaseLostError):
        coordinator.command(rollout_id, "abort", "stale leader", clock.now)
    assert signed == []
    after = b.rollout_state(rollout_id)
    assert (
        after is not None
        and after.status.value == "running"
        and after == successor.plan(rollout_id)
    )
    assert lead_a.renew(11.0).lost and not lead_a.leading
    assert lead_b.leader() == "b" and LEADER_LEASE == "rollouts"
