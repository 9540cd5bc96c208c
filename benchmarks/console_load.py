"""The operator's console at fleet scale: page load time, and the server's CPU with it open vs not.

Usage (from the repository root; needs Mosquitto and Debian's chromium):

    .venv/bin/python benchmarks/console_load.py --devices 1000 --repeats 3 --window 20

What it runs, all on loopback, with the pieces of ``edgefleet bench fleet``:
Mosquitto, one ``edgefleet serve`` process (SQLite), DEVICES provisioned
devices as simulated devices (each its own MQTT connection and TUF client,
:mod:`edgefleet.fleet_sim`) that take a rollout of a 1 MB bundle first (so
every device has a version, and the rollout page holds DEVICES devices), and
a telemetry publisher that sends each device's snapshot every
``--telemetry-interval`` seconds (the simulated devices run no model and
send none themselves), so the overview's figures and its stamp move all
the time, as on a live fleet.

Then, side by side in one run:

* **page load**: a fresh browser context (cold cache) opens the console with
  a token already in sessionStorage; the time from navigation to the page
  showing its data (the fleet table's caption counting every device; the
  rollout page's waves), ``--loads`` times each, medians;
* **server CPU**: the ``edgefleet serve`` process's CPU time (user + system,
  from ``/proc``) over ``--window`` seconds with no console open and with
  ``--tabs`` consoles open on the fleet overview (polling every 3 s, with
  ETags), in A B B A order over ``--repeats``, medians of each and their
  ratio; the consoles' requests and how many were answered ``304``.

Prints one line per measurement, the medians and the ratio, and writes the
whole as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from edge_runtime.bundle import read_bundle
from edgefleet.fleet_sim import SimFleetProcesses
from edgefleet.rollout_benchmark.payload import synthetic_bundle
from edgefleet.rollout_benchmark.services import TOKEN, Api, broker, start_replicas, stop_replicas
from fleet_server.api.console_routes import FLEET_MIN_AGE_S
from fleet_server.process import connect_client
from fleet_server.trust import Expiry, Repository, init_keys

CHROMIUM = "/usr/bin/chromium"
TAG = "line1"
_TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def snapshot(sha256: str, frames: int, rng: random.Random) -> dict[str, Any]:
    """One device telemetry snapshot as a camera sends it (running totals, recent p95)."""
    labels = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]
    return {
        "protocol": 1,
        "bundle": sha256,
        "at": time.time(),
        "metrics": {
            "counters": {
                "edgefleet_frames_total": frames,
                "edgefleet_predictions_uncertain_total": frames // 20,
                "edgefleet_inference_errors_total": 0,
            },
            "gauges": {"edgefleet_predictions_per_second": 15.0},
            "histograms": {
                'edgefleet_stage_latency_seconds{stage="invoke"}': {
                    "p50": 0.004,
                    "p95": 0.006 + rng.random() * 0.002,
                    "p99": 0.01,
                }
            },
        },
        "quality": {
            "mean_confidence": 0.8 + rng.random() * 0.1,
            "class_counts": {label: frames // 6 for label in labels},
        },
    }


class TelemetryFeed:
    """Every device's telemetry, published on its behalf every ``interval_s`` (spread evenly)."""

    def __init__(self, host: str, port: int, devices: list[str], sha256: str, interval_s: float):
        self.client = connect_client(host, port, "console-load-telemetry")
        self.devices, self.sha256, self.interval_s = devices, sha256, interval_s
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(7)  # noqa: S311 - varied figures, not a secret
        frames = dict.fromkeys(self.devices, 0)
        gap = self.interval_s / len(self.devices)
        next_at = time.monotonic()
        while not self._stop.is_set():
            for device in self.devices:
                frames[device] += int(15 * self.interval_s)
                payload = json.dumps(snapshot(self.sha256, frames[device], rng))
                self.client.publish(f"edgefleet/devices/{device}/telemetry", payload, qos=0)
                self.sent += 1
                next_at += gap
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1.0)


def open_console(browser: Any, url: str, fragment: str, ready: str) -> tuple[Any, Any, float]:
    """A fresh context (cold cache) on ``url#fragment``; (context, page, seconds until
    ``ready`` is visible)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(f"sessionStorage.setItem('edgefleet.token', {json.dumps(TOKEN)})")
    page = context.new_page()
    started = time.perf_counter()
    page.goto(f"{url}/console#{fragment}")
    page.locator(ready).first.wait_for(timeout=120_000)
    return context, page, time.perf_counter() - started


def timed_get(url: str) -> float:
    """Seconds from sending a GET (with the token, gzip accepted) to the reply's last byte."""
    request = urllib.request.Request(  # noqa: S310 - our own server on loopback
        url, headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as reply:  # noqa: S310
        reply.read()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


_NO_GATE = dict.fromkeys(  # every check off: simulated devices run no model
    (
        "max_latency_ratio",
        "max_budget_ratio",
        "max_error_rate",
        "max_confidence_drop",
        "max_baseline_confidence_drop",
        "max_class_shift",
        "max_baseline_class_shift",
    ),
)


def page_loads(browser: Any, url: str, pages: dict[str, tuple[str, str]], n: int) -> dict[str, Any]:
    """Navigation-to-data seconds of each page, ``n`` cold loads each (interleaved), medians."""
    loads: dict[str, list[float]] = {name: [] for name in pages}
    for _ in range(n):
        for name, (fragment, ready) in pages.items():
            context, _page, seconds = open_console(browser, url, fragment, ready)
            loads[name].append(round(seconds, 3))
            context.close()
    for name, values in loads.items():
        print(f"load {name:8} {values} median {median(values):.3f} s", flush=True)
    return {name: {"runs": v, "median": median(v)} for name, v in loads.items()}


def server_replies(url: str, paths: dict[str, str], n: int) -> dict[str, Any]:
    """The server's part of a load: each page's JSON built afresh (no ETag sent; 5.5 s apart,
    past the page cache's minimum age, while telemetry moves the stamp), medians."""
    replies: dict[str, list[float]] = {}
    for name, path in paths.items():
        for _ in range(n):
            time.sleep(FLEET_MIN_AGE_S + 0.5)
            replies.setdefault(name, []).append(round(timed_get(url + path), 4))
        print(f"server reply {name:8} median {median(replies[name]):.3f} s", flush=True)
    return {name: {"runs": v, "median": median(v)} for name, v in replies.items()}


def cpu_windows(
    browser: Any, url: str, caption: str, *, pid: int, feed: TelemetryFeed, args: Any
) -> dict[str, Any]:
    """The server's CPU share over windows without and with consoles open, A B B A."""
    windows: dict[str, list[float]] = {"closed": [], "open": []}
    loads_seen: list[float] = []
    requests = {"total": 0, "not_modified": 0}

    def count(response: Any) -> None:
        if "/console/api/" in response.url:
            requests["total"] += 1
            requests["not_modified"] += response.status == 304

    for round_ in range(args.repeats):
        for condition in ["closed", "open"] if round_ % 2 == 0 else ["open", "closed"]:
            opened = []
            for _ in range(args.tabs if condition == "open" else 0):
                context, page, _ = open_console(browser, url, "/fleet", caption)
                page.on("response", count)
                opened.append(context)
            if opened:
                time.sleep(3)  # past the first load: steady polling
            sent, before = feed.sent, cpu_seconds(pid)
            time.sleep(args.window)
            share = 100 * (cpu_seconds(pid) - before) / args.window
            windows[condition].append(round(share, 2))
            load = os.getloadavg()[0]
            loads_seen.append(round(load, 1))
            print(
                f"cpu {condition:6} round {round_ + 1}: server {share:.1f}% of a core "
                f"({(feed.sent - sent) / args.window:.0f} telemetry snapshots/s; machine load "
                f"average {load:.1f})",
                flush=True,
            )
            for context in opened:
                context.close()
    closed, opened_ = median(windows["closed"]), median(windows["open"])
    ratio = round(opened_ / closed, 3) if closed > 0 else None
    print(
        f"server CPU: {closed:.1f}% of a core without a console, {opened_:.1f}% with "
        f"{args.tabs} open (median of {args.repeats}); ratio {ratio}"
    )
    print(
        f"console requests in the open windows: {requests['total']}, "
        f"{requests['not_modified']} answered 304"
    )
    return {
        "cpu_percent": {**windows, "closed_median": closed, "open_median": opened_},
        "cpu_ratio_open_over_closed": ratio,
        "console_requests": requests,
        "machine_load_average": loads_seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="A B B A rounds of CPU windows")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per CPU window")
    parser.add_argument("--loads", type=int, default=5, help="page loads per page")
    parser.add_argument("--tabs", type=int, default=1, help="consoles open in the 'open' windows")
    parser.add_argument("--telemetry-interval", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-console-load-"))
    report: dict[str, Any] = {"devices": args.devices, "window_s": args.window, "tabs": args.tabs}
    try:
        keys = init_keys(workdir / "keys")
        repo = Repository.create(workdir / "repo", keys, Expiry())
        bundle = synthetic_bundle(workdir / "bundle.efb", 1.0)
        repo.release(bundle, keys.role("targets"))
        sha256 = read_bundle(bundle).sha256
        with contextlib.ExitStack() as stack:
            host, port, _ = stack.enter_context(broker(None, workdir))
            replicas = start_replicas(
                count=1, workdir=workdir, broker_url=f"mqtt://{host}:{port}", db_url=None
            )
            stack.callback(stop_replicas, replicas)
            server, url = replicas[0], replicas[0].http_url
            api = Api([url])
            names = [f"sim-{i:04d}" for i in range(args.devices)]
            print(f"provisioning {args.devices} devices on {url}", flush=True)
            for name in names:
                api("POST", "/devices", {"id": name, "tags": [TAG]})
            api("POST", "/bundles/import", {"path": str(bundle.resolve())})
            store = workdir / "sim"
            store.mkdir()
            fleet = SimFleetProcesses(host, port, store, repo.root_bytes(), names, groups=[TAG])
            fleet.start(timeout=600)
            stack.callback(fleet.stop)
            print("rolling the bundle out (canary of 10, then everyone)", flush=True)
            wave = {"device_timeout_s": 600, "health_window_s": 0, "gate": _NO_GATE}
            rollout_id = api(
                "POST",
                "/rollouts",
                {
                    "bundle_sha256": sha256,
                    "target": {"kind": "tags", "values": [TAG]},
                    "waves": [{"count": 10, **wave}, {"percent": 100, **wave}],
                },
            )["id"]
            wait_until(
                "the rollout", lambda: api("GET", f"/rollouts/{rollout_id}")["finished"], 1800
            )
            report["rollout_status"] = api("GET", f"/rollouts/{rollout_id}")["status"]
            feed = TelemetryFeed(host, port, names, sha256, args.telemetry_interval)
            feed.start()
            stack.callback(feed.stop)
            time.sleep(max(10.0, args.telemetry_interval * 2))  # every device has telemetry

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                caption = f"table.devices caption:has-text('{args.devices} of {args.devices}')"
                pages = {
                    "fleet": ("/fleet", caption),
                    "rollout": (f"/rollouts/{rollout_id}", "article.wave >> nth=1"),
                    "device": ("/devices/sim-0001", "figure.chart svg"),
                }
                report["load_s"] = page_loads(browser, url, pages, args.loads)
                report["server_reply_s"] = server_replies(
                    url,
                    {
                        "fleet": "/console/api/fleet",
                        "rollout": f"/console/api/rollouts/{rollout_id}",
                        "device": "/console/api/devices/sim-0001",
                    },
                    args.loads,
                )
                report |= cpu_windows(
                    browser, url, caption, pid=server.process.pid, feed=feed, args=args
                )
                browser.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
