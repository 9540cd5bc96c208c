"""TLS on the fleet's MQTT links, on a real Mosquitto with TLS-only listeners (issue #17).

Certificates come from the fleet CA (``fleet_server.fleet_ca``), made in each
test; the broker's config is the one ``BrokerAuth.mosquitto_conf`` generates.
Devices log in with client certificates on their listener, the fleet server
with its password on its own, both over TLS: nothing travels in clear, a
device that does not trust the broker's CA (or that the broker's CA did not
certify, or whose certificate is revoked) gets no connection.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.config import MqttConfig, TlsConfig, parse_config
from edge_runtime.errors import ConfigError
from edge_runtime.mqtt_link import MqttLink
from edgefleet.testing.device import wait_for
from fleet_server.broker_auth import SERVER_USERNAME, BrokerAuth, MosquittoTls
from fleet_server.errors import FleetError
from fleet_server.fleet_ca import FleetCA, write_pair
from fleet_server.process import connect_client
from fleet_server.tls import BrokerTls
from tests.mqtt_login import login
from tests.tls_broker import (
    SERVER_PASSWORD,
    Recorder,
    TlsMosquitto,
    start_tls_mosquitto,
    tls_login,
)

broker = pytest.mark.broker

# MQTT 3.1.1 CONNECT, client id "plain", clean session, keep-alive 60 s
PLAIN_CONNECT = bytes.fromhex("101100044d5154540402003c0005") + b"plain"


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    return FleetCA.init(tmp_path / "fleet-ca")


@pytest.fixture
def mosquitto(tmp_path: Path, ca: FleetCA) -> Iterator[TlsMosquitto]:
    running = start_tls_mosquitto(tmp_path / "broker", ca)
    try:
        yield running
    finally:
        running.stop()


def device_files(ca: FleetCA, folder: Path, device_id: str) -> tuple[Path, Path]:
    """A client certificate for ``device_id`` from ``ca``, written as a provisioned device has it."""
    return write_pair(folder, device_id, ca.issue_client(device_id))


def device_link(
    mosquitto: TlsMosquitto, device_id: str, tls: TlsConfig, port: int | None = None
) -> MqttLink:
    config = MqttConfig(host="127.0.0.1", port=port or mosquitto.port, tls=tls)
    return MqttLink(config, device_id)


def refused_within(port: int, seconds: float = 10, **credentials: object) -> bool:
    """Whether the broker refuses this TLS login before ``seconds`` pass (a reload is async)."""
    deadline = time.monotonic() + seconds
    while True:
        attempt = tls_login(port, **credentials)  # type: ignore[arg-type]
        if not attempt.accepted:
            return True
        attempt.close()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


@broker
def test_no_listener_speaks_plaintext(mosquitto: TlsMosquitto) -> None:
    # the generated config: every listener has a certificate and key, there are two of them
    blocks = mosquitto.conf.split("listener ")[1:]
    assert len(blocks) == 2
    for block in blocks:
        assert "\ncertfile " in block and "\nkeyfile " in block, block
    assert "require_certificate true" in blocks[0] and "use_identity_as_username true" in blocks[0]
    assert f"crlfile {mosquitto.folder / 'crl.pem'}" in blocks[0]
    assert "allow_anonymous false" in mosquitto.conf
    # a plaintext MQTT CONNECT gets no CONNACK on either port: the broker wants a TLS handshake
    for port in (mosquitto.port, mosquitto.server_port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(PLAIN_CONNECT)
            try:
                reply = sock.recv(64)
            except (ConnectionResetError, TimeoutError):
                reply = b""
        assert not reply.startswith(b"\x20"), reply  # 0x20: CONNACK
        _client, accepted = login(port, SERVER_USERNAME, SERVER_PASSWORD, "plaintext-server")
        assert not accepted
    # the server's password works over TLS only
    spy = tls_login(
        mosquitto.server_port,
        ca_file=mosquitto.ca_file,
        username=SERVER_USERNAME,
        password=SERVER_PASSWORD,
    )
    assert spy.accepted
    spy.close()


@broker
def test_a_device_and_the_server_talk_over_tls_and_nothing_travels_in_clear(
    mosquitto: TlsMosquitto, ca: FleetCA, tmp_path: Path
) -> None:
    cert, key = device_files(ca, tmp_path / "cam-a", "cam-a")
    server = connect_client(
        "127.0.0.1",
        mosquitto.server_port,
        "tls-server",
        username=SERVER_USERNAME,
        password=SERVER_PASSWORD,
        tls=BrokerTls(ca_file=mosquitto.ca_file),
    )
    seen: list[tuple[str, bytes]] = []
    server.on_message = lambda _c, _u, m: seen.append((m.topic, m.payload))
    server.subscribe("edgefleet/devices/#", qos=1)
    recorder = Recorder(mosquitto.port).start()
    link = device_link(
        mosquitto,
        "cam-a",
        TlsConfig(ca_file=mosquitto.ca_file, cert_file=cert, key_file=key),
        port=recorder.port,
    )
    secret = b"conveyor-7 says glass, confidence 0.93"
    try:
        link.start()
        assert link.wait_connected(10), mosquitto.log[-2000:]
        link.publish("edgefleet/devices/cam-a/predictions", secret, qos=1)
        # the ACL is the username's, and the username is the certificate's common name
        link.publish("edgefleet/devices/cam-b/predictions", b"forged", qos=1)
        wait_for(lambda: any(p == secret for _, p in seen), 10, message="no prediction arrived")
        time.sleep(0.5)
    finally:
        link.stop()
        server.loop_stop()
        server.disconnect()
        recorder.close()
    assert ("edgefleet/devices/cam-a/predictions", secret) in seen
    assert not any(topic.startswith("edgefleet/devices/cam-b") for topic, _ in seen)
    assert "u'cam-a'" in mosquitto.log  # logged in as its certificate's common name
    wire = bytes(recorder.sent) + bytes(recorder.received)
    assert recorder.sent[:1] == b"\x16" and recorder.received[:1] == b"\x16"  # TLS handshakes
    for clear in (secret, b"edgefleet/devices", b"availability", b"MQTT"):
        assert clear not in wire, clear


@broker
def test_a_device_with_the_wrong_ca_is_refused_and_says_why(
    mosquitto: TlsMosquitto, ca: FleetCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = device_files(ca, tmp_path / "cam-a", "cam-a")
    FleetCA.init(tmp_path / "other-ca")
    wrong_ca = tmp_path / "other-ca" / "ca.crt"
    attempt = tls_login(mosquitto.port, ca_file=wrong_ca, cert=cert, key=key)
    assert not attempt.accepted and attempt.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in attempt.error
    caplog.set_level(logging.WARNING, logger="edge_runtime.mqtt_link")
    link = device_link(
        mosquitto, "cam-a", TlsConfig(ca_file=wrong_ca, cert_file=cert, key_file=key)
    )
    try:
        link.start()
        assert not link.wait_connected(3)
        wait_for(
            lambda: "certificate verify failed" in caplog.text,
            10,
            message=lambda: f"no warning naming the TLS failure: {caplog.text!r}",
        )
    finally:
        link.stop()
    # the server too: its connection fails with the reason, never falls back to plaintext
    with pytest.raises(FleetError, match="CERTIFICATE_VERIFY_FAILED"):
        connect_client(
            "127.0.0.1",
            mosquitto.server_port,
            username=SERVER_USERNAME,
            password=SERVER_PASSWORD,
            tls=BrokerTls(ca_file=wrong_ca),
        )


@broker
def test_a_broker_certificate_for_another_host_is_refused(
    mosquitto: TlsMosquitto, ca: FleetCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The right CA is not enough: the certificate must name the host the device dialled."""
    cert, key = device_files(ca, tmp_path / "cam-a", "cam-a")
    relay = Recorder(mosquitto.port, host="127.0.0.2").start()  # not in the broker's certificate
    caplog.set_level(logging.WARNING, logger="edge_runtime.mqtt_link")
    config = MqttConfig(
        host="127.0.0.2",
        port=relay.port,
        tls=TlsConfig(ca_file=mosquitto.ca_file, cert_file=cert, key_file=key),
    )
    link = MqttLink(config, "cam-a")
    try:
        link.start()
        assert not link.wait_connected(3)
        wait_for(lambda: "mismatch" in caplog.text, 10, message=lambda: caplog.text)
    finally:
        link.stop()
        relay.close()


@broker
def test_a_device_the_fleet_ca_did_not_certify_is_refused(
    mosquitto: TlsMosquitto, ca: FleetCA, tmp_path: Path
) -> None:
    stranger = FleetCA.init(tmp_path / "stranger-ca")
    forged_cert, forged_key = device_files(stranger, tmp_path / "forged", "cam-a")
    assert refused_within(
        mosquitto.port, 0, ca_file=mosquitto.ca_file, cert=forged_cert, key=forged_key
    )
    # no certificate at all: a password is no way in on the device listener
    assert refused_within(
        mosquitto.port,
        0,
        ca_file=mosquitto.ca_file,
        username=SERVER_USERNAME,
        password=SERVER_PASSWORD,
    )
    # a server certificate of the fleet CA is not a client certificate
    server_cert, server_key = write_pair(
        tmp_path / "server", "x", ca.issue_server(["127.0.0.1"], name="cam-a")
    )
    assert refused_within(
        mosquitto.port, 0, ca_file=mosquitto.ca_file, cert=server_cert, key=server_key
    )
    cert, key = device_files(ca, tmp_path / "cam-a", "cam-a")
    good = tls_login(mosquitto.port, ca_file=mosquitto.ca_file, cert=cert, key=key)
    assert good.accepted
    good.close()


@broker
def test_the_server_shows_a_client_certificate_where_the_broker_asks_for_one(
    mosquitto: TlsMosquitto, ca: FleetCA, tmp_path: Path
) -> None:
    """``serve --broker-cert/--broker-key``: here on the device listener, which requires one
    (the certificate's common name is the server's broker username, so its ACL applies)."""
    cert, key = device_files(ca, tmp_path / "server", SERVER_USERNAME)
    client = connect_client(
        "127.0.0.1",
        mosquitto.port,
        tls=BrokerTls(ca_file=mosquitto.ca_file, cert_file=cert, key_file=key),
    )
    try:
        info = client.publish("edgefleet/tuf/probe", b"x", qos=1)
        info.wait_for_publish(5)
        assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()
    assert f"u'{SERVER_USERNAME}'" in mosquitto.log


@broker
def test_a_revoked_certificate_is_refused_and_the_others_are_not(
    mosquitto: TlsMosquitto, ca: FleetCA, tmp_path: Path
) -> None:
    cert_a, key_a = device_files(ca, tmp_path / "cam-a", "cam-a")
    cert_b, key_b = device_files(ca, tmp_path / "cam-b", "cam-b")
    for cert, key in ((cert_a, key_a), (cert_b, key_b)):
        attempt = tls_login(mosquitto.port, ca_file=mosquitto.ca_file, cert=cert, key=key)
        assert attempt.accepted, mosquitto.log[-2000:]
        attempt.close()
    ca.revoke("cam-a")
    mosquitto.auth.reload_command = ["kill", "-HUP", str(mosquitto.process.pid)]
    mosquitto.auth.write_crl(ca.crl_path.read_bytes())  # what PUT /broker/crl does
    assert refused_within(mosquitto.port, ca_file=mosquitto.ca_file, cert=cert_a, key=key_a)
    still = tls_login(mosquitto.port, ca_file=mosquitto.ca_file, cert=cert_b, key=key_b)
    assert still.accepted
    still.close()
    # a second revocation in the same second still wins over the list before it
    ca.revoke("cam-b")
    mosquitto.auth.write_crl(ca.crl_path.read_bytes())
    assert refused_within(mosquitto.port, ca_file=mosquitto.ca_file, cert=cert_b, key=key_b)
    # a new certificate for the same device is not revoked
    cert_new, key_new = device_files(ca, tmp_path / "cam-a-new", "cam-a")
    fresh = tls_login(mosquitto.port, ca_file=mosquitto.ca_file, cert=cert_new, key=key_new)
    assert fresh.accepted
    fresh.close()
    assert "certificate revoked" in mosquitto.log or "verify failed" in mosquitto.log


@broker
def test_insecure_skip_verify_connects_without_checking_the_broker(
    mosquitto: TlsMosquitto, ca: FleetCA, tmp_path: Path
) -> None:
    """For a test bench only: the device trusts any broker certificate (still encrypted)."""
    cert, key = device_files(ca, tmp_path / "cam-a", "cam-a")
    FleetCA.init(tmp_path / "other-ca")
    wrong_ca = tmp_path / "other-ca" / "ca.crt"
    link = device_link(
        mosquitto,
        "cam-a",
        TlsConfig(ca_file=wrong_ca, cert_file=cert, key_file=key, insecure_skip_verify=True),
    )
    try:
        link.start()
        assert link.wait_connected(10)
    finally:
        link.stop()


def test_device_tls_settings_are_checked_before_anything_connects(tmp_path: Path) -> None:
    base = "device_id: cam-a\nsource: {type: synthetic}\nmqtt:\n  tls:\n"
    with pytest.raises(ConfigError, match="key_file needs cert_file"):
        parse_config(base + "    key_file: /etc/edgefleet/client.key\n")
    config = parse_config(base + f"    ca_file: {tmp_path / 'missing.crt'}\n")
    assert config.mqtt is not None and config.mqtt.tls is not None
    with pytest.raises(ConfigError, match=r"mqtt\.tls: cannot use ca_file .*missing\.crt"):
        MqttLink(config.mqtt, "cam-a")
    # an empty section is TLS with the system's CAs
    system = parse_config(base.replace("  tls:\n", "  tls: {}\n"))
    assert system.mqtt is not None and system.mqtt.tls == TlsConfig()


def test_the_operations_guide_shows_the_generated_tls_config() -> None:
    folder = Path("/etc/mosquitto/edgefleet")
    conf = BrokerAuth(folder).mosquitto_conf(
        8883,
        server_port=8884,
        tls=MosquittoTls(
            certfile=folder / "broker.crt", keyfile=folder / "broker.key", cafile=folder / "ca.crt"
        ),
    )
    guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    assert f"```\n{conf}```" in guide
