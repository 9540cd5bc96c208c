"""A new version of a role: its expiry, and signatures checked against the keys that role is delegated to.

Every signature the repository makes goes through :func:`add_signature`, and
every role but a new root is signed by :func:`sign`, which refuses a key the
delegating role does not list and checks the threshold before anything is
written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

# securesystemslib.signer and tuf.api.metadata re-export their classes without __all__,
# which mypy (no implicit re-export) reads as private; the types still resolve.
from securesystemslib.signer import Signer  # type: ignore[attr-defined, unused-ignore]
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined, unused-ignore]

from fleet_server.errors import KeyManagementError
from fleet_server.trust.keys import KeySet
from fleet_server.trust.repository._bins import ASSIGNMENTS_ROLE, BIN_NAME_PREFIX

__all__ = ["Expiry", "Signers", "add_signature", "checked_threshold", "new_version", "sign"]

Signers = Signer | Sequence[Signer]
"""One signer, or several when a role's threshold needs more than one signature."""


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


def new_version(md: Metadata[Any], expiry: Expiry, role: str) -> None:
    """Give ``md`` the next version and the expiry of ``role`` (bins expire as ``assignments``)."""
    md.signed.version += 1
    md.signed.expires = expiry.expires(role)


def checked_threshold(keys: KeySet, role: str) -> int:
    """``role``'s threshold, refused unless ``keys`` holds at least that many of its signers."""
    threshold = keys.threshold(role)
    count = len(keys.role(role))
    if not 1 <= threshold <= count:
        raise KeyManagementError(f"{role}: threshold {threshold} with {count} key(s) loaded")
    return threshold


def add_signature(md: Metadata[Any], signer: Signer) -> None:
    """Append ``signer``'s signature to ``md``."""
    try:
        md.sign(signer, append=True)
    except UnsignedMetadataError as exc:
        raise KeyManagementError(f"signing {md.signed.type} failed: {exc}") from exc


def sign(md: Metadata[Any], signers: Signers, delegator: Root | Targets, role: str) -> None:
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
        add_signature(md, signer)
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as exc:
        raise KeyManagementError(
            f"{role} needs {delegated.threshold} signature(s) from its keys: {exc}"
        ) from exc


def _as_list(signers: Signers) -> list[Signer]:
    return [signers] if isinstance(signers, Signer) else list(signers)
