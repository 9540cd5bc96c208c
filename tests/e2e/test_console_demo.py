"""`edgefleet demo --fast --keep`: the demo prints the console's URL and a login token, leaves
the fleet running at the end, and the console answers with that token (what the demo did is
there to click through); Ctrl-C on the terminal then stops everything cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_demo_keep_leaves_the_fleet_running_with_its_console(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log = tmp_path / "demo.log"
    command = [
        sys.executable, "-m", "edgefleet", "demo", "--fast", "--keep",
        "--console-port", "0", "--workdir", str(workdir),
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "300"},
            start_new_session=True,
            preexec_fn=_default_sigint,  # noqa: PLW1509 - see tests/e2e/test_demo.py
        )
    try:
        deadline = time.monotonic() + 900
        while "the fleet keeps running" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo never reached its end"
            time.sleep(1)
        text = log.read_text()
        url = re.findall(r"operator's console: (http://127\.0\.0\.1:\d+/console)", text)[-1]
        token = re.findall(r"login token \(admin\): (eft_[A-Za-z0-9_-]+)", text)[-1]
        assert (workdir / "console-token").read_text().strip() == token
        assert (workdir / "console-token").stat().st_mode & 0o077 == 0
        base = url.removesuffix("/console")
        with urllib.request.urlopen(url, timeout=30) as page:  # the page needs no token
            assert b"edgefleet console" in page.read()
        fleet = _get(f"{base}/console/api/fleet", token)
        cameras = {d["id"]: d for d in fleet["devices"]}
        assert sorted(cameras) == [f"cam-{i}" for i in range(1, 6)]
        assert all(d["availability"] == "online" for d in cameras.values())
        assert fleet["by_version"] == {"2.0.0": 5}
        rollouts = _get(f"{base}/rollouts", token)
        assert [r["status"] for r in rollouts] == ["completed", "completed", "rolled-back"]
        bad = _get(f"{base}/console/api/rollouts/3", token)
        canary = bad["waves"][0]["devices"][0]
        assert canary["status"] == "failed" and "smoke test failed" in canary["reason"]
        time.sleep(3)  # still running: the cameras keep serving
        assert process.poll() is None
        assert _get(f"{base}/console/api/me", token) == {"name": "bootstrap", "role": "admin"}
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert process.returncode == 0, text[-3000:]
    assert "demo failed" not in text
    assert "stopping the cameras, the server and the broker" in text
    assert (workdir / "report.html").is_file() and (workdir / "summary.json").is_file()
