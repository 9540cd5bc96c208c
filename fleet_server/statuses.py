"""The one vocabulary of where rollouts, waves and devices stand.

The rollout planner (:mod:`fleet_server.rollout_plan`) moves these; the
registry's tables project them, the API and the CLI show them. Everything
imports them from here, so a status has one spelling and one meaning.

A rollout is ``pending`` until its first wave starts, ``running`` while waves
go out, ``paused`` or ``awaiting-approval`` while an operator must act, and
ends ``completed``, ``aborted`` (stopped, devices keep what they have) or
``rolled-back`` (stopped and the previous bundle reassigned).

A wave is ``pending``, ``running`` (sent), ``watching`` (every device
answered; the health window runs), then ``passed``, ``failed``, ``aborted``
or ``skipped`` (it had no devices).

A device in a rollout goes ``pending -> sent -> in-progress -> committed``
or ends ``failed`` (the device refused or rolled back the new bundle),
``timed-out`` or ``rolled-back`` (off the new bundle again after the
rollout's own rollback).

The device's own lifecycle phases (``idle``, ``downloading``, ...) are
:class:`edge_runtime.update.lifecycle.UpdatePhase`: the protocol's names,
defined once on the device side and grouped here as the planner reads them.
"""

from __future__ import annotations

from enum import Enum

from edge_runtime.update.lifecycle import UpdatePhase

__all__ = [
    "LIVE_ROLLOUT_STATUSES",
    "RESTING_PHASES",
    "TERMINAL_DEVICE_STATUSES",
    "TERMINAL_ROLLOUT_STATUSES",
    "TERMINAL_WAVE_STATUSES",
    "UNANSWERED_DEVICE_STATUSES",
    "WORKING_PHASES",
    "DeviceStatus",
    "RolloutStatus",
    "UpdatePhase",
    "WaveStatus",
]


class RolloutStatus(str, Enum):
    """Where the rollout as a whole is."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting-approval"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled-back"

    def __str__(self) -> str:
        return self.value


class WaveStatus(str, Enum):
    """Where one wave is: sent (running), watched (watching), decided."""

    PENDING = "pending"
    RUNNING = "running"
    WATCHING = "watching"
    PASSED = "passed"
    FAILED = "failed"
    ABORTED = "aborted"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


class DeviceStatus(str, Enum):
    """Where one device is in one rollout.

    ``in-progress`` covers every device-side phase between idle and
    committed; ``failed`` means the device itself refused or rolled back the
    new bundle; ``rolled-back`` means it is off the new bundle again after
    the rollout's own rollback.
    """

    PENDING = "pending"
    SENT = "sent"
    IN_PROGRESS = "in-progress"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"
    TIMED_OUT = "timed-out"

    def __str__(self) -> str:
        return self.value


LIVE_ROLLOUT_STATUSES = frozenset(
    {
        RolloutStatus.PENDING,
        RolloutStatus.RUNNING,
        RolloutStatus.PAUSED,
        RolloutStatus.AWAITING_APPROVAL,
    }
)
"""A rollout in one of these still moves on its own (ticks, waves, gates)."""
TERMINAL_ROLLOUT_STATUSES = frozenset(RolloutStatus) - LIVE_ROLLOUT_STATUSES
"""Finished: only device reports still change it (a late commit, a rollback converging)."""
TERMINAL_WAVE_STATUSES = frozenset(
    {WaveStatus.PASSED, WaveStatus.FAILED, WaveStatus.ABORTED, WaveStatus.SKIPPED}
)
TERMINAL_DEVICE_STATUSES = frozenset(
    {
        DeviceStatus.COMMITTED,
        DeviceStatus.ROLLED_BACK,
        DeviceStatus.TIMED_OUT,
        DeviceStatus.FAILED,
    }
)
"""A device's outcome in a rollout (a timed-out device may still commit later)."""
UNANSWERED_DEVICE_STATUSES = frozenset(
    {DeviceStatus.SENT, DeviceStatus.IN_PROGRESS, DeviceStatus.TIMED_OUT}
)
"""Sent the bundle, no final answer yet: a finished rollout keeps following these."""

RESTING_PHASES = frozenset({UpdatePhase.IDLE, UpdatePhase.COMMITTED, UpdatePhase.ROLLED_BACK})
"""Device phases with no update in progress."""
WORKING_PHASES = frozenset(UpdatePhase) - RESTING_PHASES
"""Device phases between an assignment and its outcome."""
