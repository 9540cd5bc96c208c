"""Maintenance windows over the HTTP API of a real FleetServer (embedded amqtt broker).

Windows are chosen around the real clock (one open since a minute ago, one
that opens in an hour), so no fake clock is needed here; the planner's own
tests move a controllable clock through the windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edgefleet.testing.fleet import LocalFleet
from tests.integration.test_fleet_api import AUTH, TOKEN, Client
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]


def window_from(minutes_from_now: int, length_minutes: int) -> str:
    """A weekly UTC window starting ``minutes_from_now`` (whole minutes) for ``length_minutes``."""
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(
        minutes=minutes_from_now
    )
    end = start + timedelta(minutes=length_minutes)
    return f"{start:%a} {start:%H:%M}-{end:%H:%M} UTC"


@dataclass
class Fleet:
    client: Client
    sha256: str


@pytest.fixture
def fleet(tmp_path: Path, amqtt_broker: int) -> Iterator[Fleet]:
    bundle = make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True)
    with LocalFleet(tmp_path / "fleet", amqtt_broker, client_id="windows-api") as local:
        local.release("v1", tmp_path / "v1.efb")
        local.start()
        client = Client(local.serve_http(TOKEN))
        for device, tag in (("cam-01", "open-line"), ("cam-02", "closed-line")):
            made = client.post("/devices", json={"id": device, "tags": [tag]}, headers=AUTH)
            assert made.status_code == 201, made.text
        yield Fleet(client, bundle.sha256)


def test_windows_are_set_listed_and_cleared(fleet: Fleet) -> None:
    c = fleet.client
    assert c.get("/windows", headers=AUTH).json() == []
    opened = window_from(-1, 120)
    made = c.put("/windows/open-line", json={"windows": [opened.lower()]}, headers=AUTH)
    assert made.status_code == 200, made.text
    (window,) = made.json()["windows"]
    assert window["spec"] == opened  # the canonical spelling
    assert window["open_now"] and window["next_open"] == "now"
    later = window_from(60, 30)
    c.put("/windows/closed-line", json={"windows": [later]}, headers=AUTH)
    closed = c.get("/windows/closed-line", headers=AUTH).json()["windows"][0]
    assert not closed["open_now"]
    start = datetime.fromtimestamp(closed["next_open_at"], timezone.utc)
    assert closed["next_open"] == f"{start:%a %H:%M} UTC" and later.endswith(
        f"{start:%H:%M}-{(start + timedelta(minutes=30)):%H:%M} UTC"
    )
    assert [w["tag"] for w in c.get("/windows", headers=AUTH).json()] == [
        "closed-line",
        "open-line",
    ]
    only = c.get("/windows", params={"tag": "open-line"}, headers=AUTH).json()
    assert [w["tag"] for w in only] == ["open-line"]
    cleared = c.request("DELETE", "/windows/closed-line", headers=AUTH)
    assert cleared.json() == {"tag": "closed-line", "removed": 1}
    gone = c.get("/windows/closed-line", headers=AUTH)
    assert gone.status_code == 404 and "no maintenance windows" in gone.json()["error"]


@pytest.mark.parametrize(
    ("tag", "body", "status", "words"),
    [
        ("line-1", {"windows": ["Sun 02:00-04:00"]}, 400, "has no time zone"),
        ("line-1", {"windows": ["Sun 02:00-04:00 Mars/Base"]}, 400, "unknown time zone"),
        ("line-1", {"windows": ["cron 0 0 30 2 * 1h UTC"]}, 400, "never opens"),
        ("line-1", {"windows": []}, 422, "windows"),
        ("line-1", {"windows": ["Sun 02:00-04:00 UTC"], "extra": 1}, 422, "extra"),
        ("line%201", {"windows": ["Sun 02:00-04:00 UTC"]}, 422, "tag"),
        ("-line", {"windows": ["Sun 02:00-04:00 UTC"]}, 422, "tag"),
    ],
)
def test_bad_windows_are_refused_with_the_reason(
    fleet: Fleet, tag: str, body: dict[str, object], status: int, words: str
) -> None:
    reply = fleet.client.put(f"/windows/{tag}", json=body, headers=AUTH)
    assert reply.status_code == status, reply.text
    assert words in reply.text
    assert fleet.client.get("/windows", headers=AUTH).json() == []


def test_a_viewer_reads_windows_but_cannot_change_them(fleet: Fleet) -> None:
    made = fleet.client.post("/tokens", json={"name": "watcher", "role": "viewer"}, headers=AUTH)
    assert made.status_code == 201, made.text
    viewer = {"Authorization": f"Bearer {made.json()['secret']}"}
    assert fleet.client.get("/windows", headers=viewer).status_code == 200
    refused = fleet.client.put(
        "/windows/open-line", json={"windows": ["Sun 02:00-04:00 UTC"]}, headers=viewer
    )
    assert refused.status_code == 403


def rollout_body(sha256: str, **extra: object) -> dict[str, object]:
    return {
        "bundle_sha256": sha256,
        "target": {"kind": "all", "values": []},
        "waves": [{"percent": 100}],
        **extra,
    }


def test_a_rollout_sends_inside_windows_and_says_who_waits(fleet: Fleet) -> None:
    c = fleet.client
    c.put("/windows/open-line", json={"windows": [window_from(-1, 120)]}, headers=AUTH)
    c.put("/windows/closed-line", json={"windows": [window_from(60, 30)]}, headers=AUTH)
    created = c.post("/rollouts", json=rollout_body(fleet.sha256), headers=AUTH)
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["counts"] == {"sent": 1, "pending": 1}
    planner = view["planner"]
    assert planner["waiting_for_window"] == ["cam-02"] and not planner["ignore_windows"]
    opens = datetime.fromtimestamp(planner["next_window_opens_at"], timezone.utc)
    assert planner["next_window_opens"] == f"{opens:%a %H:%M} UTC"
    assert 59 * 60 <= opens.timestamp() - datetime.now(timezone.utc).timestamp() <= 61 * 60
    timeline = c.get(f"/rollouts/{view['id']}/timeline", headers=AUTH).json()
    waiting = [t for t in timeline if t["kind"] == "window-waiting"]
    assert [t["message"] for t in waiting] == [
        "wave 1: 1 devices wait for their maintenance window "
        f"(next opens {planner['next_window_opens']})"
    ]


def test_ignore_windows_sends_at_once_and_is_recorded(fleet: Fleet) -> None:
    c = fleet.client
    c.put("/windows/closed-line", json={"windows": [window_from(60, 30)]}, headers=AUTH)
    body = rollout_body(fleet.sha256, ignore_windows=True)
    created = c.post("/rollouts", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["counts"] == {"sent": 2}
    assert view["planner"]["ignore_windows"] and view["planner"]["waiting_for_window"] == []
    timeline = c.get(f"/rollouts/{view['id']}/timeline", headers=AUTH).json()
    ignored = [t for t in timeline if t["kind"] == "windows-ignored"]
    assert [t["message"] for t in ignored] == [
        "maintenance windows ignored (created by bootstrap with ignore_windows)"
    ]
    audit = c.get("/audit", headers=AUTH).json()
    (entry,) = [a for a in audit if a["method"] == "POST" and a["path"] == "/rollouts"]
    assert '"ignore_windows": true' in entry["body"] and entry["status"] == 201


def test_windows_that_never_open_together_refuse_the_rollout(fleet: Fleet) -> None:
    c = fleet.client
    made = c.post("/devices", json={"id": "cam-03", "tags": ["a", "b"]}, headers=AUTH)
    assert made.status_code == 201, made.text
    c.put("/windows/a", json={"windows": ["Mon 01:00-02:00 UTC"]}, headers=AUTH)
    c.put("/windows/b", json={"windows": ["Tue 01:00-02:00 UTC"]}, headers=AUTH)
    refused = c.post("/rollouts", json=rollout_body(fleet.sha256), headers=AUTH)
    assert refused.status_code == 400
    assert "never open at the same time" in refused.json()["error"]
    assert c.get("/rollouts", headers=AUTH).json() == []
