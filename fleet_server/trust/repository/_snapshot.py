"""Snapshot and timestamp (online keys): pin the version, length and sha256 of what they describe.

The snapshot lists ``targets``, ``assignments`` and every hashed bin; the
timestamp pins the snapshot. Both are signed before either is written, and
the snapshot is written before the timestamp that names it.
"""

from __future__ import annotations

import logging

# tuf.api.metadata re-exports its classes without __all__, which mypy (no implicit
# re-export) reads as private; the types still resolve.
from tuf.api.metadata import (  # type: ignore[attr-defined, unused-ignore]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)

from fleet_server.trust.repository._bins import ASSIGNMENTS_ROLE, succinct_roles
from fleet_server.trust.repository._signing import Expiry, Signers, sign
from fleet_server.trust.repository._storage import HASH_ALGORITHMS, MetadataFolder

__all__ = ["write_snapshot_and_timestamp"]

log = logging.getLogger(__name__)


def write_snapshot_and_timestamp(
    folder: MetadataFolder,
    expiry: Expiry,
    snapshot_signers: Signers,
    timestamp_signers: Signers,
    root: Root,
) -> None:
    """Sign the next snapshot of what ``folder`` holds now, and the next timestamp; write both."""
    meta: dict[str, MetaFile] = {}
    for role in ("targets", ASSIGNMENTS_ROLE, *succinct_roles(folder).get_roles()):
        data = folder.read(f"{role}.json")
        version = folder.parse(role, data, Targets).signed.version
        meta[f"{role}.json"] = MetaFile.from_data(version, data, HASH_ALGORITHMS)
    snapshot_version = (
        folder.load("snapshot", Snapshot).signed.version + 1 if folder.exists("snapshot") else 1
    )
    snapshot = Metadata(
        Snapshot(version=snapshot_version, expires=expiry.expires("snapshot"), meta=meta)
    )
    sign(snapshot, snapshot_signers, root, "snapshot")
    snapshot_bytes = snapshot.to_bytes()
    timestamp_version = (
        folder.load("timestamp", Timestamp).signed.version + 1 if folder.exists("timestamp") else 1
    )
    timestamp = Metadata(
        Timestamp(
            version=timestamp_version,
            expires=expiry.expires("timestamp"),
            snapshot_meta=MetaFile.from_data(snapshot_version, snapshot_bytes, HASH_ALGORITHMS),
        )
    )
    sign(timestamp, timestamp_signers, root, "timestamp")
    folder.write_bytes("snapshot", snapshot_bytes)
    folder.write("timestamp", timestamp)
    log.debug("snapshot v%d, timestamp v%d", snapshot_version, timestamp_version)
