"""Fleet-wide counts for ``/metrics``: grouped in the database, never rows loaded.

A Prometheus scrape comes every few seconds, from every Prometheus that
watches the server, so :meth:`Stats.fleet_counts` costs a handful of
``COUNT ... GROUP BY`` queries in one read transaction whatever the fleet's
size: no device, rollout or bundle row is loaded. Every replica reads the same
database, so every replica reports the same counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select

from fleet_server import db
from fleet_server.quality_gate import GateOutcome
from fleet_server.registry.unit import UnitOfWork
from fleet_server.rollout_progress import EventKind

__all__ = ["GATE_VERDICT_OUTCOMES", "FleetCounts", "Stats"]

GATE_VERDICT_OUTCOMES: tuple[str, ...] = ("passed", "failed", "undecided", "timed-out")
"""What a wave's quality gate decided: ``passed`` and ``failed`` on its figures,
``undecided`` (too little telemetry: the wave waits, counted once per wave) and
``timed-out`` (still undecided at the wave's gate timeout: the wave failed)."""

_GATE_KINDS = (
    EventKind.WAVE_PASSED.value,
    EventKind.WAVE_FAILED.value,
    EventKind.GATE_UNDECIDED.value,
)


@dataclass(frozen=True)
class FleetCounts:
    """The fleet in counts, read in one transaction."""

    availability: Mapping[str, int]
    """Devices by availability (``online``, ``offline``, ``unknown``)."""
    phases: Mapping[str | None, int]
    """Devices by the update phase they last reported (None: no state report yet)."""
    rollouts: Mapping[str, int]
    """Rollouts by status."""
    bundles: int
    """Bundles in the catalogue."""
    running: Mapping[tuple[str, str], int]
    """(name, version) of every bundle in the catalogue -> devices reporting one of its
    files active (zero included); a device running an uncatalogued bundle is in none."""
    gate_verdicts: Mapping[str, int]
    """Outcome (:data:`GATE_VERDICT_OUTCOMES`) -> waves the quality gate so judged, from the
    rollouts' timelines (an entry ages out of the timeline after a year)."""


class Stats(UnitOfWork):
    """Counts over the fleet's tables for monitoring."""

    def fleet_counts(self) -> FleetCounts:
        """Devices, rollouts, bundles and gate verdicts, counted by the database."""
        device = db.Device
        with self._transaction() as session:
            availability = session.execute(
                select(device.availability, func.count()).group_by(device.availability)
            ).all()
            phases = session.execute(
                select(device.phase, func.count()).group_by(device.phase)
            ).all()
            rollouts = session.execute(
                select(db.Rollout.status, func.count()).group_by(db.Rollout.status)
            ).all()
            bundles = session.scalar(select(func.count()).select_from(db.Bundle)) or 0
            per_bundle = (  # devices grouped once, then joined to the (small) catalogue
                select(device.active_bundle.label("sha256"), func.count().label("devices"))
                .where(device.active_bundle.is_not(None))
                .group_by(device.active_bundle)
                .subquery()
            )
            running = session.execute(
                select(
                    db.Bundle.name,
                    db.Bundle.version,
                    func.coalesce(func.sum(per_bundle.c.devices), 0),
                )
                .outerjoin(per_bundle, per_bundle.c.sha256 == db.Bundle.sha256)
                .group_by(db.Bundle.name, db.Bundle.version)
            ).all()
            # a wave's entries name no device (they are the rollout's own), so the index on
            # device_id finds them among the far more numerous device entries
            entry = db.TimelineEntry
            outcome = entry.data[("verdict", "outcome")].as_string()
            verdicts = session.execute(
                select(entry.kind, outcome, func.count())
                .where(entry.device_id.is_(None), entry.kind.in_(_GATE_KINDS))
                .group_by(entry.kind, outcome)
            ).all()
        return FleetCounts(
            availability={str(value): int(count) for value, count in availability},
            phases={value: int(count) for value, count in phases},
            rollouts={str(value): int(count) for value, count in rollouts},
            bundles=int(bundles),
            running={(str(name), str(version)): int(count) for name, version, count in running},
            gate_verdicts=_verdicts((str(k), v, int(n)) for k, v, n in verdicts),
        )


def _verdicts(rows: Iterable[tuple[str, str | None, int]]) -> dict[str, int]:
    """Timeline (kind, verdict outcome, count) rows as counts per gate verdict outcome.

    A wave failed without a verdict failed its success threshold (too many
    devices failed), not the gate: it is no gate verdict.
    """
    counts = dict.fromkeys(GATE_VERDICT_OUTCOMES, 0)
    for kind, verdict, count in rows:
        if kind == EventKind.WAVE_PASSED.value:
            counts["passed"] += count
        elif kind == EventKind.GATE_UNDECIDED.value:
            counts["undecided"] += count
        elif verdict == GateOutcome.UNDECIDED.value:
            counts["timed-out"] += count
        elif verdict is not None:
            counts["failed"] += count
    return counts
