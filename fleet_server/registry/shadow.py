"""Shadow reports in the database: stored as they arrive, read back for a shadow wave's gate."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import delete, select

from edge_runtime.errors import MalformedMessageError
from edge_runtime.protocol.shadow import ShadowReport
from fleet_server.db.shadow import ShadowReportRow
from fleet_server.registry.unit import UnitOfWork

log = logging.getLogger(__name__)

__all__ = ["MAX_SHADOW_REPORTS", "ShadowReports"]

MAX_SHADOW_REPORTS = 100_000
"""The most reports one read returns (a day of one-minute windows on 60 devices)."""
_IN_CHUNK = 500


class ShadowReports(UnitOfWork):
    """Devices' shadow reports (see :mod:`fleet_server.shadow_gate` for what is made of them)."""

    def record_shadow_report(self, report: ShadowReport) -> None:
        """Store one report (parsed at the boundary)."""
        with self._transaction(write=True) as session:
            session.add(
                ShadowReportRow(
                    device_id=report.device_id,
                    candidate_sha256=report.candidate_sha256,
                    status=report.status,
                    window_end=report.window_end,
                    received_at=self._clock(),
                    report=report.to_dict(),
                )
            )

    def shadow_reports(
        self, candidate_sha256: str, devices: Sequence[str], since: float
    ) -> list[ShadowReport]:
        """What ``devices`` reported about the candidate in windows that ended at or after
        ``since``, oldest first (a stored report that no longer parses is left out, logged)."""
        found: list[ShadowReport] = []
        wanted = sorted(set(devices))
        with self._transaction() as session:
            for start in range(0, len(wanted), _IN_CHUNK):
                rows = session.scalars(
                    select(ShadowReportRow)
                    .where(
                        ShadowReportRow.candidate_sha256 == candidate_sha256,
                        ShadowReportRow.window_end >= since,
                        ShadowReportRow.device_id.in_(wanted[start : start + _IN_CHUNK]),
                    )
                    .order_by(ShadowReportRow.window_end, ShadowReportRow.id)
                    .limit(MAX_SHADOW_REPORTS)
                ).all()
                for row in rows:
                    try:
                        found.append(ShadowReport.parse(row.report, row.device_id))
                    except MalformedMessageError as exc:
                        log.warning("stored shadow report %d is unreadable: %s", row.id, exc)
        found.sort(key=lambda r: r.window_end)
        return found

    def prune_shadow_reports(self, before: float) -> int:
        """Forget reports received before ``before``; how many went."""
        with self._transaction(write=True) as session:
            result = session.execute(
                delete(ShadowReportRow).where(ShadowReportRow.received_at < before)
            )
            return int(getattr(result, "rowcount", 0) or 0)
