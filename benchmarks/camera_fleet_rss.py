"""Memory of a camera that is its own fleet device: in the box's process, or a process of its own (issue #21).

Real ``edgefleet device run`` processes (fake cameras at 30 fps, the tests'
tiny ONNX classifier, Mosquitto on loopback, each with its update agent,
telemetry every second, MQTT and JSON lines outputs), started side by side:

- ``one process, two fleet identities``: cameras belt-1 (the box's identity)
  and belt-2 (``fleet: {device_id: ...}``: its own MQTT link, update agent,
  store, interpreter and telemetry);
- ``two processes``: belt-1 and belt-2 each as a single-camera device with
  its own device id (the workaround before ``fleet:``);
- for reference, ``one process, one identity``: both cameras sharing the
  box's bundle.

Resident set (VmRSS) after ``--settle`` seconds, per process; each variant
is started ``--runs`` times (ABBA order of the variants) and the median is
reported. Every device must have made predictions under its own id, and the
camera device must report its own state (checked in its store), else the run
fails.

    .venv/bin/python benchmarks/camera_fleet_rss.py
    .venv/bin/python benchmarks/camera_fleet_rss.py --runs 4 --settle 12

Writes ``benchmarks/reports/camera-fleet-rss/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CAMERA = {"type": "fake-camera", "fps": 30, "colors": [[40, 200, 120], [90, 90, 200]]}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def device_config(
    folder: Path, device_id: str, cameras: list[dict[str, Any]], common: dict[str, Any]
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "store": str(folder / "store"),
        "cameras": cameras,
        "outputs": {"jsonl": {"path": str(folder / "{camera}.jsonl")}, "mqtt": {}},
        **common,
    }


def start(folder: Path, config: dict[str, Any], seconds: float) -> subprocess.Popen[bytes]:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    log = (folder / "device.log").open("wb")
    argv = ["device", "run", "--config", str(path), "--duration", str(seconds)]
    code = "import sys; from edgefleet.cli import main; sys.exit(main())"
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=log, stderr=subprocess.STDOUT, cwd=folder
    )


def variant(name: str, work: Path, common: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, config) of each process of a variant."""
    if name == "one-process-two-identities":
        cameras = [
            {"id": "belt-1", "source": CAMERA},
            {"id": "belt-2", "source": CAMERA, "fleet": {"device_id": "belt-2-device"}},
        ]
        return [(work, device_config(work, "box", cameras, common))]
    if name == "two-processes":
        return [
            (
                work / camera,
                device_config(
                    work / camera, f"{camera}-device", [{"id": camera, "source": CAMERA}], common
                ),
            )
            for camera in ("belt-1", "belt-2")
        ]
    cameras = [{"id": "belt-1", "source": CAMERA}, {"id": "belt-2", "source": CAMERA}]
    return [(work, device_config(work, "box", cameras, common))]


def check(folder: Path, config: dict[str, Any]) -> None:
    """Each camera classified under the identity it should have."""
    for camera in config["cameras"]:
        path = folder / f"{camera['id']}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        expected = camera.get("fleet", {}).get("device_id", config["device_id"])
        if len(records) < 30 or {r["device_id"] for r in records} != {expected}:
            raise RuntimeError(f"{path}: {len(records)} predictions, not all from {expected}")
        store = folder / "store"
        if "fleet" in camera:
            store = store / "cameras" / camera["id"]
        if not (store / "state.json").exists():
            raise RuntimeError(f"{store}: no state.json")


def measure(name: str, work: Path, common: dict[str, Any], settle: float) -> dict[str, Any]:
    processes = [(start(f, c, settle + 30), f, c) for f, c in variant(name, work, common)]
    time.sleep(settle)
    each = [rss_mib(p.pid) for p, _, _ in processes]
    for process, _, _ in processes:
        process.send_signal(signal.SIGTERM)
    for process, _, _ in processes:
        process.wait(timeout=60)
    for _, folder, config in processes:
        check(folder, config)
    return {"total_mib": sum(each), "each_mib": each}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="starts of each variant (ABBA)")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds before reading RSS")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.mkdtemp(prefix="edgefleet-camera-fleet-rss-"))
    )
    args = parser.parse_args()
    from edgefleet.testing.broker import LocalBroker
    from edgefleet.testing.fleet import LocalFleet
    from tests.media import make_bundle
    from tests.models import tiny_onnx_model

    bundle = args.work / "v1.efb"
    args.work.mkdir(parents=True, exist_ok=True)
    make_bundle(bundle, tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True)
    broker = LocalBroker.mosquitto(args.work / "mosquitto")
    fleet = LocalFleet(args.work / "fleet", broker.port, fleet_server=False)
    fleet.release("v1", bundle)
    fleet.start()  # TUF metadata and the chunk server: every agent syncs as on a real fleet
    common = {
        "bundle": str(bundle),
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "telemetry_interval_s": 1.0},
        "metrics": {"enabled": False},
        "update": {"trusted_root": str(fleet.root_file)},
    }
    names = ["one-process-two-identities", "two-processes", "one-process-one-identity"]
    order = [n for i in range(args.runs) for n in (names if i % 2 == 0 else names[::-1])]
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    try:
        for index, name in enumerate(order):
            work = args.work / f"{index:02d}-{name}"
            results[name].append(measure(name, work, common, args.settle))
            print(f"{name}: {results[name][-1]['total_mib']:.1f} MiB", flush=True)
    finally:
        fleet.close()
        broker.close()
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "settle_s": args.settle,
        "runs": args.runs,
        "median_total_mib": {
            n: statistics.median(r["total_mib"] for r in results[n]) for n in names
        },
        "results": results,
    }
    print()
    for name in names:
        print(f"{name:<28} median RSS {report['median_total_mib'][name]:7.1f} MiB")
    out = ROOT / "benchmarks" / "reports" / "camera-fleet-rss"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{report['when'].replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"report: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
