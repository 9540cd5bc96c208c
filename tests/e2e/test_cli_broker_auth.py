"""Per-device broker credentials on a real Mosquitto, driven as an operator drives them.

`edgefleet serve --broker-auth-dir` writes Mosquitto's password and ACL
files and reloads the broker; `edgefleet fleet provision --out` hands out a
device config with the device's own credentials. A device can then publish
under its own topics only: what it publishes as another device never
reaches the server, and a wrong, rotated or revoked password is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.config import load_config
from edge_runtime.mqtt_link import MqttLink
from edgefleet.testing.broker import free_port, wait_for_port
from fleet_server.broker_auth import SERVER_USERNAME, BrokerAuth
from fleet_server.trust import Expiry, Repository, init_keys
from tests.e2e.test_cli_serve import start_serve, wait_healthy
from tests.mqtt_login import login
from tests.services import require_mosquitto

pytestmark = [pytest.mark.broker]

EDGEFLEET = [sys.executable, "-m", "edgefleet"]
SERVER_PASSWORD = "server-secret-for-the-test"


@pytest.fixture
def secured_mosquitto(tmp_path: Path) -> Iterator[tuple[int, int, int, Path]]:
    """Mosquitto with anonymous access off, reading the generated files.

    (device port, server port, pid, auth dir): devices connect where client ids are tied to
    usernames, the fleet server (and the test's spy) to its own loopback listener.
    """
    binary = require_mosquitto()
    auth = BrokerAuth(tmp_path / "broker", server_password=SERVER_PASSWORD)
    auth.write({})  # the server's own user first, so that it can connect at all
    port, server_port = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    # as root Mosquitto drops to user 'mosquitto', who cannot read the server's 0640 files here
    as_root = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        auth.mosquitto_conf(port, "127.0.0.1", server_port=server_port)
        + "persistence false\n"
        + as_root
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port)
        wait_for_port(server_port)
        yield port, server_port, process.pid, auth.folder
    finally:
        process.terminate()
        process.wait(timeout=10)


def refused(port: int, username: str | None, password: str | None) -> bool:
    """Whether the broker refuses this login (it may take a reload to take effect)."""
    deadline = time.monotonic() + 10
    while True:
        client, accepted = login(port, username, password, f"probe-{time.monotonic_ns()}")
        if not accepted:
            return True
        client.loop_stop()
        client.disconnect()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def test_devices_get_their_own_credentials_and_cannot_publish_as_another(
    secured_mosquitto: tuple[int, int, int, Path], tmp_path: Path
) -> None:
    port, server_port, mosquitto_pid, auth_dir = secured_mosquitto
    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys, Expiry())
    http_port = free_port()
    server_url = f"http://127.0.0.1:{http_port}"
    env = {
        **os.environ,
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "EDGEFLEET_TOKEN": "auth-token",
        "EDGEFLEET_MQTT_PASSWORD": SERVER_PASSWORD,
    }
    server = start_serve(
        tmp_path,
        http_port,
        "--broker",
        f"mqtt://127.0.0.1:{server_port}",
        "--device-broker",
        f"mqtt://127.0.0.1:{port}",
        "--broker-auth-dir",
        str(auth_dir),
        "--broker-reload",
        f"kill -HUP {mosquitto_pid}",
        env=env,
    )

    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*EDGEFLEET, "fleet", "--server", server_url, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done

    spy = None
    try:
        wait_healthy(server_url, server)
        # the server's own broker username is refused before anything is written (issue #15,
        # item 6): provisioning and credential rotation keep working for everyone else
        reserved = subprocess.run(
            [*EDGEFLEET, "fleet", "--server", server_url, "provision", SERVER_USERNAME],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert reserved.returncode != 0
        assert f"'{SERVER_USERNAME}' is reserved for the fleet server" in reserved.stderr
        assert json.loads(fleet("devices", "--json").stdout) == []
        for name in ("cam-a", "cam-b"):
            out = tmp_path / name
            made = fleet(
                "provision", name, "--tags", "line1", "--out", str(out), "--device-dir", str(out)
            )
            assert f"wrote {out / 'device.yaml'}" in made.stdout
            assert (out / "device.yaml").stat().st_mode & 0o077 == 0  # it holds a password
            assert (out / "root.json").read_bytes() == repo.root_bytes()
        config_a = load_config(tmp_path / "cam-a" / "device.yaml")
        config_b = load_config(tmp_path / "cam-b" / "device.yaml")
        assert config_a.mqtt is not None and config_b.mqtt is not None
        assert config_a.mqtt.username == "cam-a" and config_a.mqtt.port == port
        assert config_a.mqtt.password and config_a.mqtt.password != config_b.mqtt.password
        assert config_a.update is not None and config_a.update.groups == ["line1"]
        passwd = (auth_dir / "passwd").read_text()
        assert config_a.mqtt.password not in passwd  # only hashes are written
        assert {line.split(":")[0] for line in passwd.splitlines()} == {
            "cam-a",
            "cam-b",
            SERVER_USERNAME,
        }

        # a watcher with the server's rights sees everything devices manage to publish
        seen: list[str] = []
        spy, accepted = login(server_port, SERVER_USERNAME, SERVER_PASSWORD, "spy")
        assert accepted
        spy.on_message = lambda _c, _u, m: seen.append(f"{m.topic} {m.payload.decode()}")
        spy.subscribe("edgefleet/devices/#", qos=1)
        time.sleep(0.5)

        # the real device MQTT link, from the generated config
        link = MqttLink(config_a.mqtt, "cam-a")
        link.start()
        try:
            assert link.wait_connected(10), "cam-a could not log in with its provisioned config"
            link.publish("edgefleet/devices/cam-a/events", b'{"event": "own"}', qos=1)
            link.publish("edgefleet/devices/cam-b/events", b'{"event": "forged"}', qos=1)
            link.publish(
                "edgefleet/devices/cam-b/state", json.dumps({"state": "idle"}).encode(), qos=1
            )
            link.publish("edgefleet/tuf/timestamp", b"forged metadata", qos=1)
            deadline = time.monotonic() + 5
            while not any("own" in m for m in seen) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # give anything forged the time to arrive, were it let through
        finally:
            link.stop()
        assert any(m.startswith("edgefleet/devices/cam-a/events") for m in seen), seen
        assert not any("cam-b" in m.split()[0] or "forged" in m for m in seen), seen
        # an unprovisioned id is refused registration on an authenticated fleet (issue #15, 10)
        spy.publish("edgefleet/devices/ghost/availability", b"online", qos=1).wait_for_publish(5)
        spy.publish(
            "edgefleet/devices/ghost/state",
            json.dumps({"state": "idle", "updated_at": time.time()}).encode(),
            qos=1,
        ).wait_for_publish(5)
        time.sleep(1.0)
        devices = {d["id"]: d for d in json.loads(fleet("devices", "--json").stdout)}
        assert devices["cam-b"]["phase"] is None  # the forged state never reached the registry
        assert set(devices) == {"cam-a", "cam-b"}

        # a device connecting with another's client id cannot take its session (issue #15,
        # item 5): on the device listener a client id is its username
        drops: list[Any] = []
        victim, accepted = login(port, "cam-b", config_b.mqtt.password, "cam-b")
        assert accepted
        victim.on_disconnect = lambda *args: drops.append(args[3])
        for _ in range(3):
            thief, accepted = login(port, "cam-a", config_a.mqtt.password, "cam-b")
            assert accepted
            time.sleep(0.3)
            thief.loop_stop()
            thief.disconnect()
        time.sleep(0.5)
        assert drops == [] and victim.is_connected()
        victim.loop_stop()
        victim.disconnect()

        # wrong and anonymous logins are refused; so are rotated and revoked passwords
        assert refused(port, "cam-a", "not-the-password")
        assert refused(port, None, None)
        old_password = config_a.mqtt.password
        fleet("credentials", "rotate", "cam-a", "--out", str(tmp_path / "cam-a"))
        rotated = load_config(tmp_path / "cam-a" / "device.yaml")
        assert rotated.mqtt is not None and rotated.mqtt.password != old_password
        assert refused(port, "cam-a", old_password)
        client, accepted = login(port, "cam-a", rotated.mqtt.password, "cam-a-new")
        assert accepted
        client.loop_stop()
        client.disconnect()
        fleet("credentials", "revoke", "cam-b")
        assert refused(port, "cam-b", config_b.mqtt.password)
    finally:
        if spy is not None:
            spy.loop_stop()
            spy.disconnect()
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, stderr
