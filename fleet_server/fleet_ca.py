"""The fleet CA's folder: certificates for TLS on the fleet's MQTT and HTTP links, and revocation.

The CA lives in one folder on the operator's machine (like the release key,
its private key never goes to the fleet server; the server and the broker
need only its certificate):

- ``ca.key``: the CA's private key (ECDSA P-256, PKCS#8 PEM, mode 0600,
  encrypted when a passphrase is given);
- ``ca.crt``: its self-signed certificate, what brokers and devices trust;
- ``crl.pem``: the certificate revocation list, signed by the CA, what
  Mosquitto's ``crlfile`` reads;
- ``issued.json``: every certificate the CA issued (serial, kind, name,
  expiry, revocation), from which the CRL is built.

The CA issues *client* certificates (common name = device id, for brokers
that map a certificate to a username: Mosquitto's
``use_identity_as_username``) and *server* certificates (for the broker's
TLS listeners and the HTTP API, with the host names and addresses clients
connect to). The certificates themselves are built by the pure functions
of :mod:`fleet_server.certificates`; this module keeps the folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from edge_runtime.atomic import atomic_write_bytes, atomic_write_text
from fleet_server.certificates import (
    Kind,
    build_crl,
    issue_certificate,
    make_ca_certificate,
    new_key,
    utc_seconds,
)
from fleet_server.errors import CertificateAuthorityError
from fleet_server.records import check_name

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CRL",
    "FleetCA",
    "IssuedCertificate",
    "IssuedPair",
    "crl_expiry",
    "issued_in",
    "write_pair",
]

log = logging.getLogger(__name__)

CA_KEY, CA_CERT, CRL, ISSUED = "ca.key", "ca.crt", "crl.pem", "issued.json"
DEFAULT_CA_DAYS = 3650
DEFAULT_CLIENT_DAYS = 1095
DEFAULT_SERVER_DAYS = 825
DEFAULT_CRL_DAYS = 365
"""How long a CRL is valid: a broker refuses every client certificate once its CRL expires,
so re-sign it (``edgefleet fleet ca crl``) well before."""


@dataclass(frozen=True)
class IssuedCertificate:
    """One certificate the CA issued, as ``issued.json`` records it."""

    serial: str
    """Hexadecimal, as ``openssl x509 -serial`` prints it."""
    kind: Kind
    name: str
    not_after: str
    """ISO 8601, UTC."""
    revoked_at: str | None = None

    @property
    def serial_number(self) -> int:
        """The serial as an integer."""
        return int(self.serial, 16)


@dataclass(frozen=True)
class IssuedPair:
    """A new certificate and its private key, both PEM, and what the CA recorded about them."""

    cert_pem: bytes
    key_pem: bytes
    record: IssuedCertificate


def write_pair(folder: Path, stem: str, pair: IssuedPair) -> tuple[Path, Path]:
    """Write ``stem.crt`` (0644) and ``stem.key`` (0600) into ``folder``, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    atomic_write_bytes(key_path, pair.key_pem, mode=0o600)
    atomic_write_bytes(cert_path, pair.cert_pem)
    return cert_path, key_path


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: KeySerializationEncryption = (
        BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    )
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)


class FleetCA:
    """The fleet CA's folder: issue client and server certificates, revoke them, sign the CRL."""

    def __init__(
        self, folder: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate
    ) -> None:
        self.folder = folder
        self._key = key
        self.certificate = certificate

    @classmethod
    def init(
        cls,
        folder: str | os.PathLike[str],
        *,
        name: str = "edgefleet fleet CA",
        days: int = DEFAULT_CA_DAYS,
        passphrase: str | None = None,
        now: dt.datetime | None = None,
    ) -> FleetCA:
        """Create the CA in ``folder`` (key, certificate, an empty CRL); refuses to overwrite one."""
        path = Path(folder)
        if (path / CA_KEY).exists() or (path / CA_CERT).exists():
            raise CertificateAuthorityError(f"{path} already holds a CA: refusing to overwrite it")
        when = now or dt.datetime.now(dt.timezone.utc)
        key = new_key()
        certificate = make_ca_certificate(key, name, days, when)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write_bytes(path / CA_KEY, _key_pem(key, _bytes(passphrase)), mode=0o600)
            atomic_write_bytes(path / CA_CERT, certificate.public_bytes(Encoding.PEM))
        except OSError as exc:
            raise CertificateAuthorityError(f"cannot write the CA into {path}: {exc}") from exc
        ca = cls(path, key, certificate)
        with ca._locked():
            ca._save_records({"crl_number": 0, "crl_last_update": None, "certificates": []})
            ca._sign_crl(DEFAULT_CRL_DAYS, when)
        log.info("created the fleet CA in %s", path)
        return ca

    @classmethod
    def open(cls, folder: str | os.PathLike[str], passphrase: str | None = None) -> FleetCA:
        """The CA in ``folder``; :class:`CertificateAuthorityError` if absent or locked."""
        path = Path(folder)
        try:
            key_pem = (path / CA_KEY).read_bytes()
            cert_pem = (path / CA_CERT).read_bytes()
        except OSError as exc:
            raise CertificateAuthorityError(
                f"{path} holds no fleet CA ({exc.strerror}): create one with "
                "`edgefleet fleet ca init`"
            ) from exc
        try:
            key = load_pem_private_key(key_pem, _bytes(passphrase))
        except TypeError as exc:
            wanted = "needs a passphrase" if passphrase is None else "is not encrypted"
            raise CertificateAuthorityError(f"the CA key in {path} {wanted}") from exc
        except ValueError as exc:
            raise CertificateAuthorityError(
                f"cannot load the CA key in {path} (wrong passphrase?)"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateAuthorityError(f"the CA key in {path} is not an ECDSA key")
        return cls(path, key, x509.load_pem_x509_certificate(cert_pem))

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM: what brokers, devices and the fleet server trust."""
        return self.certificate.public_bytes(Encoding.PEM)

    @property
    def crl_path(self) -> Path:
        """The newest CRL (PEM), rewritten by every revocation."""
        return self.folder / CRL

    def issue_client(self, device_id: str, *, days: int = DEFAULT_CLIENT_DAYS) -> IssuedPair:
        """A client certificate whose common name is ``device_id``, with a new key."""
        try:
            check_name(device_id, "device id")
        except ValueError as exc:
            raise CertificateAuthorityError(str(exc)) from exc
        return self._issue("client", device_id, (), days)

    def issue_server(
        self, hosts: Sequence[str], *, name: str | None = None, days: int = DEFAULT_SERVER_DAYS
    ) -> IssuedPair:
        """A server certificate for ``hosts`` (DNS names, IP addresses), with a new key."""
        if not hosts:
            raise CertificateAuthorityError("a server certificate needs at least one host name")
        return self._issue("server", name or hosts[0], tuple(hosts), days)

    def records(self) -> list[IssuedCertificate]:
        """Every certificate issued, oldest first."""
        return issued_in(self.folder)

    def revoke(
        self, name: str | None = None, *, serial: str | None = None
    ) -> list[IssuedCertificate]:
        """Revoke every valid certificate issued to ``name`` (or the one ``serial``), then re-sign the CRL.

        Returns what was revoked; :class:`CertificateAuthorityError` when nothing matches.
        """
        if (name is None) == (serial is None):
            raise CertificateAuthorityError("revoke a name or a serial, one of them")
        wanted = None if serial is None else int(serial, 16)
        now = dt.datetime.now(dt.timezone.utc)
        with self._locked():
            data = self._load_records()
            revoked = []
            for entry in data["certificates"]:
                record = IssuedCertificate(**entry)
                matches = record.name == name if wanted is None else record.serial_number == wanted
                if matches and record.revoked_at is None:
                    entry["revoked_at"] = utc_seconds(now).isoformat()
                    revoked.append(IssuedCertificate(**entry))
            if not revoked:
                what = f"serial {serial}" if name is None else repr(name)
                raise CertificateAuthorityError(f"the CA issued no unrevoked certificate to {what}")
            self._save_records(data)
            self._sign_crl(DEFAULT_CRL_DAYS, now)
        log.info("revoked %s", ", ".join(f"{r.name} ({r.serial})" for r in revoked))
        return revoked

    def sign_crl(self, days: int = DEFAULT_CRL_DAYS) -> bytes:
        """Sign the CRL again (valid ``days`` from now), write ``crl.pem``; its PEM."""
        with self._locked():
            return self._sign_crl(days, dt.datetime.now(dt.timezone.utc))

    def crl_next_update(self) -> dt.datetime | None:
        """When the current CRL expires."""
        return crl_expiry(self.folder)

    # --- persistence ---------------------------------------------------------------------

    def _issue(self, kind: Kind, name: str, hosts: Sequence[str], days: int) -> IssuedPair:
        key = new_key()
        certificate = issue_certificate(
            self._key,
            self.certificate,
            key.public_key(),
            kind,
            name,
            hosts=hosts,
            days=days,
            now=dt.datetime.now(dt.timezone.utc),
        )
        record = IssuedCertificate(
            serial=f"{certificate.serial_number:X}",
            kind=kind,
            name=name,
            not_after=certificate.not_valid_after_utc.isoformat(),
        )
        with self._locked():
            data = self._load_records()
            data["certificates"].append(asdict(record))
            self._save_records(data)
        log.info("issued a %s certificate for %s (serial %s)", kind, name, record.serial)
        return IssuedPair(certificate.public_bytes(Encoding.PEM), _key_pem(key), record)

    def _sign_crl(self, days: int, now: dt.datetime) -> bytes:
        """Called with the folder locked: the next CRL, strictly newer than the last one."""
        data = self._load_records()
        last = data.get("crl_last_update")
        when = utc_seconds(now)
        if last is not None:
            # OpenSSL keeps every CRL a broker ever loaded and uses the newest by its
            # last-update time (to the second): two in one second would tie
            when = max(when, dt.datetime.fromisoformat(last) + dt.timedelta(seconds=1))
        revoked = [
            (r.serial_number, dt.datetime.fromisoformat(r.revoked_at))
            for r in (IssuedCertificate(**c) for c in data["certificates"])
            if r.revoked_at is not None
        ]
        data["crl_number"] = int(data.get("crl_number", 0)) + 1
        data["crl_last_update"] = when.isoformat()
        crl = build_crl(
            self._key, self.certificate, revoked, number=data["crl_number"], days=days, now=when
        )
        pem = crl.public_bytes(Encoding.PEM)
        atomic_write_bytes(self.crl_path, pem)
        self._save_records(data)
        return pem

    def _load_records(self) -> dict[str, Any]:
        return _read_records(self.folder)

    def _save_records(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.folder / ISSUED, json.dumps(data, indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time on the CA's records (two operators provisioning at once)."""
        with (self.folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _read_records(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / ISSUED).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"crl_number": 0, "crl_last_update": None, "certificates": []}
    except (OSError, ValueError) as exc:
        raise CertificateAuthorityError(f"cannot read {folder / ISSUED}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("certificates"), list):
        raise CertificateAuthorityError(f"{folder / ISSUED} is not the CA's record")
    return data


def issued_in(folder: str | os.PathLike[str]) -> list[IssuedCertificate]:
    """Every certificate the CA in ``folder`` issued, oldest first (no key needed)."""
    return [IssuedCertificate(**c) for c in _read_records(Path(folder))["certificates"]]


def crl_expiry(folder: str | os.PathLike[str]) -> dt.datetime | None:
    """When the revocation list of the CA in ``folder`` expires (no key needed)."""
    path = Path(folder) / CRL
    try:
        return x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
    except (OSError, ValueError) as exc:
        raise CertificateAuthorityError(f"cannot read the revocation list {path}: {exc}") from exc


def _bytes(passphrase: str | None) -> bytes | None:
    return passphrase.encode("utf-8") if passphrase else None
