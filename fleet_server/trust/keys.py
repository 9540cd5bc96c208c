"""Signing keys for the TUF roles: generate, store (PKCS#8 PEM, mode 0600) and load them.

Roles and who holds their keys:

- ``root`` (offline): says which keys every top-level role has; rotates keys.
- ``targets``, the *release key* (offline, with whoever releases models):
  signs which bundles exist. The fleet server never holds it.
- ``snapshot``, ``timestamp``, ``assignments`` (online, on the fleet server):
  freshness, consistency, and which bundle each device or group runs.

A key lives in two files: ``<name>.pem`` (the private key, PKCS#8 PEM,
encrypted when a passphrase is given, mode 0600) and ``<name>.pub.json``
beside it (the public key as TUF metadata writes it, with its keyid).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.exceptions import KeyMismatchError

# securesystemslib.signer re-exports its classes without __all__,
# which mypy (no implicit re-export) reads as private; the types still resolve.
from securesystemslib.signer import (  # type: ignore[attr-defined, unused-ignore]
    CryptoSigner,
    Key,
    Signer,
    SSlibKey,
)

from edge_runtime.atomic import atomic_write_text
from fleet_server.errors import KeyManagementError

__all__ = [
    "OFFLINE_ROLES",
    "ONLINE_ROLES",
    "ROLES",
    "KeySet",
    "generate_key",
    "init_keys",
    "load_keys",
    "load_public_key",
    "load_signer",
    "public_key_path",
]

log = logging.getLogger(__name__)

ROLES = ("root", "targets", "snapshot", "timestamp", "assignments")
"""Every role edgefleet signs metadata for."""
OFFLINE_ROLES = ("root", "targets")
"""Keys kept off the fleet server: root and the release key (``targets``)."""
ONLINE_ROLES = ("snapshot", "timestamp", "assignments")
"""Keys the fleet server holds to publish assignments and fresh metadata."""


def public_key_path(path: str | os.PathLike[str]) -> Path:
    """Where the public key of the private key file ``path`` lives: ``<stem>.pub.json`` beside it."""
    private = Path(path)
    return private.with_name(f"{private.stem}.pub.json")


def generate_key(
    path: str | os.PathLike[str], passphrase: str | bytes | None = None
) -> CryptoSigner:
    """Create an Ed25519 key: the private key at ``path`` (mode 0600), its public key beside it.

    Refuses to overwrite an existing key. Both files are written atomically.
    """
    private_path = Path(path)
    if private_path.exists() or public_key_path(private_path).exists():
        raise KeyManagementError(f"{private_path} already exists: refusing to overwrite a key")
    private_key = Ed25519PrivateKey.generate()
    encryption: KeySerializationEncryption = (
        BestAvailableEncryption(_as_bytes(passphrase)) if passphrase else NoEncryption()
    )
    pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    signer = CryptoSigner(private_key)
    public = {"keyid": signer.public_key.keyid, **signer.public_key.to_dict()}
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(private_path, pem)
        atomic_write_text(
            public_key_path(private_path), json.dumps(public, indent=2, sort_keys=True) + "\n"
        )
    except OSError as exc:
        raise KeyManagementError(f"cannot write key {private_path}: {exc}") from exc
    log.info("generated key %s (keyid %s)", private_path, signer.public_key.keyid[:12])
    return signer


def load_public_key(path: str | os.PathLike[str]) -> Key:
    """The public key stored in a ``.pub.json`` file (or beside the private key file ``path``)."""
    public_path = Path(path)
    if not public_path.name.endswith(".pub.json"):
        public_path = public_key_path(public_path)
    try:
        data = json.loads(public_path.read_text(encoding="utf-8"))
        keyid = data.pop("keyid")
        return SSlibKey.from_dict(keyid, data)
    except OSError as exc:
        raise KeyManagementError(f"cannot read public key {public_path}: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyManagementError(f"{public_path} is not a public key file: {exc!r}") from exc


def load_signer(
    path: str | os.PathLike[str], passphrase: str | bytes | None = None
) -> CryptoSigner:
    """Load the private key at ``path`` as a signer, checked against its public key file when present."""
    private_path = Path(path)
    try:
        pem = private_path.read_bytes()
        mode = private_path.stat().st_mode
    except OSError as exc:
        raise KeyManagementError(f"cannot read key {private_path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "key file %s is readable by other users (mode %o); it should be 0600",
            private_path,
            stat.S_IMODE(mode),
        )
    password = _as_bytes(passphrase) if passphrase else None
    try:
        private_key = load_pem_private_key(pem, password)
    except TypeError as exc:
        if password is None:
            raise KeyManagementError(
                f"{private_path} is encrypted: a passphrase is needed to load it"
            ) from exc
        raise KeyManagementError(
            f"{private_path} is not encrypted, but a passphrase was given"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        problem = "wrong passphrase, or the file" if password is not None else "the file"
        raise KeyManagementError(
            f"cannot load key {private_path}: {problem} is not a PKCS#8 PEM private key"
        ) from exc
    public: Key | None = None
    if public_key_path(private_path).exists():
        public = load_public_key(private_path)
    try:
        return CryptoSigner(private_key, public if isinstance(public, SSlibKey) else None)
    except KeyMismatchError as exc:
        raise KeyManagementError(
            f"{private_path} does not match its public key file {public_key_path(private_path)}"
        ) from exc
    except ValueError as exc:
        raise KeyManagementError(f"{private_path}: unsupported key ({exc})") from exc


@dataclass(frozen=True)
class KeySet:
    """The signers this process holds, per role, and the thresholds a new repository uses."""

    signers: Mapping[str, tuple[Signer, ...]]
    thresholds: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def role(self, name: str) -> tuple[Signer, ...]:
        """The signers held for role ``name``; :class:`KeyManagementError` if none is loaded."""
        signers = self.signers.get(name, ())
        if not signers:
            raise KeyManagementError(f"no {name} key is loaded")
        return signers

    def threshold(self, name: str) -> int:
        """How many ``name`` signatures a new repository requires (default 1)."""
        return self.thresholds.get(name, 1)

    def public_keys(self, name: str) -> list[Key]:
        """The public keys of role ``name``."""
        return [signer.public_key for signer in self.role(name)]

    def only(self, roles: Iterable[str]) -> KeySet:
        """The same key set restricted to ``roles`` (e.g. :data:`ONLINE_ROLES`)."""
        wanted = set(roles)
        return KeySet(
            signers=MappingProxyType({r: s for r, s in self.signers.items() if r in wanted}),
            thresholds=self.thresholds,
        )


def init_keys(
    folder: str | os.PathLike[str],
    *,
    counts: Mapping[str, int] | None = None,
    thresholds: Mapping[str, int] | None = None,
    passphrases: Mapping[str, str | bytes] | None = None,
) -> KeySet:
    """Generate keys for every role in ``folder`` as ``<role>-<i>.pem`` / ``.pub.json``.

    ``counts``: keys per role (default 1 each; several root keys are usual);
    ``thresholds``: signatures required per role (default 1, at most the
    count); ``passphrases``: per-role passphrase for the private key files.
    Move the offline keys (root, targets) off the server afterwards.
    """
    counts = dict(counts or {})
    thresholds = dict(thresholds or {})
    passphrases = dict(passphrases or {})
    for role in (*counts, *thresholds, *passphrases):
        if role not in ROLES:
            raise KeyManagementError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    signers: dict[str, tuple[Signer, ...]] = {}
    for role in ROLES:
        count = counts.get(role, 1)
        threshold = thresholds.get(role, 1)
        if count < 1 or not 1 <= threshold <= count:
            raise KeyManagementError(
                f"{role}: threshold {threshold} with {count} key(s); need 1 <= threshold <= keys"
            )
        signers[role] = tuple(
            generate_key(Path(folder) / f"{role}-{index}.pem", passphrases.get(role))
            for index in range(1, count + 1)
        )
    return KeySet(
        signers=MappingProxyType(signers),
        thresholds=MappingProxyType({role: thresholds.get(role, 1) for role in ROLES}),
    )


def load_keys(
    folder: str | os.PathLike[str],
    roles: Iterable[str] = ONLINE_ROLES,
    passphrases: Mapping[str, str | bytes] | None = None,
) -> KeySet:
    """Load every ``<role>-*.pem`` key in ``folder`` for ``roles`` (default: the online keys only)."""
    passphrases = passphrases or {}
    signers: dict[str, tuple[Signer, ...]] = {}
    for role in roles:
        if role not in ROLES:
            raise KeyManagementError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        paths = sorted(Path(folder).glob(f"{role}-*.pem"))
        if not paths:
            raise KeyManagementError(f"no {role} key ({role}-*.pem) in {folder}")
        signers[role] = tuple(load_signer(path, passphrases.get(role)) for path in paths)
    return KeySet(signers=MappingProxyType(signers))


def _as_bytes(passphrase: str | bytes) -> bytes:
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase


def _write_private(path: Path, pem: bytes) -> None:
    """Write ``pem`` to ``path`` with mode 0600 from the first byte: temp file, fsync, ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
