"""Field data end to end: real device agents, Mosquitto (restarted mid-upload), the real server.

Collection is off until the operator enables it for the device's group; under
a flood of low-confidence frames the per-minute cap holds; samples taken
while the broker is down are uploaded after it returns; a person labels them
with the CLI; the export is a ``class/`` folder the parity loader of
``edgefleet convert --parity`` reads.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from converter.dataset import LabelledFolder
from edge_runtime.bundle import read_bundle
from edgefleet.cli import cli
from edgefleet.testing import wait_for
from edgefleet.testing.broker import LocalBroker
from edgefleet.testing.fleet import LocalFleet
from tests.media import make_bundle
from tests.models import LABELS, tiny_onnx_model

TOKEN = "field-token"


@pytest.mark.broker
def test_collect_upload_resume_label_and_export(
    tmp_path: Path, mosquitto_broker: LocalBroker
) -> None:
    # a model that is never sure: every frame is a low-confidence frame
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=0.05), "onnx", "1.0.0", True)
    with LocalFleet(tmp_path / "fleet", mosquitto_broker.port) as fleet:
        fleet.release("v1", tmp_path / "v1.efb")
        fleet.provision("cam-1", tags=["line-1"])
        fleet.provision("cam-2", tags=["line-2"])
        fleet.start()
        url = fleet.serve_http(TOKEN)
        registry = fleet.server.registry if fleet.server is not None else None
        assert registry is not None
        devices = {d: fleet.start_device(d, bundle="v1") for d in ("cam-1", "cam-2")}
        cam1 = devices["cam-1"].runtime.field_data
        cam2 = devices["cam-2"].runtime.field_data
        assert cam1 is not None and cam2 is not None

        def run(*args: str) -> str:
            result = CliRunner().invoke(
                cli,
                ["fleet", "--server", url, *args],
                env={"EDGEFLEET_TOKEN": TOKEN, "COLUMNS": "200"},
            )
            assert result.exit_code == 0, result.output
            return result.output

        # off by default: frames flow, nothing is chosen
        quality = devices["cam-1"].runtime.quality
        assert quality is not None
        wait_for(lambda: quality.snapshot().predictions > 30, 30)
        assert cam1.chosen == 0 and not registry.field_samples()

        # the operator switches line-1 on, 4 a minute: a flood of uncertain frames, 4 kept
        started = time.monotonic()
        run("field-data", "enable", "line-1", "--below-confidence", "0.9", "--per-minute", "4")
        wait_for(lambda: len(registry.field_samples()) >= 4, 30, message="no samples arrived")
        wait_for(lambda: cam1.chosen > 40, 30)
        minutes = 1 + int((time.monotonic() - started) // 60)
        assert cam1.stored <= 4 * minutes
        assert len(registry.field_samples()) <= 4 * minutes
        assert cam1.caps.refused >= cam1.chosen - 4 * minutes
        assert cam2.chosen == 0  # line-2 was not switched on
        assert {s.device_id for s in registry.field_samples()} == {"cam-1"}

        # more per minute, then the broker goes away: samples wait on the device's disk
        run("field-data", "enable", "line-1", "--below-confidence", "0.9", "--per-minute", "600")
        wait_for(lambda: cam1.settings.per_minute == 600, 30)
        mosquitto_broker.stop()
        before = cam1.stored
        wait_for(lambda: cam1.stored >= before + 5, 30, message="nothing collected offline")
        waiting = {sha for sha, _ in cam1.ring.oldest(1000)}
        assert len(waiting) >= 5
        mosquitto_broker.start()
        # ... and go up once it is back (each image stored once, however often it was sent)
        wait_for(
            lambda: waiting <= {s.sha256 for s in registry.field_samples(limit=10_000)},
            60,
            message="the samples kept offline were not uploaded after the broker returned",
        )
        listed = run("field-data", "list", "--device", "cam-1", "--limit", "5")
        assert "low-confidence" in listed and "1.0.0" in listed
        # the figures on both sides' /metrics
        counters = devices["cam-1"].runtime.registry.snapshot()["counters"]
        assert counters['edgefleet_field_samples_total{stage="capped"}'] > 0
        assert counters['edgefleet_field_samples_total{stage="acked"}'] >= len(waiting)
        request = urllib.request.Request(
            f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            metrics = reply.read().decode()
        found = re.search(
            r'^edgefleet_server_field_uploads_total\{result="stored"\} (\S+)$', metrics, re.M
        )
        assert found is not None
        assert len(waiting) <= float(found[1]) <= len(registry.field_samples(limit=10_000))
        run("field-data", "disable", "line-1")
        wait_for(lambda: not cam1.settings.enabled, 30)

        # a person labels one sample per class (one confirmed as the device said), then exports
        samples = registry.field_samples(limit=len(LABELS))
        assert len(samples) == len(LABELS)
        run("field-data", "label", samples[0].sha256[:16], "--confirm")
        covered = {samples[0].label}
        rest = [label for label in LABELS if label not in covered]
        for sample, label in zip(samples[1:], rest, strict=False):
            run("field-data", "label", sample.sha256, label)
        out = tmp_path / "parity"
        exported = run("field-data", "export", str(out), "--labels", ",".join(LABELS))
        assert f"exported {len(LABELS)} labelled samples" in exported
        parity = LabelledFolder.scan(out, LABELS)
        decoded = list(parity.frames(strict=True))
        assert len(decoded) == len(LABELS)
        assert all(frame.shape == (48, 64, 3) for _, frame, _ in decoded)

        # ... and `edgefleet convert --parity` takes it: the next model is judged on the line's frames
        model = tmp_path / "next.onnx"
        model.write_bytes(tiny_onnx_model(seed=8))
        converted = CliRunner().invoke(
            cli,
            [
                "convert", str(model), "--parity", str(out), "--out", str(tmp_path / "next"),
                "--formats", "onnx", "--precision", "fp32", "--scale", "0.00392",
                "--softmax", "--labels", ",".join(LABELS),
                "--max-accuracy-drop", "100", "--min-agreement", "0",
            ],
            env={"COLUMNS": "200"},
        )  # fmt: skip
        assert converted.exit_code == 0, converted.output
        (bundle,) = (tmp_path / "next").glob("*.efb")
        report = read_bundle(bundle).manifest.quality
        assert report is not None and report.dataset.num_images == len(LABELS)
