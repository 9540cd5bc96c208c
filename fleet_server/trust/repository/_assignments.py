"""Assignments (online key): which released bundle each device or group runs, kept in the hashed bins.

Each bin maps its ``assignments/<kind>/<name>`` paths to
``custom: {"bundle": "bundles/<sha256>.efb", "assignment": <n>}``. A change
re-signs only the bins it touches, and a device loads only the bins its own
paths hash into, however large the fleet. The number ``n`` grows by one with
every change of a path, also across an unassign (``assignment_counters.json``
remembers it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from securesystemslib.formats import encode_canonical

# tuf.api.metadata re-exports its classes without __all__, which mypy (no implicit
# re-export) reads as private; the types still resolve.
from tuf.api.metadata import Metadata, TargetFile, Targets  # type: ignore[attr-defined, unused-ignore]

from fleet_server.errors import ReleaseError
from fleet_server.trust.repository._bins import (
    ASSIGNMENTS_ROLE,
    AssignmentKind,
    assignment_path,
    by_bin,
    succinct_roles,
)
from fleet_server.trust.repository._signing import Expiry, Signers, new_version, sign
from fleet_server.trust.repository._storage import HASH_ALGORITHMS, MetadataFolder

__all__ = ["assign_many", "read_assignments", "resigned_bins", "unassign_many"]

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def read_assignments(folder: MetadataFolder) -> dict[str, dict[str, Any]]:
    """Every assignment, ``"<kind>/<name>"`` -> ``{"bundle": ..., "assignment": n}``."""
    return {
        path.removeprefix("assignments/"): dict(info.custom)
        for name in succinct_roles(folder).get_roles()
        for path, info in folder.load(name, Targets).signed.targets.items()
    }


def assign_many(
    folder: MetadataFolder,
    expiry: Expiry,
    kind: AssignmentKind,
    names: Sequence[str],
    bundle_sha256: str,
    *,
    signer: Signers,
) -> dict[str, int]:
    """Point each ``assignments/<kind>/<name>`` at a released bundle; each name's new assignment number.

    One new version of each bin the names touch, signed once; every bin is
    signed before the first is written. Refuses a bundle the release key has
    not signed.
    """
    if not _SHA256_RE.match(bundle_sha256):
        raise ReleaseError(f"{bundle_sha256!r} is not a bundle sha256 (64 lowercase hex digits)")
    bundle = f"bundles/{bundle_sha256}.efb"
    if bundle not in folder.load("targets", Targets).signed.targets:
        raise ReleaseError(
            f"bundle {bundle_sha256[:12]}... is not released (not a target of the "
            "release-signed targets role): release it with the release key first"
        )
    paths = {name: assignment_path(kind, name) for name in names}
    if not paths:
        return {}
    delegator, grouped = by_bin(folder, paths)
    counters = folder.counters()
    numbers: dict[str, int] = {}
    changed: list[tuple[str, Metadata[Targets]]] = []
    for bin_name, members in grouped.items():
        md = folder.load(bin_name, Targets)
        for name, target_path in members.items():
            current = md.signed.targets.get(target_path)
            previous = current.custom.get("assignment", 0) if current and current.custom else 0
            number = max(counters.get(target_path, 0), int(previous)) + 1
            custom = {"bundle": bundle, "assignment": number}
            info = TargetFile.from_data(target_path, _canonical(custom), HASH_ALGORITHMS)
            info.unrecognized_fields["custom"] = custom
            md.signed.targets[target_path] = info
            counters[target_path] = number
            numbers[name] = number
        new_version(md, expiry, ASSIGNMENTS_ROLE)
        sign(md, signer, delegator, bin_name)
        changed.append((bin_name, md))
    folder.write_counters(counters)
    for bin_name, md in changed:
        folder.write(bin_name, md)
    log.info(
        "assigned %d %s -> bundle %s in %d bin(s) (%s)",
        len(numbers),
        kind,
        bundle_sha256[:12],
        len(changed),
        ", ".join(f"{p} #{numbers[n]}" for n, p in list(paths.items())[:3])
        + (", ..." if len(paths) > 3 else ""),
    )
    return numbers


def unassign_many(
    folder: MetadataFolder,
    expiry: Expiry,
    kind: AssignmentKind,
    names: Sequence[str],
    *,
    signer: Signers,
) -> list[str]:
    """Remove each ``assignments/<kind>/<name>``, one signature per bin that changed; the names that were assigned."""
    paths = {name: assignment_path(kind, name) for name in names}
    if not paths:
        return []
    delegator, grouped = by_bin(folder, paths)
    removed: list[str] = []
    changed: list[tuple[str, Metadata[Targets]]] = []
    for bin_name, members in grouped.items():
        md = folder.load(bin_name, Targets)
        gone = [name for name, path in members.items() if md.signed.targets.pop(path, None)]
        if not gone:
            continue
        removed.extend(gone)
        new_version(md, expiry, ASSIGNMENTS_ROLE)
        sign(md, signer, delegator, bin_name)
        changed.append((bin_name, md))
    for bin_name, md in changed:
        folder.write(bin_name, md)
    if removed:
        log.info("unassigned %d %s: %s", len(removed), kind, ", ".join(removed[:3]))
    order = {name: i for i, name in enumerate(paths)}
    return sorted(removed, key=order.__getitem__)


def resigned_bins(
    folder: MetadataFolder, expiry: Expiry, assignments: Targets, signers: Signers
) -> list[tuple[str, Metadata[Targets]]]:
    """Every bin with a new version and expiry, signed by ``signers`` (not written yet)."""
    bins = []
    for bin_name in succinct_roles(folder, assignments).get_roles():
        md = folder.load(bin_name, Targets)
        new_version(md, expiry, ASSIGNMENTS_ROLE)
        sign(md, signers, assignments, bin_name)
        bins.append((bin_name, md))
    return bins


def _canonical(value: dict[str, Any]) -> bytes:
    encoded = encode_canonical(value)
    if encoded is None:
        raise ReleaseError(f"cannot encode {value!r} as canonical JSON")
    return encoded.encode("utf-8")
