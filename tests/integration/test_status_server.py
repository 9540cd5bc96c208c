"""The status endpoint over real HTTP on loopback: /metrics, /healthz, /stats, errors."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.errors import RuntimeDeviceError, StatusServerError
from edge_runtime.health import HealthState
from edge_runtime.http_status import PROMETHEUS_CONTENT_TYPE, StatusServer
from edge_runtime.metrics import RuntimeMetrics
from edgefleet.testing import FakeClock


@dataclass
class Setup:
    server: StatusServer
    metrics: RuntimeMetrics
    health: HealthState
    clock: FakeClock


@pytest.fixture
def setup() -> Iterator[Setup]:
    clock = FakeClock(500.0)
    metrics = RuntimeMetrics(clock=clock)
    health = HealthState(max_frame_age_s=5.0, startup_grace_s=10.0, clock=clock)
    server = StatusServer(
        metrics.registry, health, extra_info=lambda: {"device_id": "cam-7", "backend": "litert"}
    )
    server.start()
    try:
        yield Setup(server, metrics, health, clock)
    finally:
        server.stop()


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def test_metrics_are_scraped_over_http(setup: Setup) -> None:
    setup.metrics.observe_stages(0.1, 1.2, 4.2, 0.3, 6.0)
    setup.metrics.record_prediction(setup.clock.now, uncertain=False, staleness_ms=8.0)
    setup.metrics.set_active_bundle("tiny", "1.0.0", "cd" * 32)
    assert setup.server.url == f"http://127.0.0.1:{setup.server.port}"
    status, headers, body = get(f"{setup.server.url}/metrics")
    assert status == 200
    assert headers["Content-Type"] == PROMETHEUS_CONTENT_TYPE
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }
    invoke_bucket = (
        "edgefleet_stage_latency_seconds_bucket",
        (("le", "0.005"), ("stage", "invoke")),
    )
    assert samples[invoke_bucket] == 1  # 4.2 ms
    assert samples[("edgefleet_frames_total", ())] == 1
    bundle = (("name", "tiny"), ("sha256", "cd" * 32), ("version", "1.0.0"))
    assert samples[("edgefleet_active_bundle_info", bundle)] == 1


def test_healthz_turns_503_when_frames_stop(setup: Setup) -> None:
    setup.health.frame_received()
    status, headers, body = get(f"{setup.server.url}/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    setup.clock.now += 12.0
    status, _, body = get(f"{setup.server.url}/healthz")
    assert status == 503
    payload = json.loads(body)
    assert payload["status"] == "unhealthy"
    assert payload["reasons"] == ["no frame for 12.0 s (limit 5 s)"]
    setup.health.frame_received()
    assert get(f"{setup.server.url}/healthz")[0] == 200


def test_stats_combine_metrics_health_and_extra_info(setup: Setup) -> None:
    setup.metrics.observe_stages(0.1, 1.0, 3.0, 0.2, 5.0)
    status, _, body = get(f"{setup.server.url}/stats")
    assert status == 200
    stats: dict[str, Any] = json.loads(body)
    assert stats["info"] == {"device_id": "cam-7", "backend": "litert"}
    assert stats["health"]["status"] == "ok"
    invoke = stats["metrics"]["histograms"]['edgefleet_stage_latency_seconds{stage="invoke"}']
    assert invoke["p50"] == pytest.approx(0.003)
    assert stats["metrics"]["gauges"]["edgefleet_last_frame_age_seconds"] is None


def test_unknown_paths_and_other_methods(setup: Setup) -> None:
    assert get(f"{setup.server.url}/nope")[0] == 404
    assert get(f"{setup.server.url}/metrics/")[0] == 404
    assert get(f"{setup.server.url}/metrics?x=1")[0] == 200
    status, headers, _ = get(f"{setup.server.url}/metrics", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET"
    assert get(f"{setup.server.url}/healthz", method="DELETE")[0] == 405
    status, _, body = get(f"{setup.server.url}/metrics", method="HEAD")
    assert (status, body) == (405, b"")


def test_a_failing_extra_info_gives_500_and_the_server_keeps_serving(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    setup.server.extra_info = broken
    assert get(f"{setup.server.url}/stats")[0] == 500
    assert "status endpoint /stats failed" in caplog.text
    assert get(f"{setup.server.url}/metrics")[0] == 200


def test_requests_do_not_write_to_stderr(setup: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    get(f"{setup.server.url}/metrics")
    get(f"{setup.server.url}/nope")
    assert capfd.readouterr().err == ""


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = StatusServer(RuntimeMetrics().registry, HealthState(), port=port)
        with pytest.raises(StatusServerError, match=f"cannot serve status on 127.0.0.1:{port}"):
            server.start()
        assert not server.running
    assert issubclass(StatusServerError, RuntimeDeviceError)


def test_lifecycle_start_stop_and_reuse_of_the_port() -> None:
    metrics, health = RuntimeMetrics(), HealthState()
    server = StatusServer(metrics.registry, health)
    with pytest.raises(StatusServerError, match="not running"):
        _ = server.port
    with server:
        port = server.port
        with pytest.raises(StatusServerError, match="already running"):
            server.start()
        with pytest.raises(StatusServerError, match="cannot serve"):
            StatusServer(metrics.registry, health, port=port).start()
    server.stop()  # a second stop does nothing
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with StatusServer(metrics.registry, health, port=port) as again:
        assert get(f"{again.url}/healthz")[0] == 200
