"""TLS everywhere, driven as an operator drives it (issue #17).

`edgefleet fleet ca init` makes the fleet CA, `fleet ca server-cert` the
broker's and the API's certificates; Mosquitto listens with TLS only (the
generated config); `edgefleet serve --broker mqtts://` connects with its
password over TLS and serves its API over HTTPS; `fleet provision
--client-cert` hands a device its certificate, and the real device runtime
takes a rollout over TLS. `fleet ca revoke` sends the new revocation list
through the API to the broker, which then refuses the device.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edge_runtime.config import load_config
from edgefleet.testing.broker import free_port
from edgefleet.testing.device import RunningDevice, wait_for
from fleet_server.broker_auth import BrokerAuth, MosquittoTls
from fleet_server.fleet_ca import FleetCA, issued_in
from fleet_server.trust import Expiry, Repository, init_keys
from tests.e2e.test_cli_serve import start_serve
from tests.media import make_bundle
from tests.models import tiny_onnx_model
from tests.services import require_mosquitto
from tests.tls_broker import SERVER_PASSWORD, tls_login

pytestmark = [pytest.mark.broker]

EDGEFLEET = [sys.executable, "-m", "edgefleet"]
TOKEN = "tls-token"
ENV = {
    **os.environ,
    "COLUMNS": "200",
    "NO_COLOR": "1",
    "EDGEFLEET_TOKEN": TOKEN,
    "EDGEFLEET_MQTT_PASSWORD": SERVER_PASSWORD,
}


def edgefleet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*EDGEFLEET, *args], capture_output=True, text=True, env=ENV, timeout=120)
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def wait_https(url: str, ca_file: Path, process: subprocess.Popen[str]) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"edgefleet serve exited {process.returncode}: {stderr}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1, context=context) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError("edgefleet serve did not answer /healthz over HTTPS")


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[dict[str, object]]:
    """The fleet CA, Mosquitto with TLS only, keys, a repository with v1 and v2 released."""
    binary = require_mosquitto()
    ca_dir, auth_dir, api_dir = tmp_path / "fleet-ca", tmp_path / "broker", tmp_path / "api"
    edgefleet("fleet", "ca", "init", "--ca-dir", str(ca_dir))
    made = edgefleet(
        "fleet", "ca", "server-cert", "--ca-dir", str(ca_dir), "--host", "127.0.0.1",
        "--host", "localhost", "--out", str(auth_dir),
    )  # fmt: skip
    assert f"wrote {auth_dir / 'broker.key'}" in made.stdout
    edgefleet(
        "fleet", "ca", "server-cert", "--ca-dir", str(ca_dir), "--host", "127.0.0.1",
        "--name", "api", "--out", str(api_dir),
    )  # fmt: skip
    for key in (ca_dir / "ca.key", auth_dir / "broker.key", api_dir / "api.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    auth = BrokerAuth(auth_dir, server_password=SERVER_PASSWORD)
    auth.write({})  # the server's own user, so that it can connect at all
    port, server_port = free_port(), free_port()
    conf = auth.mosquitto_conf(
        port,
        "127.0.0.1",
        server_port=server_port,
        tls=MosquittoTls(
            certfile=auth_dir / "broker.crt",
            keyfile=auth_dir / "broker.key",
            cafile=auth_dir / "ca.crt",
        ),
    )
    as_root = "user root\n" if os.geteuid() == 0 else ""
    (tmp_path / "mosquitto.conf").write_text(conf + "persistence false\n" + as_root)
    log = (tmp_path / "mosquitto.log").open("wb")
    process = subprocess.Popen(
        [binary, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    keys = init_keys(tmp_path / "keys")
    repo = Repository.create(tmp_path / "repo", keys, Expiry())
    bundles = {}
    for version, seed in (("1.0.0", 0), ("2.0.0", 8)):
        path = tmp_path / f"v{version[0]}.efb"
        bundles[version] = make_bundle(
            path, tiny_onnx_model(scale=40.0, seed=seed), "onnx", version, softmax=True
        )
        repo.release(path, keys.role("targets"))
    for offline in ("root", "targets"):  # the server runs without the offline keys
        for key_path in (tmp_path / "keys").glob(f"{offline}-*.pem"):
            key_path.unlink()
    try:
        from edgefleet.testing.broker import wait_for_port

        wait_for_port(port)
        wait_for_port(server_port)
        yield {
            "ca_dir": ca_dir,
            "auth_dir": auth_dir,
            "api_dir": api_dir,
            "port": port,
            "server_port": server_port,
            "mosquitto": process,
            "bundles": bundles,
        }
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_tls_everywhere_from_the_ca_to_a_device_update_and_its_revocation(
    plant: dict[str, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca_dir, auth_dir, api_dir = (Path(str(plant[k])) for k in ("ca_dir", "auth_dir", "api_dir"))
    port, server_port = int(str(plant["port"])), int(str(plant["server_port"]))
    mosquitto = plant["mosquitto"]
    assert isinstance(mosquitto, subprocess.Popen)
    bundles = plant["bundles"]
    assert isinstance(bundles, dict)
    ca_file = ca_dir / "ca.crt"
    http_port = free_port()
    api = f"https://127.0.0.1:{http_port}"
    server = start_serve(
        tmp_path,
        http_port,
        "--broker", f"mqtts://127.0.0.1:{server_port}",
        "--broker-ca", str(ca_file),
        "--device-broker", f"mqtts://127.0.0.1:{port}",
        "--broker-auth-dir", str(auth_dir),
        "--broker-reload", f"kill -HUP {mosquitto.pid}",
        "--fleet-ca", str(ca_file),
        "--https-cert", str(api_dir / "api.crt"),
        "--https-key", str(api_dir / "api.key"),
        env=ENV,
    )  # fmt: skip

    def fleet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return edgefleet("fleet", "--server", api, "--ca-file", str(ca_file), *args, check=check)

    device: RunningDevice | None = None
    try:
        wait_https(api, ca_file, server)
        # the API speaks HTTPS only, and the CLI checks its certificate
        with pytest.raises(OSError):  # the server closes a plaintext request unanswered
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5)
        untrusted = edgefleet("fleet", "--server", api, "devices", check=False)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr

        # provisioning writes the TLS settings, the CA certificate and a client certificate
        out = tmp_path / "cam-1"
        made = fleet(
            "provision", "cam-1", "--out", str(out), "--device-dir", str(out),
            "--client-cert", "--ca-dir", str(ca_dir),
        )  # fmt: skip
        for name in ("device.yaml", "root.json", "ca.crt", "client.crt", "client.key"):
            assert f"wrote {out / name}" in made.stdout, made.stdout
        assert stat.S_IMODE((out / "client.key").stat().st_mode) == 0o600
        assert (out / "ca.crt").read_bytes() == ca_file.read_bytes()
        config = load_config(out / "device.yaml")
        assert config.mqtt is not None and config.mqtt.tls is not None
        assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", port)
        assert config.mqtt.tls.ca_file == out / "ca.crt"
        assert config.mqtt.tls.cert_file == out / "client.crt"
        assert config.mqtt.tls.key_file == out / "client.key"
        issued = [(r.kind, r.name) for r in issued_in(ca_dir)]
        assert issued == [("server", "127.0.0.1"), ("server", "127.0.0.1"), ("client", "cam-1")]

        # the real device runtime, from the provisioned config (a synthetic camera and a
        # short probation for the test), takes a rollout over TLS
        raw = yaml.safe_load((out / "device.yaml").read_text())
        raw |= {
            "source": {"type": "synthetic", "fps": 30, "width": 64, "height": 48},
            "store": str(tmp_path / "store"),
            "bundle": str(tmp_path / "v1.efb"),
            "metrics": {"enabled": False},
        }
        raw["update"] |= {"probation_s": 1, "probation_min_predictions": 5, "smoke_latency_runs": 5}
        device = RunningDevice(raw)
        device.wait_for(device.connected, 20)
        v1, v2 = bundles["1.0.0"].sha256, bundles["2.0.0"].sha256
        for path in ("v1.efb", "v2.efb"):
            fleet("import", str(tmp_path / path))
        created = fleet(
            "rollout", "create", v2, "--devices", "cam-1", "--canary", "0", "--waves", "100",
            "--previous", v1, "--health-window", "1", "--json",
        )  # fmt: skip
        rollout_id = str(json.loads(created.stdout)["id"])
        device.wait_for(lambda: device is not None and device.active_sha256() == v2, 90)

        def reported() -> bool:
            rows = json.loads(fleet("devices", "--json").stdout)
            return rows[0]["active_bundle"] == v2 and rows[0]["availability"] == "online"

        wait_for(reported, 30, message="the server never heard of v2 on cam-1")
        status = json.loads(fleet("rollout", "status", rollout_id, "--json").stdout)
        assert status["status"] in {"running", "completed"}, status

        # revocation: the CRL goes through the API to the broker, which refuses the device
        cert, key = out / "client.crt", out / "client.key"
        assert tls_login(port, ca_file=ca_file, cert=cert, key=key).accepted
        before = (ca_dir / "crl.pem").read_bytes()
        revoked = fleet("ca", "revoke", "cam-1", "--ca-dir", str(ca_dir))
        assert "revoked the client certificate of cam-1" in revoked.stdout
        assert "(1 revoked)" in revoked.stdout
        assert (auth_dir / "crl.pem").read_bytes() == (ca_dir / "crl.pem").read_bytes()
        deadline = time.monotonic() + 10
        while (attempt := tls_login(port, ca_file=ca_file, cert=cert, key=key)).accepted:
            attempt.close()
            assert time.monotonic() < deadline, "the revoked certificate is still accepted"
            time.sleep(0.2)
        assert device.close(60) is not None
        caplog.set_level(logging.WARNING, logger="edge_runtime.mqtt_link")
        device = RunningDevice(raw)
        wait_for(lambda: "certificate revoked" in caplog.text, 20, message=lambda: caplog.text)
        assert not device.connected()

        # the list before the revocation would bring the certificate back: refused, like
        # another CA's list; the broker keeps the one it has
        def put_crl(pem: bytes) -> tuple[int, str]:
            request = urllib.request.Request(
                api + "/broker/crl",
                data=json.dumps({"crl_pem": pem.decode()}).encode(),
                method="PUT",
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            context = ssl.create_default_context(cafile=str(ca_file))
            try:
                with urllib.request.urlopen(request, timeout=10, context=context) as reply:
                    return reply.status, reply.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        code, text = put_crl(before)
        assert code == 400 and "older than the one in place" in text, text
        stranger = FleetCA.init(tmp_path / "another-ca").crl_path.read_bytes()
        code, text = put_crl(stranger)
        assert code == 400 and "not signed by the fleet CA" in text
        assert (auth_dir / "crl.pem").read_bytes() == (ca_dir / "crl.pem").read_bytes()
        # re-signing before the list expires goes the same way
        resigned = fleet("ca", "crl", "--ca-dir", str(ca_dir))
        assert "(1 revoked)" in resigned.stdout
        # a new certificate for the device lets it back in; the list shows both
        renewed = fleet("ca", "client-cert", "cam-1", "--ca-dir", str(ca_dir), "--out", str(out))
        assert f"wrote {out / 'client.key'}" in renewed.stdout
        assert device.close(60) is not None
        device = RunningDevice(raw)
        device.wait_for(device.connected, 20)
        listed = fleet("ca", "list", "--ca-dir", str(ca_dir)).stdout
        assert listed.count("cam-1") == 2 and "revocation list valid until" in listed
    finally:
        if device is not None:
            device.close()
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, stderr
    assert f"HTTP API on https://127.0.0.1:{http_port}" in stderr
    assert f"MQTT broker mqtts://127.0.0.1:{server_port}" in stderr
