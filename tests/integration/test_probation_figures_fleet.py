"""Each camera's probation figures travel from a real device agent to the fleet server's timeline.

A real fleet server (SQLite registry, TUF, chunk server) on Mosquitto rolls a
new bundle out to a real two-camera device whose second camera never sends a
frame. The rollout completes (the dead camera is not judged), and the
committed event in the server's timeline carries each stream's figures: the
stored event data, its message, and the ``edgefleet fleet rollout timeline``
table an operator reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefleet.cli import cli
from edgefleet.testing.fleet import LocalFleet
from fleet_server.quality_gate import GateThresholds
from fleet_server.records import TargetSelector
from fleet_server.rollout_spec import WaveSpec
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = pytest.mark.broker

GATE = GateThresholds(
    min_samples=20, min_shift_samples=10_000, max_latency_ratio=10.0, max_budget_ratio=None
)
COLOURED = {"type": "fake-camera", "fps": 30, "colors": [[40, 200, 120], [90, 90, 200]]}
NEVER_OPENS = {"type": "fake-camera", "refuse_opens": 1_000_000}


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: int) -> Iterator[LocalFleet]:
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True)
    make_bundle(tmp_path / "v2.efb", tiny_onnx_model(scale=40.0, seed=8), "onnx", "2.0.0", True)
    with LocalFleet(tmp_path / "fleet", mosquitto, tick_s=0.2, client_id="fleet-server") as fleet:
        fleet.release("v1", tmp_path / "v1.efb")
        fleet.release("v2", tmp_path / "v2.efb")
        fleet.provision("line-3-box", tags=("line3",))
        fleet.start()
        yield fleet


def test_the_committed_event_shows_each_cameras_probation_figures_on_the_server(
    fleet: LocalFleet,
) -> None:
    assert fleet.server is not None and fleet.registry is not None
    registry = fleet.registry
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    fleet.start_device(
        "line-3-box",
        bundle="v1",
        source=None,
        cameras=[{"id": "belt-1", "source": COLOURED}, {"id": "belt-2", "source": NEVER_OPENS}],
        mqtt={"telemetry_interval_s": 0.5},
        health={"max_frame_age_s": 1.0, "startup_grace_s": 2.0},
        update={"probation_s": 1.0, "probation_min_predictions": 10, "smoke_latency_runs": 3},
    )
    fleet.wait_for(lambda: fleet.active().get("line-3-box") == v1.sha256, timeout=60)
    rollout = fleet.server.create_rollout(
        v2.sha256,
        TargetSelector.devices(["line-3-box"]),
        [WaveSpec(percent=100, device_timeout_s=60, health_window_s=1.0, gate=GATE)],
        previous_sha256=v1.sha256,
    )
    fleet.wait_for(
        lambda: registry.rollout(rollout).status in {"completed", "aborted", "rolled-back"}
    )
    entries = registry.timeline(rollout_id=rollout, limit=500)
    assert registry.rollout(rollout).status == "completed", [t.message for t in entries]

    (committed,) = [
        t
        for t in entries
        if t.kind == "device-event" and t.data and t.data.get("to") == "committed"
    ]
    assert committed.device_id == "line-3-box" and committed.data is not None
    belt_1, belt_2 = committed.data["probation"]
    assert belt_1["camera"] == "belt-1" and belt_1["judged"] is True
    assert belt_1["predictions"] >= 10 and belt_1["errors"] == 0
    assert belt_1["latency_p95_ms"] > 0 and 0 < belt_1["mean_confidence"] <= 1
    assert belt_1["baseline_confidence"] is not None  # v1's recent answers on belt-1
    assert belt_2 == {
        "camera": "belt-2",
        "judged": False,
        "predictions": 0,
        "errors": 0,
        "note": "no frame since the device started, before activation",
    }
    assert f"[belt-1: {belt_1['predictions']} predictions, p95 " in committed.message
    assert committed.message.endswith(
        "; belt-2: not judged (no frame since the device started, before activation)]"
    )
    earlier = [t for t in entries if t.kind == "device-event" and t is not committed]
    assert earlier and all("probation" not in (t.data or {}) for t in earlier)

    url = fleet.serve_http("figures-token")
    shown = CliRunner().invoke(
        cli,
        ["fleet", "--server", url, "rollout", "timeline", str(rollout)],
        env={"EDGEFLEET_TOKEN": "figures-token", "COLUMNS": "400"},
    )
    assert shown.exit_code == 0, shown.output
    # the table wraps a long message within its cell: read the cells' text run together
    flat = "".join(shown.output.replace("│", " ").split())
    start = flat.index("probation->committed")
    assert f"[belt-1:{belt_1['predictions']}predictions,p95" in flat[start:]
    assert "belt-2:notjudged(noframesincethedevicestarted,beforeactivation)]" in flat[start:]
