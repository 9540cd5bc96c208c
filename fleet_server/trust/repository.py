"""The TUF repository the fleet publishes: release-signed bundles, online-signed assignments.

One metadata folder holds ``1.root.json``, ``2.root.json``, ... (every root
version; ``root.json`` is a copy of the newest), ``targets.json``,
``assignments.json``, one ``assignments-bin-<hex>.json`` per hashed bin,
``snapshot.json`` and ``timestamp.json``, each written atomically, plus
``assignment_counters.json`` (private bookkeeping, never published).
Consistent snapshots are off: MQTT keeps one retained payload per topic
(``docs/protocol.md``, "TUF metadata over MQTT").

- The top-level ``targets`` role (the *release key*) lists every released
  bundle as ``bundles/<sha256>.efb`` and delegates ``assignments/devices/*``
  and ``assignments/groups/*`` to the ``assignments`` role (terminating).
- The ``assignments`` role (online key) lists no target itself: it delegates
  every path to ``2**bit_length`` *hashed bins* (TUF TAP 15 succinct
  delegation, as PEP 458 does; ``bit_length`` is chosen at
  :meth:`Repository.create` and kept in the metadata). A path belongs to the
  bin numbered by the leading ``bit_length`` bits of its sha256, named
  ``assignments-bin-<hex>``; every bin is signed by the same online
  assignments key(s).
- Each bin maps its ``assignments/<kind>/<name>`` paths to
  ``custom: {"bundle": "bundles/<sha256>.efb", "assignment": <n>}``. A change
  re-signs only the bins it touches, and a device loads only the bins its
  own paths hash into, however large the fleet.
- ``snapshot`` and ``timestamp`` (online keys) pin the versions, lengths and
  sha256 of what they describe (snapshot: targets, assignments, every bin).

The fleet server needs only the online keys: :meth:`Repository.assign`,
:meth:`Repository.unassign` and :meth:`Repository.snapshot_and_timestamp`
never touch the release key, and :meth:`Repository.assign` refuses bundles
the release key did not sign.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from securesystemslib.formats import encode_canonical

# tuf.api.metadata and securesystemslib.signer re-export their classes without __all__,
# which mypy (no implicit re-export) reads as private; the types still resolve.
from securesystemslib.signer import Key, Signer  # type: ignore[attr-defined, unused-ignore]
from tuf.api.exceptions import RepositoryError, UnsignedMetadataError
from tuf.api.metadata import (  # type: ignore[attr-defined, unused-ignore]
    TOP_LEVEL_ROLE_NAMES,
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)

from edge_runtime.atomic import atomic_write_bytes, atomic_write_text
from edge_runtime.bundle import read_bundle
from edge_runtime.errors import BundleError
from edge_runtime.trust import BIN_NAME_PREFIX, suffix_for_role
from fleet_server.errors import KeyManagementError, ReleaseError
from fleet_server.trust.keys import KeySet

__all__ = [
    "ASSIGNMENTS_ROLE",
    "ASSIGNMENT_PATHS",
    "BIN_NAME_PREFIX",
    "DEFAULT_BINS",
    "AssignmentKind",
    "Expiry",
    "ReleasedBundle",
    "Repository",
    "Signers",
]

log = logging.getLogger(__name__)

ASSIGNMENTS_ROLE = "assignments"
"""The delegated role, signed by the online key, that says which bundle each device or group runs."""
ASSIGNMENT_PATHS = ["assignments/devices/*", "assignments/groups/*"]
"""Target paths the ``assignments`` role may sign (TUF patterns match one path segment per ``*``)."""
DEFAULT_BINS = 64
"""Hashed bins of a new repository: about 16 devices per bin in a fleet of 1,000."""
_MAX_BINS = 1 << 12

AssignmentKind = Literal["devices", "groups"]
Signers = Signer | Sequence[Signer]
"""One signer, or several when a role's threshold needs more than one signature."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ROOT_FILE_RE = re.compile(r"^([1-9][0-9]*)\.root\.json$")
_COUNTERS = "assignment_counters.json"
_HASH_ALGORITHMS = ["sha256"]
_ROTATABLE = ("root", "targets", "snapshot", "timestamp")

_T = TypeVar("_T", Root, Timestamp, Snapshot, Targets)


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid after it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=365)
    assignments: timedelta = timedelta(days=30)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def expires(self, role: str) -> datetime:
        """The expiry for ``role`` signed now, rounded up to the whole second TUF stores."""
        delta: timedelta = getattr(self, role)
        moment = datetime.now(timezone.utc) + delta
        if moment.microsecond:
            moment = moment.replace(microsecond=0) + timedelta(seconds=1)
        return moment


@dataclass(frozen=True)
class ReleasedBundle:
    """A bundle listed in the release-signed targets role."""

    path: str
    sha256: str
    length: int
    custom: dict[str, Any]


class Repository:
    """The TUF metadata folder of one fleet; every change is signed and written atomically."""

    def __init__(self, folder: str | os.PathLike[str], expiry: Expiry | None = None) -> None:
        self.folder = Path(folder)
        self.expiry = expiry or Expiry()
        if not self._root_versions():
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
        if bins < 2 or bins > _MAX_BINS or bins & (bins - 1):
            raise ReleaseError(f"bins must be a power of two from 2 to {_MAX_BINS}, not {bins}")
        target = Path(folder)
        expiry = expiry or Expiry()
        target.mkdir(parents=True, exist_ok=True)
        if (target / "1.root.json").exists() or (target / "root.json").exists():
            raise ReleaseError(f"{target} already holds a TUF repository")
        root = Root(expires=expiry.expires("root"), consistent_snapshot=False)
        for role in sorted(TOP_LEVEL_ROLE_NAMES):
            for key in keys.public_keys(role):
                root.add_key(key, role)
            root.roles[role].threshold = _checked_threshold(keys, role)
        assignment_keys = keys.public_keys(ASSIGNMENTS_ROLE)
        delegation = DelegatedRole(
            name=ASSIGNMENTS_ROLE,
            keyids=[key.keyid for key in assignment_keys],
            threshold=_checked_threshold(keys, ASSIGNMENTS_ROLE),
            terminating=True,
            paths=list(ASSIGNMENT_PATHS),
        )
        targets = Targets(
            expires=expiry.expires("targets"),
            delegations=Delegations(
                keys={key.keyid: key for key in assignment_keys},
                roles={ASSIGNMENTS_ROLE: delegation},
            ),
        )
        root_md = Metadata(root)
        _sign(root_md, keys.role("root"), root, "root")
        targets_md = Metadata(targets)
        _sign(targets_md, keys.role("targets"), root, "targets")
        succinct = SuccinctRoles(
            keyids=[key.keyid for key in assignment_keys],
            threshold=_checked_threshold(keys, ASSIGNMENTS_ROLE),
            bit_length=bins.bit_length() - 1,
            name_prefix=BIN_NAME_PREFIX,
        )
        assignments = Targets(
            expires=expiry.expires(ASSIGNMENTS_ROLE),
            delegations=Delegations(
                keys={key.keyid: key for key in assignment_keys}, succinct_roles=succinct
            ),
        )
        assignments_md = Metadata(assignments)
        _sign(assignments_md, keys.role(ASSIGNMENTS_ROLE), targets, ASSIGNMENTS_ROLE)
        bin_mds = {}
        for name in succinct.get_roles():
            bin_mds[name] = Metadata(Targets(expires=expiry.expires(ASSIGNMENTS_ROLE)))
            _sign(bin_mds[name], keys.role(ASSIGNMENTS_ROLE), assignments, name)
        _write_root(target, root_md)
        repo = cls(target, expiry)
        repo._write("targets", targets_md)
        repo._write(ASSIGNMENTS_ROLE, assignments_md)
        for name, md in bin_mds.items():
            repo._write(name, md)
        repo._write_snapshot_and_timestamp(keys.role("snapshot"), keys.role("timestamp"), root)
        log.info("created TUF repository in %s (%d assignment bins)", target, bins)
        return repo

    # --- reading -----------------------------------------------------------------

    @property
    def root_version(self) -> int:
        """The newest root version."""
        return self._root_versions()[-1]

    def root_bytes(self, version: int | None = None) -> bytes:
        """Root metadata bytes of ``version`` (default the newest): what a device is provisioned with."""
        return self._read_file(f"{version or self.root_version}.root.json")

    def root_keyids(self, role: str) -> list[str]:
        """Key ids the current root trusts for top-level ``role``."""
        return list(self._root().roles[role].keyids)

    def released(self) -> dict[str, ReleasedBundle]:
        """Every released bundle, by sha256."""
        bundles: dict[str, ReleasedBundle] = {}
        for path, info in self._load("targets", Targets).signed.targets.items():
            sha256 = info.hashes.get("sha256", "")
            custom = info.custom if isinstance(info.custom, dict) else {}
            bundles[sha256] = ReleasedBundle(path, sha256, info.length, dict(custom))
        return bundles

    def assignments(self) -> dict[str, dict[str, Any]]:
        """Every assignment, ``"<kind>/<name>"`` -> ``{"bundle": ..., "assignment": n}``."""
        return {
            path.removeprefix("assignments/"): dict(info.custom)
            for name in self.bins()
            for path, info in self._load(name, Targets).signed.targets.items()
        }

    def bins(self) -> list[str]:
        """The names of every hashed bin the ``assignments`` role delegates to, in order."""
        return list(self._succinct().get_roles())

    def bin_for(self, kind: AssignmentKind, name: str) -> str:
        """The bin that holds (or would hold) ``assignments/<kind>/<name>``."""
        return self._succinct().get_role_for_target(_assignment_path(kind, name))

    def published(self) -> dict[str, bytes]:
        """The payload of every retained ``PREFIX/tuf/<suffix>`` topic, in publishing order.

        ``root/1`` ... ``root/N`` first, then ``assignments``, every bin
        (``bins/assignments-bin-<hex>``), ``targets``, ``snapshot``,
        ``timestamp`` (``docs/protocol.md``): what a snapshot names is on the
        broker before the snapshot, and the snapshot before its timestamp.
        """
        payloads = {f"root/{v}": self._read_file(f"{v}.root.json") for v in self._root_versions()}
        for role in (ASSIGNMENTS_ROLE, *self.bins(), "targets", "snapshot", "timestamp"):
            payloads[_suffix(role)] = self._read_file(f"{role}.json")
        return payloads

    # --- release key -------------------------------------------------------------

    def release(
        self, bundle_path: str | os.PathLike[str], release_signer: Signers
    ) -> ReleasedBundle:
        """Add the bundle at ``bundle_path`` to the targets role, signed by the release key(s).

        The target is ``bundles/<sha256>.efb`` with the bundle's length, sha256
        and ``custom: {name, version, format, precision}`` from its manifest.
        Releasing the same bytes again changes nothing; another bundle with an
        already released name and version is refused.
        """
        try:
            bundle = read_bundle(bundle_path)
        except BundleError as exc:
            raise ReleaseError(f"cannot release {bundle_path}: {exc}") from exc
        manifest = bundle.manifest
        custom = {
            "name": manifest.name,
            "version": manifest.version,
            "format": manifest.model.format,
            "precision": manifest.model.precision,
        }
        path = f"bundles/{bundle.sha256}.efb"
        released = ReleasedBundle(path, bundle.sha256, bundle.size, custom)
        md = self._load("targets", Targets)
        if path in md.signed.targets:
            log.info("bundle %s is already released", bundle.sha256[:12])
            return released
        for other in self.released().values():
            if (other.custom.get("name"), other.custom.get("version")) == (
                manifest.name,
                manifest.version,
            ):
                raise ReleaseError(
                    f"{manifest.name} {manifest.version} is already released as bundle "
                    f"{other.sha256[:12]}...; give the new bundle a new version"
                )
        md.signed.targets[path] = TargetFile(
            bundle.size, {"sha256": bundle.sha256}, path, {"custom": custom}
        )
        self._bump(md, "targets")
        _sign(md, release_signer, self._root(), "targets")
        self._write("targets", md)
        log.info(
            "released %s %s as bundle %s (targets v%d)",
            manifest.name,
            manifest.version,
            bundle.sha256[:12],
            md.signed.version,
        )
        return released

    # --- online keys -------------------------------------------------------------

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
        if not _SHA256_RE.match(bundle_sha256):
            raise ReleaseError(
                f"{bundle_sha256!r} is not a bundle sha256 (64 lowercase hex digits)"
            )
        bundle = f"bundles/{bundle_sha256}.efb"
        if bundle not in self._load("targets", Targets).signed.targets:
            raise ReleaseError(
                f"bundle {bundle_sha256[:12]}... is not released (not a target of the "
                "release-signed targets role): release it with the release key first"
            )
        paths = {name: _assignment_path(kind, name) for name in names}
        if not paths:
            return {}
        delegator, by_bin = self._by_bin(paths)
        counters = self._counters()
        numbers: dict[str, int] = {}
        changed: list[tuple[str, Metadata[Targets]]] = []
        for bin_name, members in by_bin.items():
            md = self._load(bin_name, Targets)
            for name, target_path in members.items():
                current = md.signed.targets.get(target_path)
                previous = current.custom.get("assignment", 0) if current and current.custom else 0
                number = max(counters.get(target_path, 0), int(previous)) + 1
                custom = {"bundle": bundle, "assignment": number}
                info = TargetFile.from_data(target_path, _canonical(custom), _HASH_ALGORITHMS)
                info.unrecognized_fields["custom"] = custom
                md.signed.targets[target_path] = info
                counters[target_path] = number
                numbers[name] = number
            self._bump(md, ASSIGNMENTS_ROLE)
            _sign(md, signer, delegator, bin_name)
            changed.append((bin_name, md))
        atomic_write_text(self.folder / _COUNTERS, json.dumps(counters, indent=2, sort_keys=True))
        for bin_name, md in changed:
            self._write(bin_name, md)
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

    def unassign(self, kind: AssignmentKind, name: str, signer: Signers) -> bool:
        """Remove ``assignments/<kind>/<name>``; False when it was not assigned."""
        return bool(self.unassign_many(kind, [name], signer))

    def unassign_many(
        self, kind: AssignmentKind, names: Sequence[str], signer: Signers
    ) -> list[str]:
        """:meth:`unassign` for many names, one signature per bin that changed; the names that were assigned."""
        paths = {name: _assignment_path(kind, name) for name in names}
        if not paths:
            return []
        delegator, by_bin = self._by_bin(paths)
        removed: list[str] = []
        changed: list[tuple[str, Metadata[Targets]]] = []
        for bin_name, members in by_bin.items():
            md = self._load(bin_name, Targets)
            gone = [name for name, path in members.items() if md.signed.targets.pop(path, None)]
            if not gone:
                continue
            removed.extend(gone)
            self._bump(md, ASSIGNMENTS_ROLE)
            _sign(md, signer, delegator, bin_name)
            changed.append((bin_name, md))
        for bin_name, md in changed:
            self._write(bin_name, md)
        if removed:
            log.info("unassigned %d %s: %s", len(removed), kind, ", ".join(removed[:3]))
        order = {name: i for i, name in enumerate(paths)}
        return sorted(removed, key=order.__getitem__)

    def resign(self, role: Literal["targets", "assignments"], signers: Signers) -> int:
        """Sign ``role`` again with a new version and expiry (before it expires, after a key change).

        ``assignments`` re-signs the delegating role and every bin (they
        expire together); the version returned is the delegating role's.
        """
        md = self._load(role, Targets)
        delegator = self._root() if role == "targets" else self._load("targets", Targets).signed
        self._bump(md, role)
        _sign(md, signers, delegator, role)
        bins = self._resigned_bins(md.signed, signers) if role == ASSIGNMENTS_ROLE else []
        self._write(role, md)
        for bin_name, bin_md in bins:
            self._write(bin_name, bin_md)
        return md.signed.version

    def snapshot_and_timestamp(self, snapshot: Signers, timestamp: Signers) -> None:
        """Sign a new snapshot (versions, lengths, sha256 of targets, assignments and every bin) and timestamp."""
        self._write_snapshot_and_timestamp(snapshot, timestamp, self._root())

    # --- root key ----------------------------------------------------------------

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
        if role not in _ROTATABLE:
            raise KeyManagementError(
                f"cannot rotate {role!r} in root: the assignments key is delegated by targets "
                "(use rotate_assignments_key with the release key)"
                if role == ASSIGNMENTS_ROLE
                else f"unknown role {role!r}"
            )
        old_keyid = old_key if isinstance(old_key, str) else old_key.keyid
        current = self._load_root()
        new_md = Metadata[Root].from_bytes(current.to_bytes())
        try:
            new_md.signed.revoke_key(old_keyid, role)
        except ValueError as exc:
            raise KeyManagementError(f"cannot rotate {role}: {exc}") from exc
        new_md.signed.add_key(new_key, role)
        self._write_next_root(current.signed, new_md, root_signers)
        log.info(
            "rotated %s key %s -> %s (root v%d)",
            role,
            old_keyid[:12],
            new_key.keyid[:12],
            new_md.signed.version,
        )
        return new_md.signed.version

    def revoke_key(self, role: str, keyid: str, root_signers: Sequence[Signer]) -> int:
        """Remove ``keyid`` from top-level ``role`` in a new root version; return that version.

        The role must keep at least its threshold of keys. Metadata the revoked
        key signed is refused by devices once they trust the new root: re-sign
        it with a remaining key.
        """
        if role not in _ROTATABLE:
            raise KeyManagementError(f"cannot revoke a key of {role!r} in root")
        current = self._load_root()
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
        self._write_next_root(current.signed, new_md, root_signers)
        log.info("revoked %s key %s (root v%d)", role, keyid[:12], new_md.signed.version)
        return new_md.signed.version

    def rotate_assignments_key(
        self,
        old_key: Key | str,
        new_key: Key,
        release_signer: Signers,
        assignments_signer: Signers,
    ) -> None:
        """Replace the online assignments key: targets re-signed by the release key, assignments and every bin by the new key."""
        old_keyid = old_key if isinstance(old_key, str) else old_key.keyid
        targets = self._load("targets", Targets)
        assignments = self._load(ASSIGNMENTS_ROLE, Targets)
        self._succinct(assignments.signed)
        try:
            targets.signed.revoke_key(old_keyid, ASSIGNMENTS_ROLE)
            assignments.signed.revoke_key(old_keyid)
        except ValueError as exc:
            raise KeyManagementError(f"cannot rotate the assignments key: {exc}") from exc
        targets.signed.add_key(new_key, ASSIGNMENTS_ROLE)
        assignments.signed.add_key(new_key)
        self._bump(targets, "targets")
        _sign(targets, release_signer, self._root(), "targets")
        self._bump(assignments, ASSIGNMENTS_ROLE)
        _sign(assignments, assignments_signer, targets.signed, ASSIGNMENTS_ROLE)
        bins = self._resigned_bins(assignments.signed, assignments_signer)
        self._write("targets", targets)
        self._write(ASSIGNMENTS_ROLE, assignments)
        for bin_name, bin_md in bins:
            self._write(bin_name, bin_md)

    # --- internals ---------------------------------------------------------------

    def _root_versions(self) -> list[int]:
        try:
            names = [entry.name for entry in self.folder.iterdir()]
        except OSError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _ROOT_FILE_RE.match(n)))

    def _read_file(self, name: str) -> bytes:
        try:
            return (self.folder / name).read_bytes()
        except OSError as exc:
            raise ReleaseError(f"cannot read {name} in {self.folder}: {exc}") from exc

    def _load(self, role: str, kind: type[_T]) -> Metadata[_T]:
        return self._parse(role, self._read_file(f"{role}.json"), kind)

    def _parse(self, role: str, data: bytes, kind: type[_T]) -> Metadata[_T]:
        try:
            md = Metadata[_T].from_bytes(data)
        except RepositoryError as exc:
            raise ReleaseError(f"{self.folder / role}.json is not TUF metadata: {exc}") from exc
        if not isinstance(md.signed, kind):
            raise ReleaseError(f"{self.folder / role}.json holds {md.signed.type} metadata")
        return md

    def _load_root(self) -> Metadata[Root]:
        return self._load(f"{self.root_version}.root", Root)

    def _root(self) -> Root:
        return self._load_root().signed

    def _succinct(self, assignments: Targets | None = None) -> SuccinctRoles:
        """The hashed-bin delegation of the ``assignments`` role."""
        signed = assignments or self._load(ASSIGNMENTS_ROLE, Targets).signed
        delegations = signed.delegations
        if delegations is None or delegations.succinct_roles is None:
            raise ReleaseError(
                f"{self.folder / ASSIGNMENTS_ROLE}.json does not delegate to hashed bins "
                "(a repository made before bins existed): create a new repository"
            )
        return delegations.succinct_roles

    def _by_bin(self, paths: dict[str, str]) -> tuple[Targets, dict[str, dict[str, str]]]:
        """The ``assignments`` role and ``paths`` (name -> target path) grouped by bin, bins sorted."""
        assignments = self._load(ASSIGNMENTS_ROLE, Targets).signed
        succinct = self._succinct(assignments)
        by_bin: dict[str, dict[str, str]] = {}
        for name, path in paths.items():
            by_bin.setdefault(succinct.get_role_for_target(path), {})[name] = path
        return assignments, dict(sorted(by_bin.items()))

    def _resigned_bins(
        self, assignments: Targets, signers: Signers
    ) -> list[tuple[str, Metadata[Targets]]]:
        """Every bin with a new version and expiry, signed by ``signers`` (not written yet)."""
        bins = []
        for bin_name in self._succinct(assignments).get_roles():
            md = self._load(bin_name, Targets)
            self._bump(md, ASSIGNMENTS_ROLE)
            _sign(md, signers, assignments, bin_name)
            bins.append((bin_name, md))
        return bins

    def _counters(self) -> dict[str, int]:
        path = self.folder / _COUNTERS
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"cannot read {path}: {exc}") from exc
        return {str(k): int(v) for k, v in data.items()}

    def _bump(self, md: Metadata[Any], role: str) -> None:
        md.signed.version += 1
        md.signed.expires = self.expiry.expires(role)

    def _write(self, role: str, md: Metadata[Any]) -> bytes:
        data = md.to_bytes()
        atomic_write_bytes(self.folder / f"{role}.json", data)
        return data

    def _write_next_root(
        self, current: Root, new_md: Metadata[Root], root_signers: Sequence[Signer]
    ) -> None:
        new_md.signed.version = current.version + 1
        new_md.signed.expires = self.expiry.expires("root")
        new_root = new_md.signed
        allowed = set(current.roles["root"].keyids) | set(new_root.roles["root"].keyids)
        new_md.signatures.clear()
        for signer in root_signers:
            if signer.public_key.keyid not in allowed:
                raise KeyManagementError(
                    f"key {signer.public_key.keyid[:12]}... is neither a key of root "
                    f"v{current.version} nor of root v{new_root.version}"
                )
            _add_signature(new_md, signer)
        for verifier, label in ((current, f"v{current.version}"), (new_root, "itself")):
            try:
                verifier.verify_delegate("root", new_md.signed_bytes, new_md.signatures)
            except UnsignedMetadataError as exc:
                raise KeyManagementError(
                    f"root v{new_root.version} needs a threshold of signatures from the keys of "
                    f"root {label} and of itself; {exc}"
                ) from exc
        _write_root(self.folder, new_md)

    def _write_snapshot_and_timestamp(
        self, snapshot_signers: Signers, timestamp_signers: Signers, root: Root
    ) -> None:
        meta: dict[str, MetaFile] = {}
        for role in ("targets", ASSIGNMENTS_ROLE, *self.bins()):
            data = self._read_file(f"{role}.json")
            version = self._parse(role, data, Targets).signed.version
            meta[f"{role}.json"] = MetaFile.from_data(version, data, _HASH_ALGORITHMS)
        snapshot_path = self.folder / "snapshot.json"
        snapshot_version = (
            self._load("snapshot", Snapshot).signed.version + 1 if snapshot_path.exists() else 1
        )
        snapshot = Metadata(
            Snapshot(version=snapshot_version, expires=self.expiry.expires("snapshot"), meta=meta)
        )
        _sign(snapshot, snapshot_signers, root, "snapshot")
        snapshot_bytes = snapshot.to_bytes()
        timestamp_path = self.folder / "timestamp.json"
        timestamp_version = (
            self._load("timestamp", Timestamp).signed.version + 1 if timestamp_path.exists() else 1
        )
        timestamp = Metadata(
            Timestamp(
                version=timestamp_version,
                expires=self.expiry.expires("timestamp"),
                snapshot_meta=MetaFile.from_data(
                    snapshot_version, snapshot_bytes, _HASH_ALGORITHMS
                ),
            )
        )
        _sign(timestamp, timestamp_signers, root, "timestamp")
        atomic_write_bytes(snapshot_path, snapshot_bytes)
        self._write("timestamp", timestamp)
        log.debug("snapshot v%d, timestamp v%d", snapshot_version, timestamp_version)


def _write_root(folder: Path, md: Metadata[Root]) -> None:
    """Write ``<N>.root.json``, then ``root.json`` (a copy of the newest root)."""
    data = md.to_bytes()
    atomic_write_bytes(folder / f"{md.signed.version}.root.json", data)
    atomic_write_bytes(folder / "root.json", data)


def _suffix(role: str) -> str:
    """The topic suffix of ``role`` (``docs/protocol.md``); every role this repository writes has one."""
    suffix = suffix_for_role(role)
    if suffix is None:
        raise ReleaseError(f"role {role!r} has no edgefleet topic")
    return suffix


def _assignment_path(kind: str, name: str) -> str:
    if kind not in ("devices", "groups"):
        raise ReleaseError(f"assignment kind must be 'devices' or 'groups', not {kind!r}")
    if not _NAME_RE.match(name):
        raise ReleaseError(
            f"{name!r} is not a valid {kind[:-1]} name (letters, digits, '.', '_', '-'; 1-64)"
        )
    return f"assignments/{kind}/{name}"


def _canonical(value: dict[str, Any]) -> bytes:
    encoded = encode_canonical(value)
    if encoded is None:
        raise ReleaseError(f"cannot encode {value!r} as canonical JSON")
    return encoded.encode("utf-8")


def _checked_threshold(keys: KeySet, role: str) -> int:
    threshold = keys.threshold(role)
    count = len(keys.role(role))
    if not 1 <= threshold <= count:
        raise KeyManagementError(f"{role}: threshold {threshold} with {count} key(s) loaded")
    return threshold


def _as_list(signers: Signers) -> list[Signer]:
    return [signers] if isinstance(signers, Signer) else list(signers)


def _add_signature(md: Metadata[Any], signer: Signer) -> None:
    try:
        md.sign(signer, append=True)
    except UnsignedMetadataError as exc:
        raise KeyManagementError(f"signing {md.signed.type} failed: {exc}") from exc


def _sign(md: Metadata[Any], signers: Signers, delegator: Root | Targets, role: str) -> None:
    """Replace ``md``'s signatures by those of ``signers``, checked against ``delegator``'s threshold."""
    try:
        delegated = delegator.get_delegated_role(role)
    except ValueError as exc:
        raise KeyManagementError(f"{role} is not a delegated role here: {exc}") from exc
    owner = ASSIGNMENTS_ROLE if role.startswith(f"{BIN_NAME_PREFIX}-") else role  # bins: its keys
    md.signatures.clear()
    for signer in _as_list(signers):
        keyid = signer.public_key.keyid
        if keyid not in delegated.keyids:
            raise KeyManagementError(
                f"key {keyid[:12]}... is not one of the {owner} keys: refusing to sign {role} with it"
            )
        _add_signature(md, signer)
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as exc:
        raise KeyManagementError(
            f"{role} needs {delegated.threshold} signature(s) from its keys: {exc}"
        ) from exc
