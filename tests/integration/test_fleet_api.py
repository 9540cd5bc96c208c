"""The fleet server's HTTP API over a real FleetServer on the embedded amqtt broker.

No device agents run: two provisioned devices never answer, which is enough
to create a rollout, read its status and timeline, and pause and resume it.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.bundle import Bundle
from edgefleet.testing.fleet import LocalFleet
from fleet_server.server import FleetServer
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Reply:
    status_code: int
    body: Any
    text: str

    def json(self) -> Any:
        return self.body


@dataclass
class Client:
    """Just enough of an HTTP client (urllib) for the tests: status code and JSON."""

    base: str

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        url = self.base + path
        if params:
            url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        data = None if json_body is None else json.dumps(json_body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return Reply(status, body, text)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return self.request("PUT", path, json, **kwargs)


@dataclass
class Api:
    client: Client
    server: FleetServer
    bundles: dict[str, Bundle]
    folder: Path


@pytest.fixture
def api(tmp_path: Path, amqtt_broker: int) -> Iterator[Api]:
    bundles = {
        "v1": make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True),
        "v2": make_bundle(
            tmp_path / "v2.efb", tiny_onnx_model(seed=8), "onnx", "2.0.0", softmax=True
        ),
        "unreleased": make_bundle(
            tmp_path / "u.efb", tiny_onnx_model(seed=9), "onnx", "9.0.0", softmax=True
        ),
        "too-new": make_bundle(
            tmp_path / "too-new.efb",
            tiny_onnx_model(seed=10),
            "onnx",
            "3.0.0",
            softmax=True,
            min_runtime_version="99.0.0",
        ),
    }
    with LocalFleet(tmp_path / "fleet", amqtt_broker, client_id="api-test") as fleet:
        # released, but imported by the tests themselves, through the API
        fleet.release("v1", tmp_path / "v1.efb", import_bundle=False)
        fleet.release("v2", tmp_path / "v2.efb", import_bundle=False)
        fleet.release("too-new", tmp_path / "too-new.efb", import_bundle=False)
        fleet.start()
        assert fleet.server is not None
        base = fleet.serve_http(TOKEN)
        yield Api(Client(base), fleet.server, bundles, tmp_path)


def test_token_is_required_except_for_healthz(api: Api) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    missing = api.client.get("/devices")
    assert missing.status_code == 401 and "token" in missing.json()["error"]
    wrong = api.client.get("/devices", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert api.client.post("/rollouts/1/pause").status_code == 401
    assert api.client.get("/devices", headers=AUTH).json() == []
    # the docs are behind the same token unless `serve --public-docs`
    assert api.client.get("/docs").status_code == 401
    assert api.client.get("/openapi.json").status_code == 401
    assert api.client.get("/docs", headers=AUTH).status_code == 200
    paths = api.client.get("/openapi.json", headers=AUTH).json()["paths"]
    assert "/rollouts/{rollout_id}/timeline" in paths


def test_the_openapi_document_describes_every_reply(api: Api) -> None:
    """Issue #16: typed replies, so the schema says what a client gets (statuses included)."""
    document = api.client.get("/openapi.json", headers=AUTH).json()
    untyped = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for code, reply in operation["responses"].items():
                schemas = [c.get("schema") for c in reply.get("content", {}).values()]
                if code.startswith("2") and path != "/healthz" and not all(schemas or [None]):
                    untyped.append(f"{method.upper()} {path}")
    assert untyped == []
    schemas = document["components"]["schemas"]
    assert {"DeviceInfo", "BundleView", "RolloutView", "WaveView", "TimelineView"} <= set(schemas)
    wave_status = schemas["WaveStatus"]["enum"]
    assert wave_status == [
        "pending",
        "running",
        "watching",
        "passed",
        "failed",
        "aborted",
        "skipped",
    ]
    assert schemas["DeviceStatus"]["enum"][2] == "in-progress"


def test_devices_bundles_rollout_pause_resume(api: Api) -> None:
    c = api.client
    for name in ("cam-01", "cam-02"):
        made = c.post("/devices", json={"id": name, "tags": ["line1"]}, headers=AUTH)
        assert made.status_code == 201, made.text
        assert made.json()["mqtt"]["topic_prefix"] == "edgefleet"
    again = c.post("/devices", json={"id": "cam-01", "tags": []}, headers=AUTH)
    assert again.status_code == 409 and "already provisioned" in again.json()["error"]
    listed = c.get("/devices", params={"tag": "line1"}, headers=AUTH).json()
    assert [d["id"] for d in listed] == ["cam-01", "cam-02"]
    assert c.get("/devices/cam-09", headers=AUTH).status_code == 404

    v1, v2 = api.bundles["v1"].sha256, api.bundles["v2"].sha256
    for name in ("v1", "v2"):
        imported = c.post(
            "/bundles/import", json={"path": str(api.folder / f"{name}.efb")}, headers=AUTH
        )
        assert imported.status_code == 201, imported.text
    refused = c.post("/bundles/import", json={"path": str(api.folder / "u.efb")}, headers=AUTH)
    assert refused.status_code == 400 and "not released" in refused.json()["error"]
    assert {b["sha256"] for b in c.get("/bundles", headers=AUTH).json()} == {v1, v2}

    pinned = c.put("/devices/cam-02/pin", json={"sha256": v1}, headers=AUTH)
    assert pinned.status_code == 200 and pinned.json()["pinned_bundle"] == v1
    assert (
        c.put("/devices/cam-02/pin", json={"sha256": None}, headers=AUTH).json()["pinned_bundle"]
        is None
    )

    body = {
        "bundle_sha256": v2,
        "previous_sha256": v1,
        "target": {"kind": "tags", "values": ["line1"]},
        "waves": [{"count": 1, "device_timeout_s": 600}, {"percent": 100}],
    }
    created = c.post("/rollouts", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    view = created.json()
    rollout_id = view["id"]
    assert view["status"] == "running"
    assert view["waves"][0]["devices"] == 1 and view["counts"] == {"sent": 1, "pending": 1}
    assert view["planner"]["devices"] == 2 and view["planner"]["current_wave"] == 0
    assert [r["id"] for r in c.get("/rollouts", headers=AUTH).json()] == [rollout_id]

    paused = c.post(f"/rollouts/{rollout_id}/pause", headers=AUTH)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    approve = c.post(f"/rollouts/{rollout_id}/approve", headers=AUTH)
    assert approve.status_code == 409 and "resume it first" in approve.json()["error"]
    resumed = c.post(f"/rollouts/{rollout_id}/resume", headers=AUTH)
    assert resumed.json()["status"] == "running"
    assert c.get(f"/rollouts/{rollout_id}", headers=AUTH).json()["status"] == "running"
    assert c.post(f"/rollouts/{rollout_id}/explode", headers=AUTH).status_code == 422
    assert c.post("/rollouts/99/pause", headers=AUTH).status_code == 404

    kinds = [t["kind"] for t in c.get(f"/rollouts/{rollout_id}/timeline", headers=AUTH).json()]
    assert "rollout-created" in kinds and "paused" in kinds and "resumed" in kinds

    aborted = c.post(
        f"/rollouts/{rollout_id}/abort", json={"reason": "test over"}, headers=AUTH
    ).json()
    assert aborted["finished"] and aborted["status"] in {"aborted", "rolled-back"}
    assert aborted["reason"] == "aborted by operator: test over"
    # the sent devices never answer: the server keeps following the rollback until they do
    planner = aborted["planner"]
    assert planner is None or planner["status"] == "rolled-back"
    messages = [
        t["message"] for t in c.get(f"/rollouts/{rollout_id}/timeline", headers=AUTH).json()
    ]
    assert any("test over" in m for m in messages), messages


def test_a_bundle_for_a_newer_runtime_skips_the_devices_that_reported_an_older_one(
    api: Api,
) -> None:
    c = api.client
    for name in ("cam-01", "cam-02", "cam-03"):
        made = c.post("/devices", json={"id": name, "tags": ["line1"]}, headers=AUTH)
        assert made.status_code == 201, made.text
    # what the devices' state reports stored (cam-03 never reported one)
    for name, runtime in (("cam-01", "0.1.0"), ("cam-02", "0.1.0")):
        report = {"protocol": 1, "device_id": name, "state": "idle", "updated_at": time.time()}
        api.server.registry.record_state(name, {**report, "runtime_version": runtime})
    imported = c.post(
        "/bundles/import", json={"path": str(api.folder / "too-new.efb")}, headers=AUTH
    )
    assert imported.status_code == 201, imported.text
    sha = api.bundles["too-new"].sha256
    one_wave = [{"percent": 100}]
    refused = c.post(
        "/rollouts",
        json={
            "bundle_sha256": sha,
            "target": {"kind": "devices", "values": ["cam-01", "cam-02"]},
            "waves": one_wave,
        },
        headers=AUTH,
    )
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert "none of the 2 target devices that are not pinned can run this bundle" in error
    assert "cam-01: runtime 0.1.0, the bundle needs >= 99.0.0" in error
    assert c.get("/rollouts", headers=AUTH).json() == []

    created = c.post(
        "/rollouts",
        json={
            "bundle_sha256": sha,
            "target": {"kind": "tags", "values": ["line1"]},
            "waves": one_wave,
        },
        headers=AUTH,
    )
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["planner"]["skipped"] == {
        "cam-01": "runtime 0.1.0, the bundle needs >= 99.0.0",
        "cam-02": "runtime 0.1.0, the bundle needs >= 99.0.0",
    }
    assert view["planner"]["devices"] == 1  # cam-03: sent; its runtime refuses it itself
    messages = [
        t["message"] for t in c.get(f"/rollouts/{view['id']}/timeline", headers=AUTH).json()
    ]
    assert any("2 devices skipped: cam-01 (runtime 0.1.0" in m for m in messages), messages


def test_bad_requests_name_the_field(api: Api) -> None:
    c = api.client
    unknown_field = c.post("/devices", json={"id": "cam-01", "colour": "red"}, headers=AUTH)
    assert unknown_field.status_code == 422
    assert any(e["loc"][-1] == "colour" for e in unknown_field.json()["detail"])
    bad_wave = c.post(
        "/rollouts",
        json={
            "bundle_sha256": "0" * 64,
            "target": {"kind": "all"},
            "waves": [{"percent": 150}],
        },
        headers=AUTH,
    )
    assert bad_wave.status_code == 422
    assert any(e["loc"][-1] == "percent" for e in bad_wave.json()["detail"])
    bad_sha = c.post(
        "/rollouts",
        json={"bundle_sha256": "xyz", "target": {"kind": "all"}, "waves": [{"percent": 100}]},
        headers=AUTH,
    )
    assert bad_sha.status_code == 422
    assert any(e["loc"][-1] == "bundle_sha256" for e in bad_sha.json()["detail"])
    bad_target = c.post(
        "/rollouts",
        json={
            "bundle_sha256": "0" * 64,
            "target": {"kind": "tags", "values": []},
            "waves": [{"percent": 100}],
        },
        headers=AUTH,
    )
    assert (
        bad_target.status_code == 400 and "needs at least one value" in bad_target.json()["error"]
    )
    unknown_bundle = c.post(
        "/rollouts",
        json={"bundle_sha256": "0" * 64, "target": {"kind": "all"}, "waves": [{"percent": 100}]},
        headers=AUTH,
    )
    assert unknown_bundle.status_code == 404 and "unknown bundle" in unknown_bundle.json()["error"]
    bad_name = c.post("/devices", json={"id": "bad id!"}, headers=AUTH)
    assert bad_name.status_code == 422 and bad_name.json()["detail"][0]["loc"][-1] == "id"


class _DieOnChunk:
    """A FaultInjector whose first chunk ends the chunk-server thread as a bug beyond Exception would."""

    def chunk_payload(self, sha256: str, index: int, data: bytes) -> bytes:
        raise SystemExit("chunk server thread ended")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_healthz_is_503_naming_a_dead_worker(api: Api) -> None:
    """A worker thread that dies must never hide behind a green /healthz (issue #15)."""
    healthy = api.client.get("/healthz")
    assert healthy.status_code == 200 and healthy.body["status"] == "ok"
    assert set(healthy.body["workers"]) == {
        "fleet-server",
        "chunk-server",
        "leader-lease",
        "drift-monitor",
        "field-data",
        "shadow-reports",
    }
    assert all(w["alive"] and w["restarts"] == 0 for w in healthy.body["workers"].values())

    sha = api.client.post(
        "/bundles/import", json={"path": str(api.folder / "v1.efb")}, headers=AUTH
    ).body["sha256"]
    api.server.chunks.fault = _DieOnChunk()
    request = json.dumps({"protocol": 1, "bundle": sha, "want": [[0, 1]], "have": 0})
    api.server.client.publish("edgefleet/devices/cam-x/download", request, qos=1)
    deadline = time.monotonic() + 10
    while api.server.chunks.health().alive and time.monotonic() < deadline:
        time.sleep(0.02)
    dead = api.client.get("/healthz")
    assert dead.status_code == 503 and dead.body["status"] == "unhealthy"
    assert dead.body["reason"].startswith("worker chunk-server is not running")
    assert dead.body["workers"]["fleet-server"]["alive"]


def _raw(api: Api, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Send only a request's headers and read the answer: the server must not wait for a body."""
    port = int(api.client.base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        reply = connection.getresponse()
        raw = reply.read()
        return reply.status, json.loads(raw) if raw.startswith(b"{") else {"raw": raw.decode()}
    finally:
        connection.close()


def test_bodies_are_refused_from_the_headers_before_a_byte_is_read(api: Api) -> None:
    """Issue #15, item 9: auth before the body, a size cap, no chunked uploads."""
    huge = {"Content-Type": "application/json", "Content-Length": str(256 * 2**20)}
    status, body = _raw(api, "POST", "/rollouts", huge)
    assert (status, body) == (401, {"error": "missing or wrong bearer token"})
    status, body = _raw(api, "POST", "/rollouts", {**huge, **AUTH})
    assert status == 413 and "over the 1048576-byte cap" in body["error"]
    chunked = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **AUTH}
    assert _raw(api, "POST", "/devices", chunked)[0] == 411
    assert _raw(api, "POST", "/devices", {"Content-Length": "ten", **AUTH})[0] == 400  # by uvicorn
    assert api.client.get("/healthz").status_code == 200  # the server is still well


def test_ids_out_of_range_and_refused_rollouts_leave_nothing_behind(api: Api) -> None:
    """Issue #15, item 9: typed 4xx for every client error, no half-written rows."""
    c = api.client
    for path in (
        "/rollouts/99999999999",
        "/rollouts/0",
        "/rollouts/-3",
        "/rollouts/1/timeline?after_id=99999999999",
    ):
        assert c.get(path, headers=AUTH).status_code == 422, path
    assert c.get("/rollouts/1/timeline?limit=100000000", headers=AUTH).status_code == 422
    assert c.post("/rollouts/4294967296/abort", headers=AUTH).status_code == 422
    assert c.get("/rollouts/12345", headers=AUTH).status_code == 404

    sha = c.post("/bundles/import", json={"path": str(api.folder / "v1.efb")}, headers=AUTH)
    c.post("/devices", json={"id": "cam-01", "tags": []}, headers=AUTH)
    refused = c.post(
        "/rollouts",
        json={
            "bundle_sha256": sha.json()["sha256"],
            "target": {"kind": "all"},
            "waves": [{"devices": ["cam-77"]}],
        },
        headers=AUTH,
    )
    assert refused.status_code == 400, refused.text
    assert c.get("/rollouts", headers=AUTH).json() == []  # no pending row to abort by hand

    # importing a file that is not a bundle says so without quoting the file
    secret = api.folder / "secret.txt"
    secret.write_text("root:x:0:0:hunter2:/root:/bin/sh\n" * 200)
    leaked = c.post("/bundles/import", json={"path": str(secret)}, headers=AUTH)
    assert leaked.status_code == 400
    assert "hunter2" not in leaked.text and "root:x" not in leaked.text
    assert "not a ustar file" in leaked.json()["error"]


# --- the API under generated requests (issue #15: the fuzzing harness) -------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_IDS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["1", "0", "cam-01", "edgefleet-server", "..", "%2e%2e", "a" * 300]),
    st.text(
        alphabet=st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=40
    ),
)
_FIELDS = {
    "/devices": ["id", "tags", "profile"],
    "/rollouts": ["bundle_sha256", "target", "previous_sha256", "waves", "seed"],
    "/bundles/import": ["path"],
}


def _routes(app_paths: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in app_paths.items() for method in item]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_requests_get_typed_answers_and_the_server_stays_well(
    api: Api, data: st.DataObject
) -> None:
    """Every route with generated ids and bodies: never a 5xx, never a dead worker."""
    paths = api.client.get("/openapi.json", headers=AUTH).json()["paths"]
    method, template = data.draw(st.sampled_from(_routes(paths)), label="route")
    path = template
    for name in ("device_id", "rollout_id", "verb"):
        if "{" + name + "}" in path:
            value = data.draw(_IDS if name != "verb" else st.sampled_from(["pause", "abort", "x"]))
            path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
    body: Any = None
    if method in {"POST", "PUT"}:
        fields = _FIELDS.get(template, ["sha256", "reason"])
        body = data.draw(
            st.one_of(
                _JSON,
                st.fixed_dictionaries({}, optional={f: _JSON for f in fields}),
            ),
            label="body",
        )
    headers = AUTH if data.draw(st.booleans(), label="token") else {}
    reply = api.client.request(method, path, body, headers=headers)
    assert reply.status_code < 500, (method, path, body, reply.text)
    if not headers and template != "/healthz":
        assert reply.status_code == 401
    health = api.client.get("/healthz")
    assert health.status_code == 200, health.text
