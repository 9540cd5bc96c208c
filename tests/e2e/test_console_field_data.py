"""The console's field-data page, in a real browser (Debian's chromium, Playwright).

A real server on a real broker receives two well-formed samples over MQTT (as
a device's uploader publishes them). An operator sees them newest first with
their thumbnails, confirms one device's answer and corrects the other's
through the page: the registry holds both labels, by the operator's token,
and the audit trail has both PUTs. A viewer sees the buttons disabled with
the reason, and the server refuses the viewer's label anyway (403).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright import sync_api

from edgefleet.testing import wait_for
from edgefleet.testing.broker import LocalBroker
from edgefleet.testing.fleet import LocalFleet
from fleet_server.access import Role
from fleet_server.registry import Registry
from tests.e2e.test_console import WAIT_MS, log_in, require_chromium, shot
from tests.media import make_bundle
from tests.models import tiny_onnx_model

pytestmark = [pytest.mark.broker]

TOKEN = "console-field-token"


def _sample(
    device: str, camera: str | None, grey: int, label: str, bundle: str
) -> tuple[str, bytes]:
    """One sample as a device's uploader publishes it: header length, JSON header, JPEG."""
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), grey, np.uint8))
    assert ok
    image = jpeg.tobytes()
    sha = hashlib.sha256(image).hexdigest()
    header = {
        "protocol": 1,
        "device_id": device,
        "sha256": sha,
        "image_format": "jpeg",
        "captured_at": time.time(),
        "reason": "low-confidence",
        "label": label,
        "confidence": 0.31,
        "top_k": [{"label": label, "score": 0.31}, {"label": "paper", "score": 0.2}],
        "bundle_sha256": bundle,
        "bundle_name": "tiny-classifier",
        "bundle_version": "1.0.0",
    }
    if camera is not None:
        header["camera_id"] = camera
    head = json.dumps(header).encode()
    return sha, struct.pack(">I", len(head)) + head + image


def _publish(
    fleet: LocalFleet,
    registry: Registry,
    device: str,
    *,
    camera: str | None = None,
    grey: int,
    label: str,
    bundle: str,
) -> str:
    """Publish one sample as the device's uploader does and wait until the server stored it."""
    assert fleet.client is not None
    sha, payload = _sample(device, camera, grey, label, bundle)
    fleet.client.publish(f"edgefleet/devices/{device}/field-data/samples", payload, qos=1)
    wait_for(lambda: sha in {s.sha256 for s in registry.field_samples()}, 30)
    return sha


def _put_label(url: str, secret: str, sha: str, label: str) -> int:
    request = urllib.request.Request(
        f"{url}/field-data/samples/{sha}/label",
        data=json.dumps({"label": label}).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_an_operator_confirms_and_corrects_samples_and_a_viewer_cannot(
    tmp_path: Path, mqtt_broker: LocalBroker
) -> None:
    chromium = require_chromium()
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", True)
    with LocalFleet(tmp_path / "fleet", mqtt_broker.port) as fleet:
        bundle = fleet.release("v1", tmp_path / "v1.efb")
        fleet.provision("cam-a", tags=["line-1"])
        fleet.provision("cam-b", tags=["line-1"])
        fleet.start()
        url = fleet.serve_http(TOKEN)
        registry = fleet.server.registry if fleet.server is not None else None
        assert registry is not None and fleet.client is not None
        _, operator = registry.create_token("alice", Role.OPERATOR, created_by="test")
        _, viewer = registry.create_token("carol", Role.VIEWER, created_by="test")

        first = _publish(
            fleet, registry, "cam-a", camera="belt-1", grey=60, label="glass", bundle=bundle.sha256
        )
        second = _publish(fleet, registry, "cam-b", grey=200, label="metal", bundle=bundle.sha256)

        errors: list[str] = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                log_in(page, url, operator)
                page.get_by_role("link", name="Field data").click()
                page.get_by_role("heading", name="Field data", exact=True).wait_for(timeout=WAIT_MS)
                rows = page.locator("table.samples tbody tr")
                rows.nth(1).wait_for(timeout=WAIT_MS)
                # newest first: the second sample on top, with its device, camera and answer
                assert rows.nth(0).get_attribute("data-sample") == second
                assert rows.nth(1).get_attribute("data-sample") == first
                row_a = page.locator(f'tr[data-sample="{first}"]')
                row_b = page.locator(f'tr[data-sample="{second}"]')
                text_a = row_a.inner_text()
                assert "cam-a" in text_a and "belt-1" in text_a and "glass (31.0%)" in text_a
                assert "low-confidence" in text_a and "tiny-classifier 1.0.0" in text_a
                assert "unlabelled" in text_a
                page.wait_for_function(
                    "() => [...document.querySelectorAll('img.thumb')]"
                    ".every((i) => i.src.startsWith('data:image/jpeg') && i.naturalWidth > 0)",
                    timeout=WAIT_MS,
                )
                # the choices are the bundle's labels
                options = row_b.locator("select option").all_inner_texts()
                assert options == ["cardboard", "glass", "metal", "paper", "plastic", "trash"]

                row_a.get_by_role("button", name="Confirm glass").click()
                row_a.locator(".label-status", has_text="confirmed").wait_for(timeout=WAIT_MS)
                row_b.locator("select").select_option("paper")
                row_b.get_by_role("button", name="Set label").click()
                row_b.locator(".label-status", has_text="corrected").wait_for(timeout=WAIT_MS)
                assert "paper" in row_b.locator(".label-status").inner_text()
                shot(page, tmp_path, "field-data")

                # the filters ask the API: none unlabelled now, one from cam-b
                page.select_option("#field-labelled", value="false")
                page.get_by_text("No sample matches").wait_for(timeout=WAIT_MS)
                page.select_option("#field-labelled", value="")
                page.fill("#field-device", "cam-b")
                page.press("#field-device", "Enter")
                page.wait_for_function(
                    "() => document.querySelectorAll('table.samples tbody tr').length === 1",
                    timeout=WAIT_MS,
                )
                assert rows.nth(0).get_attribute("data-sample") == second

                # a viewer: the same samples, every labelling control disabled with the reason
                seen = browser.new_page(viewport={"width": 1400, "height": 900})
                seen.on("pageerror", lambda exc: errors.append(str(exc)))
                log_in(seen, url, viewer)
                seen.goto(f"{url}/console#/field-data")
                seen.locator("table.samples tbody tr").nth(1).wait_for(timeout=WAIT_MS)
                why = "needs the operator role; token 'carol' has viewer"
                assert why in seen.locator("#label-why").inner_text()
                controls = seen.locator("table.samples button, table.samples select")
                assert controls.count() == 6
                for i in range(controls.count()):
                    assert controls.nth(i).is_disabled()
                    assert controls.nth(i).get_attribute("title") == why
            finally:
                browser.close()
        assert errors == []

        assert registry.field_sample(first).true_label == "glass"
        assert registry.field_sample(second).true_label == "paper"
        assert {registry.field_sample(s).labelled_by for s in (first, second)} == {"alice"}
        # the server refuses a viewer's label anyway
        assert _put_label(url, viewer, first, "trash") == 403
        assert registry.field_sample(first).true_label == "glass"
        wanted = {
            ("alice", f"/field-data/samples/{first}/label", 200),
            ("alice", f"/field-data/samples/{second}/label", 200),
            ("carol", f"/field-data/samples/{first}/label", 403),
        }

        def audited() -> set[tuple[str | None, str, int]]:
            return {
                (e.actor, e.path, e.status)
                for e in registry.audit(limit=100)
                if e.method == "PUT" and "/field-data/samples/" in e.path
            }

        wait_for(lambda: wanted <= audited(), 10)


def test_the_samples_page_by_page_newest_first(tmp_path: Path, mqtt_broker: LocalBroker) -> None:
    chromium = require_chromium()
    make_bundle(tmp_path / "v1.efb", tiny_onnx_model(), "onnx", "1.0.0", True)
    with LocalFleet(tmp_path / "fleet", mqtt_broker.port) as fleet:
        bundle = fleet.release("v1", tmp_path / "v1.efb")
        fleet.provision("cam-a", tags=["line-1"])
        fleet.start()
        url = fleet.serve_http(TOKEN)
        registry = fleet.server.registry if fleet.server is not None else None
        assert registry is not None and fleet.client is not None
        _, viewer = registry.create_token("carol", Role.VIEWER, created_by="test")
        published = []
        for grey in range(10, 130, 10):  # 12 samples, one after another (newest last)
            published.append(
                _publish(fleet, registry, "cam-a", grey=grey, label="glass", bundle=bundle.sha256)
            )
            time.sleep(0.01)  # distinct receive times
        newest_first = published[::-1]

        errors: list[str] = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                log_in(page, url, viewer)
                page.goto(f"{url}/console#/field-data")
                rows = page.locator("table.samples tbody tr")
                rows.nth(11).wait_for(timeout=WAIT_MS)  # 50 a page by default: all 12
                assert page.locator("#field-older").is_disabled()

                def shown() -> list[str | None]:
                    return [rows.nth(i).get_attribute("data-sample") for i in range(rows.count())]

                page.select_option("#field-per", value="10")
                page.wait_for_function(
                    "() => document.querySelectorAll('table.samples tbody tr').length === 10",
                    timeout=WAIT_MS,
                )
                assert shown() == newest_first[:10]
                assert page.locator("#field-range").inner_text() == "samples 1 to 10"
                assert page.locator("#field-newer").is_disabled()
                assert page.locator("#field-older").is_enabled()

                page.locator("#field-older").click()
                page.locator("#field-range", has_text="samples 11 to 12").wait_for(timeout=WAIT_MS)
                assert shown() == newest_first[10:]
                assert page.locator("#field-older").is_disabled()
                assert page.locator("#field-newer").is_enabled()
                shot(page, tmp_path, "field-data-older")

                page.locator("#field-newer").click()
                page.locator("#field-range", has_text="samples 1 to 10").wait_for(timeout=WAIT_MS)
                assert shown() == newest_first[:10]
            finally:
                browser.close()
        assert errors == []
