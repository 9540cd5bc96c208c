"""The ``assignments`` role and its hashed bins: which target paths exist and which bin holds each.

The top-level ``targets`` role delegates ``assignments/devices/*`` and
``assignments/groups/*`` to ``assignments`` (terminating), which lists no
target itself: it delegates every path to ``2**bit_length`` hashed bins (TUF
TAP 15 succinct delegation, as PEP 458 does). A path belongs to the bin
numbered by the leading ``bit_length`` bits of its sha256, named
``assignments-bin-<hex>``; every bin is signed by the same online
assignments key(s). ``bit_length`` is chosen when the repository is created
and kept in the metadata.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

# securesystemslib.signer and tuf.api.metadata re-export their classes without __all__,
# which mypy (no implicit re-export) reads as private; the types still resolve.
from securesystemslib.signer import Key  # type: ignore[attr-defined, unused-ignore]
from tuf.api.metadata import (  # type: ignore[attr-defined, unused-ignore]
    DelegatedRole,
    Delegations,
    SuccinctRoles,
    Targets,
)

from edge_runtime.trust import BIN_NAME_PREFIX
from fleet_server.errors import ReleaseError
from fleet_server.trust.repository._storage import MetadataFolder

__all__ = [
    "ASSIGNMENTS_ROLE",
    "ASSIGNMENT_PATHS",
    "BIN_NAME_PREFIX",
    "DEFAULT_BINS",
    "AssignmentKind",
    "assignment_path",
    "by_bin",
    "check_bin_count",
    "delegation_to_assignments",
    "delegation_to_bins",
    "succinct_roles",
]

ASSIGNMENTS_ROLE = "assignments"
"""The delegated role, signed by the online key, that says which bundle each device or group runs."""
ASSIGNMENT_PATHS = ["assignments/devices/*", "assignments/groups/*"]
"""Target paths the ``assignments`` role may sign (TUF patterns match one path segment per ``*``)."""
DEFAULT_BINS = 64
"""Hashed bins of a new repository: about 16 devices per bin in a fleet of 1,000."""
_MAX_BINS = 1 << 12

AssignmentKind = Literal["devices", "groups"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_bin_count(bins: int) -> None:
    """Refuse a bin count that is not a power of two from 2 to 4096."""
    if bins < 2 or bins > _MAX_BINS or bins & (bins - 1):
        raise ReleaseError(f"bins must be a power of two from 2 to {_MAX_BINS}, not {bins}")


def assignment_path(kind: str, name: str) -> str:
    """The target path ``assignments/<kind>/<name>``; refused for an unknown kind or a bad name."""
    if kind not in ("devices", "groups"):
        raise ReleaseError(f"assignment kind must be 'devices' or 'groups', not {kind!r}")
    if not _NAME_RE.match(name):
        raise ReleaseError(
            f"{name!r} is not a valid {kind[:-1]} name (letters, digits, '.', '_', '-'; 1-64)"
        )
    return f"assignments/{kind}/{name}"


def delegation_to_assignments(keys: list[Key], threshold: int) -> Delegations:
    """What the top-level ``targets`` role delegates: the assignment paths, to ``keys`` (terminating)."""
    role = DelegatedRole(
        name=ASSIGNMENTS_ROLE,
        keyids=[key.keyid for key in keys],
        threshold=threshold,
        terminating=True,
        paths=list(ASSIGNMENT_PATHS),
    )
    return Delegations(keys={key.keyid: key for key in keys}, roles={ASSIGNMENTS_ROLE: role})


def delegation_to_bins(keys: list[Key], threshold: int, bins: int) -> Delegations:
    """What the ``assignments`` role delegates: every path, to ``bins`` hashed bins signed by ``keys``."""
    succinct = SuccinctRoles(
        keyids=[key.keyid for key in keys],
        threshold=threshold,
        bit_length=bins.bit_length() - 1,
        name_prefix=BIN_NAME_PREFIX,
    )
    return Delegations(keys={key.keyid: key for key in keys}, succinct_roles=succinct)


def succinct_roles(folder: MetadataFolder, assignments: Targets | None = None) -> SuccinctRoles:
    """The hashed-bin delegation of the ``assignments`` role (read from ``folder`` unless given)."""
    signed = assignments or folder.load(ASSIGNMENTS_ROLE, Targets).signed
    delegations = signed.delegations
    if delegations is None or delegations.succinct_roles is None:
        raise ReleaseError(
            f"{folder.path / ASSIGNMENTS_ROLE}.json does not delegate to hashed bins "
            "(a repository made before bins existed): create a new repository"
        )
    return delegations.succinct_roles


def by_bin(
    folder: MetadataFolder, paths: Mapping[str, str]
) -> tuple[Targets, dict[str, dict[str, str]]]:
    """The ``assignments`` role and ``paths`` (name -> target path) grouped by bin, bins sorted."""
    assignments = folder.load(ASSIGNMENTS_ROLE, Targets).signed
    succinct = succinct_roles(folder, assignments)
    grouped: dict[str, dict[str, str]] = {}
    for name, path in paths.items():
        grouped.setdefault(succinct.get_role_for_target(path), {})[name] = path
    return assignments, dict(sorted(grouped.items()))
