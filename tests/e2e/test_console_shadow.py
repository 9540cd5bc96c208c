"""A shadow wave on the console's rollout page, in a real browser (Debian's chromium, Playwright).

Two real device agents on Mosquitto run v1; a rollout of a candidate that
sorts their frames differently begins with a shadow wave on both and is
stopped there. The rollout page shows the wave as a shadow wave with what
each camera reported (frames compared, agreement, confidence, class shift,
time a frame) and the gate's checks in words, and the reason with the figures.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from playwright import sync_api

from edgefleet.testing.broker import LocalBroker
from edgefleet.testing.fleet import LocalFleet
from tests.e2e.test_console import WAIT_MS, log_in, require_chromium, shot
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]

TOKEN = "console-shadow-token"
CAMERAS = ("cam-1", "cam-2")


def test_the_rollout_page_shows_a_shadow_wave_and_its_figures(
    tmp_path: Path, mosquitto_broker: LocalBroker
) -> None:
    chromium = require_chromium()
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True)
    make_bundle(tmp_path / "v3.efb", tiny_onnx_model(scale=40.0, seed=8), "onnx", "3.0.0", True)
    with LocalFleet(tmp_path / "fleet", mosquitto_broker.port) as fleet:
        fleet.release("v1", tmp_path / "v1.efb")
        fleet.release("v3", tmp_path / "v3.efb")
        for name in CAMERAS:
            fleet.provision(name, tags=["line-1"])
        fleet.start()
        url = fleet.serve_http(TOKEN)
        for name in CAMERAS:
            fleet.start_device(
                name,
                bundle="v1",
                source={"type": "synthetic", "fps": 30, "width": 64, "height": 48},
            )
        v1, v3 = fleet.bundles["v1"].sha256, fleet.bundles["v3"].sha256
        fleet.wait_for(lambda: {fleet.active().get(c) for c in CAMERAS} == {v1}, timeout=60)
        stage = {"every_nth": 2, "cpu_budget": 0.5, "window_s": 1.0}
        stage |= {"min_duration_s": 2.0, "min_frames": 30, "timeout_s": 60.0}
        body = {
            "bundle_sha256": v3,
            "previous_sha256": v1,
            "target": {"kind": "tags", "values": ["line-1"]},
            "waves": [{"devices": list(CAMERAS), "shadow": stage}, {"percent": 100}],
        }
        request = urllib.request.Request(
            f"{url}/rollouts",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            rollout = json.loads(reply.read())["id"]

        errors: list[str] = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                log_in(page, url, TOKEN)
                page.goto(f"{url}/console#/rollouts/{rollout}")
                page.locator("p.big .badge", has_text="aborted").first.wait_for(timeout=WAIT_MS)
                wave = page.locator("article.wave").first
                assert wave.locator("h3").inner_text() == "Wave 1 (shadow) failed"
                assert "never reach the sorter" in wave.inner_text()
                figures = wave.locator("table[data-key=shadow-figures]")
                figures.locator("tbody tr", has_text="all").wait_for(timeout=WAIT_MS)
                rows = [figures.locator("tbody tr").nth(i).inner_text() for i in range(3)]
                assert [r.split()[0] for r in rows] == ["cam-1", "cam-2", "all"], rows
                checks = wave.locator("table.checks").nth(1).inner_text()
                assert "Agreement with the active model" in checks
                assert "wave 1 (shadow) failed: agreement" in page.locator("p.big").inner_text()
                heads = page.locator("article.wave h3").all_inner_texts()
                assert heads[1].startswith("Wave 2 (canary)"), heads
                page.locator("ol.timeline li", has_text="shadow started").first.wait_for()
                shot(page, tmp_path, "rollout-shadow")
            finally:
                browser.close()
        assert errors == []
