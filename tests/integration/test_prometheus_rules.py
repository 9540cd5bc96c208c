"""The example Prometheus files in ``devices/prometheus/``, as ``promtool`` judges them.

``promtool check rules`` accepts the alert rules, ``promtool test rules`` runs
their unit tests (``alerts_test.yml``: input series minute by minute, which
alerts fire when), and ``promtool check config`` accepts the example
``prometheus.yml``. A rule whose expression or threshold changes must change
its unit test. Skips only when promtool (Debian's ``prometheus`` package,
which ``make test`` installs as root) is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: `make test` installs it as root (apt-get install prometheus)",
)

EXAMPLES = Path(__file__).resolve().parents[2] / "devices" / "prometheus"


def promtool(*args: str, cwd: Path = EXAMPLES) -> str:
    """promtool's output; the test fails with it when promtool says no."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_promtool_accepts_the_alert_rules() -> None:
    rules = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "EdgefleetDeviceDown",
        "EdgefleetDevicesOffline",
        "EdgefleetFleetInvokeLatencyRegression",
        "EdgefleetRolloutStopped",
        "EdgefleetServerDown",
        "EdgefleetServerWorkerDown",
        "EdgefleetReportQueueBacklog",
    }
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", "alerts.yml")


def test_the_alert_rules_pass_their_unit_tests() -> None:
    tests = yaml.safe_load((EXAMPLES / "alerts_test.yml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    rules = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert tested == alerts, "every alert has a unit test in which it fires"
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: a latency alert that waits for 10x never fires in time."""
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    text = rules.read_text()
    assert text.count("> 1.5 * (stage:") == 1
    rules.write_text(text.replace("> 1.5 * (stage:", "> 10 * (stage:"))
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "EdgefleetFleetInvokeLatencyRegression" in result.stdout + result.stderr


def test_promtool_accepts_the_example_config(tmp_path: Path) -> None:
    """The example prometheus.yml, with its token file where this test can make one."""
    config = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    server, devices = config["scrape_configs"]
    assert server["authorization"]["credentials_file"] == "/etc/prometheus/edgefleet-token"
    assert (server["job_name"], devices["job_name"]) == ("edgefleet-server", "edgefleet-devices")
    token = tmp_path / "edgefleet-token"
    token.write_text("a-token")
    text = (EXAMPLES / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/edgefleet-token", str(token))
    )
    shutil.copy(EXAMPLES / "alerts.yml", tmp_path / "alerts.yml")
    output = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS: 8 rules found" in output
