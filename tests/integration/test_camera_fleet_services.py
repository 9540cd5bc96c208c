"""A camera that is its own fleet device gets field data, shadow runs and ``/classify?camera=``.

A real fleet server (SQLite registry, TUF, chunk server, HTTP API) on
Mosquitto and one real device process with two cameras: belt-1 shares the
box's identity (``line-3-box``), belt-2 is the fleet device ``line-3-belt-2``.
Field data switched on for belt-2's group reaches belt-2's device: samples
come under its id, naming the camera, and none from the box (its group is
off). A rollout to belt-2's device that begins with a shadow wave runs the
candidate on belt-2's frames, reported under belt-2's id, and passes (before
the camera device had a shadow controller, the wave waited for it until the
gate's timeout and failed). Then belt-2 runs v2 while the box runs v1, and
the box's local ``/classify`` answers with the camera's bundle when asked
for ``?camera=belt-2``, with the box's otherwise, and 404 for a camera it
does not have, naming those it has. ``rollout status`` after the rollout
ended still shows its first wave as the shadow wave.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import pytest
from click.testing import CliRunner

from edgefleet.cli import cli
from edgefleet.testing import wait_for
from edgefleet.testing.broker import LocalBroker, free_port
from edgefleet.testing.fleet import LocalFleet
from tests.media import frame, make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]

TOKEN = "camera-services-token"
COLOURED = {"type": "fake-camera", "fps": 30, "colors": [[40, 200, 120], [90, 90, 200]]}
STAGE = {
    "every_nth": 2,
    "cpu_budget": 0.5,
    "window_s": 1.0,
    "min_duration_s": 2.0,
    "min_frames": 30,
    "timeout_s": 40.0,
    "min_agreement": 0.9,
    "max_class_shift": 0.1,
    "max_latency_ratio": 10.0,  # a loaded 2-core machine: not what this test is about
}
GATE = {"min_samples": 20, "min_shift_samples": 10_000, "max_latency_ratio": 10.0}


def classify(port: int, query: str = "") -> tuple[int, dict[str, Any]]:
    ok, image = cv2.imencode(".png", frame(3))
    assert ok
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", f"/classify{query}", body=image.tobytes(), headers={"Content-Type": "image/png"}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_camera_device_collects_runs_shadows_and_is_served_by_classify(
    tmp_path: Path, mosquitto_broker: LocalBroker
) -> None:
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True)
    make_bundle(tmp_path / "v2.efb", tiny_onnx_model(scale=40.0), "onnx", "2.0.0", True)
    with LocalFleet(tmp_path / "fleet", mosquitto_broker.port) as fleet:
        for name in ("v1", "v2"):
            fleet.release(name, tmp_path / f"{name}.efb")
        fleet.provision("line-3-box", tags=["line3"])
        fleet.provision("line-3-belt-2", tags=["belt2"])
        fleet.start()
        url = fleet.serve_http(TOKEN)
        registry = fleet.registry
        assert registry is not None
        v1, v2 = fleet.bundles["v1"].sha256, fleet.bundles["v2"].sha256

        def run(*args: str) -> str:
            result = CliRunner().invoke(
                cli, ["fleet", "--server", url, *args], env={"EDGEFLEET_TOKEN": TOKEN}
            )
            assert result.exit_code == 0, result.output
            return result.output

        port = free_port()
        device = fleet.start_device(
            "line-3-box",
            bundle="v1",
            source=None,
            cameras=[
                {"id": "belt-1", "source": COLOURED},
                {"id": "belt-2", "source": COLOURED, "fleet": {"device_id": "line-3-belt-2"}},
            ],
            mqtt={"telemetry_interval_s": 0.5},
            local_service={"enabled": True, "port": port},
            update={"probation_s": 1, "probation_min_predictions": 5, "smoke_latency_runs": 3},
        )
        belt_2 = device.runtime.fleet_cameras["belt-2"]
        fleet.wait_for(lambda: set(fleet.active().values()) == {v1}, timeout=60)

        # field data for belt-2's group: its own device collects and uploads, naming the camera
        run("field-data", "enable", "belt2", "--random", "1", "--per-minute", "30")
        wait_for(
            lambda: len(registry.field_samples(device_id="line-3-belt-2", limit=100)) >= 1,
            30,
            message=lambda: (
                f"belt-2's device sent no samples (chosen {belt_2.field_data.chosen}, stored {belt_2.field_data.stored}, sent {belt_2.field_data.sent}, acked {belt_2.field_data.acked}; {belt_2.field_data.settings})"
            ),
        )
        samples = registry.field_samples(limit=1000)
        assert {(s.device_id, s.camera_id) for s in samples} == {("line-3-belt-2", "belt-2")}
        assert device.runtime.field_data is not None
        assert not device.runtime.field_data.settings.enabled  # the box's group is off
        run("field-data", "disable", "belt2")

        # a shadow wave on belt-2's device: the candidate runs on belt-2's frames, reported as its
        request = urllib.request.Request(
            f"{url}/rollouts",
            data=json.dumps(
                {
                    "bundle_sha256": v2,
                    "previous_sha256": v1,
                    "target": {"kind": "devices", "values": ["line-3-belt-2"]},
                    "waves": [
                        {"devices": ["line-3-belt-2"], "shadow": STAGE},
                        {
                            "percent": 100,
                            "health_window_s": 1.0,
                            "device_timeout_s": 60,
                            "gate": GATE,
                        },
                    ],
                }
            ).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            rollout = json.loads(reply.read())["id"]
        wait_for(
            lambda: belt_2.shadow.runner is not None,
            30,
            message="belt-2's device did not start the shadow run",
        )
        assert device.runtime.shadow is not None and device.runtime.shadow.runner is None
        wait_for(
            lambda: registry.rollout(rollout).status in {"completed", "aborted", "rolled-back"},
            60,
            message=lambda: (
                f"rollout {registry.rollout(rollout).status}: "
                + "; ".join(t.message for t in registry.timeline(rollout_id=rollout))
            ),
        )
        timeline = "; ".join(t.message for t in registry.timeline(rollout_id=rollout))
        assert registry.rollout(rollout).status == "completed", timeline
        assert "wave 1 (shadow) passed" in timeline, timeline
        with urllib.request.urlopen(
            urllib.request.Request(
                f"{url}/rollouts/{rollout}/shadow", headers={"Authorization": f"Bearer {TOKEN}"}
            ),
            timeout=10,
        ) as reply:
            view = json.loads(reply.read())
        assert view["figures"]["devices_running"] == ["line-3-belt-2"]
        assert view["figures"]["compared"] >= STAGE["min_frames"]
        assert view["figures"]["agreement"] == 1.0
        fleet.wait_for(lambda: fleet.active() == {"line-3-box": v1, "line-3-belt-2": v2})

        # the box's /classify: the camera's bundle for ?camera=belt-2, the box's otherwise
        status, record = classify(port, "?camera=belt-2")
        assert status == 200, record
        assert (record["bundle_version"], record["bundle_sha256"]) == ("2.0.0", v2)
        assert (record["device_id"], record["camera_id"]) == ("line-3-belt-2", "belt-2")
        status, record = classify(port, "?camera=belt-1")
        assert status == 200 and record["bundle_version"] == "1.0.0", record
        assert (record["device_id"], record["camera_id"]) == ("line-3-box", "belt-1")
        status, record = classify(port)
        assert status == 200 and record["bundle_sha256"] == v1, record
        status, record = classify(port, "?camera=belt-9")
        assert status == 404 and "belt-1, belt-2" in record["error"], record

        # once ended, 'rollout status' still shows the first wave as the shadow wave
        shown = run("rollout", "status", str(rollout))
        rows = {line.split("│")[1].strip(): line for line in shown.splitlines() if "│" in line}
        assert set(rows) == {"1 (shadow)", "2 (canary)", "all"}, (
            shown
        )  # not "1 (canary)", 0 devices
        assert rows["1 (shadow)"].split("│")[3].strip() == "1", shown

        # 'device doctor --config' checks belt-2's device's store as it checks the box's
        config = tmp_path / "box.json"
        config.write_text(device.runtime.config.model_dump_json(exclude_none=True))

        def doctor() -> dict[str, Any]:
            result = CliRunner().invoke(
                cli, ["device", "doctor", "--packages-only", "--json", "--config", str(config)]
            )
            stores: dict[str, Any] = {
                s["device_id"]: s for s in json.loads(result.output)["stores"]
            }
            return stores

        stores = doctor()
        assert set(stores) == {"line-3-box", "line-3-belt-2"}, stores
        assert (stores["line-3-belt-2"]["camera"], stores["line-3-belt-2"]["active"]) == (
            "belt-2",
            v2,
        )
        assert stores["line-3-box"]["active"] == v1
        assert all(s["ok"] and s["state_source"] == "state.json" for s in stores.values()), stores
        with (belt_2.agent.store.path(v2)).open("ab") as damaged:
            damaged.write(b"x")
        stores = doctor()
        assert stores["line-3-box"]["ok"], stores
        assert not stores["line-3-belt-2"]["ok"]
        assert "is damaged" in stores["line-3-belt-2"]["problems"][0], stores
