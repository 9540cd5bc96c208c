"""Both ``/metrics`` endpoints, scraped over real HTTP, read back and checked by ``promtool``.

A local fleet (the real fleet server and its HTTP API on the embedded broker)
with one real device classifying and serving its own status port.
``promtool check metrics`` (Prometheus's own linter, from Debian's
``prometheus`` package, which ``make test`` installs as root) refuses
abbreviated units (``_ms``), counters without ``_total`` and the other
departures from Prometheus naming conventions. The promtool checks skip only
when promtool is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgefleet.testing.device import RunningDevice, wait_for
from edgefleet.testing.fleet import LocalFleet
from fleet_server.metrics import CONTENT_TYPE
from fleet_server.statuses import RolloutStatus
from tests.media import make_bundle

pytestmark = [pytest.mark.broker]

PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = (
    "promtool is not installed: `make test` installs it as root (apt-get install prometheus)"
)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def promtool_problems(exposition: str) -> str | None:
    """What ``promtool check metrics`` says is wrong with ``exposition``; None when it passes."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return None if result.returncode == 0 else (result.stdout + result.stderr).strip()


def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """``(content type, body)`` of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.headers["Content-Type"], reply.read().decode("utf-8")


def samples(exposition: str) -> Samples:
    """``(sample name, sorted labels) -> value`` for every sample in ``exposition``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


@dataclass
class Site:
    """A fleet server's ``/metrics`` URL and one device's, the device classifying."""

    fleet: LocalFleet
    server_metrics: str
    device: RunningDevice
    device_metrics: str


@pytest.fixture
def site(tmp_path: Path, tflite_model: bytes, local_fleet: LocalFleet) -> Iterator[Site]:
    bundle = make_bundle(tmp_path / "tiny-1.0.0.efb", tflite_model)
    local_fleet.release("v1", tmp_path / "tiny-1.0.0.efb")
    local_fleet.provision("cam-1")
    local_fleet.provision("cam-2")  # provisioned, never seen
    local_fleet.start()
    base = local_fleet.serve_http(TOKEN)
    device = local_fleet.start_device("cam-1", bundle="v1", metrics={"enabled": True, "port": 0})
    status = device.runtime.status_server
    assert status is not None
    wait_for(lambda: status.running, 20, message="the device's status server did not start")
    device_metrics = f"{status.url}/metrics"

    def classified() -> bool:
        found = samples(scrape(device_metrics)[1])
        return found.get(("edgefleet_frames_total", ()), 0) >= 3

    wait_for(classified, 30, message="the device classified fewer than 3 frames")
    assert device.active_sha256() == bundle.sha256
    yield Site(local_fleet, f"{base}/metrics", device, device_metrics)


def test_promtool_refuses_the_old_names() -> None:
    """The check used here fails on what the device used to export."""
    if PROMTOOL is None:
        pytest.skip(NO_PROMTOOL)
    registry = CollectorRegistry()
    Histogram("edgefleet_stage_latency_ms", "Stage latency.", registry=registry).observe(4.2)
    problems = promtool_problems(generate_latest(registry).decode())
    assert problems is not None and "abbreviated units" in problems
    fixed = CollectorRegistry()
    Histogram("edgefleet_stage_latency_seconds", "Stage latency.", registry=fixed).observe(0.0042)
    Counter("edgefleet_frames_total", "Frames.", registry=fixed).inc()
    assert promtool_problems(generate_latest(fixed).decode()) is None


@needs_promtool
def test_both_expositions_pass_promtool(site: Site) -> None:
    content_type, device_exposition = scrape(site.device_metrics)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert promtool_problems(device_exposition) is None
    assert promtool_problems(scrape(site.server_metrics, AUTH)[1]) is None


def test_device_metrics_are_in_seconds(site: Site) -> None:
    found = samples(scrape(site.device_metrics)[1])
    invoke = (("stage", "invoke"),)
    count = found[("edgefleet_stage_latency_seconds_count", invoke)]
    assert count >= 3
    assert 0 < found[("edgefleet_stage_latency_seconds_sum", invoke)] / count < 1
    assert not [name for name, _ in found if name.endswith("_ms") or "_ms_" in name]


def test_fleet_server_metrics_report_the_fleet_behind_the_token(site: Site) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(site.server_metrics)
    assert refused.value.code == 401
    refused.value.close()

    def reported() -> bool:  # cam-1 is online and its state report came in
        found = samples(scrape(site.server_metrics, AUTH)[1])
        return (
            found[("edgefleet_server_devices", (("availability", "online"),))] == 1
            and found.get(("edgefleet_server_devices_in_phase", (("phase", "unreported"),))) == 1
        )

    site.fleet.wait_for(reported)
    content_type, exposition = scrape(site.server_metrics, AUTH)
    assert content_type == CONTENT_TYPE
    found = samples(exposition)
    assert found[("edgefleet_server_devices", (("availability", "unknown"),))] == 1  # cam-2
    assert found[("edgefleet_server_devices", (("availability", "offline"),))] == 0
    phases = {
        dict(labels)["phase"]: value
        for (name, labels), value in found.items()
        if name == "edgefleet_server_devices_in_phase"
    }
    assert phases == {"unreported": 1, site.device.agent.state.phase.value: 1}
    assert found[("edgefleet_server_bundles", ())] == 1
    assert found[("edgefleet_server_worker_up", (("worker", "fleet-server"),))] == 1
    assert found[("edgefleet_server_worker_restarts_total", (("worker", "fleet-server"),))] == 0
    assert ("process_resident_memory_bytes", ()) in found
    no_rollouts = {
        dict(labels)["status"]: value
        for (name, labels), value in found.items()
        if name == "edgefleet_server_rollouts"
    }
    assert no_rollouts == {status.value: 0 for status in RolloutStatus}  # every one, zeros too

    body = (
        b'{"bundle_sha256": "%s", "target": {"kind": "devices", "values": ["cam-1"]},'
        b' "waves": [{"percent": 100}]}' % site.fleet.bundles["v1"].sha256.encode()
    )
    request = urllib.request.Request(
        site.server_metrics.removesuffix("/metrics") + "/rollouts",
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 201
    found = samples(scrape(site.server_metrics, AUTH)[1])
    by_status = {
        dict(labels)["status"]: value
        for (name, labels), value in found.items()
        if name == "edgefleet_server_rollouts"
    }
    assert sum(by_status.values()) == 1
    assert by_status.keys() == no_rollouts.keys()
