"""Events a killed replica took with it come back from the device's retained state (`recent`).

The state report carries the device's newest lifecycle events; storing a retained copy
stores those the registry lacks, once, and leaves old ones (past retention) alone.
"""

from __future__ import annotations

from edge_runtime.protocol import EventReport, StateReport, UpdatePhase
from edge_runtime.update.lifecycle import BundleRef, UpdateEvent, UpdateState, state_report
from edgefleet.testing import FakeClock
from fleet_server.registry import Registry
from fleet_server.registry.ingest import RECOVER_EVENTS_S

NEW = "b" * 64
PHASES = ("idle", "downloading", "verifying", "staged", "smoke-testing", "activating")


def transitions(at: float, count: int = 5) -> list[EventReport]:
    return [
        EventReport.transition(
            "cam-1",
            bundle=NEW,
            assignment=3,
            from_state=UpdatePhase(PHASES[i]),
            to_state=UpdatePhase(PHASES[i + 1]),
            reason=f"step {i}",
            at=at + i,
        )
        for i in range(count)
    ]


def state(at: float, recent: list[EventReport], sequence: int = 7) -> StateReport:
    return StateReport(
        device_id="cam-1",
        state=UpdatePhase.ACTIVATING,
        updated_at=at,
        sequence=sequence,
        epoch="ab",
        recent=recent,
    )


def device_events(registry: Registry) -> list[str]:
    return [
        item.message for item in registry.timeline(device_id="cam-1") if item.kind == "device-event"
    ]


def test_a_retained_state_stores_the_events_the_registry_lacks_once(
    registry: Registry, clock: FakeClock
) -> None:
    registry.provision_device("cam-1", ["line-a"])
    events = transitions(clock.now)
    for kept in (events[0], events[2]):  # the replica that stored these lived
        assert registry.record_event("cam-1", kept) is not None

    fresh = registry.record_state("cam-1", state(clock.now, events), fresh=True)
    assert fresh is not None and len(device_events(registry)) == 2  # a live copy: no recovery

    stored = registry.record_state("cam-1", state(clock.now, events), fresh=False)
    assert stored is not None
    assert sorted(device_events(registry)) == sorted(e.message() for e in events)
    # the newest event's reason is the device's last one; the older recovered ones do not
    # overwrite it
    assert registry.device("cam-1").last_event_reason == "step 4"

    registry.record_state("cam-1", state(clock.now, events), fresh=False)  # the next sweep
    assert len(device_events(registry)) == 5


def test_old_events_in_a_retained_state_are_left_alone(
    registry: Registry, clock: FakeClock
) -> None:
    registry.provision_device("cam-1", [])
    old = transitions(clock.now - RECOVER_EVENTS_S - 100, count=2)
    young = transitions(clock.now - 60, count=1)
    registry.record_state("cam-1", state(clock.now, [*old, *young]), fresh=False)
    assert device_events(registry) == [young[0].message()]


def test_an_older_retained_state_recovers_nothing(registry: Registry, clock: FakeClock) -> None:
    registry.provision_device("cam-1", [])
    registry.record_state("cam-1", state(clock.now, [], sequence=9), fresh=True)
    assert registry.record_state("cam-1", state(clock.now, transitions(clock.now), 8)) is None
    assert device_events(registry) == []


def test_the_device_sends_its_newest_events_with_its_state() -> None:
    ref = BundleRef(sha256="a" * 64, name="m", version="1.0.0")
    current = UpdateState.initial(ref, now=1.0, epoch="ab")
    report = state_report("cam-1", current, "0.1.0")
    assert report.recent is None and "recent" not in report.to_dict()  # nothing happened yet
    long_reason = "x" * 900
    history = tuple(
        e.model_copy(update={"reason": long_reason}) for e in _lifecycle_events(current, count=12)
    )
    report = state_report("cam-1", current.model_copy(update={"history": history}), "0.1.0")
    assert report.recent is not None and len(report.recent) == 10
    assert [e.at for e in report.recent] == [e.at for e in history[-10:]]  # the newest, in order
    assert all(len(e.reason) <= 200 for e in report.recent)
    parsed = StateReport.parse(report.encode(), "cam-1")
    assert [e.dedupe_key("cam-1") for e in parsed.recent or []] == [
        EventReport.transition(
            "cam-1",
            bundle=e.bundle,
            assignment=e.assignment,
            from_state=e.from_state,
            to_state=e.to_state,
            reason=e.reason,
            at=e.at,
        ).dedupe_key("cam-1")
        for e in history[-10:]
    ]


def _lifecycle_events(current: UpdateState, count: int) -> list[UpdateEvent]:
    return [
        UpdateEvent(
            bundle="c" * 64,
            assignment=i,
            from_state=UpdatePhase.IDLE,
            to_state=UpdatePhase.DOWNLOADING,
            reason="r",
            at=100.0 + i,
        )
        for i in range(count)
    ]
