"""API tokens with roles, the audit trail and four-eyes approval, over the real HTTP API.

The ``api`` fixture of :mod:`tests.integration.test_fleet_api` (a real
FleetServer on the embedded broker, served by uvicorn, the bootstrap token
``TOKEN``); the four-eyes test runs two real device agents so that a canary
wave passes its quality gate and waits for approval.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from edgefleet.testing.fleet import LocalFleet
from fleet_server.access import Role
from fleet_server.api import create_app
from fleet_server.api.auth import RoleCheck
from fleet_server.quality_gate import GateThresholds
from tests.integration import test_fleet_api
from tests.integration.test_fleet_api import AUTH, TOKEN, Api, Client
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]

api = test_fleet_api.api
"""The API tests' fixture (a real FleetServer, served over HTTP, the bootstrap token ``TOKEN``)."""

# every route and the least role that may call it: the policy, written down once
POLICY = {
    ("GET", "/devices"): Role.VIEWER,
    ("GET", "/devices/{device_id}"): Role.VIEWER,
    ("POST", "/devices"): Role.OPERATOR,
    ("POST", "/devices/{device_id}/credentials"): Role.ADMIN,
    ("DELETE", "/devices/{device_id}/credentials"): Role.ADMIN,
    ("GET", "/trust/root"): Role.VIEWER,
    ("PUT", "/devices/{device_id}/pin"): Role.OPERATOR,
    ("GET", "/bundles"): Role.VIEWER,
    ("POST", "/bundles/import"): Role.OPERATOR,
    ("GET", "/rollouts"): Role.VIEWER,
    ("GET", "/rollouts/{rollout_id}"): Role.VIEWER,
    ("POST", "/rollouts"): Role.OPERATOR,
    ("POST", "/rollouts/{rollout_id}/{verb}"): Role.OPERATOR,
    ("GET", "/rollouts/{rollout_id}/timeline"): Role.VIEWER,
    ("GET", "/metrics"): Role.VIEWER,
    ("GET", "/tokens"): Role.ADMIN,
    ("POST", "/tokens"): Role.ADMIN,
    ("DELETE", "/tokens/{name}"): Role.ADMIN,
    ("GET", "/audit"): Role.OPERATOR,
}
PUBLIC = {("GET", "/healthz")}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make_token(client: Client, name: str, role: str, auth: dict[str, str] = AUTH) -> str:
    made = client.post("/tokens", json={"name": name, "role": role}, headers=auth)
    assert made.status_code == 201, made.text
    return str(made.json()["secret"])


def test_every_route_names_the_role_it_needs(api: Api) -> None:
    """A route added without a role would be open to any token: this catches it."""
    app = create_app(api.server, TOKEN)
    found: dict[tuple[str, str], Role] = {}
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        roles = [
            d.dependency.role for d in route.dependencies if isinstance(d.dependency, RoleCheck)
        ]
        for method in route.methods:
            key = (method, route.path)
            if key in PUBLIC:
                assert roles == [], key
                continue
            assert len(roles) == 1, f"{method} {route.path} names {len(roles)} roles"
            found[key] = roles[0]
    extra = {k: v for k, v in found.items() if k not in POLICY}
    # routes other engineers add (the broker's CRL) must still name a role; ours must match
    assert all(role in Role for role in extra.values())
    assert {k: v for k, v in found.items() if k in POLICY} == POLICY


def test_each_role_is_refused_what_it_may_not_do_with_a_403_naming_the_role(api: Api) -> None:
    c = api.client
    viewer = bearer(make_token(c, "carol", "viewer"))
    operator = bearer(make_token(c, "alice", "operator"))
    admin = bearer(make_token(c, "root-2", "admin"))

    assert c.get("/devices", headers=viewer).status_code == 200
    assert c.get("/metrics", headers=viewer).status_code == 200
    refused = c.post("/devices", json={"id": "cam-01"}, headers=viewer)
    assert refused.status_code == 403
    assert refused.json()["error"] == (
        "POST /devices needs the operator role; token 'carol' has viewer"
    )
    assert c.get("/audit", headers=viewer).status_code == 403

    assert c.post("/devices", json={"id": "cam-01"}, headers=operator).status_code == 201
    assert c.get("/audit", headers=operator).status_code == 200
    for method, path in (("GET", "/tokens"), ("POST", "/devices/cam-01/credentials")):
        forbidden = c.request(method, path, headers=operator)
        assert forbidden.status_code == 403, (method, path)
        assert "needs the admin role; token 'alice' has operator" in forbidden.json()["error"]
    no_tokens = c.post("/tokens", json={"name": "mallory", "role": "admin"}, headers=operator)
    assert no_tokens.status_code == 403  # an operator cannot make itself an admin

    # an admin made through the API is as good as the bootstrap token
    assert make_token(c, "dave", "viewer", auth=admin)
    listed = c.get("/tokens", headers=admin).json()
    assert [(t["name"], t["role"], t["created_by"]) for t in listed] == [
        ("carol", "viewer", "bootstrap"),
        ("alice", "operator", "bootstrap"),
        ("root-2", "admin", "bootstrap"),
        ("dave", "viewer", "root-2"),
    ]
    assert not any("secret" in t for t in listed)

    # refused as they come: a used name, an unknown role, a bad or reserved name
    assert (
        c.post("/tokens", json={"name": "alice", "role": "viewer"}, headers=AUTH).status_code == 409
    )
    for body in (
        {"name": "eve", "role": "root"},
        {"name": "has space", "role": "viewer"},
        {"name": "bootstrap", "role": "admin"},
        {"name": "eve", "role": "viewer", "secret": "mine"},
    ):
        assert c.post("/tokens", json=body, headers=AUTH).status_code == 422, body

    # revoked: refused at once with a 401 like an unknown token; the row stays, marked
    gone = c.request("DELETE", "/tokens/alice", headers=admin)
    assert gone.status_code == 200 and gone.json()["revoked_by"] == "root-2"
    assert c.get("/devices", headers=operator).status_code == 401
    assert c.request("DELETE", "/tokens/alice", headers=admin).status_code == 409
    assert c.request("DELETE", "/tokens/nobody", headers=admin).status_code == 404
    assert c.get("/devices", headers=bearer("eft_" + "x" * 43)).status_code == 401
    assert c.get("/devices", headers=bearer("x" * 300)).status_code == 401


def test_every_change_is_audited_with_who_what_when_where_and_outcome(api: Api) -> None:
    c = api.client
    operator = bearer(make_token(c, "alice", "operator"))
    viewer = bearer(make_token(c, "carol", "viewer"))
    before = time.time()
    assert (
        c.post("/devices", json={"id": "cam-01", "tags": ["line1"]}, headers=operator).status_code
        == 201
    )
    assert c.post("/devices", json={"id": "cam-01"}, headers=operator).status_code == 409
    assert c.post("/devices", json={"id": "cam-02"}, headers=viewer).status_code == 403
    assert c.post("/devices", json={"id": "cam-03"}).status_code == 401
    assert c.post("/rollouts/77/pause", headers=operator).status_code == 404
    assert c.post("/devices", json={"id": "bad id"}, headers=operator).status_code == 422
    assert c.get("/devices", headers=operator).status_code == 200  # reads are not recorded

    entries = c.get("/audit", headers=AUTH).json()
    rows = [(e["actor"], e["role"], e["method"], e["path"], e["status"]) for e in entries]
    assert rows == [
        ("bootstrap", "admin", "POST", "/tokens", 201),
        ("bootstrap", "admin", "POST", "/tokens", 201),
        ("alice", "operator", "POST", "/devices", 201),
        ("alice", "operator", "POST", "/devices", 409),
        ("carol", "viewer", "POST", "/devices", 403),
        (None, None, "POST", "/devices", 401),
        ("alice", "operator", "POST", "/rollouts/77/pause", 404),
        ("alice", "operator", "POST", "/devices", 422),
    ]
    by_status = {e["status"]: e for e in entries}
    assert all(e["client"] == "127.0.0.1" for e in entries)
    assert all(before - 1 <= e["at"] <= time.time() for e in entries[2:])
    assert by_status[201]["error"] is None
    assert '"cam-01"' in by_status[201]["body"] and "line1" in by_status[201]["body"]
    assert "already provisioned" in by_status[409]["error"]
    assert by_status[403]["error"].startswith("POST /devices needs the operator role")
    assert by_status[401]["error"] == "missing or wrong bearer token"
    assert by_status[401]["body"] is None  # a refused body is never read
    assert "rollout 77" in by_status[404]["error"]
    assert by_status[422]["error"].startswith("id:") and "bad id" in by_status[422]["body"]
    # the token secret a create returns is never in the log
    assert not any("eft_" in str(e) for e in entries)

    mine = c.get("/audit", params={"actor": "carol"}, headers=operator).json()
    assert [(e["path"], e["status"]) for e in mine] == [("/devices", 403)]
    assert len(c.get("/audit", params={"limit": "2"}, headers=operator).json()) == 2
    later = c.get("/audit", params={"since": str(time.time() + 60)}, headers=operator).json()
    assert later == []
    assert c.get("/audit", params={"limit": "0"}, headers=operator).status_code == 422
    assert c.get("/audit", params={"since": "nan"}, headers=operator).status_code == 422
    # the audit queries themselves are reads: nothing was added
    assert len(c.get("/audit", headers=AUTH).json()) == len(entries)


# --- four-eyes, with two real devices --------------------------------------------------


# two different random models: only the error rate is judged (the planner's gate has its own tests)
GATE = GateThresholds(
    min_samples=20,
    min_shift_samples=100_000,
    max_latency_ratio=None,
    max_budget_ratio=None,
    max_confidence_drop=None,
    max_class_shift=None,
)


@pytest.fixture
def fleet_api(tmp_path: Path, amqtt_broker: int) -> Iterator[tuple[Client, dict[str, str]]]:
    """Two devices on v1 (their own agents, fake cameras); the API; the bundles' hashes."""
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True)
    make_bundle(tmp_path / "v2.efb", tiny_onnx_model(seed=8), "onnx", "2.0.0", softmax=True)
    with LocalFleet(tmp_path / "fleet", amqtt_broker, tick_s=0.2, client_id="four-eyes") as fleet:
        for name in ("v1", "v2"):
            fleet.release(name, tmp_path / f"{name}.efb")
        for name in ("cam-01", "cam-02"):
            fleet.provision(name, tags=("line1",))
        fleet.start()
        for name in ("cam-01", "cam-02"):
            fleet.start_device(
                name,
                bundle="v1",
                mqtt={"telemetry_interval_s": 0.5},
                update={"probation_s": 1, "probation_min_predictions": 5, "smoke_latency_runs": 3},
            )
        v1 = fleet.bundles["v1"].sha256
        fleet.wait_for(lambda: set(fleet.active().values()) == {v1}, timeout=60)
        base = fleet.serve_http(TOKEN)
        yield Client(base), {name: b.sha256 for name, b in fleet.bundles.items()}


def wait_status(
    client: Client, rollout_id: int, wanted: set[str], timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = client.get(f"/rollouts/{rollout_id}", headers=AUTH).json()
        if view["status"] in wanted:
            return view
        assert time.monotonic() < deadline, f"rollout still {view['status']}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_four_eyes_wave_needs_two_different_operators(
    fleet_api: tuple[Client, dict[str, str]],
) -> None:
    c, sha = fleet_api
    alice = bearer(make_token(c, "alice", "operator"))
    bob = bearer(make_token(c, "bob", "operator"))
    carol = bearer(make_token(c, "carol", "viewer"))
    gated = {
        "device_timeout_s": 60,
        "health_window_s": 0.5,
        "gate": GATE.model_dump(),
        "approval_before_next": True,
        "approvals_required": 2,
    }
    body = {
        "bundle_sha256": sha["v2"],
        "previous_sha256": sha["v1"],
        "target": {"kind": "tags", "values": ["line1"]},
        "waves": [{"count": 1, **gated}, {"percent": 100, **gated}],
    }
    created = c.post("/rollouts", json=body, headers=alice)
    assert created.status_code == 201, created.text
    rollout_id = created.json()["id"]
    view = wait_status(c, rollout_id, {"awaiting-approval", "rolled-back", "aborted"})
    assert view["status"] == "awaiting-approval", view
    assert view["planner"]["approvals_required"] == 2 and view["planner"]["approved_by"] == []

    assert c.post(f"/rollouts/{rollout_id}/approve", headers=carol).status_code == 403
    first = c.post(f"/rollouts/{rollout_id}/approve", headers=alice)
    assert first.status_code == 200 and first.json()["status"] == "awaiting-approval"
    assert first.json()["planner"]["approved_by"] == ["alice"]
    again = c.post(f"/rollouts/{rollout_id}/approve", headers=alice)
    assert again.status_code == 409
    assert "already approved by alice" in again.json()["error"]
    # the bootstrap token is another person to the server: each token is one approver
    second = c.post(f"/rollouts/{rollout_id}/approve", headers=bob)
    assert second.status_code == 200 and second.json()["status"] == "running", second.text
    assert second.json()["waves"][1]["status"] == "running"

    timeline = c.get(f"/rollouts/{rollout_id}/timeline", headers=carol).json()
    approvals = [t["message"] for t in timeline if t["kind"] == "approved"]
    assert approvals == [
        "wave 2 approved by alice (1 of 2); it waits for 1 more person's approval",
        "wave 2 approved by alice and bob",
    ]
    audit = c.get("/audit", params={"limit": "5"}, headers=alice).json()
    assert [(e["actor"], e["status"]) for e in audit if e["path"].endswith("/approve")] == [
        ("carol", 403),
        ("alice", 200),
        ("alice", 409),
        ("bob", 200),
    ]
