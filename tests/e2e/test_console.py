"""The operator's console in a real browser (Debian's chromium driven by Playwright).

A real fleet server with its HTTP API (and the console it serves) on the
embedded broker, three real device agents on fake cameras running v1, and a
provisioned device that never connects. Through the console only, an
operator logs in, creates a staged rollout of v2 (canary, 40%, the rest)
and watches it complete; then a bad v3 (golden vectors that do not match
its model), whose canary's smoke test refuses it: the rollout page shows
the rollback with the device's reason, and so does the canary's device page.
A viewer sees the abort button disabled with the reason, and the server
refuses the viewer's abort anyway (403). Each page is saved as a
screenshot in the test's folder (``console-*.png``); ``EDGEFLEET_CONSOLE_SHOTS=DIR``
also copies them there (how ``docs/console/`` is refreshed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api

from edgefleet.testing.fleet import LocalFleet
from fleet_server.access import Role
from fleet_server.records import TargetSelector
from fleet_server.rollout_spec import WaveSpec
from tests.media import make_bad_golden_bundle, make_bundle
from tests.models import tiny_onnx_model
from tests.services import service_missing

pytestmark = [pytest.mark.broker]

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "console-bootstrap-token"
CAMERAS = ("cam-01", "cam-02", "cam-03")
WAIT_MS = 90_000


def require_chromium() -> Path:
    """Debian's chromium, which Playwright drives (never a browser of its own); like the broker
    and the database, a missing browser fails the test: a run never passes by skipping it."""
    if not CHROMIUM.exists():
        service_missing(
            "the console's browser tests need Debian's chromium at /usr/bin/chromium "
            "(make test installs it with apt-get when run as root)"
        )
    return CHROMIUM


@dataclass
class ConsoleFleet:
    fleet: LocalFleet
    url: str
    sha: dict[str, str]
    operator: str
    viewer: str
    shots: Path


@pytest.fixture
def console_fleet(tmp_path: Path, amqtt_broker: int) -> Iterator[ConsoleFleet]:
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", softmax=True)
    make_bundle(tmp_path / "v2.efb", tiny_onnx_model(seed=8), "onnx", "2.0.0", softmax=True)
    make_bad_golden_bundle(tmp_path / "v3.efb", tiny_onnx_model(seed=8), "onnx", "3.0.0")
    with LocalFleet(tmp_path / "fleet", amqtt_broker, tick_s=0.2, client_id="console") as fleet:
        for name in ("v1", "v2", "v3"):
            fleet.release(name, tmp_path / f"{name}.efb")
        for name in CAMERAS:
            fleet.provision(name, tags=("line1",))
        fleet.provision("cam-spare", tags=("spare",))  # never connects
        fleet.start()
        for name in CAMERAS:
            fleet.start_device(
                name,
                bundle="v1",
                mqtt={"telemetry_interval_s": 0.5},
                update={"probation_s": 1, "probation_min_predictions": 5, "smoke_latency_runs": 3},
            )
        v1 = fleet.bundles["v1"].sha256
        fleet.wait_for(lambda: {fleet.active().get(c) for c in CAMERAS} == {v1}, timeout=60)
        assert fleet.registry is not None
        _, operator = fleet.registry.create_token("alice", Role.OPERATOR, created_by="test")
        _, viewer = fleet.registry.create_token("carol", Role.VIEWER, created_by="test")
        url = fleet.serve_http(TOKEN)
        shots = tmp_path / "screenshots"
        shots.mkdir()
        yield ConsoleFleet(
            fleet, url, {n: b.sha256 for n, b in fleet.bundles.items()}, operator, viewer, shots
        )
        wanted = os.environ.get("EDGEFLEET_CONSOLE_SHOTS")
        if wanted:
            Path(wanted).mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy(shot, Path(wanted) / shot.name)


def log_in(page: Any, url: str, secret: str) -> None:
    page.goto(url + "/")  # redirected to /console
    page.get_by_label("API token").fill(secret)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Fleet", exact=True).wait_for(timeout=WAIT_MS)


def shot(page: Any, where: Path, name: str) -> None:
    page.screenshot(path=str(where / f"console-{name}.png"), full_page=True)


def create_rollout_in_form(page: Any, bundle: str, previous: str) -> None:
    """Fill the console's form: canary, 40%, the rest; short windows; only the error-rate gate."""
    page.get_by_role("link", name="Rollouts").click()
    page.get_by_role("heading", name="New rollout").wait_for()
    page.select_option("#new-bundle", value=bundle)
    page.select_option("#new-previous", value=previous)
    page.select_option("#new-target-kind", value="tags")
    page.fill("#new-target", "line1")
    for wave in range(3):
        page.fill(f"#wave-{wave}-timeout", "60")
        page.fill(f"#wave-{wave}-health", "0.5")
        page.fill(f"#wave-{wave}-gate-timeout", "30")
    for name in (
        "max_latency_ratio",
        "max_budget_ratio",
        "max_confidence_drop",
        "max_baseline_confidence_drop",
        "max_class_shift",
        "max_baseline_class_shift",
    ):
        page.fill(f"#gate-{name}", "")
    page.fill("#gate-min_samples", "20")
    page.get_by_role("button", name="Create rollout").click()
    page.wait_for_url("**/console#/rollouts/*", timeout=WAIT_MS)


def rollout_status(page: Any) -> str:
    return str(page.locator("p.big .badge").first.inner_text(timeout=WAIT_MS))


def wait_status(page: Any, wanted: str) -> None:
    page.locator("p.big .badge", has_text=wanted).first.wait_for(timeout=WAIT_MS)


@pytest.mark.slow
def test_an_operator_rolls_out_through_the_console_and_a_viewer_cannot_abort(
    console_fleet: ConsoleFleet,
) -> None:
    chromium = require_chromium()
    c = console_fleet
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(c.url + "/")
            page.get_by_label("API token").wait_for()
            shot(page, c.shots, "login")
            log_in(page, c.url, c.operator)
            assert page.locator("#who").inner_text() == "alice (operator)"
            rows = page.locator("table.devices tbody tr")
            rows.filter(has_text="cam-03").wait_for(timeout=WAIT_MS)
            assert rows.count() == 4  # three cameras and the spare that never connected
            page.get_by_role("button", name="1.0.0 3 devices").wait_for(timeout=WAIT_MS)
            page.select_option("#filter-tag", value="spare")
            assert rows.count() == 1 and "unknown" in rows.first.inner_text()
            page.select_option("#filter-tag", value="")
            shot(page, c.shots, "fleet")
            # keyboard only: Tab to a device's link, Enter opens its page
            for _ in range(40):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.textContent") == "cam-02":
                    break
            page.keyboard.press("Enter")
            page.get_by_role("heading", name="Device cam-02").wait_for()
            page.go_back()
            page.get_by_role("heading", name="Fleet", exact=True).wait_for()

            # v2 in three waves, created in the console's form, watched to completion
            create_rollout_in_form(page, c.sha["v2"], c.sha["v1"])
            wait_status(page, "completed")
            waves = page.locator("article.wave")
            assert waves.count() == 3
            heads = [waves.nth(i).locator("h3").inner_text() for i in range(3)]
            # 40% of three cameras is two: the last wave has no device left
            assert heads == ["Wave 1 (canary) passed", "Wave 2 passed", "Wave 3 skipped"], heads
            verdict = waves.first.locator("table.checks")
            assert "Inference error rate" in verdict.inner_text()
            page.locator("ol.timeline li", has_text="completed").first.wait_for()
            shot(page, c.shots, "rollout-completed")

            # the bad v3: the canary refuses it and the rollout rolls back, with the reason
            create_rollout_in_form(page, c.sha["v3"], c.sha["v2"])
            wait_status(page, "rolled-back")
            head = page.locator("p.big").inner_text()
            assert "wave 1: 1 of 1 devices failed" in head, head
            canary = page.locator("article.wave").first
            cell = canary.locator("ul.cells li").first
            cell.filter(has_text="golden vector").wait_for(timeout=WAIT_MS)
            assert "failed" in cell.inner_text()
            shot(page, c.shots, "rollout-rolled-back")
            canary_id = cell.locator("a").inner_text()

            # the canary's device page: the refusal's reason among its update events
            cell.locator("a").click()
            page.get_by_role("heading", name=f"Device {canary_id}").wait_for()
            events = page.locator("ol.events")
            events.locator("li", has_text="golden vector").first.wait_for(timeout=WAIT_MS)
            assert "2.0.0" in page.locator("section", has_text="Versions it ran").inner_text()
            page.locator("figure.chart svg").first.wait_for()
            shot(page, c.shots, "device")
            # pin it to v1 and unpin it again: the registry keeps both, the page says so
            page.select_option("#pin-bundle", value=c.sha["v1"])
            page.get_by_role("button", name="Pin", exact=True).click()
            pinned = page.locator("dl.facts dt", has_text="Pinned").locator(
                "xpath=following-sibling::dd[1]"
            )
            pinned.filter(has_text="tiny-classifier 1.0.0").wait_for(timeout=WAIT_MS)
            assert c.fleet.registry is not None
            assert c.fleet.registry.device(canary_id).pinned_bundle == c.sha["v1"]
            page.get_by_role("button", name="Unpin").click()
            pinned.filter(has_text="no").wait_for(timeout=WAIT_MS)
            assert c.fleet.registry.device(canary_id).pinned_bundle is None

            # the bundles: v2's release signature checked against the root
            page.get_by_role("link", name="Bundles").click()
            page.get_by_role("link", name="tiny-classifier 2.0.0").click()
            page.get_by_role("heading", name="Release signature").wait_for()
            assert "signed by the release key" in page.locator("article").inner_text()
            shot(page, c.shots, "bundles")

            # a rollout that stays live (its only device never connects), for the viewer
            assert c.fleet.server is not None
            live = c.fleet.server.create_rollout(
                c.sha["v2"],
                TargetSelector.tags(["spare"]),
                [WaveSpec(percent=100, device_timeout_s=3600)],
                previous_sha256=c.sha["v1"],
            )
            viewer = browser.new_page(viewport={"width": 1280, "height": 900})
            viewer.on("pageerror", lambda exc: errors.append(str(exc)))
            log_in(viewer, c.url, c.viewer)
            viewer.goto(f"{c.url}/console#/rollouts/{live}")
            wait_status(viewer, "running")
            abort = viewer.get_by_role("button", name="Abort and roll back")
            assert abort.is_disabled()
            assert (
                "needs the operator role; token 'carol' has viewer"
                in viewer.locator("#cmd-why").inner_text()
            )
            shot(viewer, c.shots, "rollout-viewer")
            # the server refuses the viewer's abort anyway, whatever the page allows
            refused = viewer.evaluate(
                """async ([path, secret]) => {
                    const r = await fetch(path, {method: "POST",
                        headers: {Authorization: `Bearer ${secret}`}});
                    return [r.status, (await r.json()).error];
                }""",
                [f"/rollouts/{live}/abort", c.viewer],
            )
            assert refused == [
                403,
                f"POST /rollouts/{live}/abort needs the operator role; token 'carol' has viewer",
            ]
            assert c.fleet.registry is not None
            assert c.fleet.registry.rollout(live).status.value == "running"

            # the operator can: the same button on the operator's page aborts it
            page.goto(f"{c.url}/console#/rollouts/{live}")
            wait_status(page, "running")
            page.fill("#abort-reason", "the spare camera is out for repair")
            page.get_by_role("button", name="Abort and roll back").click()
            page.locator("p.big", has_text="the spare camera is out for repair").wait_for(
                timeout=WAIT_MS
            )
            assert rollout_status(page) in {"aborted", "rolled-back"}
        finally:
            browser.close()
    assert errors == [], errors
