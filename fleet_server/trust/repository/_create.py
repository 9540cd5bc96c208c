"""A new repository: the first version of every role, signed by the keys of a :class:`KeySet`."""

from __future__ import annotations

import logging

# tuf.api.metadata re-exports its classes without __all__, which mypy (no implicit
# re-export) reads as private; the types still resolve.
from tuf.api.metadata import (  # type: ignore[attr-defined, unused-ignore]
    TOP_LEVEL_ROLE_NAMES,
    Metadata,
    Root,
    Targets,
)

from fleet_server.errors import ReleaseError
from fleet_server.trust.keys import KeySet
from fleet_server.trust.repository._bins import (
    ASSIGNMENTS_ROLE,
    check_bin_count,
    delegation_to_assignments,
    delegation_to_bins,
    succinct_roles,
)
from fleet_server.trust.repository._signing import Expiry, checked_threshold, sign
from fleet_server.trust.repository._snapshot import write_snapshot_and_timestamp
from fleet_server.trust.repository._storage import MetadataFolder

__all__ = ["create_repository"]

log = logging.getLogger(__name__)


def create_repository(folder: MetadataFolder, keys: KeySet, expiry: Expiry, bins: int) -> None:
    """Write root v1, targets, assignments (delegating to ``bins`` hashed bins), the bins, snapshot, timestamp.

    Everything is signed before the first file is written; refused where a
    repository already is.
    """
    check_bin_count(bins)
    folder.path.mkdir(parents=True, exist_ok=True)
    if folder.holds_repository():
        raise ReleaseError(f"{folder.path} already holds a TUF repository")
    root = Root(expires=expiry.expires("root"), consistent_snapshot=False)
    for role in sorted(TOP_LEVEL_ROLE_NAMES):
        for key in keys.public_keys(role):
            root.add_key(key, role)
        root.roles[role].threshold = checked_threshold(keys, role)
    assignment_keys = keys.public_keys(ASSIGNMENTS_ROLE)
    targets = Targets(
        expires=expiry.expires("targets"),
        delegations=delegation_to_assignments(
            assignment_keys, checked_threshold(keys, ASSIGNMENTS_ROLE)
        ),
    )
    root_md = Metadata(root)
    sign(root_md, keys.role("root"), root, "root")
    targets_md = Metadata(targets)
    sign(targets_md, keys.role("targets"), root, "targets")
    delegations = delegation_to_bins(
        assignment_keys, checked_threshold(keys, ASSIGNMENTS_ROLE), bins
    )
    assignments = Targets(expires=expiry.expires(ASSIGNMENTS_ROLE), delegations=delegations)
    assignments_md = Metadata(assignments)
    sign(assignments_md, keys.role(ASSIGNMENTS_ROLE), targets, ASSIGNMENTS_ROLE)
    bin_mds = {}
    for name in succinct_roles(folder, assignments).get_roles():
        bin_mds[name] = Metadata(Targets(expires=expiry.expires(ASSIGNMENTS_ROLE)))
        sign(bin_mds[name], keys.role(ASSIGNMENTS_ROLE), assignments, name)
    folder.write_root(root_md)
    folder.write("targets", targets_md)
    folder.write(ASSIGNMENTS_ROLE, assignments_md)
    for name, md in bin_mds.items():
        folder.write(name, md)
    write_snapshot_and_timestamp(
        folder, expiry, keys.role("snapshot"), keys.role("timestamp"), root
    )
    log.info("created TUF repository in %s (%d assignment bins)", folder.path, bins)
