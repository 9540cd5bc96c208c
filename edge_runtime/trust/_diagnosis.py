"""Turn a failed ngclient refresh into one of edgefleet's trust errors, with a message that says what happened.

ngclient reports *that* metadata was refused; a device operator needs to
know *which* metadata and *why*: a message that has not arrived yet (retry
later), a replay of older metadata, a freeze, a forged signature, or a mix of
two repository states. The verdict comes from ngclient's exception type; the
details come from the metadata the device trusted before the refresh, what it
trusts after the failure (ngclient persists each role as soon as it is
verified) and what the broker offered. The trusted files are only read as
bytes before a refresh (:func:`read_trusted`); they and the offered payloads
are parsed, without verification, only after a failure and only to word the
message: nothing here decides to trust anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors

# tuf.api.metadata and securesystemslib.signer re-export their classes without __all__,
# which mypy (no implicit re-export) reads as private; the types still resolve.
from tuf.api.metadata import (  # type: ignore[attr-defined, unused-ignore]
    Metadata,
    MetaFile,
    Signed,
    Snapshot,
    Timestamp,
)

from edge_runtime.errors import (
    BadSignatureError,
    IncompleteMetadataError,
    InconsistentMetadataError,
    MetadataExpiredError,
    RollbackError,
    TrustError,
)
from edge_runtime.trust._names import BIN_NAME_PREFIX, suffix_for_role

__all__ = ["ROLE_ORDER", "TrustedFiles", "explain", "read_trusted"]

ROLE_ORDER = ("root", "timestamp", "snapshot", "targets", "assignments")
"""The order in which ngclient loads (and so checks) the roles edgefleet uses; bins come last."""

_ROOT_NAME_RE = re.compile(r"^([1-9][0-9]{0,9})\.root\.json$")

TrustedFiles = Mapping[str, bytes]
"""Role name -> the bytes of the metadata persisted in the device's metadata folder."""


def parse_signed(data: bytes | None) -> Signed | None:
    """The signed part of metadata bytes, unverified; ``None`` when absent or malformed."""
    if data is None:
        return None
    try:
        signed: Signed = Metadata[Any].from_bytes(data).signed
    except tuf_errors.RepositoryError:
        return None
    return signed


def read_trusted(metadata_dir: Path) -> dict[str, bytes]:
    """What ngclient has verified and persisted so far, per role (missing roles left out).

    Only reads bytes (a device persists the few bins it uses); parsing waits
    for a failure that needs explaining.
    """
    trusted: dict[str, bytes] = {}
    bins = sorted(
        path.name.removesuffix(".json") for path in metadata_dir.glob(f"{BIN_NAME_PREFIX}-*.json")
    )
    for role in (*ROLE_ORDER, *bins):
        try:
            trusted[role] = (metadata_dir / f"{role}.json").read_bytes()
        except OSError:
            continue
    return trusted


def _parse_all(files: TrustedFiles) -> dict[str, Signed]:
    parsed = {role: parse_signed(data) for role, data in files.items()}
    return {role: signed for role, signed in parsed.items() if signed is not None}


def _role_of(url_name: str) -> str:
    """ngclient's file name (``3.root.json``, ``snapshot.json``) -> role name."""
    if _ROOT_NAME_RE.match(url_name):
        return "root"
    return url_name.removesuffix(".json")


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Failure:
    """Everything known about one failed refresh."""

    error: Exception
    before: Mapping[str, Signed]
    after: Mapping[str, Signed]
    offered: Mapping[str, bytes]
    served: Sequence[str]

    @property
    def role(self) -> str | None:
        """The role whose payload ngclient fetched last: the one it was checking when it failed."""
        return _role_of(self.served[-1]) if self.served else None

    def offered_signed(self, role: str) -> Signed | None:
        if role == "root":
            name = self.served[-1] if self.served else ""
            match = _ROOT_NAME_RE.match(name)
            return parse_signed(self.offered.get(f"root/{match.group(1)}")) if match else None
        suffix = suffix_for_role(role)
        return parse_signed(self.offered.get(suffix)) if suffix is not None else None

    def roles(self) -> list[str]:
        """Every role worth a look, in ngclient's loading order: top-level, assignments, then bins."""
        bins = {role for role in self.after if role not in ROLE_ORDER}
        if self.role is not None and self.role not in ROLE_ORDER:
            bins.add(self.role)
        return [*ROLE_ORDER, *sorted(bins)]

    def newest(self, role: str) -> Signed | None:
        """The newest of the trusted and the offered metadata for ``role`` (what ngclient looked at)."""
        candidates = [self.after.get(role)]
        if role != "root":
            candidates.append(self.offered_signed(role))
        present = [signed for signed in candidates if signed is not None]
        return max(present, key=lambda signed: signed.version) if present else None


def explain(
    error: Exception,
    before: TrustedFiles,
    after: TrustedFiles,
    offered: Mapping[str, bytes],
    served: Sequence[str],
) -> TrustError:
    """The trust error that describes why ngclient refused the offered metadata.

    ``before``/``after``: metadata trusted before the refresh and after it
    failed; ``offered``: topic suffix -> payload; ``served``: ngclient file
    names the fetcher answered, in order. An :class:`IncompleteMetadataError`
    means "not yet" (refresh again later); every other result is a refusal.
    """
    failure = _Failure(error, _parse_all(before), _parse_all(after), offered, served)
    if isinstance(error, tuf_errors.DownloadHTTPError):
        return IncompleteMetadataError(str(error))
    if isinstance(error, tuf_errors.ExpiredMetadataError):
        return _expired(failure)
    if isinstance(error, tuf_errors.UnsignedMetadataError):
        return _unsigned(failure)
    if isinstance(
        error,
        tuf_errors.BadVersionNumberError
        | tuf_errors.LengthOrHashMismatchError
        | tuf_errors.DownloadLengthMismatchError,
    ):
        return _mismatch(failure)
    where = f"{failure.role} metadata" if failure.role else "TUF metadata"
    return TrustError(f"{where} refused: {error}")


def _expired(failure: _Failure) -> MetadataExpiredError:
    now = datetime.now(timezone.utc)
    for role in failure.roles():
        signed = failure.newest(role)
        if signed is not None and signed.is_expired(now):
            return MetadataExpiredError(
                f"{role} metadata expired at {_stamp(signed.expires)} (version {signed.version}): "
                "refused; a freeze attack, or the fleet server stopped re-signing it"
            )
    return MetadataExpiredError(f"TUF metadata expired: {failure.error}")


def _unsigned(failure: _Failure) -> TrustError:
    role = failure.role or "metadata"
    root = failure.after.get("root")
    offered_roots = [
        int(suffix.split("/", 1)[1]) for suffix in failure.offered if suffix.startswith("root/")
    ]
    if role != "root" and root is not None and offered_roots and max(offered_roots) > root.version:
        return IncompleteMetadataError(
            f"{role} metadata is not signed by the keys of trusted root version {root.version}, "
            f"and root/{root.version + 1} has not arrived yet (the broker holds root versions "
            f"up to {max(offered_roots)})"
        )
    offered = failure.offered_signed(role)
    version = f" version {offered.version}" if offered is not None else ""
    if role == "root":
        return BadSignatureError(
            f"root{version} is not signed by a threshold of the keys of both the trusted root "
            f"and itself ({failure.error}): refused"
        )
    return BadSignatureError(
        f"{role} metadata{version} is not signed by a threshold of the keys trusted for "
        f"{role} ({failure.error}): refused; forged, or signed with a wrong or revoked key"
    )


def _mismatch(failure: _Failure) -> TrustError:
    role = failure.role
    if role is None or role == "root":
        return TrustError(f"{role or 'TUF'} metadata refused: {failure.error}")
    offered = failure.offered_signed(role)
    if offered is None:
        return TrustError(f"{role} metadata is malformed: {failure.error}")
    trusted = failure.before.get(role)
    if trusted is not None and offered.version < trusted.version:
        return RollbackError(
            f"{role} version {offered.version} is older than trusted {trusted.version} (replay): refused"
        )
    if rollback := _rollback_inside(role, offered, failure.before):
        return rollback
    if role == "timestamp":
        return TrustError(f"timestamp metadata refused: {failure.error}")
    return _against_parent(failure, role, offered)


def _against_parent(failure: _Failure, role: str, offered: Signed) -> TrustError:
    """``offered`` differs from what its parent (timestamp or snapshot) signed: not yet, or a mix."""
    parent = "timestamp" if role == "snapshot" else "snapshot"
    signer = failure.after.get(parent)
    expected = _expected_meta(role, signer)
    if signer is None or expected is None:
        return TrustError(f"{role} metadata refused: {failure.error}")
    if offered.version != expected.version:
        return IncompleteMetadataError(
            f"{parent} version {signer.version} names {role} version {expected.version}; "
            f"the broker holds {role} version {offered.version} so far"
        )
    return InconsistentMetadataError(
        f"{role} version {offered.version} does not match the length and hash that {parent} "
        f"version {signer.version} signed for it: tampered, or metadata from two repository "
        "states (mix-and-match), refused"
    )


def _rollback_inside(
    role: str, offered: Signed, before: Mapping[str, Signed]
) -> RollbackError | None:
    """A newer timestamp or snapshot that names an older version of the metadata below it."""
    trusted = before.get(role)
    if isinstance(offered, Timestamp) and isinstance(trusted, Timestamp):
        new, old = offered.snapshot_meta.version, trusted.snapshot_meta.version
        if new < old:
            return RollbackError(
                f"timestamp version {offered.version} names snapshot version {new}, older than "
                f"trusted {old} (replay): refused"
            )
    if isinstance(offered, Snapshot) and isinstance(trusted, Snapshot):
        for name, meta in trusted.meta.items():
            new_meta = offered.meta.get(name)
            if new_meta is not None and new_meta.version < meta.version:
                return RollbackError(
                    f"snapshot version {offered.version} names {name} version "
                    f"{new_meta.version}, older than trusted {meta.version} (rollback): refused"
                )
    return None


def _expected_meta(role: str, signer: Signed | None) -> MetaFile | None:
    if role == "snapshot" and isinstance(signer, Timestamp):
        return signer.snapshot_meta
    if isinstance(signer, Snapshot):
        return signer.meta.get(f"{role}.json")
    return None
