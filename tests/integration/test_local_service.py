"""POST /classify: the active model as a local service, with a real HTTP client, hot swaps and saturation."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier
from edge_runtime.line_config import LocalServiceConfig
from edge_runtime.local_service import LocalClassifyService
from edge_runtime.pipeline import ActiveModel
from edgefleet.testing import RunningDevice
from tests.media import frame, make_bundle
from tests.models import LABELS, slow_onnx_model, tiny_onnx_model


def post(
    port: int, body: bytes, path: str = "/classify"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "image/png"})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        connection.close()


def png(seed: int = 0) -> bytes:
    ok, encoded = cv2.imencode(".png", frame(seed))
    assert ok
    return encoded.tobytes()


@pytest.fixture
def bundles(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for version, seed in (("1.0.0", 7), ("2.0.0", 8)):
        paths[version] = tmp_path / f"{version}.efb"
        make_bundle(
            paths[version], tiny_onnx_model(scale=40.0, seed=seed), "onnx", version, softmax=True
        )
    return paths


@pytest.fixture
def service(bundles: dict[str, Path]) -> Iterator[LocalClassifyService]:
    model = ActiveModel(Classifier(read_bundle(bundles["1.0.0"])))
    running = LocalClassifyService(
        model,
        LocalServiceConfig(enabled=True, port=0, max_image_bytes=64 * 1024),
        device_id="box-1",
    )
    running.start()
    yield running
    running.stop()


def test_an_image_gets_the_prediction_record_of_the_active_bundle(
    service: LocalClassifyService,
) -> None:
    status, record, _ = post(service.port, png())
    assert status == 200
    assert record["device_id"] == "box-1" and record["frame_id"] == 1
    assert record["label"] in LABELS and 0 < record["confidence"] <= 1
    assert record["bundle_version"] == "1.0.0" and len(record["top_k"]) == 3
    assert record["latency_ms"] >= record["inference_ms"] > 0
    status, again, _ = post(service.port, png())
    assert status == 200 and again["frame_id"] == 2


def test_a_hot_swap_reaches_the_next_request(
    service: LocalClassifyService, bundles: dict[str, Path]
) -> None:
    assert post(service.port, png())[1]["bundle_version"] == "1.0.0"
    service.model.swap(Classifier(read_bundle(bundles["2.0.0"])))
    status, record, _ = post(service.port, png())
    assert status == 200 and record["bundle_version"] == "2.0.0"
    assert record["bundle_sha256"] == read_bundle(bundles["2.0.0"]).sha256


def test_bad_requests_get_clear_errors(service: LocalClassifyService) -> None:
    status, body, _ = post(service.port, b"not an image at all")
    assert status == 400 and "not a decodable" in body["error"]
    status, body, _ = post(service.port, b"\0" * (64 * 1024 + 1))
    assert status == 413 and "over the limit" in body["error"]
    status, body, _ = post(service.port, png(), path="/predict")
    assert status == 404
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    connection.request("GET", "/classify")
    response = connection.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "POST"
    connection.close()


def test_saturation_answers_503_with_retry_after(tmp_path: Path) -> None:
    slow = tmp_path / "slow.efb"
    make_bundle(slow, slow_onnx_model(), "onnx", softmax=True)
    model = ActiveModel(Classifier(read_bundle(slow)))
    service = LocalClassifyService(
        model, LocalServiceConfig(port=0, max_concurrency=1), device_id="box-1"
    )
    service.start()
    results: list[tuple[int, dict[str, str]]] = []
    start = threading.Barrier(6)

    def one() -> None:
        start.wait()
        status, _, headers = post(service.port, png())
        results.append((status, headers))

    try:
        threads = [threading.Thread(target=one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        service.stop()
    statuses = sorted(status for status, _ in results)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    assert all(h.get("Retry-After") == "1" for s, h in results if s == 503)
    assert service.refused_busy == statuses.count(503)


def test_no_model_yet_is_503(tmp_path: Path) -> None:
    service = LocalClassifyService(ActiveModel(), LocalServiceConfig(port=0), device_id="box-1")
    service.start()
    try:
        status, body, _ = post(service.port, png())
    finally:
        service.stop()
    assert status == 503 and body["error"] == "no active model yet"


def test_the_device_serves_classify_only_when_enabled(bundles: dict[str, Path]) -> None:
    base = {
        "device_id": "box-1",
        "bundle": bundles["1.0.0"],
        "source": {"type": "fake-camera", "fps": 10},
        "metrics": {"enabled": False},
    }
    off = RunningDevice(base)
    try:
        assert off.runtime.local_service is None
    finally:
        off.close()
    device = RunningDevice({**base, "local_service": {"enabled": True, "port": 0}})
    try:
        local = device.runtime.local_service
        assert local is not None
        device.wait_for(lambda: local.running)
        assert local.config.host == "127.0.0.1"  # loopback unless the config says otherwise
        status, record, _ = post(local.port, png())
        assert status == 200 and record["bundle_version"] == "1.0.0"
    finally:
        device.close()
