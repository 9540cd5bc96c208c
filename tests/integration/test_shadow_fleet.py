"""Shadow waves end to end: real device agents on Mosquitto, the real fleet server and its HTTP API.

Two devices run v1. A rollout of a candidate begins with a shadow wave on
both: they fetch and verify the candidate, run it beside v1 on their frames
and report. A candidate that answers as v1 passes and the rollout goes on to
activate it; one that disagrees on the line's frames (though it passes its
own smoke test and golden vectors, so a plain rollout would activate it) is
stopped in shadow, with the figures as the reason, and v1 serves throughout:
no swap, no frame answered by the candidate, no pause in the predictions.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgefleet.cli import cli
from edgefleet.testing import RunningDevice, wait_for
from edgefleet.testing.broker import LocalBroker
from edgefleet.testing.fleet import LocalFleet
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]

TOKEN = "shadow-token"
DEVICES = ("cam-1", "cam-2")
# quick figures: a report a second, every 2nd frame, half a core
STAGE = {
    "every_nth": 2,
    "cpu_budget": 0.5,
    "window_s": 1.0,
    "min_duration_s": 2.0,
    "min_frames": 30,
    "timeout_s": 60.0,
    "min_agreement": 0.9,
    "max_class_shift": 0.1,
}


class Fleet:
    """The started fleet, its API's URL and the two running devices."""

    def __init__(self, fleet: LocalFleet, url: str, devices: dict[str, RunningDevice]) -> None:
        self.fleet = fleet
        self.url = url
        self.devices = devices
        assert fleet.registry is not None
        self.registry = fleet.registry

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(
            cli,
            ["fleet", "--server", self.url, *args],
            env={"EDGEFLEET_TOKEN": TOKEN, "COLUMNS": "250"},
        )
        assert result.exit_code == 0, result.output
        return result.output

    def sha(self, name: str) -> str:
        return self.fleet.bundles[name].sha256

    def wait_finished(self, rollout_id: int, timeout: float = 60.0) -> str:
        finished = {"completed", "aborted", "rolled-back"}
        wait_for(
            lambda: self.registry.rollout(rollout_id).status in finished,
            timeout,
            message=f"rollout {rollout_id} did not finish: {self.timeline(rollout_id)}",
        )
        return str(self.registry.rollout(rollout_id).status)

    def timeline(self, rollout_id: int) -> str:
        return "\n".join(
            f"{t.kind}: {t.message}" for t in self.registry.timeline(rollout_id=rollout_id)
        )


@pytest.fixture
def shadow_fleet(tmp_path: Path, mosquitto_broker: LocalBroker) -> Iterator[Fleet]:
    # confident models: v2 is v1's weights (a new release that answers alike); v3 another
    # model, sound on its own golden vectors, that sorts the line's frames differently
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True)
    make_bundle(tmp_path / "v2.efb", tiny_onnx_model(scale=40.0), "onnx", "2.0.0", True)
    make_bundle(tmp_path / "v3.efb", tiny_onnx_model(scale=40.0, seed=8), "onnx", "3.0.0", True)
    with LocalFleet(tmp_path / "fleet", mosquitto_broker.port) as fleet:
        for name in ("v1", "v2", "v3"):
            fleet.release(name, tmp_path / f"{name}.efb")
        for device in DEVICES:
            fleet.provision(device, tags=["line-1"])
        fleet.start()
        url = fleet.serve_http(TOKEN)
        # cam-1 has one camera; cam-2 is a box with two belts (figures per camera)
        camera = {"type": "synthetic", "fps": 30, "width": 64, "height": 48}
        belts = [{"id": f"belt-{i}", "source": {**camera, "seed": i}} for i in (1, 2)]
        devices = {
            device: fleet.start_device(
                device,
                bundle="v1",
                source=camera if device == "cam-1" else None,
                cameras=None if device == "cam-1" else belts,
                outputs={"jsonl": {"path": str(tmp_path / f"{device}-{{camera}}.jsonl")}},
                mqtt={"telemetry_interval_s": 0.5},
                update={"probation_s": 1, "probation_min_predictions": 5, "smoke_latency_runs": 3},
            )
            for device in DEVICES
        }
        v1 = fleet.bundles["v1"].sha256
        fleet.wait_for(lambda: set(fleet.active().values()) == {v1}, timeout=60)
        yield Fleet(fleet, url, devices)


def test_a_shadow_wave_that_agrees_lets_the_rollout_activate(shadow_fleet: Fleet) -> None:
    f = shadow_fleet
    v1, v2 = f.sha("v1"), f.sha("v2")
    gate = {"min_samples": 20, "min_shift_samples": 10_000, "max_latency_ratio": 10.0}
    created = f.api(
        "POST",
        "/rollouts",
        {
            "bundle_sha256": v2,
            "previous_sha256": v1,
            "target": {"kind": "tags", "values": ["line-1"]},
            "waves": [
                {"devices": list(DEVICES), "shadow": STAGE},
                {"percent": 100, "health_window_s": 1.0, "device_timeout_s": 60, "gate": gate},
            ],
        },
    )
    rollout = created["id"]
    # while in shadow: both devices run v2 beside v1, v1 still serves
    wait_for(
        lambda: all(d.runtime.shadow and d.runtime.shadow.runner for d in f.devices.values()),
        30,
        message=f"the devices did not start the shadow run: {f.timeline(rollout)}",
    )
    assert set(f.fleet.active().values()) == {v1}
    status = f.cli("rollout", "status", str(rollout))
    assert "1 (shadow)" in status and "2 (canary)" in status, status
    assert f.wait_finished(rollout) == "completed", f.timeline(rollout)
    f.fleet.wait_for(lambda: set(f.fleet.active().values()) == {v2})
    timeline = f.timeline(rollout)
    assert "shadow-started: wave 1 (shadow): 2 devices run" in timeline
    assert "wave-passed: wave 1 (shadow) passed:" in timeline
    assert "agreement 100.0%" in timeline
    # the shadow runs ended once the wave passed; the figures stay readable
    wait_for(lambda: all(d.runtime.shadow.runner is None for d in f.devices.values()), 10)  # type: ignore[union-attr]
    view = f.api("GET", f"/rollouts/{rollout}/shadow")
    assert view["status"] == "passed"
    assert view["figures"]["compared"] >= STAGE["min_frames"]
    assert view["figures"]["agreement"] == 1.0
    assert set(view["figures"]["devices_running"]) == set(DEVICES)
    belts = view["figures"]["cameras"]
    assert set(belts) == {"cam-2/belt-1", "cam-2/belt-2"}
    assert all(b["compared"] > 0 and b["agreement"] == 1.0 for b in belts.values()), belts
    # each belt's class counts and confidences too, the same for both models (v2 is v1)
    for belt in belts.values():
        assert sum(belt["candidate_classes"].values()) == belt["compared"], belt
        assert belt["candidate_classes"] == belt["active_classes"], belt
        assert belt["candidate_confidence"] == pytest.approx(belt["active_confidence"]), belt
    # the candidate fetched for the shadow run was kept: activating it needed no second download
    assert f.fleet.server is not None
    assert f.fleet.server.chunks.stats().bundle(v2).requests < 2 * len(DEVICES)
    assert view["figures"]["candidate_ms"] > 0 and view["figures"]["active_ms"] > 0


def test_a_candidate_that_disagrees_is_stopped_in_shadow_and_v1_never_stops(
    shadow_fleet: Fleet, tmp_path: Path
) -> None:
    f = shadow_fleet
    v1, v3 = f.sha("v1"), f.sha("v3")
    cam = f.devices["cam-1"].runtime
    swaps = cam.model.swaps
    # the line keeps the frames a shadow candidate answers otherwise, and only those
    f.cli("field-data", "enable", "line-1", "--below-confidence", "0", "--shadow-disagreement")
    field = cam.field_data
    assert field is not None
    wait_for(lambda: field.settings.shadow_disagreement, 30)
    f.cli(
        "rollout", "create", v3, "--tags", "line-1", "--previous", v1,
        "--shadow", "2", "--shadow-min-frames", "30", "--shadow-duration", "2",
        "--shadow-set", "window_s=1", "--shadow-set", "every_nth=2",
        "--shadow-set", "cpu_budget=0.5",
    )  # fmt: skip
    rollout = max(r.id for r in f.registry.rollouts())
    started = time.time()
    assert f.wait_finished(rollout) == "aborted"
    info = f.registry.rollout(rollout)
    assert info.reason is not None
    assert "wave 1 (shadow) failed: agreement with the active model" in info.reason, info.reason
    assert "(min 90%)" in info.reason and "frames on 2 devices" in info.reason
    # the figures say how far apart they are
    view = f.api("GET", f"/rollouts/{rollout}/shadow")
    assert view["status"] == "failed"
    assert view["figures"]["compared"] >= 30
    assert view["figures"]["agreement"] < 0.9
    belts = view["figures"]["cameras"]  # the box's belts, one by one
    assert set(belts) == {"cam-2/belt-1", "cam-2/belt-2"}, belts
    assert all(b["agreement"] < 0.9 for b in belts.values()), belts
    shown = f.cli("rollout", "shadow", str(rollout))
    assert "cam-1" in shown and "cam-2" in shown and "failed" in shown
    # no device was ever sent v3: the active model served every frame, without a pause
    assert set(f.fleet.active().values()) == {v1}
    assert all(d.phase in (None, "idle", "committed") for d in f.registry.devices())
    assert cam.model.swaps == swaps
    wait_for(lambda: all(d.runtime.shadow.runner is None for d in f.devices.values()), 10)  # type: ignore[union-attr]
    lines = (tmp_path / "cam-1-cam-1.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["bundle_sha256"] for r in records} == {v1}
    during = sorted(r["captured_at"] for r in records if r["captured_at"] >= started)
    assert len(during) > 30
    assert max(b - a for a, b in itertools.pairwise(during)) < 1.0
    # ... and the frames they disagreed on reached the server as field data, v1's answer attached
    wait_for(lambda: len(f.registry.field_samples()) >= 2, 30, message="no disagreement uploaded")
    samples = f.registry.field_samples()
    assert {s.reason for s in samples} == {"shadow-disagreement"}
    assert {s.bundle_sha256 for s in samples} == {v1}
