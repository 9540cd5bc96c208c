"""The device update lifecycle as a pure state machine: a persisted state in, a new state and events out.

``idle -> downloading -> verifying -> staged -> smoke-testing -> activating ->
probation -> committed | rolled-back``. Nothing here does I/O or reads a
clock: every input is a method of :class:`UpdateState` that takes the time
and returns a :class:`Transition` (the new state and the
:class:`UpdateEvent` list to publish), in the manner of python-tuf's
``TrustedMetadataSet``. The device agent around it downloads, verifies,
smoke-tests, swaps models and persists each new state before it acts on it.

Invariants the transitions keep:

* outside ``activating`` and ``probation`` the active bundle is the last good
  one; ``activated`` makes the target active, ``probation_passed`` makes it the
  last good, and every failure from ``activating`` or ``probation`` makes the
  last good active again;
* work is keyed by (bundle sha256, assignment version): an assignment whose
  version is not newer than the last one handled is ignored, so QoS 1
  repeats, retained metadata re-read after a reconnect and a rolled-back
  bundle offered again under the same assignment change nothing;
* ``committed`` and ``rolled-back`` keep the finished target (the key of the
  outcome, for the retained reported state) and accept the next assignment
  exactly as ``idle`` does.

The phases (:class:`UpdatePhase`) are the protocol's state names, defined
once in :mod:`edge_runtime.protocol` and re-exported here;
:func:`state_report` and :func:`event_report` turn a state and its events into
the protocol's messages.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from edge_runtime.errors import IllegalTransitionError
from edge_runtime.protocol import (
    PROTOCOL_VERSION,
    RECENT_EVENTS,
    RECENT_REASON_CHARS,
    EventReport,
    ProbationFigures,
    ReportedBundle,
    ReportedTarget,
    StateReport,
    UpdatePhase,
)

__all__ = [
    "HISTORY_LIMIT",
    "PROTOCOL_VERSION",
    "BundleRef",
    "Target",
    "Transition",
    "UpdateEvent",
    "UpdatePhase",
    "UpdateState",
    "event_payload",
    "event_report",
    "protected_bundles",
    "recover",
    "reported_state",
    "state_report",
]

HISTORY_LIMIT = 50
"""How many recent events the persisted state keeps."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _check_sha256(value: str) -> str:
    if not _SHA256_RE.match(value):
        raise ValueError("must be 64 lowercase hex digits (a sha256)")
    return value


def _check_time(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite, non-negative Unix time")
    return value


def _clip(reason: str, limit: int = 1024) -> str:
    """Reasons can quote a backend's error text; keep them to a publishable size."""
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


Sha256 = Annotated[str, AfterValidator(_check_sha256)]
Timestamp = Annotated[float, AfterValidator(_check_time)]


_RESTING = frozenset({UpdatePhase.IDLE, UpdatePhase.COMMITTED, UpdatePhase.ROLLED_BACK})
"""Phases with no update in progress: they accept the next assignment."""
_SERVING_TARGET = frozenset({UpdatePhase.ACTIVATING, UpdatePhase.PROBATION})
"""Phases in which a failure must bring the last good bundle back."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleRef(_Frozen):
    """A bundle by identity plus the name and version people read."""

    sha256: Sha256
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)


class Target(_Frozen):
    """The bundle an assignment asks for, and that assignment's version."""

    bundle: BundleRef
    assignment: int = Field(ge=0)

    @property
    def key(self) -> tuple[str, int]:
        """(sha256, assignment): how the device and the server key update work."""
        return self.bundle.sha256, self.assignment


class UpdateEvent(_Frozen):
    """One transition or failure of one target, as published on ``devices/<id>/events``."""

    bundle: Sha256
    assignment: int = Field(ge=0)
    from_state: UpdatePhase
    to_state: UpdatePhase
    reason: str = Field(max_length=4096)
    at: Timestamp


class Transition(NamedTuple):
    """What an input does: the state to persist, then the events to publish (in order)."""

    state: UpdateState
    events: list[UpdateEvent]


class UpdateState(_Frozen):
    """Everything the device must remember about updates across a power cut (``state.json``)."""

    schema_version: Literal[1] = 1
    phase: UpdatePhase = UpdatePhase.IDLE
    active: BundleRef | None = None
    """The bundle that serves frames now (or will again after a restart)."""
    last_good: BundleRef | None = None
    """The bundle to fall back to: the last one committed (or provisioned)."""
    target: Target | None = None
    """The bundle being installed; after ``committed``/``rolled-back``, the one just finished."""
    handled_assignment: int | None = None
    """The newest assignment version acted on; older and equal versions are ignored."""
    started_at: Timestamp | None = None
    """When work on the target began."""
    probation_started_at: Timestamp | None = None
    restarts: int = Field(default=0, ge=0)
    """Restarts while verifying or smoke-testing the current target (crash-loop guard)."""
    updated_at: Timestamp = 0.0
    sequence: int = Field(default=0, ge=0)
    """Increases with every change, so a reader can tell the newer of two copies."""
    epoch: str = Field(default="", max_length=32, pattern=r"^[0-9a-f]*$")
    """Names this state's lineage (made once, with the first state): a wiped store starts a
    new epoch, so the fleet server orders reports by (epoch, sequence), never by clocks."""
    history: tuple[UpdateEvent, ...] = Field(default=(), max_length=HISTORY_LIMIT)

    @classmethod
    def initial(
        cls, active: BundleRef | None = None, now: float = 0.0, epoch: str | None = None
    ) -> UpdateState:
        """A fresh idle state; a provisioned bundle (if any) is both active and last good.

        ``epoch`` defaults to a new random one.
        """
        return cls(
            active=active,
            last_good=active,
            updated_at=now,
            epoch=secrets.token_hex(8) if epoch is None else epoch,
        )

    # --- inputs ---------------------------------------------------------------------

    def assignment_seen(self, bundle: BundleRef, assignment: int, now: float) -> Transition:
        """A verified assignment names ``bundle`` at version ``assignment``.

        Ignored (no change) when the version is not newer than the last one
        handled. A newer version naming the bundle already being installed
        only adopts the new version number. A newer version naming another
        bundle supersedes the update in progress: before activation it is
        abandoned (``idle``), after it the last good bundle comes back
        (``rolled-back``). Then, unless the bundle is the active one,
        downloading starts.
        """
        if assignment < 0:
            raise IllegalTransitionError(f"assignment version {assignment} is negative")
        if self.handled_assignment is not None and assignment <= self.handled_assignment:
            return Transition(self, [])
        if self.phase not in _RESTING and self.target is not None:
            if bundle.sha256 == self.target.bundle.sha256:
                adopted = Target(bundle=self.target.bundle, assignment=assignment)
                return Transition(
                    self._changed(now, target=adopted, handled_assignment=assignment), []
                )
            reason = f"superseded by assignment {assignment} (bundle {bundle.sha256[:12]})"
            if self.phase in _SERVING_TARGET:
                current, first = self._roll_back(reason, now)
            else:  # abandoned: idle keeps no target (nothing to protect or report)
                current, first = self._move(UpdatePhase.IDLE, reason, now, target=None)
            following = current.assignment_seen(bundle, assignment, now)
            return Transition(following.state, first + following.events)
        if self.active is not None and bundle.sha256 == self.active.sha256:
            return Transition(self._changed(now, handled_assignment=assignment), [])
        target = Target(bundle=bundle, assignment=assignment)
        return self._move(
            UpdatePhase.DOWNLOADING,
            f"assignment {assignment}: {bundle.name} {bundle.version}",
            now,
            target=target,
            handled_assignment=assignment,
            started_at=now,
            probation_started_at=None,
            restarts=0,
        )

    def download_complete(self, now: float) -> Transition:
        """Every byte of the target is on disk (not yet trusted)."""
        self._expect("download complete", UpdatePhase.DOWNLOADING)
        return self._move(UpdatePhase.VERIFYING, "download complete", now)

    def verified(self, now: float) -> Transition:
        """The file matches the signed target and is in the bundle store."""
        self._expect("verified", UpdatePhase.VERIFYING)
        return self._move(UpdatePhase.STAGED, "verified against the signed target", now)

    def verification_failed(self, reason: str, now: float) -> Transition:
        """The file is not the signed target (or is not a valid bundle): abandon it."""
        self._expect("verification failed", UpdatePhase.VERIFYING)
        return self._move(UpdatePhase.ROLLED_BACK, f"verification failed: {reason}", now)

    def smoke_started(self, now: float) -> Transition:
        """The smoke test of the staged bundle has begun."""
        self._expect("smoke test started", UpdatePhase.STAGED)
        return self._move(UpdatePhase.SMOKE_TESTING, "smoke test started", now)

    def smoke_passed(self, now: float) -> Transition:
        """Load, tensor specs, golden vectors and latency budget are fine: swap it in."""
        self._expect("smoke test passed", UpdatePhase.SMOKE_TESTING)
        return self._move(UpdatePhase.ACTIVATING, "smoke test passed", now)

    def smoke_failed(self, reason: str, now: float) -> Transition:
        """The smoke test failed; the active bundle never changed."""
        self._expect("smoke test failed", UpdatePhase.SMOKE_TESTING)
        return self._move(UpdatePhase.ROLLED_BACK, f"smoke test failed: {reason}", now)

    def activated(self, now: float) -> Transition:
        """The target serves frames now; probation begins."""
        self._expect("activated", UpdatePhase.ACTIVATING)
        assert self.target is not None  # _expect checked it
        return self._move(
            UpdatePhase.PROBATION,
            "activated; probation started",
            now,
            active=self.target.bundle,
            probation_started_at=now,
        )

    def probation_passed(self, now: float) -> Transition:
        """Probation ended without failure: the target becomes the last good bundle."""
        self._expect("probation passed", UpdatePhase.PROBATION)
        assert self.target is not None  # _expect checked it
        return self._move(
            UpdatePhase.COMMITTED, "probation passed", now, last_good=self.target.bundle
        )

    def probation_failed(self, reason: str, now: float) -> Transition:
        """Probation failed (crash, NaN/inf, latency, confidence collapse): roll back."""
        self._expect("probation failed", UpdatePhase.PROBATION)
        return self._roll_back(f"probation failed: {reason}", now)

    def failed(self, reason: str, now: float) -> Transition:
        """Any failure of the update in progress (from any phase that has one).

        Before activation the update is abandoned; from ``activating`` or
        ``probation`` the last good bundle becomes active again. Either way the
        phase becomes ``rolled-back``.
        """
        if self.phase in _RESTING or self.target is None:
            raise IllegalTransitionError(
                f"cannot take 'failed' ({reason}) in state {self.phase.value!r}: "
                "no update is in progress"
            )
        if self.phase in _SERVING_TARGET:
            return self._roll_back(reason, now)
        return self._move(UpdatePhase.ROLLED_BACK, reason, now)

    # --- helpers --------------------------------------------------------------------

    def _expect(self, what: str, phase: UpdatePhase) -> None:
        if self.phase is not phase or self.target is None:
            raise IllegalTransitionError(
                f"cannot take {what!r} in state {self.phase.value!r} "
                f"(only in {phase.value!r} with a target)"
            )

    def _changed(self, now: float, **changes: Any) -> UpdateState:
        """A validated copy with ``changes``, a newer sequence and ``updated_at``."""
        data = {**self.__dict__, **changes, "sequence": self.sequence + 1, "updated_at": now}
        return UpdateState.model_validate(data)

    def _move(self, to: UpdatePhase, reason: str, now: float, **changes: Any) -> Transition:
        """Go to phase ``to`` with one event for the (new or current) target."""
        target: Target | None = changes.get("target") or self.target  # None clears it after
        if target is None:
            raise IllegalTransitionError(
                f"cannot go from {self.phase.value!r} to {to.value!r} without a target"
            )
        event = UpdateEvent(
            bundle=target.bundle.sha256,
            assignment=target.assignment,
            from_state=self.phase,
            to_state=to,
            reason=_clip(reason),
            at=now,
        )
        history = (*self.history, event)[-HISTORY_LIMIT:]
        return Transition(self._changed(now, phase=to, history=history, **changes), [event])

    def _roll_back(self, reason: str, now: float) -> Transition:
        """``rolled-back`` with the last good bundle active again."""
        return self._move(
            UpdatePhase.ROLLED_BACK,
            reason,
            now,
            active=self.last_good,
            probation_started_at=None,
        )


def recover(
    state: UpdateState, now: float, *, bundle_present: bool = True, max_restarts: int = 3
) -> Transition:
    """What to do with a persisted state after the device restarted.

    ``bundle_present`` says whether the target's bytes are still on disk,
    either as the completed download or already moved into the bundle store
    (a restart can fall between the move and persisting ``staged``).

    * ``idle``, ``committed``, ``rolled-back``: unchanged.
    * ``downloading``: unchanged; the download resumes from its bitmap.
    * ``verifying``, ``staged``, ``smoke-testing``: back to ``verifying`` the
      same target, which is checked again from the start; abandoned
      (``rolled-back``) when its file is gone or after ``max_restarts``
      restarts in these phases (a bundle that crashes the process on load
      must not crash it forever).
    * ``activating``, ``probation``: a crash there counts as a failure:
      ``rolled-back`` with the last good bundle active, reason
      ``"restarted during <phase>"``.
    """
    phase = state.phase
    if phase in _RESTING or phase is UpdatePhase.DOWNLOADING:
        return Transition(state, [])
    if phase in _SERVING_TARGET:
        return state._roll_back(f"restarted during {phase.value}", now)
    if not bundle_present:
        return state._move(
            UpdatePhase.ROLLED_BACK, f"restarted during {phase.value}: the bundle file is gone", now
        )
    if state.restarts >= max_restarts:
        return state._move(
            UpdatePhase.ROLLED_BACK,
            f"restarted {state.restarts + 1} times during {phase.value}; giving up",
            now,
        )
    if phase is UpdatePhase.VERIFYING:
        return Transition(state._changed(now, restarts=state.restarts + 1), [])
    return state._move(
        UpdatePhase.VERIFYING,
        f"restarted during {phase.value}; verifying the bundle again",
        now,
        restarts=state.restarts + 1,
    )


def protected_bundles(state: UpdateState) -> set[str]:
    """The sha256s the store must keep for ``state``: active, last good and the target."""
    refs = [state.active, state.last_good, None if state.target is None else state.target.bundle]
    return {ref.sha256 for ref in refs if ref is not None}


def state_report(
    device_id: str, state: UpdateState, runtime_version: str, *, store_problem: str | None = None
) -> StateReport:
    """The retained ``devices/<id>/state`` message for ``state`` (``docs/protocol.md``).

    ``store_problem`` says why the state cannot be persisted (clipped to 500 characters).
    """
    return StateReport(
        device_id=device_id,
        state=state.phase,
        active=None if state.active is None else _reported(state.active),
        last_good=None if state.last_good is None else _reported(state.last_good),
        target=None
        if state.target is None
        else ReportedTarget(bundle=state.target.bundle.sha256, assignment=state.target.assignment),
        runtime_version=runtime_version,
        updated_at=state.updated_at,
        sequence=state.sequence,
        epoch=state.epoch,
        store_problem=None if store_problem is None else _clip(store_problem, 500),
        recent=[
            event_report(device_id, event).model_copy(
                update={"reason": _clip(event.reason, RECENT_REASON_CHARS)}
            )
            for event in state.history[-RECENT_EVENTS:]
        ]
        or None,
    )


def event_report(
    device_id: str, event: UpdateEvent, probation: list[ProbationFigures] | None = None
) -> EventReport:
    """The ``devices/<id>/events`` message for one lifecycle event (``docs/protocol.md``);
    ``probation``: the per-camera figures of the probation it ends."""
    return EventReport.transition(
        device_id,
        bundle=event.bundle,
        assignment=event.assignment,
        from_state=event.from_state,
        to_state=event.to_state,
        reason=event.reason,
        at=event.at,
        probation=probation,
    )


def reported_state(device_id: str, state: UpdateState, runtime_version: str) -> dict[str, Any]:
    """The JSON object of :func:`state_report`."""
    return state_report(device_id, state, runtime_version).to_dict()


def event_payload(device_id: str, event: UpdateEvent) -> dict[str, Any]:
    """The JSON object of :func:`event_report`."""
    return event_report(device_id, event).to_dict()


def _reported(ref: BundleRef) -> ReportedBundle:
    return ReportedBundle(bundle=ref.sha256, name=ref.name, version=ref.version)
