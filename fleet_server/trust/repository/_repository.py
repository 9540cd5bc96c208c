"""The :class:`Repository` the rest of edgefleet uses: one fleet's metadata folder, read and changed by role."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

# securesystemslib.signer re-exports its classes without __all__, which mypy (no implicit
# re-export) reads as private; the types still resolve.
from securesystemslib.signer import Key, Signer  # type: ignore[attr-defined, unused-ignore]

from edge_runtime.trust import suffix_for_role
from fleet_server.errors import ReleaseError
from fleet_server.trust.keys import KeySet
from fleet_server.trust.repository import _assignments, _releases, _rotation
from fleet_server.trust.repository._bins import (
    ASSIGNMENTS_ROLE,
    DEFAULT_BINS,
    AssignmentKind,
    assignment_path,
    succinct_roles,
)
from fleet_server.trust.repository._create import create_repository
from fleet_server.trust.repository._releases import ReleasedBundle
from fleet_server.trust.repository._signing import Expiry, Signers
from fleet_server.trust.repository._snapshot import write_snapshot_and_timestamp
from fleet_server.trust.repository._storage import MetadataFolder

__all__ = ["Repository"]


class Repository:
    """The TUF metadata folder of one fleet; every change is signed and written atomically."""

    def __init__(self, folder: str | os.PathLike[str], expiry: Expiry | None = None) -> None:
        self.folder = Path(folder)
        self.expiry = expiry or Expiry()
        self._files = MetadataFolder(self.folder)
        if not self._files.root_versions():
            raise ReleaseError(f"{self.folder} holds no TUF repository (no 1.root.json)")

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike[str],
        keys: KeySet,
        expiry: Expiry | None = None,
        *,
        bins: int = DEFAULT_BINS,
    ) -> Repository:
        """Create root v1, targets, assignments (delegating to ``bins`` hashed bins), the bins, snapshot, timestamp.

        ``keys`` must hold a threshold of signers for every role. ``bins`` is
        a power of two from 2 to 4096; it is fixed for the life of the
        repository (the ``bit_length`` of the succinct delegation in
        ``assignments``), so choose it for the largest fleet expected:
        a device downloads about ``assigned paths / bins`` assignments.
        """
        expiry = expiry or Expiry()
        create_repository(MetadataFolder(folder), keys, expiry, bins)
        return cls(folder, expiry)

    # reading

    @property
    def root_version(self) -> int:
        """The newest root version."""
        return self._files.root_version

    def root_bytes(self, version: int | None = None) -> bytes:
        """Root metadata bytes of ``version`` (default the newest): what a device is provisioned with."""
        return self._files.read(f"{version or self.root_version}.root.json")

    def root_keyids(self, role: str) -> list[str]:
        """Key ids the current root trusts for top-level ``role``."""
        return list(self._files.root().roles[role].keyids)

    def released(self) -> dict[str, ReleasedBundle]:
        """Every released bundle, by sha256."""
        return _releases.read_released(self._files)

    def assignments(self) -> dict[str, dict[str, Any]]:
        """Every assignment, ``"<kind>/<name>"`` -> ``{"bundle": ..., "assignment": n}``."""
        return _assignments.read_assignments(self._files)

    def bins(self) -> list[str]:
        """The names of every hashed bin the ``assignments`` role delegates to, in order."""
        return list(succinct_roles(self._files).get_roles())

    def bin_for(self, kind: AssignmentKind, name: str) -> str:
        """The bin that holds (or would hold) ``assignments/<kind>/<name>``."""
        return succinct_roles(self._files).get_role_for_target(assignment_path(kind, name))

    def published(self) -> dict[str, bytes]:
        """The payload of every retained ``PREFIX/tuf/<suffix>`` topic, in publishing order.

        ``root/1`` ... ``root/N`` first, then ``assignments``, every bin
        (``bins/assignments-bin-<hex>``), ``targets``, ``snapshot``,
        ``timestamp`` (``docs/protocol.md``): what a snapshot names is on the
        broker before the snapshot, and the snapshot before its timestamp.
        """
        read = self._files.read
        payloads = {f"root/{v}": read(f"{v}.root.json") for v in self._files.root_versions()}
        for role in (ASSIGNMENTS_ROLE, *self.bins(), "targets", "snapshot", "timestamp"):
            payloads[_suffix(role)] = read(f"{role}.json")
        return payloads

    # release key

    def release(
        self, bundle_path: str | os.PathLike[str], release_signer: Signers
    ) -> ReleasedBundle:
        """Add the bundle at ``bundle_path`` to the targets role, signed by the release key(s).

        The target is ``bundles/<sha256>.efb`` with the bundle's length, sha256
        and ``custom: {name, version, format, precision}`` from its manifest.
        Releasing the same bytes again changes nothing; another bundle with an
        already released name and version is refused.
        """
        return _releases.release(self._files, self.expiry, bundle_path, release_signer)

    # online keys

    def assign(self, kind: AssignmentKind, name: str, bundle_sha256: str, signer: Signers) -> int:
        """Point ``assignments/<kind>/<name>`` at a released bundle; return the assignment number.

        The number grows by one with every change of that path (also across
        an unassign). Refuses a bundle the release key has not signed.
        Publish with :meth:`snapshot_and_timestamp`.
        """
        return self.assign_many(kind, [name], bundle_sha256, signer)[name]

    def assign_many(
        self, kind: AssignmentKind, names: Sequence[str], bundle_sha256: str, signer: Signers
    ) -> dict[str, int]:
        """:meth:`assign` for many names at once: one new version of each bin they touch, signed once.

        A wave of a thousand devices costs one signature and one write per
        touched bin (at most the bin count), not a thousand; bins holding
        none of ``names`` keep their version. Returns each name's new
        assignment number.
        """
        return _assignments.assign_many(
            self._files, self.expiry, kind, names, bundle_sha256, signer=signer
        )

    def unassign(self, kind: AssignmentKind, name: str, signer: Signers) -> bool:
        """Remove ``assignments/<kind>/<name>``; False when it was not assigned."""
        return bool(self.unassign_many(kind, [name], signer))

    def unassign_many(
        self, kind: AssignmentKind, names: Sequence[str], signer: Signers
    ) -> list[str]:
        """:meth:`unassign` for many names, one signature per bin that changed; the names that were assigned."""
        return _assignments.unassign_many(self._files, self.expiry, kind, names, signer=signer)

    def resign(self, role: Literal["targets", "assignments"], signers: Signers) -> int:
        """Sign ``role`` again with a new version and expiry (before it expires, after a key change).

        ``assignments`` re-signs the delegating role and every bin (they
        expire together); the version returned is the delegating role's.
        """
        return _rotation.resign(self._files, self.expiry, role, signers)

    def snapshot_and_timestamp(self, snapshot: Signers, timestamp: Signers) -> None:
        """Sign a new snapshot (versions, lengths, sha256 of targets, assignments and every bin) and timestamp."""
        write_snapshot_and_timestamp(
            self._files, self.expiry, snapshot, timestamp, self._files.root()
        )

    # root keys

    def rotate_key(
        self, role: str, old_key: Key | str, new_key: Key, root_signers: Sequence[Signer]
    ) -> int:
        """Replace ``old_key`` by ``new_key`` for top-level ``role`` in a new root version.

        ``root_signers`` must meet the thresholds of both the current and the
        new root (for a root key rotation: old and new root keys). Then
        re-sign the role's metadata with the new key (:meth:`resign` for
        targets, :meth:`snapshot_and_timestamp` for snapshot/timestamp).
        Returns the new root version.
        """
        return _rotation.rotate_key(
            self._files, self.expiry, role, old_key, new_key, root_signers=root_signers
        )

    def revoke_key(self, role: str, keyid: str, root_signers: Sequence[Signer]) -> int:
        """Remove ``keyid`` from top-level ``role`` in a new root version; return that version.

        The role must keep at least its threshold of keys. Metadata the revoked
        key signed is refused by devices once they trust the new root: re-sign
        it with a remaining key.
        """
        return _rotation.revoke_key(
            self._files, self.expiry, role, keyid, root_signers=root_signers
        )

    def rotate_assignments_key(
        self,
        old_key: Key | str,
        new_key: Key,
        release_signer: Signers,
        assignments_signer: Signers,
    ) -> None:
        """Replace the online assignments key: targets re-signed by the release key, assignments and every bin by the new key."""
        _rotation.rotate_assignments_key(
            self._files,
            self.expiry,
            old_key,
            new_key,
            release_signer=release_signer,
            assignments_signer=assignments_signer,
        )


def _suffix(role: str) -> str:
    """The topic suffix of ``role`` (``docs/protocol.md``); every role this repository writes has one."""
    suffix = suffix_for_role(role)
    if suffix is None:
        raise ReleaseError(f"role {role!r} has no edgefleet topic")
    return suffix
