"""The fleet CA: what it issues, how it keeps keys, and the revocation lists it signs."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet_server.certificates import check_crl_update, crl_number, verify_crl
from fleet_server.errors import CertificateAuthorityError
from fleet_server.fleet_ca import CA_CERT, CA_KEY, CRL, FleetCA, crl_expiry, issued_in, write_pair


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_private_key_0600_a_ca_certificate_and_an_empty_crl(tmp_path: Path) -> None:
    ca = FleetCA.init(tmp_path / "ca", name="plant 7 CA")
    assert mode(tmp_path / "ca" / CA_KEY) == 0o600
    assert b"PRIVATE KEY" in (tmp_path / "ca" / CA_KEY).read_bytes()
    cert = x509.load_pem_x509_certificate((tmp_path / "ca" / CA_CERT).read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "plant 7 CA"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    crl = verify_crl((tmp_path / "ca" / CRL).read_bytes(), ca.cert_pem)
    assert len(crl) == 0 and crl_number(crl) == 1
    expiry = crl_expiry(tmp_path / "ca")
    assert expiry is not None and expiry > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=300)
    with pytest.raises(CertificateAuthorityError, match="already holds a CA"):
        FleetCA.init(tmp_path / "ca")


def test_client_and_server_certificates_verify_against_the_ca(tmp_path: Path) -> None:
    ca = FleetCA.init(tmp_path / "ca")
    client = ca.issue_client("cam-17")
    server = ca.issue_server(["broker.plant", "10.0.0.5"])
    cert = x509.load_pem_x509_certificate(client.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-17"
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    cert.verify_directly_issued_by(ca.certificate)
    server_cert = x509.load_pem_x509_certificate(server.cert_pem)
    san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.plant"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    server_cert.verify_directly_issued_by(ca.certificate)
    # what a TLS stack does with them: the pair loads, and the CA is a trust anchor
    cert_path, key_path = write_pair(tmp_path / "out", "broker", server)
    assert mode(key_path) == 0o600 and mode(cert_path) == 0o644
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    context.load_verify_locations(cadata=ca.cert_pem.decode())
    assert [(r.kind, r.name) for r in issued_in(tmp_path / "ca")] == [
        ("client", "cam-17"),
        ("server", "broker.plant"),
    ]


def test_a_device_id_that_is_not_a_valid_name_gets_no_certificate(tmp_path: Path) -> None:
    ca = FleetCA.init(tmp_path / "ca")
    with pytest.raises(CertificateAuthorityError, match="device id"):
        ca.issue_client("cam/17,CN=edgefleet-server")
    assert ca.records() == []


def test_an_encrypted_ca_key_needs_its_passphrase(tmp_path: Path) -> None:
    FleetCA.init(tmp_path / "ca", passphrase="correct horse")
    assert b"ENCRYPTED" in (tmp_path / "ca" / CA_KEY).read_bytes()
    with pytest.raises(CertificateAuthorityError, match="needs a passphrase"):
        FleetCA.open(tmp_path / "ca")
    with pytest.raises(CertificateAuthorityError, match="wrong passphrase"):
        FleetCA.open(tmp_path / "ca", "battery staple")
    assert FleetCA.open(tmp_path / "ca", "correct horse").issue_client("cam-1")
    with pytest.raises(CertificateAuthorityError, match="holds no fleet CA"):
        FleetCA.open(tmp_path / "elsewhere")


def test_revocation_lists_every_certificate_of_a_device_and_only_those(tmp_path: Path) -> None:
    ca = FleetCA.init(tmp_path / "ca")
    first, second = ca.issue_client("cam-1"), ca.issue_client("cam-1")
    other = ca.issue_client("cam-2")
    revoked = ca.revoke("cam-1")
    assert {r.serial for r in revoked} == {first.record.serial, second.record.serial}
    crl = verify_crl(ca.crl_path.read_bytes(), ca.cert_pem)
    serials = {entry.serial_number for entry in crl}
    assert serials == {first.record.serial_number, second.record.serial_number}
    assert crl.get_revoked_certificate_by_serial_number(other.record.serial_number) is None
    with pytest.raises(CertificateAuthorityError, match="no unrevoked certificate"):
        ca.revoke("cam-1")  # nothing left to revoke
    ca.revoke(serial=other.record.serial)
    assert len(verify_crl(ca.crl_path.read_bytes(), ca.cert_pem)) == 3


def test_each_crl_is_strictly_newer_than_the_last(tmp_path: Path) -> None:
    """OpenSSL keeps every CRL a broker loaded and trusts the newest by last-update time."""
    ca = FleetCA.init(tmp_path / "ca")
    lists = [ca.sign_crl() for _ in range(3)]
    parsed = [x509.load_pem_x509_crl(pem) for pem in lists]
    assert [crl_number(c) for c in parsed] == [2, 3, 4]
    updates = [c.last_update_utc for c in parsed]
    assert updates == sorted(updates) and len(set(updates)) == 3


def test_the_server_takes_only_newer_crls_signed_by_the_fleet_ca(tmp_path: Path) -> None:
    ca = FleetCA.init(tmp_path / "ca")
    ca.issue_client("cam-1")
    before = ca.crl_path.read_bytes()
    ca.revoke("cam-1")
    after = ca.crl_path.read_bytes()
    assert len(check_crl_update(after, ca.cert_pem, before)) == 1
    # replaying the older list would bring the revoked certificate back
    with pytest.raises(CertificateAuthorityError, match="older than the one in place"):
        check_crl_update(before, ca.cert_pem, after)
    # another CA's list, or something that is not a list, is refused
    stranger = FleetCA.init(tmp_path / "stranger")
    with pytest.raises(CertificateAuthorityError, match="not signed by the fleet CA"):
        check_crl_update(stranger.crl_path.read_bytes(), ca.cert_pem, after)
    with pytest.raises(CertificateAuthorityError, match="not a PEM certificate revocation list"):
        check_crl_update(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", ca.cert_pem)
