"""Key changes: new root versions (root keys), the assignments key in ``targets``, re-signing a role.

Top-level keys (root, targets, snapshot, timestamp) change in a new root
version, signed by a threshold of both the current and the new root's root
keys; devices follow the chain ``N.root.json`` -> ``N+1.root.json`` without
being provisioned again. The online assignments key is delegated by
``targets``, so it changes there, with the release key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

# securesystemslib.signer and tuf.api.metadata re-export their classes without __all__,
# which mypy (no implicit re-export) reads as private; the types still resolve.
from securesystemslib.signer import Key, Signer  # type: ignore[attr-defined, unused-ignore]
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined, unused-ignore]

from fleet_server.errors import KeyManagementError
from fleet_server.trust.repository import _signing
from fleet_server.trust.repository._assignments import resigned_bins
from fleet_server.trust.repository._bins import ASSIGNMENTS_ROLE, succinct_roles
from fleet_server.trust.repository._signing import Expiry, Signers, new_version, sign
from fleet_server.trust.repository._storage import MetadataFolder

__all__ = ["resign", "revoke_key", "rotate_assignments_key", "rotate_key"]

log = logging.getLogger(__name__)

_ROTATABLE = ("root", "targets", "snapshot", "timestamp")


def rotate_key(
    folder: MetadataFolder,
    expiry: Expiry,
    role: str,
    old_key: Key | str,
    new_key: Key,
    *,
    root_signers: Sequence[Signer],
) -> int:
    """Replace ``old_key`` by ``new_key`` for top-level ``role`` in a new root version; return that version."""
    if role not in _ROTATABLE:
        raise KeyManagementError(
            f"cannot rotate {role!r} in root: the assignments key is delegated by targets "
            "(use rotate_assignments_key with the release key)"
            if role == ASSIGNMENTS_ROLE
            else f"unknown role {role!r}"
        )
    old_keyid = old_key if isinstance(old_key, str) else old_key.keyid
    current = folder.load_root()
    new_md = Metadata[Root].from_bytes(current.to_bytes())
    try:
        new_md.signed.revoke_key(old_keyid, role)
    except ValueError as exc:
        raise KeyManagementError(f"cannot rotate {role}: {exc}") from exc
    new_md.signed.add_key(new_key, role)
    _write_next_root(folder, expiry, current.signed, new_md, root_signers)
    log.info(
        "rotated %s key %s -> %s (root v%d)",
        role,
        old_keyid[:12],
        new_key.keyid[:12],
        new_md.signed.version,
    )
    return new_md.signed.version


def revoke_key(
    folder: MetadataFolder,
    expiry: Expiry,
    role: str,
    keyid: str,
    *,
    root_signers: Sequence[Signer],
) -> int:
    """Remove ``keyid`` from top-level ``role`` in a new root version; return that version.

    The role must keep at least its threshold of keys.
    """
    if role not in _ROTATABLE:
        raise KeyManagementError(f"cannot revoke a key of {role!r} in root")
    current = folder.load_root()
    new_md = Metadata[Root].from_bytes(current.to_bytes())
    try:
        new_md.signed.revoke_key(keyid, role)
    except ValueError as exc:
        raise KeyManagementError(f"cannot revoke key {keyid[:12]}... of {role}: {exc}") from exc
    remaining = new_md.signed.roles[role]
    if len(remaining.keyids) < remaining.threshold:
        raise KeyManagementError(
            f"revoking key {keyid[:12]}... leaves {role} with {len(remaining.keyids)} key(s), "
            f"below its threshold of {remaining.threshold}: rotate it instead"
        )
    _write_next_root(folder, expiry, current.signed, new_md, root_signers)
    log.info("revoked %s key %s (root v%d)", role, keyid[:12], new_md.signed.version)
    return new_md.signed.version


def rotate_assignments_key(
    folder: MetadataFolder,
    expiry: Expiry,
    old_key: Key | str,
    new_key: Key,
    *,
    release_signer: Signers,
    assignments_signer: Signers,
) -> None:
    """Replace the online assignments key: targets re-signed by the release key, assignments and every bin by the new key."""
    old_keyid = old_key if isinstance(old_key, str) else old_key.keyid
    targets = folder.load("targets", Targets)
    assignments = folder.load(ASSIGNMENTS_ROLE, Targets)
    succinct_roles(folder, assignments.signed)  # refuses a repository made before bins
    try:
        targets.signed.revoke_key(old_keyid, ASSIGNMENTS_ROLE)
        assignments.signed.revoke_key(old_keyid)
    except ValueError as exc:
        raise KeyManagementError(f"cannot rotate the assignments key: {exc}") from exc
    targets.signed.add_key(new_key, ASSIGNMENTS_ROLE)
    assignments.signed.add_key(new_key)
    new_version(targets, expiry, "targets")
    sign(targets, release_signer, folder.root(), "targets")
    new_version(assignments, expiry, ASSIGNMENTS_ROLE)
    sign(assignments, assignments_signer, targets.signed, ASSIGNMENTS_ROLE)
    bins = resigned_bins(folder, expiry, assignments.signed, assignments_signer)
    folder.write("targets", targets)
    folder.write(ASSIGNMENTS_ROLE, assignments)
    for bin_name, bin_md in bins:
        folder.write(bin_name, bin_md)


def resign(
    folder: MetadataFolder,
    expiry: Expiry,
    role: Literal["targets", "assignments"],
    signers: Signers,
) -> int:
    """Sign ``role`` again with a new version and expiry; ``assignments`` also every bin. The role's new version."""
    md = folder.load(role, Targets)
    delegator = folder.root() if role == "targets" else folder.load("targets", Targets).signed
    new_version(md, expiry, role)
    sign(md, signers, delegator, role)
    bins = resigned_bins(folder, expiry, md.signed, signers) if role == ASSIGNMENTS_ROLE else []
    folder.write(role, md)
    for bin_name, bin_md in bins:
        folder.write(bin_name, bin_md)
    return md.signed.version


def _write_next_root(
    folder: MetadataFolder,
    expiry: Expiry,
    current: Root,
    new_md: Metadata[Root],
    root_signers: Sequence[Signer],
) -> None:
    """Sign ``new_md`` as the root after ``current`` (a threshold of both roots' keys) and write it."""
    new_md.signed.version = current.version + 1
    new_md.signed.expires = expiry.expires("root")
    new_root = new_md.signed
    allowed = set(current.roles["root"].keyids) | set(new_root.roles["root"].keyids)
    new_md.signatures.clear()
    for signer in root_signers:
        if signer.public_key.keyid not in allowed:
            raise KeyManagementError(
                f"key {signer.public_key.keyid[:12]}... is neither a key of root "
                f"v{current.version} nor of root v{new_root.version}"
            )
        _signing.add_signature(new_md, signer)
    for verifier, label in ((current, f"v{current.version}"), (new_root, "itself")):
        try:
            verifier.verify_delegate("root", new_md.signed_bytes, new_md.signatures)
        except UnsignedMetadataError as exc:
            raise KeyManagementError(
                f"root v{new_root.version} needs a threshold of signatures from the keys of "
                f"root {label} and of itself; {exc}"
            ) from exc
    folder.write_root(new_md)
