"""Maintenance windows in the registry (SQLite and PostgreSQL), and rollouts that snapshot them.

The rollout part drives a real :class:`RolloutCoordinator` on the registry
with a controllable clock (the ``now`` it is handed): which devices are sent
when, what the projected rows and the timeline say.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from edge_runtime.bundle import Bundle, parse_bundle
from edgefleet.testing import FakeClock
from fleet_server.coordinator import RolloutCoordinator
from fleet_server.errors import RegistryError
from fleet_server.records import TargetSelector
from fleet_server.registry import Registry
from fleet_server.rollout_plan import Action, Assign
from fleet_server.rollout_spec import WaveSpec
from fleet_server.rollout_windows import window_wait
from fleet_server.statuses import DeviceStatus
from fleet_server.windows import UnknownTimeZoneError, WindowsNeverOpenError, WindowSyntaxError


def utc(d: int, h: int, mi: int = 0) -> float:
    """December 2026, UTC: the 5th is a Saturday."""
    return datetime(2026, 12, d, h, mi, tzinfo=timezone.utc).timestamp()


SAT_NOON = utc(5, 12)


@pytest.fixture
def registry(database_url: str, fake_clock: FakeClock) -> Iterator[Registry]:
    with Registry.open(database_url, clock=fake_clock) as opened:
        yield opened


def test_windows_are_set_replaced_listed_and_cleared(registry: Registry) -> None:
    assert registry.windows() == []
    made = registry.set_windows("line-3", ["sun 2:00-4:00 europe/paris", "Wed 14:00-15:00 UTC"])
    assert made.tag == "line-3"
    assert made.windows == ("Sun 02:00-04:00 Europe/Paris", "Wed 14:00-15:00 UTC")
    registry.set_windows("line-1", ["daily 22:00-06:00 UTC", "Daily 22:00-06:00 utc"])
    assert [(w.tag, w.windows) for w in registry.windows()] == [
        ("line-1", ("daily 22:00-06:00 UTC",)),  # the same window twice is kept once
        ("line-3", ("Sun 02:00-04:00 Europe/Paris", "Wed 14:00-15:00 UTC")),
    ]
    replaced = registry.set_windows("line-3", ["cron 0 2 * * Sun 2h Europe/Paris"])
    assert replaced.windows == ("cron 0 2 * * Sun 2h Europe/Paris",)
    assert registry.tag_windows(["line-3", "line-9"]) == {
        "line-3": ("cron 0 2 * * Sun 2h Europe/Paris",)
    }
    assert [w.tag for w in registry.windows(["line-1"])] == ["line-1"]
    assert registry.clear_windows("line-3") == 1
    assert registry.clear_windows("line-3") == 0
    assert [w.tag for w in registry.windows()] == ["line-1"]
    entries = [(t.kind, t.message) for t in registry.timeline(limit=10)]
    assert entries[0] == (
        "windows-set",
        "maintenance windows of tag line-3: Sun 02:00-04:00 Europe/Paris; Wed 14:00-15:00 UTC",
    )
    assert entries[-1] == (
        "windows-cleared",
        "maintenance windows of tag line-3 cleared (1 removed)",
    )
    assert [k for k, _ in entries].count("windows-cleared") == 1  # clearing nothing says nothing


@pytest.mark.parametrize(
    ("tag", "specs", "error", "words"),
    [
        ("line-3", ["Sun 02:00-04:00"], WindowSyntaxError, "has no time zone"),
        (
            "line-3",
            ["Sun 02:00-04:00 UTC", "Sun 02:00-04:00 Atlantis"],
            UnknownTimeZoneError,
            "Atlantis",
        ),
        ("line 3", ["Sun 02:00-04:00 UTC"], RegistryError, "tag 'line 3' is not valid"),
        ("line-3", [], RegistryError, "at least one maintenance window"),
        ("line-3", "Sun 02:00-04:00 UTC", RegistryError, "not the string"),
        (
            "line-3",
            [f"Sun {h:02d}:00-{h:02d}:30 UTC" for h in range(21)],
            RegistryError,
            "at most 20",
        ),
    ],
)
def test_bad_windows_write_nothing(
    registry: Registry, tag: str, specs: Any, error: type[Exception], words: str
) -> None:
    registry.set_windows("line-3", ["Sat 01:00-02:00 UTC"])
    with pytest.raises(error, match=words):
        registry.set_windows(tag, specs)
    assert registry.tag_windows(["line-3"]) == {"line-3": ("Sat 01:00-02:00 UTC",)}


def test_windows_outlive_a_restart(database_url: str, fake_clock: FakeClock) -> None:
    with Registry.open(database_url, clock=fake_clock) as first:
        first.set_windows("line-3", ["Sun 02:00-04:00 Europe/Paris"])
    with Registry.open(database_url, clock=fake_clock) as second:
        (kept,) = second.windows()
        assert kept.windows == ("Sun 02:00-04:00 Europe/Paris",)
        assert kept.set_at == fake_clock.now


# --- rollouts on the registry -----------------------------------------------------------


@pytest.fixture
def fleet(registry: Registry, make_bundle: Callable[..., bytes]) -> tuple[Registry, Bundle]:
    """Three provisioned cameras (cam-1 on line-1, cam-2 and cam-3 on line-3), one bundle."""
    bundle = parse_bundle(make_bundle(version="2.0.0"))
    registry.import_bundle(bundle)
    registry.provision_device("cam-1", ["line-1"])
    registry.provision_device("cam-2", ["line-3"])
    registry.provision_device("cam-3", ["line-3"])
    registry.set_windows("line-3", ["Sat 14:00-16:00 UTC"])
    return registry, bundle


def create(coordinator: RolloutCoordinator, bundle: Bundle, now: float, **options: Any) -> int:
    waves = [WaveSpec(percent=100, device_timeout_s=6 * 3600.0, health_window_s=60.0)]
    return coordinator.create(bundle.sha256, TargetSelector("all"), waves, None, now, **options)


def test_a_rollout_sends_as_windows_open_and_keeps_the_windows_it_was_made_with(
    fleet: tuple[Registry, Bundle],
) -> None:
    registry, bundle = fleet
    actions: list[Action] = []
    coordinator = RolloutCoordinator(registry, actions.extend)
    rollout_id = create(coordinator, bundle, SAT_NOON)
    assert [a.device_ids for a in actions if isinstance(a, Assign)] == [("cam-1",)]
    rows = {d.device_id: d.status for d in registry.wave_devices(rollout_id)}
    assert rows == {
        "cam-1": DeviceStatus.SENT,
        "cam-2": DeviceStatus.PENDING,
        "cam-3": DeviceStatus.PENDING,
    }
    timeline = registry.timeline(rollout_id=rollout_id)
    (waiting,) = [t for t in timeline if t.kind == "window-waiting"]
    assert waiting.message == (
        "wave 1: 2 devices wait for their maintenance window (next opens Sat 14:00 UTC)"
    )
    assert waiting.data == {"wave": 0, "devices": ["cam-2", "cam-3"]}
    # the line's windows change: the running rollout keeps the snapshot it was made with
    registry.set_windows("line-3", ["Sat 12:30-13:00 UTC"])
    coordinator.tick(utc(5, 12, 45))
    assert len(actions) == 1
    plan = coordinator.plan(rollout_id)
    assert plan is not None
    wait = window_wait(plan, utc(5, 12, 45))
    assert wait is not None and wait.next_open == utc(5, 14)
    coordinator.tick(utc(5, 14))
    assert [a.device_ids for a in actions if isinstance(a, Assign)][-1] == ("cam-2", "cam-3")
    rows = {d.device_id: d.status for d in registry.wave_devices(rollout_id)}
    assert set(rows.values()) == {DeviceStatus.SENT}
    assert [t.kind for t in registry.timeline(rollout_id=rollout_id)][-1] == "window-opened"
    # a second server (a restart, another replica) decides the same from the saved state
    saved = registry.rollout_state(rollout_id)
    assert saved is not None and saved.spec.windows == {"line-3": ("Sat 14:00-16:00 UTC",)}


def test_ignore_windows_sends_everyone_at_once(fleet: tuple[Registry, Bundle]) -> None:
    registry, bundle = fleet
    actions: list[Action] = []
    rollout_id = create(
        RolloutCoordinator(registry, actions.extend), bundle, SAT_NOON, ignore_windows=True
    )
    assert [a.device_ids for a in actions if isinstance(a, Assign)] == [("cam-1", "cam-2", "cam-3")]
    messages = [t.message for t in registry.timeline(rollout_id=rollout_id)]
    assert any("(their maintenance windows ignored)" in m for m in messages)
    saved = registry.rollout_state(rollout_id)
    assert saved is not None and saved.spec.ignore_windows


def test_windows_that_never_open_together_make_no_rollout(fleet: tuple[Registry, Bundle]) -> None:
    registry, bundle = fleet
    registry.provision_device("cam-4", ["line-3", "north"])
    registry.set_windows("north", ["Mon 01:00-02:00 UTC"])
    actions: list[Action] = []
    with pytest.raises(WindowsNeverOpenError, match=r"1 devices \(cam-4\)"):
        create(RolloutCoordinator(registry, actions.extend), bundle, SAT_NOON)
    assert registry.rollouts() == [] and actions == []
