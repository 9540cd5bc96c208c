"""Drift raised when what the camera sees changes: real device agents, a real broker, the real server.

Two cameras of group ``line-1`` run a bundle whose quality report says half
glass, half paper. Both show that mix (the drift pass says ``ok``); then
cam-2's belt carries only cardboard: cam-2 and its group drift, cam-1 does not;
the alerts reach the timeline (the group's says it is a candidate for
retraining), ``/metrics`` and ``edgefleet fleet drift``.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from converter.packaging import assemble_bundle
from converter.synthetic import CLASSES, draw_frame
from edge_runtime.bundle import Bundle, Postprocessing, Preprocessing
from edge_runtime.bundle.manifest import DatasetRef, QualityReport
from edgefleet.cli import cli
from edgefleet.testing import wait_for
from edgefleet.testing.broker import LocalBroker
from edgefleet.testing.fleet import LocalFleet
from fleet_server.drift import DriftThresholds
from fleet_server.drift_monitor import DriftMonitor
from tests.models import LABELS, SIZE, tiny_onnx_model

GLASS, PAPER, CARDBOARD = (0, 255, 0), (255, 0, 0), (255, 0, 255)  # BGR; the model's answers


def baseline_bundle(path: Path) -> Bundle:
    """The tiny classifier with a quality report: half glass, half paper, confident."""
    shares = [0.5 if label in {"glass", "paper"} else 0.0 for label in LABELS]
    quality = QualityReport(
        dataset=DatasetRef(name="belt", sha256=hashlib.sha256(b"belt").hexdigest(), num_images=100),
        accuracy=0.9,
        class_distribution=shares,
        mean_confidence=0.95,
    )
    return assemble_bundle(
        path,
        name="tiny-classifier",
        version="1.0.0",
        model=tiny_onnx_model(scale=8.0),
        model_format="onnx",
        precision="fp32",
        preprocessing=Preprocessing(height=SIZE, width=SIZE, mean=(0, 0, 0), std=(255, 255, 255)),
        labels=LABELS,
        postprocessing=Postprocessing(apply_softmax=True, top_k=3),
        golden_frames=[(draw_frame(label, 1), label) for label in CLASSES[:2]],
        golden_atol=1e-4,
        quality=quality,
    )


@pytest.mark.broker
def test_drift_is_raised_when_the_class_mix_changes(
    tmp_path: Path, mqtt_broker: LocalBroker
) -> None:
    with LocalFleet(tmp_path / "fleet", mqtt_broker.port) as fleet:
        bundle = baseline_bundle(tmp_path / "v1.efb")
        fleet.release("v1", tmp_path / "v1.efb")
        for device_id in ("cam-1", "cam-2"):
            fleet.provision(device_id, tags=["line-1"])
        fleet.start()
        telemetry = {"port": mqtt_broker.port, "telemetry_interval_s": 0.3}
        devices = {
            device_id: fleet.start_device(
                device_id,
                bundle="v1",
                mqtt=telemetry,
                source={"type": "fake-camera", "fps": 30, "colors": [GLASS, PAPER]},
            )
            for device_id in ("cam-1", "cam-2")
        }
        registry = fleet.server.registry if fleet.server is not None else None
        assert registry is not None
        monitor = DriftMonitor(
            registry,
            DriftThresholds(window_s=3.0, min_predictions=30, max_class_divergence=0.1),
        )

        def states() -> dict[tuple[str, str], str]:
            return {(c.status.scope, c.status.name): c.status.state for c in monitor.check()}

        expected_ok = {("device", "cam-1"), ("device", "cam-2"), ("group", "line-1")}
        wait_for(
            lambda: all(states().get(key) == "ok" for key in expected_ok),
            30,
            interval=0.5,
            message="the baseline mix was never judged ok",
        )
        assert not registry.drift_statuses(drifting_only=True)
        assert all(d.active_sha256() == bundle.sha256 for d in devices.values())

        # the belt under cam-2 now carries only cardboard
        devices["cam-2"].runtime.config.source.colors[:] = [CARDBOARD]  # type: ignore[attr-defined]
        wait_for(
            lambda: (
                (s := states()).get(("device", "cam-2")) == "drifting"
                and s.get(("group", "line-1")) == "drifting"
            ),
            30,
            interval=0.5,
            message="cam-2's new class mix never raised drift",
        )
        statuses = {(s.scope, s.name): s for s in registry.drift_statuses()}
        assert statuses[("device", "cam-1")].state == "ok"
        cam2 = statuses[("device", "cam-2")]
        assert cam2.since is not None and cam2.figures["biggest_shift"][0] == "cardboard"
        assert cam2.figures["distribution"]["cardboard"] > 0
        alerts = [t for t in registry.timeline(limit=100) if t.kind == "drift-raised"]
        assert {a.device_id for a in alerts} == {"cam-2", None}
        group_alert = next(a for a in alerts if a.device_id is None)
        assert "group line-1" in group_alert.message
        assert "candidate for retraining" in group_alert.message

        url = fleet.serve_http("drift-token")
        request = urllib.request.Request(
            f"{url}/metrics", headers={"Authorization": "Bearer drift-token"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            metrics = reply.read().decode()
        assert 'edgefleet_server_drifting{name="cam-2",scope="device"} 1.0' in metrics
        assert 'edgefleet_server_drifting{name="cam-1",scope="device"} 0.0' in metrics
        assert 'edgefleet_server_drifting_subjects{scope="group"} 1.0' in metrics
        result = CliRunner().invoke(
            cli,
            ["fleet", "--server", url, "drift"],
            env={"EDGEFLEET_TOKEN": "drift-token", "COLUMNS": "200"},
        )
        assert result.exit_code == 0, result.output
        assert "cam-2" in result.output and "line-1" in result.output
        assert "cam-1" not in result.output  # only those drifting, by default
        assert "candidate for retraining" in result.output
        history = CliRunner().invoke(
            cli,
            ["fleet", "--server", url, "drift", "alerts"],
            env={"EDGEFLEET_TOKEN": "drift-token", "COLUMNS": "300"},
        )
        assert history.exit_code == 0, history.output
        assert history.output.count("drift-raised") == 2
        limits = CliRunner().invoke(
            cli,
            ["fleet", "--server", url, "drift", "limits", "--max-psi", "0.25", "--window-s", "5"],
            env={"EDGEFLEET_TOKEN": "drift-token"},
        )
        assert limits.exit_code == 0, limits.output
        assert "max_psi: 0.25" in limits.output and "window_s: 5.0" in limits.output
        assert registry.drift_thresholds().max_psi == 0.25
