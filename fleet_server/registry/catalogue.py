"""The catalogue: released bundles and the assignments that name them."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from edge_runtime.bundle import Bundle
from fleet_server import db
from fleet_server.errors import RegistryError
from fleet_server.records import (
    ASSIGNMENT_KINDS,
    AssignmentInfo,
    AssignmentKind,
    BundleInfo,
)
from fleet_server.registry._rows import (
    assignment_info,
    bundle_info,
    checked_name,
    get_bundle,
    timeline_entry,
)
from fleet_server.registry.unit import UnitOfWork

log = logging.getLogger(__name__)

__all__ = ["Catalogue"]


class Catalogue(UnitOfWork):
    """The catalogue: released bundles and the assignments that name them."""

    # --- bundles ------------------------------------------------------------------------

    def import_bundle(self, bundle: Bundle, *, released_at: float | None = None) -> BundleInfo:
        """Record a released bundle with its quality report and baseline; a repeat changes nothing."""
        manifest = bundle.manifest
        quality = manifest.quality
        distribution = None
        shares = None if quality is None else quality.class_distribution
        if shares is not None and len(shares) == len(manifest.labels):
            distribution = dict(zip(manifest.labels, shares, strict=True))
        row = db.Bundle(
            sha256=bundle.sha256,
            name=manifest.name,
            version=manifest.version,
            format=manifest.model.format,
            precision=manifest.model.precision,
            size=bundle.size,
            released_at=self._clock() if released_at is None else released_at,
            labels=list(manifest.labels),
            quality=None if quality is None else quality.model_dump(mode="json"),
            baseline_accuracy=None if quality is None else quality.accuracy,
            baseline_mean_confidence=None if quality is None else quality.mean_confidence,
            baseline_class_distribution=distribution,
            latency_budget_ms=manifest.compatibility.latency_budget_ms,
            manifest=manifest.model_dump(mode="json"),
        )
        try:
            with self._transaction(write=True) as session:
                existing = session.get(db.Bundle, bundle.sha256)
                if existing is not None:
                    return bundle_info(existing)
                session.add(row)
                session.add(
                    timeline_entry(
                        "bundle-imported",
                        f"imported {row.name} {row.version}",
                        data={"bundle": row.sha256},
                        at=row.released_at,
                    )
                )
        except IntegrityError:
            log.debug("bundle %s was imported concurrently", bundle.sha256)
            return self.bundle(bundle.sha256)
        log.info("imported bundle %s %s (%s)", row.name, row.version, row.sha256[:12])
        return bundle_info(row)

    def bundles(self) -> list[BundleInfo]:
        """Every released bundle, oldest release first."""
        with self._transaction() as session:
            rows = session.scalars(select(db.Bundle).order_by(db.Bundle.released_at))
            return [bundle_info(row) for row in rows]

    def bundle(self, sha256: str) -> BundleInfo:
        """The bundle with this sha256."""
        with self._transaction() as session:
            return bundle_info(get_bundle(session, sha256))

    # --- assignments --------------------------------------------------------------------

    def set_assignment(
        self, kind: AssignmentKind, name: str, sha256: str, version: int
    ) -> AssignmentInfo:
        """Record that ``assignments/<kind>/<name>`` names a bundle at assignment ``version``.

        Versions only grow: a repeat of the stored one changes nothing, an
        older version or the same version naming another bundle is refused.
        """
        if kind not in ASSIGNMENT_KINDS:
            raise RegistryError(f"assignment kind must be devices or groups, not {kind!r}")
        checked_name(name, "device id" if kind == "devices" else "group name")
        if version < 0:
            raise RegistryError(f"assignment version {version} is negative")
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                get_bundle(session, sha256)
                row = session.scalar(
                    select(db.Assignment)
                    .where(db.Assignment.kind == kind, db.Assignment.name == name)
                    .with_for_update()
                )
                if row is not None:
                    if version == row.version and sha256 == row.bundle_sha256:
                        return assignment_info(row)
                    if version <= row.version:
                        raise RegistryError(
                            f"assignment {kind}/{name} is at version {row.version}; "
                            f"version {version} (bundle {sha256[:12]}) is not newer"
                        )
                else:
                    row = db.Assignment(kind=kind, name=name)
                    session.add(row)
                row.bundle_sha256, row.version, row.updated_at = sha256, version, now
                device = session.get(db.Device, name) if kind == "devices" else None
                device_id = None if device is None else device.id
                message = f"{kind}/{name} -> bundle {sha256[:12]} (assignment {version})"
                session.add(
                    timeline_entry(
                        "assignment",
                        message,
                        device_id=device_id,
                        data={"kind": kind, "name": name, "bundle": sha256, "assignment": version},
                        at=now,
                    )
                )
                session.flush()
                return assignment_info(row)
        except IntegrityError as exc:
            raise RegistryError(
                f"assignment {kind}/{name} was changed concurrently; read it again and retry"
            ) from exc

    def clear_assignment(self, kind: AssignmentKind, name: str) -> bool:
        """Forget ``assignments/<kind>/<name>``; False when there was none."""
        now = self._clock()
        with self._transaction(write=True) as session:
            result = session.execute(
                delete(db.Assignment).where(db.Assignment.kind == kind, db.Assignment.name == name)
            )
            if not getattr(result, "rowcount", 0):
                return False
            device = session.get(db.Device, name) if kind == "devices" else None
            session.add(
                timeline_entry(
                    "assignment-cleared",
                    f"{kind}/{name} no longer assigned",
                    device_id=None if device is None else device.id,
                    data={"kind": kind, "name": name},
                    at=now,
                )
            )
            return True

    def assignments(self) -> list[AssignmentInfo]:
        """Every assignment, devices first, by name."""
        with self._transaction() as session:
            rows = session.scalars(
                select(db.Assignment).order_by(db.Assignment.kind, db.Assignment.name)
            )
            return [assignment_info(row) for row in rows]
