"""Update targets (issue #5), measured on a real Mosquitto with the real agent, in one run.

    .venv/bin/python benchmarks/update_targets.py [--updates 5]

A device runs a 30 fps synthetic camera with bundle v0; the fleet assigns
v1, v2, ... (2.5 MB real ONNX classifiers, same weights, so probation always
passes; each a new bundle that has to be downloaded: released, signed,
chunked, verified, smoke-tested, swapped in, watched in probation). For each
update it measures:

1. assignment -> activation (download, verify, store, smoke test, swap), i.e.
   assignment -> committed without the probation window. Target: <= 5 s.
2. the largest gap between consecutive predictions from the assignment to the
   commit, against the steady-state interval. Target: <= 2x.

Prints medians (and each run), writes benchmarks/reports/update-targets.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.config import parse_config
from edge_runtime.device import DeviceRuntime
from edge_runtime.update import UpdatePhase
from fleet_server.chunk_server import ChunkServer
from fleet_server.publisher import publish_metadata
from fleet_server.trust import Expiry, Repository, init_keys
from tests.media import make_bundle
from tests.models import slow_onnx_model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--probation", type=float, default=2.0, help="probation window in seconds")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="edgefleet-update-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        (work / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen(
            [
                shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                "-c",
                str(work / "mosquitto.conf"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        keys = init_keys(work / "keys")
        repo = Repository.create(work / "repo", keys, Expiry())
        model = slow_onnx_model(rows=1, hidden=200, seed=1)
        # one new version per update (same weights, so probation passes): every update downloads
        bundles = {
            f"v{i}": make_bundle(work / f"v{i}.efb", model, "onnx", f"1.0.{i}", softmax=True)
            for i in range(args.updates + 1)
        }
        for name in bundles:
            repo.release(work / f"{name}.efb", keys.role("targets"))
        repo.snapshot_and_timestamp(keys.role("snapshot"), keys.role("timestamp"))
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-fleet"
        )
        client.connect("127.0.0.1", port)
        client.loop_start()
        server = ChunkServer(client, {b.sha256: work / f"{n}.efb" for n, b in bundles.items()})
        server.start()
        publish_metadata(client, repo)
        (work / "root.json").write_bytes(repo.root_bytes(1))
        out = work / "predictions.jsonl"
        config = parse_config(
            f"device_id: bench-1\nbundle: {work / 'v0.efb'}\nstore: {work / 'store'}\n"
            f"source:\n  type: synthetic\n  fps: 30\n  width: 640\n  height: 480\n"
            f"mqtt:\n  port: {port}\noutputs:\n  jsonl:\n    path: {out}\nmetrics:\n  enabled: false\n"
            f"update:\n  trusted_root: {work / 'root.json'}\n  probation_s: {args.probation}\n  probation_min_predictions: 10\n"
        )
        runtime = DeviceRuntime(config)
        agent = runtime.agent
        assert agent is not None
        stop = threading.Event()
        thread = threading.Thread(target=runtime.run, args=(stop,))
        thread.start()
        time.sleep(2.0)
        runs = []
        try:
            for index in range(args.updates):
                bundle = bundles[f"v{index + 1}"]
                started_wall = time.time()
                started = time.monotonic()
                repo.assign("devices", "bench-1", bundle.sha256, keys.role("assignments"))
                repo.snapshot_and_timestamp(keys.role("snapshot"), keys.role("timestamp"))
                publish_metadata(client, repo)
                activated = None
                while time.monotonic() - started < 60:
                    phase = agent.state.phase
                    if activated is None and phase == UpdatePhase.PROBATION:
                        activated = time.monotonic() - started
                    if (
                        phase == UpdatePhase.COMMITTED
                        and agent.state.active
                        and agent.state.active.sha256 == bundle.sha256
                    ):
                        break
                    if phase == UpdatePhase.ROLLED_BACK:
                        sys.exit(
                            f"update {index + 1} was rolled back: {agent.state.history[-1].reason}"
                        )
                    time.sleep(0.005)
                committed = time.monotonic() - started
                ended_wall = time.time()
                time.sleep(0.3)
                lines = [json.loads(line) for line in out.read_text().splitlines()]
                window = [
                    ln["captured_at"]
                    for ln in lines
                    if started_wall - 1 <= ln["captured_at"] <= ended_wall
                ]
                steady = [ln["captured_at"] for ln in lines if ln["captured_at"] < started_wall][
                    -60:
                ]
                gap = float(np.max(np.diff(window))) if len(window) > 1 else float("nan")
                interval = float(np.median(np.diff(steady)))
                runs.append(
                    {
                        "bundle_bytes": bundle.size,
                        "assign_to_activated_s": activated,
                        "assign_to_committed_s": committed,
                        "probation_s": args.probation,
                        "max_gap_ms": 1e3 * gap,
                        "steady_interval_ms": 1e3 * interval,
                        "gap_ratio": gap / interval,
                    }
                )
                print(
                    f"update {index + 1}: {bundle.size / 1e6:.2f} MB, assign->activated {activated:.2f} s, "
                    f"committed {committed:.2f} s (probation {args.probation:g} s), max gap {1e3 * gap:.0f} ms "
                    f"vs steady {1e3 * interval:.0f} ms ({gap / interval:.2f}x)"
                )
        finally:
            stop.set()
            thread.join(timeout=20)
            server.stop()
            client.loop_stop()
            broker.terminate()
    activated = float(np.median([r["assign_to_activated_s"] for r in runs]))
    ratio = float(np.max([r["gap_ratio"] for r in runs]))
    print(
        f"\nassignment -> committed without probation (median of {len(runs)}): {activated:.2f} s   target <= 5 s: {'met' if activated <= 5 else 'MISSED'}"
    )
    print(
        f"largest prediction gap during updates (worst of {len(runs)}): {ratio:.2f}x steady interval   target <= 2x: {'met' if ratio <= 2 else 'MISSED'}"
    )
    report = ROOT / "benchmarks" / "reports" / "update-targets.json"
    report.write_text(
        json.dumps(
            {"runs": runs, "median_assign_to_activated_s": activated, "worst_gap_ratio": ratio},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
