"""Field samples say which camera took them: a real two-camera device agent, a real broker and server.

The box's samples carry each camera's id, stored and listed (``--camera``)
and written to the export's ``samples.jsonl``; a sample from a device that
predates the field (its header has no ``camera_id`` at all) is still taken.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgefleet.cli import cli
from edgefleet.testing import wait_for
from edgefleet.testing.broker import LocalBroker
from edgefleet.testing.fleet import LocalFleet
from fleet_server.field_data import FieldRetention
from tests.media import make_bundle
from tests.models import tiny_onnx_model

TOKEN = "camera-token"
CAMERAS = ("belt-1", "belt-2")


def _old_device_sample(bundle_sha256: str) -> tuple[str, bytes]:
    """A sample as a device from before ``camera_id`` frames it: the header lacks the key."""
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))
    assert ok
    image = jpeg.tobytes()
    sha = hashlib.sha256(image).hexdigest()
    header = {
        "protocol": 1,
        "device_id": "old-cam",
        "sha256": sha,
        "image_format": "jpeg",
        "captured_at": time.time(),
        "reason": "low-confidence",
        "label": "glass",
        "confidence": 0.3,
        "top_k": [{"label": "glass", "score": 0.3}],
        "bundle_sha256": bundle_sha256,
        "bundle_name": "tiny-classifier",
        "bundle_version": "1.0.0",
    }
    head = json.dumps(header).encode()
    return sha, struct.pack(">I", len(head)) + head + image


@pytest.mark.broker
def test_samples_name_their_camera_in_the_store_the_list_and_the_export(
    tmp_path: Path, mqtt_broker: LocalBroker
) -> None:
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=0.05), "onnx", "1.0.0", True)
    with LocalFleet(tmp_path / "fleet", mqtt_broker.port) as fleet:
        bundle = fleet.release("v1", tmp_path / "v1.efb")
        fleet.provision("box-1", tags=["line-1"])
        fleet.provision("old-cam", tags=["line-1"])
        fleet.start()
        url = fleet.serve_http(TOKEN)
        registry = fleet.server.registry if fleet.server is not None else None
        assert registry is not None and fleet.client is not None

        def run(*args: str) -> str:
            result = CliRunner().invoke(
                cli,
                ["fleet", "--server", url, *args],
                env={"EDGEFLEET_TOKEN": TOKEN, "COLUMNS": "220"},
            )
            assert result.exit_code == 0, result.output
            return result.output

        run("field-data", "enable", "line-1", "--below-confidence", "0.9", "--per-minute", "30")
        # each camera its own colours: samples are stored once by content, so two cameras
        # drawing the same frames would leave only the first camera's name on them
        fleet.start_device(
            "box-1",
            bundle="v1",
            source=None,
            cameras=[
                {
                    "id": camera,
                    "source": {
                        "type": "fake-camera",
                        "width": 64,
                        "height": 48,
                        "fps": 10,
                        "colors": [(12 * i, 60 + 120 * k, 200 - 7 * i) for i in range(20)],
                    },
                }
                for k, camera in enumerate(CAMERAS)
            ],
        )
        wait_for(
            lambda: {s.camera_id for s in registry.field_samples(limit=1000)} == set(CAMERAS),
            60,
            message="the two cameras' samples did not arrive, each naming its camera",
        )
        old_sha, payload = _old_device_sample(bundle.sha256)
        fleet.client.publish("edgefleet/devices/old-cam/field-data/samples", payload, qos=1)
        wait_for(lambda: old_sha in {s.sha256 for s in registry.field_samples(limit=1000)}, 30)
        assert registry.field_sample(old_sha).camera_id is None

        only_belt2 = registry.field_samples(camera_id="belt-2", limit=1000)
        assert only_belt2 and {(s.device_id, s.camera_id) for s in only_belt2} == {
            ("box-1", "belt-2")
        }
        listed = run("field-data", "list", "--camera", "belt-1", "--limit", "5")
        assert "belt-1" in listed and "belt-2" not in listed and "old-cam" not in listed
        as_json = json.loads(run("field-data", "list", "--camera", "belt-2", "--json"))
        assert as_json and {row["camera_id"] for row in as_json} == {"belt-2"}

        # labelled, exported: the metadata says which camera took each image
        picked = {camera: registry.field_samples(camera_id=camera)[0] for camera in CAMERAS}
        for sample in picked.values():
            run("field-data", "label", sample.sha256, "--confirm")
        run("field-data", "label", old_sha, "paper")
        out = tmp_path / "export"
        run("field-data", "export", str(out))
        records = {
            r["sha256"]: r
            for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())
        }
        assert set(records) == {old_sha, *(s.sha256 for s in picked.values())}
        for camera, sample in picked.items():
            record = records[sample.sha256]
            assert (record["device_id"], record["camera_id"]) == ("box-1", camera)
            assert (out / record["file"]).is_file()
        assert records[old_sha]["camera_id"] is None
        assert records[old_sha]["file"] == f"paper/{old_sha}.jpg"
        # retention takes a sample's camera with it
        dropped = registry.prune_field_samples(FieldRetention(max_samples=0, max_age_s=None))
        assert {sha for sha, _ in dropped} >= set(records)
        with sqlite3.connect(tmp_path / "fleet" / "fleet.db") as db:
            assert db.execute("SELECT count(*) FROM field_sample_cameras").fetchone() == (0,)
