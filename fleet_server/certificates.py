"""X.509 for the fleet's TLS, as pure functions: keys, certificates, revocation lists, checks.

Nothing here reads or writes files: :mod:`fleet_server.fleet_ca` keeps the
CA's folder on the operator's machine, and the fleet server checks the
revocation lists it is sent with :func:`check_crl_update` (it holds the CA's
certificate only). Keys are ECDSA P-256, what every TLS stack (Mosquitto's
OpenSSL, Python's ``ssl``, browsers) accepts; signatures are SHA-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet_server.errors import CertificateAuthorityError

__all__ = [
    "Kind",
    "build_crl",
    "check_crl_update",
    "crl_number",
    "issue_certificate",
    "make_ca_certificate",
    "new_key",
    "utc_seconds",
    "verify_crl",
]

Kind = Literal["client", "server"]
"""A client certificate (a device: TLS client authentication) or a server's (broker, API)."""


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key (what every TLS stack, Mosquitto's OpenSSL included, accepts)."""
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def utc_seconds(when: dt.datetime) -> dt.datetime:
    """``when`` in UTC, to the second (what X.509 times hold)."""
    return when.astimezone(dt.timezone.utc).replace(microsecond=0)


def make_ca_certificate(
    key: ec.EllipticCurvePrivateKey, name: str, days: int, now: dt.datetime
) -> x509.Certificate:
    """A self-signed CA certificate that may sign end-entity certificates and CRLs only."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utc_seconds(now) - dt.timedelta(minutes=5))
        .not_valid_after(utc_seconds(now) + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    kind: Kind,
    name: str,
    *,
    hosts: Sequence[str] = (),
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    """An end-entity certificate signed by the CA.

    ``client``: common name ``name`` (a device id), for TLS client authentication.
    ``server``: common name ``name``, subject alternative names ``hosts`` (DNS
    names or IP addresses, what clients connect to), for TLS servers.
    """
    if kind == "server" and not hosts:
        raise CertificateAuthorityError("a server certificate needs at least one host name")
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if kind == "client" else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(utc_seconds(now) - dt.timedelta(minutes=5))
        .not_valid_after(
            min(utc_seconds(now) + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def build_crl(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    number: int,
    days: int,
    now: dt.datetime,
) -> x509.CertificateRevocationList:
    """The CA's CRL listing ``revoked`` (serial, revocation time), valid for ``days``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(utc_seconds(now))
        .next_update(utc_seconds(now) + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(utc_seconds(at))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def verify_crl(crl_pem: bytes, ca_cert_pem: bytes) -> x509.CertificateRevocationList:
    """``crl_pem`` parsed, if the CA of ``ca_cert_pem`` signed it; :class:`CertificateAuthorityError` otherwise."""
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as exc:
        raise CertificateAuthorityError(f"the fleet CA certificate is not PEM: {exc}") from exc
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as exc:
        raise CertificateAuthorityError(f"not a PEM certificate revocation list: {exc}") from exc
    public_key = ca_cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CertificateAuthorityError("the fleet CA's key type cannot sign CRLs here")
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(public_key):
        raise CertificateAuthorityError(
            f"the revocation list is not signed by the fleet CA ({ca_cert.subject.rfc4514_string()})"
        )
    return crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    """The list's CRL number (0 when it has none): each new list has a higher one."""
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def check_crl_update(
    crl_pem: bytes, ca_cert_pem: bytes, current_pem: bytes | None = None
) -> x509.CertificateRevocationList:
    """``crl_pem`` parsed, if the fleet CA signed it and it is newer than ``current_pem``.

    An older list (a lower CRL number) is refused like replayed TUF metadata:
    installing it would bring revoked certificates back. A current list that
    does not verify (absent, another CA's) does not block the new one.
    """
    crl = verify_crl(crl_pem, ca_cert_pem)
    if current_pem is not None:
        try:
            current = verify_crl(current_pem, ca_cert_pem)
        except CertificateAuthorityError:
            return crl
        if crl_number(crl) < crl_number(current):
            raise CertificateAuthorityError(
                f"the revocation list (number {crl_number(crl)}) is older than the one in "
                f"place (number {crl_number(current)}): refusing to bring revoked "
                "certificates back"
            )
    return crl
