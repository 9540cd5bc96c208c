"""A real Prometheus scrapes the fleet server and a device while a rollout runs, then is asked.

Debian's ``prometheus`` package (``make test`` installs it as root) runs as a
subprocess with the example rules of ``devices/prometheus/alerts.yml``,
scraping every second: the fleet server's ``/metrics`` with the API's bearer
token from a ``credentials_file``, and a real device's ``/metrics`` on its
status port. The test reads back through Prometheus's HTTP API what the
fleet did: a device online, a bundle rolled out (chunks served, the quality
gate's verdict, the device on the new version), the device's latency
histogram through the example recording rule, and the example rollout alert
firing when a rollout is aborted. Skips only when the ``prometheus`` binary
is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_runtime.bundle import Bundle
from edgefleet.testing.broker import LOOPBACK, free_port
from edgefleet.testing.device import RunningDevice, wait_for
from edgefleet.testing.fleet import LocalFleet
from fleet_server.quality_gate import GateThresholds
from fleet_server.records import TargetSelector
from fleet_server.rollout_spec import WaveSpec
from tests.media import make_bundle

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus is not installed: `make test` installs it as root"
        " (apt-get install prometheus)",
    ),
]

ALERT_RULES = Path(__file__).resolve().parents[2] / "devices" / "prometheus" / "alerts.yml"
TOKEN = "prometheus-scrape-token"
GATE = GateThresholds(
    min_samples=20, min_shift_samples=10_000, max_latency_ratio=10.0, max_budget_ratio=None
)

Sample = tuple[dict[str, str], float]


@dataclass
class PrometheusServer:
    """A running ``prometheus`` on loopback: its base URL and its log."""

    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful answer of the HTTP API (``/api/v1/...``)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[Sample]:
        """An instant query: each series' labels and value."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def value(self, promql: str) -> float | None:
        """The one value ``promql`` gives now (None while it gives none)."""
        found = self.query(promql)
        assert len(found) <= 1, f"{promql} gave {len(found)} series: {found}"
        return found[0][1] if found else None

    def wait_until(self, promql: str, check: Callable[[float], bool], timeout: float = 60) -> float:
        """Poll ``promql`` until its one value passes ``check``; that value."""
        seen: list[float | None] = [None]

        def passes() -> bool:
            seen[0] = self.value(promql)
            return seen[0] is not None and check(seen[0])

        wait_for(
            passes,
            timeout,
            interval=0.5,
            message=lambda: f"{promql} is {seen[0]}; Prometheus log:\n{self.log_tail()}",
        )
        assert seen[0] is not None
        return seen[0]

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@dataclass
class Site:
    fleet: LocalFleet
    device: RunningDevice
    v1: Bundle
    v2: Bundle
    prometheus: PrometheusServer


def write_config(folder: Path, server: str, device: str) -> Path:
    """prometheus.yml: both targets every second, the token from a file, the example rules."""
    token = folder / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": [
            {
                "job_name": "edgefleet-server",
                "authorization": {"type": "Bearer", "credentials_file": str(token)},
                "static_configs": [{"targets": [server]}],
            },
            {"job_name": "edgefleet-devices", "static_configs": [{"targets": [device]}]},
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@pytest.fixture
def prometheus_at() -> Iterator[Callable[[Path], PrometheusServer]]:
    """Start ``prometheus`` on a config; stopped at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> PrometheusServer:
        assert PROMETHEUS is not None
        port = free_port()
        log = config.parent / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={config.parent / 'tsdb'}",
                    f"--web.listen-address={LOOPBACK}:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        server = PrometheusServer(f"http://{LOOPBACK}:{port}", log)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_for(ready, 30, interval=0.2, message=lambda: f"not ready:\n{server.log_tail()}")
        return server

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def site(
    tmp_path: Path,
    tflite_model: bytes,
    local_fleet: LocalFleet,
    prometheus_at: Callable[[Path], PrometheusServer],
) -> Site:
    """cam-1 classifying on v1 (v2 released too), cam-2 provisioned and never seen, both
    /metrics scraped by a real Prometheus whose targets are all up."""
    make_bundle(tmp_path / "tiny-1.0.0.efb", tflite_model)
    make_bundle(tmp_path / "tiny-2.0.0.efb", tflite_model, version="2.0.0")
    v1 = local_fleet.release("v1", tmp_path / "tiny-1.0.0.efb")
    v2 = local_fleet.release("v2", tmp_path / "tiny-2.0.0.efb")
    local_fleet.provision("cam-1", tags=["line1"])
    local_fleet.provision("cam-2", tags=["spare"])
    local_fleet.start()
    api = local_fleet.serve_http(TOKEN)
    device = local_fleet.start_device(
        "cam-1",
        bundle="v1",
        metrics={"enabled": True, "port": 0},
        mqtt={"telemetry_interval_s": 0.5},
        update={"probation_s": 1, "probation_min_predictions": 5, "smoke_latency_runs": 3},
    )
    status = device.runtime.status_server
    assert status is not None
    wait_for(lambda: status.running, 20, message="the device's status server did not start")
    local_fleet.wait_for(lambda: local_fleet.active()["cam-1"] == v1.sha256)

    folder = tmp_path / "prometheus"
    folder.mkdir()
    prometheus = prometheus_at(
        write_config(folder, api.removeprefix("http://"), status.url.removeprefix("http://"))
    )

    def targets_up() -> bool:
        targets = prometheus.api("targets", state="active")["activeTargets"]
        return len(targets) == 2 and all(t["health"] == "up" for t in targets)

    wait_for(
        targets_up,
        30,
        interval=0.5,
        message=lambda: f"targets: {prometheus.api('targets', state='active')['activeTargets']}",
    )
    return Site(local_fleet, device, v1, v2, prometheus)


def by(label: str, samples: list[Sample]) -> dict[str, float]:
    return {metric[label]: value for metric, value in samples}


def test_prometheus_scrapes_the_fleet_and_sees_a_rollout_through(site: Site) -> None:
    prom, fleet = site.prometheus, site.fleet
    assert by("job", prom.query("up")) == {"edgefleet-server": 1, "edgefleet-devices": 1}

    # the fleet as the server counts it: cam-1 online, cam-2 never seen, on v1
    prom.wait_until('edgefleet_server_devices{availability="online"}', lambda v: v == 1)
    assert by("availability", prom.query("edgefleet_server_devices")) == {
        "online": 1,
        "offline": 0,
        "unknown": 1,
    }
    prom.wait_until('edgefleet_server_devices_running{version="1.0.0"}', lambda v: v == 1)
    assert prom.value('edgefleet_server_devices_running{version="2.0.0"}') == 0
    assert prom.value('edgefleet_server_rollouts{status="completed"}') == 0
    assert prom.value("edgefleet_server_chunk_bytes_served_total") == 0
    assert by("worker", prom.query("edgefleet_server_worker_up")) == {
        "fleet-server": 1,
        "chunk-server": 1,
        "leader-lease": 1,
        "drift-monitor": 1,
        "field-data": 1,
        "shadow-reports": 1,
    }

    # v2 rolled out to cam-1: the chunks go out, the gate passes it, the device runs it
    assert fleet.server is not None
    fleet.server.create_rollout(
        site.v2.sha256,
        TargetSelector.tags(["line1"]),
        [WaveSpec(percent=100, device_timeout_s=60, health_window_s=1.0, gate=GATE)],
        previous_sha256=site.v1.sha256,
    )
    prom.wait_until('edgefleet_server_rollouts{status="completed"}', lambda v: v == 1, 90)
    prom.wait_until('edgefleet_server_devices_running{version="2.0.0"}', lambda v: v == 1)
    assert prom.value('edgefleet_server_devices_running{version="1.0.0"}') == 0
    assert by("outcome", prom.query("edgefleet_server_gate_verdicts_total")) == {
        "passed": 1,
        "failed": 0,
        "undecided": 0,
        "timed-out": 0,
    }
    served = prom.value("edgefleet_server_chunk_bytes_served_total")
    assert served is not None and served >= site.v2.size
    assert (prom.value("edgefleet_server_chunks_served_total") or 0) >= 1
    assert (prom.value('edgefleet_server_chunk_requests_total{result="accepted"}') or 0) >= 1
    prom.wait_until(
        'edgefleet_active_bundle_info{job="edgefleet-devices", version="2.0.0"}', lambda v: v == 1
    )

    # the server's own work: reports in, stored in batches, nothing dropped
    received = by("kind", prom.query("edgefleet_server_reports_received_total"))
    assert received.keys() == {"state", "events", "telemetry", "availability"}
    assert received["state"] >= 1 and received["telemetry"] >= 1 and received["events"] >= 1
    assert sum(by("kind", prom.query("edgefleet_server_reports_dropped_total")).values()) == 0
    assert (prom.value("edgefleet_server_report_batch_duration_seconds_count") or 0) >= 1
    assert prom.value("edgefleet_server_report_queue_depth") is not None

    # the device's own latency, through the example recording rule
    assert (
        prom.value('edgefleet_stage_latency_seconds_count{job="edgefleet-devices",stage="invoke"}')
        or 0
    ) >= 3
    p95 = prom.wait_until(
        'stage:edgefleet_stage_latency_seconds:p95_10m{stage="invoke"}', lambda v: 0 < v < 1
    )
    assert 0 < p95 < 1

    # every example rule evaluates cleanly on series that exist, and none fires
    scraped = set(prom.api("label/__name__/values"))
    exprs = [
        r["expr"] for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]
    ]
    named = {
        name
        for expr in exprs
        for name in re.findall(r"(?<![:\w])(edgefleet_[a-z_]+|up)(?![:\w])", expr)
    }
    assert len(named) >= 6
    assert named - scraped == set(), "the example rules name series nobody exports"
    groups = prom.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 8
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"] == []


def test_an_aborted_rollout_fires_the_example_alert(site: Site) -> None:
    prom, fleet = site.prometheus, site.fleet
    prom.wait_until('edgefleet_server_rollouts{status="aborted"}', lambda v: v == 0)
    assert fleet.server is not None
    rollout = fleet.server.create_rollout(
        site.v2.sha256,
        TargetSelector.tags(["line1"]),
        [WaveSpec(percent=100, device_timeout_s=600, health_window_s=600, gate=GATE)],
        previous_sha256=site.v1.sha256,
    )
    fleet.server.command(rollout, "abort", "stopped by the monitoring test")
    status = fleet.registry.rollout(rollout).status if fleet.registry else None
    assert status in {"aborted", "rolled-back"}
    prom.wait_until(f'edgefleet_server_rollouts{{status="{status}"}}', lambda v: v == 1)

    def firing() -> list[dict[str, Any]]:
        return [
            a
            for a in prom.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "EdgefleetRolloutStopped" and a["state"] == "firing"
        ]

    wait_for(firing, 30, interval=0.5, message=lambda: f"alerts: {prom.api('alerts')}")
    alerts = firing()
    assert len(alerts) == 1, prom.api("alerts")
    assert alerts[0]["labels"]["status"] == status
    assert alerts[0]["labels"]["job"] == "edgefleet-server"
    assert alerts[0]["annotations"]["summary"] == f"A rollout ended {status} in the last 15 minutes"
