"""Approving the wave a rollout waits for: one person's approval, or two different people's (four-eyes).

A wave with ``approval_before_next`` holds the next wave until it is
approved; its ``approvals_required`` (1 or 2) says by how many different
people. The approvers are named by their API token (the audit log's "who")
and kept in the planner's state (:attr:`RolloutState.approved_by`), so a
restarted server, or another replica, counts the same approvals. An
approval by someone who already approved that wave does not count (a 409,
saying a second person is needed); the second distinct approval releases
the wave. Pure, like the rest of the planner: no clock, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet_server import rollout_rules as rules
from fleet_server.errors import IllegalRolloutTransitionError
from fleet_server.rollout_progress import EventKind, Step
from fleet_server.rollout_spec import wave_label
from fleet_server.statuses import RolloutStatus

if TYPE_CHECKING:
    from fleet_server.rollout_plan import RolloutState

__all__ = ["approvals_required", "approve"]


def approvals_required(state: RolloutState) -> int:
    """How many different people must approve the wave after the current one."""
    return state.spec.waves[state.current_wave].approvals_required


def approve(state: RolloutState, now: float, by: str | None) -> Step:
    """``by`` (a token's name; None: an unnamed caller) approves the wave the rollout waits for."""
    if state.status is not RolloutStatus.AWAITING_APPROVAL:
        hint = " (resume it first)" if state.status is RolloutStatus.PAUSED else ""
        raise IllegalRolloutTransitionError(
            f"cannot approve a rollout that is {state.status.value}{hint}"
        )
    later = range(state.current_wave + 1, len(state.waves))
    nxt = next((i for i in later if state.waves[i].devices), state.current_wave + 1)
    label, needed = wave_label(nxt), approvals_required(state)
    if needed > 1 and by is None:
        raise IllegalRolloutTransitionError(
            f"{label} needs the approval of {needed} different people: approve with a named token"
        )
    if by is not None and by in state.approved_by:
        raise IllegalRolloutTransitionError(
            f"{label} is already approved by {by}; it needs the approval of "
            f"{needed - len(state.approved_by)} more person (four-eyes), not the same one twice"
        )
    approvers = state.approved_by if by is None else (*state.approved_by, by)
    if needed > 1 and len(approvers) < needed:
        message = (
            f"{label} approved by {by} ({len(approvers)} of {needed}); "
            f"it waits for {needed - len(approvers)} more person's approval"
        )
        event = state._event(EventKind.APPROVED, now, message, wave=nxt)
        return Step(state._changed(now, approved_by=approvers), [], [event])
    message = f"{label} approved" + (f" by {' and '.join(approvers)}" if approvers else "")
    event = state._event(EventKind.APPROVED, now, message, wave=nxt)
    released = state._changed(now, status=RolloutStatus.RUNNING, approved_by=())
    return rules.open_from(released, state.current_wave + 1, now, [], [event])
