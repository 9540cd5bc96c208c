"""Drift on the confidence histogram: a real device agent, a real broker, the server's own monitor.

The bundle's quality report says the model was sure of its parity set (every
answer in the top confidence bin); on the line it is never sure. Nothing
else is judged (no class mix, no mean confidence in the report), so only the
histogram can raise the drift, which the server's drift worker does, and
``/metrics`` and ``edgefleet fleet drift`` show.
"""

from __future__ import annotations

import hashlib
import re
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from converter.packaging import assemble_bundle
from converter.synthetic import CLASSES, draw_frame
from edge_runtime.bundle import Postprocessing, Preprocessing
from edge_runtime.bundle.manifest import DatasetRef, QualityReport
from edgefleet.cli import cli
from edgefleet.testing import wait_for
from edgefleet.testing.broker import LocalBroker
from edgefleet.testing.fleet import LocalFleet
from tests.models import LABELS, SIZE, tiny_onnx_model

TOKEN = "confidence-token"


@pytest.mark.broker
def test_a_model_unsure_on_the_line_drifts_on_its_confidence_histogram(
    tmp_path: Path, mqtt_broker: LocalBroker
) -> None:
    quality = QualityReport(
        dataset=DatasetRef(name="belt", sha256=hashlib.sha256(b"belt").hexdigest(), num_images=50),
        accuracy=0.9,
        confidence_histogram=[0.0] * 9 + [1.0],
    )
    assemble_bundle(
        tmp_path / "v1.efb",
        name="tiny-classifier",
        version="1.0.0",
        model=tiny_onnx_model(scale=0.05),  # near-uniform answers: confidence about 1/6
        model_format="onnx",
        precision="fp32",
        preprocessing=Preprocessing(height=SIZE, width=SIZE, mean=(0, 0, 0), std=(255, 255, 255)),
        labels=LABELS,
        postprocessing=Postprocessing(apply_softmax=True, top_k=3),
        golden_frames=[(draw_frame(label, 1), label) for label in CLASSES[:2]],
        golden_atol=1e-4,
        quality=quality,
    )
    with LocalFleet(tmp_path / "fleet", mqtt_broker.port) as fleet:
        fleet.release("v1", tmp_path / "v1.efb")
        fleet.provision("cam-1", tags=["line-1"])
        fleet.start()
        url = fleet.serve_http(TOKEN, drift_interval_s=0.2)

        def run(*args: str) -> str:
            result = CliRunner().invoke(
                cli,
                ["fleet", "--server", url, *args],
                env={"EDGEFLEET_TOKEN": TOKEN, "COLUMNS": "250"},
            )
            assert result.exit_code == 0, result.output
            return result.output

        limits = run("drift", "limits", "--window-s", "5", "--min-predictions", "30")
        assert "max_confidence_divergence: 0.15" in limits  # on by default
        fleet.start_device("cam-1", bundle="v1", mqtt={"telemetry_interval_s": 0.3})
        registry = fleet.server.registry if fleet.server is not None else None
        assert registry is not None
        wait_for(
            lambda: (
                {s.name for s in registry.drift_statuses(drifting_only=True)} == {"cam-1", "line-1"}
            ),
            30,
            interval=0.2,
            message="the drift worker never judged the confidence histogram",
        )
        status = next(s for s in registry.drift_statuses("device"))
        assert status.reasons[0].startswith("confidence divergence (Jensen-Shannon)")
        assert len(status.reasons) == 1  # nothing else was there to judge
        assert status.figures["confidence_divergence"] > 0.9
        assert status.figures["confidence_histogram"][1] > 0.9  # answers in [0.1, 0.2)

        request = urllib.request.Request(
            f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            metrics = reply.read().decode()
        found = re.search(
            r'^edgefleet_server_drift_confidence_divergence\{name="cam-1",scope="device"\} (\S+)$',
            metrics,
            re.M,
        )
        assert found is not None and float(found[1]) > 0.9
        listed = run("drift")
        assert "conf. JS" in listed and "confidence divergence" in listed and "cam-1" in listed
