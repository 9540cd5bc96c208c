"""Release signature status of the catalogue's bundles, as the console shows it.

A bundle is released when the ``targets`` role (signed by the release key,
which the fleet server never holds) lists its hash and length. The console
checks that role's signatures against the newest root with python-tuf, the
way a device does, and says per bundle whether it is listed, with which
length, and whether the listing is still valid (threshold met, not expired).
The check reruns only when ``targets.json`` or the root changes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined, unused-ignore]

__all__ = ["ReleaseCheck", "SignatureStatus"]


@dataclass(frozen=True)
class SignatureStatus:
    """What the release key's ``targets`` role says about one bundle."""

    released: bool
    """Listed in ``targets`` (with its sha256)."""
    verified: bool
    """``targets`` carries a threshold of valid release-key signatures under the newest root."""
    length_matches: bool
    expires: str | None
    """When the listing expires (ISO 8601, UTC)."""
    targets_version: int | None
    signed_by: tuple[str, ...]
    """The key ids whose signatures verified (shortened)."""
    problem: str | None
    """Why the bundle is not safely released, in words; None when it is."""


class ReleaseCheck:
    """Signature status per bundle from a TUF repository folder (cached per file version)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._key: tuple[float, float, int] | None = None
        self._listing: dict[str, int] = {}
        self._verified = False
        self._signed_by: tuple[str, ...] = ()
        self._expires: str | None = None
        self._version: int | None = None
        self._problem: str | None = None

    def status(self, sha256: str, size: int) -> SignatureStatus:
        """The signature status of the bundle ``sha256`` of ``size`` bytes."""
        with self._lock:
            self._refresh()
            length = self._listing.get(sha256)
            problem = self._problem
            if problem is None and length is None:
                problem = "not listed in the release-signed targets role"
            elif problem is None and length != size:
                problem = f"listed with {length} bytes, the catalogue holds {size}"
            return SignatureStatus(
                released=length is not None,
                verified=self._verified,
                length_matches=length == size,
                expires=self._expires,
                targets_version=self._version,
                signed_by=self._signed_by,
                problem=problem,
            )

    def _refresh(self) -> None:
        targets_path = self.folder / "targets.json"
        root_path = self.folder / "root.json"
        try:
            key = (
                targets_path.stat().st_mtime,
                root_path.stat().st_mtime,
                targets_path.stat().st_size,
            )
        except OSError as exc:
            self._key, self._listing, self._verified = None, {}, False
            self._problem = f"cannot read the repository's metadata: {exc}"
            return
        if key == self._key:
            return
        self._key = key
        try:
            root = Metadata[Root].from_bytes(root_path.read_bytes())
            targets = Metadata[Targets].from_bytes(targets_path.read_bytes())
        except (OSError, ValueError) as exc:
            self._listing, self._verified = {}, False
            self._problem = f"cannot parse the repository's metadata: {exc}"
            return
        self._listing = {
            info.hashes.get("sha256", ""): info.length for info in targets.signed.targets.values()
        }
        self._version = targets.signed.version
        self._expires = targets.signed.expires.isoformat().replace("+00:00", "Z")
        result = root.signed.get_verification_result(
            Targets.type, targets.signed_bytes, targets.signatures
        )
        self._signed_by = tuple(sorted(keyid[:12] for keyid in result.signed))
        self._verified = bool(result)
        self._problem = None
        if not self._verified:
            self._problem = (
                f"targets v{self._version} has {len(result.signed)} valid release-key signatures "
                f"of the {result.threshold} the root asks for"
            )
        elif targets.signed.is_expired():
            self._problem = f"targets v{self._version} expired at {self._expires}"
