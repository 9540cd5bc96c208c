"""Taking a new bundle from the fleet: lifecycle, bundle store, smoke test and probation.

The lifecycle (:mod:`edge_runtime.update.lifecycle`) and the probation
monitor are pure; the store does the file I/O; the smoke test runs the
untrusted model. The device agent wires them to MQTT and the pipeline.
"""

from __future__ import annotations

from edge_runtime.update.lifecycle import (
    HISTORY_LIMIT,
    BundleRef,
    Target,
    Transition,
    UpdateEvent,
    UpdatePhase,
    UpdateState,
    event_payload,
    event_report,
    protected_bundles,
    recover,
    reported_state,
    state_report,
)
from edge_runtime.update.probation import (
    CameraProbation,
    ProbationMonitor,
    ProbationVerdict,
    confidence_baseline,
    dead_cameras,
)
from edge_runtime.update.smoke import SmokeReport, smoke_test
from edge_runtime.update.store import BundleStore

__all__ = [
    "HISTORY_LIMIT",
    "BundleRef",
    "BundleStore",
    "CameraProbation",
    "ProbationMonitor",
    "ProbationVerdict",
    "SmokeReport",
    "Target",
    "Transition",
    "UpdateEvent",
    "UpdatePhase",
    "UpdateState",
    "confidence_baseline",
    "dead_cameras",
    "event_payload",
    "event_report",
    "protected_bundles",
    "recover",
    "reported_state",
    "smoke_test",
    "state_report",
]
