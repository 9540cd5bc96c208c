"""Broker credentials: Mosquitto-format hashes, the generated files, and what they refuse."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fleet_server.broker_auth import (
    SERVER_USERNAME,
    BrokerAuth,
    hash_password,
    new_password,
    render_acl,
    render_passwd,
    verify_password,
)
from fleet_server.errors import FleetError


def test_hash_is_mosquitto_pbkdf2_and_verifies_only_the_right_password() -> None:
    password = new_password()
    hashed = hash_password(password)
    kind, iterations, salt, digest = hashed.split("$")[1:]
    assert (kind, iterations) == ("7", "1000")
    assert len(salt) == 16 and len(digest) == 88  # base64 of 12 and 64 bytes
    assert verify_password(password, hashed)
    assert not verify_password(password + "x", hashed)
    assert hash_password(password) != hashed  # a fresh salt every time
    assert not verify_password(password, "$6$abc$def")
    assert not verify_password(password, "$7$1000$not base64!$x")


def test_passwords_are_random_and_long() -> None:
    assert len({new_password() for _ in range(100)}) == 100
    assert len(new_password()) >= 32


@pytest.mark.parametrize("bad", ["", "a:b", "a b", "tab\tname"])
def test_passwd_refuses_names_mosquitto_would_misread(bad: str) -> None:
    with pytest.raises(FleetError, match="cannot be a broker username"):
        render_passwd({bad: "$7$x"})


def test_acl_confines_devices_to_their_own_topics() -> None:
    acl = render_acl("plant/a")
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert lines == [
        f"user {SERVER_USERNAME}",
        "topic readwrite plant/a/#",
        "pattern readwrite plant/a/devices/%u/#",
        "pattern read plant/a/tuf/#",
        "pattern read plant/a/bundles/#",
    ]


def test_write_keeps_hashes_only_and_refuses_a_device_named_like_the_server(
    tmp_path: Path,
) -> None:
    auth = BrokerAuth(tmp_path / "b", server_password="s3cret")
    auth.write({"cam-2": hash_password("p2"), "cam-1": hash_password("p1")})
    lines = auth.passwd_path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["cam-1", "cam-2", SERVER_USERNAME]
    assert "s3cret" not in auth.passwd_path.read_text()
    assert verify_password("s3cret", lines[2].split(":", 1)[1])
    assert auth.passwd_path.stat().st_mode & 0o777 == 0o640
    before = auth.passwd_path.read_text()
    with pytest.raises(FleetError, match="cannot be called"):
        auth.write({SERVER_USERNAME: hash_password("x")})
    assert auth.passwd_path.read_text() == before  # nothing half-written


def test_a_failing_reload_is_logged_and_the_files_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auth = BrokerAuth(tmp_path / "b", reload_command="false")
    with caplog.at_level(logging.WARNING):
        auth.write({"cam-1": hash_password("p")})
    assert "exited 1" in caplog.text
    assert auth.passwd_path.exists() and auth.acl_path.exists()
    missing = BrokerAuth(tmp_path / "c", reload_command=["/nonexistent/reload"])
    with caplog.at_level(logging.WARNING):
        missing.write({})
    assert "/nonexistent/reload" in caplog.text
