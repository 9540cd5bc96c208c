"""The console's page and reads over the real HTTP API (a real FleetServer on the embedded broker).

The page and its files need no token and carry no data; every read under
``/console/api`` needs one (a viewer's is enough) and answers ``304`` to a
poll whose ``If-None-Match`` still holds; a device's report moves the stamp.
"""

from __future__ import annotations

import gzip
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.testing.fleet import LocalFleet
from fleet_server.access import Role
from fleet_server.console.assets import public_paths
from fleet_server.records import TargetSelector
from fleet_server.rollout_spec import WaveSpec
from tests.integration.test_fleet_api import AUTH, TOKEN, Api, Client
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]


@pytest.fixture
def api(tmp_path: Path, amqtt_broker: int) -> Iterator[Api]:
    """A fleet server with v1 and v2 imported and two provisioned devices that never connect."""
    bundles = {
        "v1": make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True),
        "v2": make_bundle(
            tmp_path / "v2.efb", tiny_onnx_model(seed=8), "onnx", "2.0.0", softmax=True
        ),
    }
    with LocalFleet(tmp_path / "fleet", amqtt_broker, client_id="console-api") as fleet:
        fleet.release("v1", tmp_path / "v1.efb")
        fleet.release("v2", tmp_path / "v2.efb")
        for name in ("cam-01", "cam-02"):
            fleet.provision(name, tags=("line1",))
        fleet.start()
        assert fleet.server is not None
        yield Api(Client(fleet.serve_http(TOKEN)), fleet.server, bundles, tmp_path)


def fetch(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(base + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_the_page_and_its_files_are_served_without_a_token_and_hold_every_script(
    api: Api,
) -> None:
    base = api.client.base
    status, headers, body = fetch(base, "/console")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    page = body.decode()
    # every script and style the page names is one of ours, served here (no CDN, no font)
    named = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert named and all(n.startswith("/console/static/") for n in named), named
    for path in sorted(public_paths()):
        if path.startswith("/console/static/"):
            status, headers, body = fetch(base, path)
            assert status == 200 and body, path
            text = body.decode()
            assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
            assert "https://" not in text, path
            etag = headers["ETag"]
            assert fetch(base, path, {"If-None-Match": etag})[0] == 304
    js = [p for p in public_paths() if p.endswith(".js")]
    assert {p.rsplit("/", 1)[1] for p in js} >= {
        "app.js",
        "api.js",
        "fleet.js",
        "device.js",
        "bundles.js",
        "rollouts.js",
        "rollout.js",
    }
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirected:
        opener.open(base + "/", timeout=10)
    assert redirected.value.code == 307
    assert redirected.value.headers["Location"] == "/console"


def test_console_reads_need_a_token_and_answer_304_until_something_changes(api: Api) -> None:
    base = api.client.base
    registry = api.server.registry
    _, viewer = registry.create_token("carol", Role.VIEWER, created_by="test")
    assert fetch(base, "/console/api/fleet")[0] == 401
    assert fetch(base, "/console/api/me", {"Authorization": "Bearer nope"})[0] == 401
    mine = {"Authorization": f"Bearer {viewer}"}
    status, _, body = fetch(base, "/console/api/me", mine)
    assert status == 200 and body == b'{"name":"carol","role":"viewer"}'

    status, headers, body = fetch(base, "/console/api/fleet", mine)
    assert status == 200
    first = json.loads(body)
    assert [d["id"] for d in first["devices"]] == ["cam-01", "cam-02"]
    assert first["devices"][0]["health"] == "unknown"
    etag = headers["ETag"]
    again = fetch(base, "/console/api/fleet", {**mine, "If-None-Match": etag})
    assert again[0] == 304 and again[2] == b""

    # a device reports: the stamp moves and the page says so
    registry.record_availability("cam-01", True)
    registry.record_telemetry(
        "cam-01",
        {
            "bundle": api.bundles["v1"].sha256,
            "metrics": {
                "counters": {
                    "edgefleet_frames_total": 100,
                    "edgefleet_predictions_uncertain_total": 5,
                },
                "histograms": {'edgefleet_stage_latency_seconds{stage="invoke"}': {"p95": 0.004}},
            },
            "quality": {"mean_confidence": 0.8},
        },
    )
    # the overview is rebuilt at most every 5 s however often consoles poll: the change shows
    # within those seconds
    deadline = time.monotonic() + 10
    while True:
        status, headers, body = fetch(
            base, "/console/api/fleet", {**mine, "If-None-Match": etag, "Accept-Encoding": "gzip"}
        )
        if status != 304 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    assert status == 200 and headers["ETag"] != etag
    cam = json.loads(body)["devices"][0]
    assert cam["availability"] == "online" and cam["health"] == "ok"
    assert cam["figures"]["latency_p95_ms"] == pytest.approx(4.0)
    assert cam["figures"]["uncertain_rate"] == pytest.approx(0.05)
    assert cam["figures"]["mean_confidence"] == pytest.approx(0.8)


def test_the_device_bundle_and_rollout_pages(api: Api) -> None:
    base = api.client.base
    v1, v2 = api.bundles["v1"].sha256, api.bundles["v2"].sha256
    rollout_id = api.server.create_rollout(
        v2,
        TargetSelector.tags(["line1"]),
        [WaveSpec(count=1), WaveSpec(percent=100)],
        previous_sha256=v1,
    )
    status, headers, body = fetch(base, f"/console/api/rollouts/{rollout_id}", AUTH)
    assert status == 200
    page = json.loads(body)
    assert page["status"] == "running" and page["previous"] == v1
    assert [len(w["devices"]) for w in page["waves"]] == [1, 1]
    assert page["waves"][0]["devices"][0]["status"] == "sent"
    assert page["waves"][0]["spec"]["count"] == 1
    assert (
        fetch(
            base, f"/console/api/rollouts/{rollout_id}", {**AUTH, "If-None-Match": headers["ETag"]}
        )[0]
        == 304
    )
    assert fetch(base, "/console/api/rollouts/999", AUTH)[0] == 404

    status, _, body = fetch(base, "/console/api/devices/cam-01", AUTH)
    device = json.loads(body)
    assert status == 200 and device["device"]["id"] == "cam-01"
    assert [r["rollout_id"] for r in device["rollouts"]] == [rollout_id]
    assert fetch(base, "/console/api/devices/nobody", AUTH)[0] == 404

    status, _, body = fetch(base, f"/console/api/bundles/{v2}", AUTH)
    bundle = json.loads(body)
    assert status == 200 and bundle["version"] == "2.0.0"
    assert bundle["signature"]["released"] and bundle["signature"]["verified"]
    assert bundle["signature"]["problem"] is None
    assert fetch(base, f"/console/api/bundles/{'0' * 64}", AUTH)[0] == 404
    assert fetch(base, "/console/api/bundles/not-a-sha", AUTH)[0] == 422
