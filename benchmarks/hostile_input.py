"""What hostile input costs the fleet server (issue #15), measured on the code it runs from.

    .venv/bin/python benchmarks/hostile_input.py [--body-mb 256] [--flood-s 15]

Run it on two checkouts (this one and, say, a `git worktree` of an older
commit) to put the figures side by side; each run prints and writes JSON.

1. amplification: peak memory (tracemalloc) while the chunk server parses and
   refuses one ~114-byte download request that names 10^7 chunks.
2. unauthenticated body: `edgefleet serve` (embedded broker) is sent a POST of
   ``--body-mb`` MB without a token; its peak RSS (VmHWM) before and after,
   and the answer.
3. flood: for ``--flood-s`` seconds one device id publishes unique update
   events and 60 KB telemetry snapshots as fast as the broker takes them;
   the database file's growth, and the timeline and telemetry rows it holds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EDGEFLEET = [sys.executable, "-m", "edgefleet"]
TOKEN = "bench-token"  # noqa: S105 (a throw-away server on loopback)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def amplification(chunks: int = 10_000_000) -> dict[str, Any]:
    from edge_runtime.protocol import ChunkMeta
    from fleet_server.chunk_server import ChunkServer, parse_request
    from fleet_server.errors import MalformedRequestError

    sha = "0" * 64
    payload = json.dumps({"bundle": sha, "want": [[0, chunks]], "have": 0}).encode()
    meta = ChunkMeta(
        sha256=sha, length=2_600_000, chunk_size=262_144, chunks=10, chunk_sha256=["0" * 64] * 10
    )
    server = ChunkServer.__new__(ChunkServer)
    server.window = 16
    tracemalloc.start()
    try:
        server._check_bounds(
            parse_request("edgefleet/devices/x/download", payload, "edgefleet"), meta
        )
        outcome = "accepted"
    except MalformedRequestError as exc:
        outcome = f"refused: {exc}"[:120]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "request_bytes": len(payload),
        "chunks_named": chunks,
        "peak_kib": peak / 1024,
        "outcome": outcome,
    }


def _vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _serve(folder: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    from fleet_server.trust import Expiry, Repository, init_keys

    keys = init_keys(folder / "keys")
    Repository.create(folder / "repo", keys, Expiry())
    http_port, broker_port = free_port(), free_port()
    env = {**os.environ, "EDGEFLEET_TOKEN": TOKEN}
    process = subprocess.Popen(
        [
            *EDGEFLEET,
            "serve",
            *("--state", str(folder / "state"), "--repo", str(folder / "repo")),
            *("--keys", str(folder / "keys"), "--http-port", str(http_port)),
            *("--broker-port", str(broker_port)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", http_port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    time.sleep(1.0)
    return process, http_port, broker_port


def unauthenticated_body(process: subprocess.Popen[bytes], port: int, mb: int) -> dict[str, Any]:
    before = _vm(process.pid, "VmHWM")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    block = b"x" * (1 << 20)
    status: Any = None
    sent = 0
    try:
        connection.putrequest("POST", "/rollouts")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(mb << 20))
        connection.endheaders()
        for _ in range(mb):
            connection.send(block)
            sent += 1
        status = connection.getresponse().status
    except OSError as exc:  # the server answered and closed before the body was sent
        try:
            status = f"{connection.getresponse().status} after {sent} MB ({type(exc).__name__})"
        except (OSError, http.client.HTTPException):
            status = f"connection closed after {sent} MB ({type(exc).__name__})"
    finally:
        connection.close()
    time.sleep(0.5)
    return {
        "body_mb": mb,
        "answer": status,
        "server_peak_rss_mb_before": before,
        "server_peak_rss_mb_after": _vm(process.pid, "VmHWM"),
    }


def flood(folder: Path, broker_port: int, seconds: float) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    database = folder / "state" / "fleet.db"
    size = lambda: sum(p.stat().st_size for p in database.parent.glob("fleet.db*"))  # noqa: E731
    before = size()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="flooder")
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    telemetry = json.dumps({"protocol": 1, "blob": "y" * 60_000})
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        event = {
            "protocol": 1,
            "kind": "refused",
            "reason": f"flood {sent} " + "z" * 3000,
            "at": time.time(),
        }
        client.publish("edgefleet/devices/flooder/events", json.dumps(event), qos=0)
        client.publish("edgefleet/devices/flooder/telemetry", telemetry, qos=0)
        sent += 2
        if sent % 200 == 0:
            time.sleep(0.01)
    client.loop_stop()
    client.disconnect()
    time.sleep(3.0)
    return {
        "seconds": seconds,
        "messages_sent": sent,
        "database_mb_before": before / 2**20,
        "database_mb_after": size() / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--body-mb", type=int, default=256)
    parser.add_argument("--flood-s", type=float, default=15.0)
    parser.add_argument(
        "--report", type=Path, default=ROOT / "benchmarks" / "reports" / "hostile-input.json"
    )
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    result: dict[str, Any] = {"commit": commit, "amplification": amplification()}
    print(f"1. amplification: {result['amplification']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgefleet-hostile-") as tmp:
        process, http_port, broker_port = _serve(Path(tmp))
        try:
            result["unauthenticated_body"] = unauthenticated_body(process, http_port, args.body_mb)
            print(f"2. unauthenticated body: {result['unauthenticated_body']}", flush=True)
            result["flood"] = flood(Path(tmp), broker_port, args.flood_s)
            print(f"3. flood: {result['flood']}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
