"""Capture-to-consumer latency per output, beside the pipeline's own, with 1 camera and with 4 (issue #21).

A real ``edgefleet device run`` process (fake cameras at 30 fps, the tests'
tiny ONNX classifier) sends every prediction to MQTT (Mosquitto on
loopback, QoS 0), JSON lines, and its OPC UA server (Basic256Sha256
SignAndEncrypt, certificates made for the run), and serves ``POST
/classify``. Each consumer is its own process and stamps every prediction on
receipt with the wall clock:

- ``mqtt``: a paho subscriber on the device's predictions topic;
- ``opcua``: an asyncua client subscribed (publishing interval 0) to every
  camera's ``FrameId``, over SignAndEncrypt;
- ``jsonl``: a reader tailing the file (polling every millisecond);
- ``http``: a client posting a PNG to ``/classify`` 20 times a second (its
  latency is its own round trip: send to answer).

For each frame, capture-to-consumer is ``receipt - captured_at`` and the
pipeline's own latency is the record's ``latency_ms`` (capture to prediction
ready, on the device); the device's invoke time comes from its ``/stats`` in
the same run. Target: consumer p99 <= pipeline p99 + 5 ms for MQTT and OPC UA.

    .venv/bin/python benchmarks/capture_to_consumer.py                # 1 and 4 cameras, 20 s each
    .venv/bin/python benchmarks/capture_to_consumer.py --seconds 30 --cameras 4 --rss

``--rss`` also compares the resident memory of one 4-camera device process
with four single-camera processes (same outputs, measured side by side).
Writes ``benchmarks/reports/capture-to-consumer/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLIENT_URI = "urn:edgefleet:bench:plc"
WARMUP_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantile(values: list[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    position = q * (len(data) - 1)
    low = int(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def stream(record: dict[str, Any]) -> str:
    """Which camera a prediction record is about: its ``camera_id`` (several cameras), else the device."""
    return str(record.get("camera_id") or record["device_id"])


# --- consumers (each runs in its own process: `capture_to_consumer.py consume KIND ...`) ----------


def consume_mqtt(args: argparse.Namespace, out: Any, stop: threading.Event) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        received = time.time()
        record = json.loads(message.payload)
        out.write(json.dumps([stream(record), record["frame_id"], received]) + "\n")

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(args.topic, qos=0)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    Path(args.ready).touch()
    stop.wait()
    client.loop_stop()


def consume_opcua(args: argparse.Namespace, out: Any, stop: threading.Event) -> None:
    from asyncua import ua
    from asyncua.client.client import Client
    from asyncua.crypto import security_policies

    cameras = args.cameras.split(",")

    class Handler:
        def __init__(self, names: dict[str, str]) -> None:
            self.names = names

        def datachange_notification(self, node: Any, val: Any, _data: Any) -> None:
            received = time.time()
            if val:
                camera = self.names[node.nodeid.to_string()]
                out.write(json.dumps([camera, int(val), received]) + "\n")

    async def run() -> None:
        deadline = time.monotonic() + 60
        while True:
            client = Client(args.endpoint, timeout=10)
            client.application_uri = CLIENT_URI
            await client.set_security(
                security_policies.SecurityPolicyBasic256Sha256,
                args.cert,
                args.key,
                server_certificate=args.server_cert,
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
            try:
                await client.connect()
                break
            except (OSError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        try:
            ns = await client.get_namespace_index("urn:edgefleet:line")
            nodes = {f"ns={ns};s={c}.FrameId": c for c in cameras}
            subscription = await client.create_subscription(0, Handler(nodes))
            handles = await subscription.subscribe_data_change(
                [client.get_node(n) for n in nodes], queuesize=1000
            )
            refused = [
                n for n, h in zip(nodes, handles, strict=True) if isinstance(h, ua.StatusCode)
            ]
            if refused:
                raise SystemExit(f"the server refused subscriptions to {refused}")
            Path(args.ready).touch()
            while not stop.is_set():
                await asyncio.sleep(0.1)
        finally:
            await client.disconnect()

    asyncio.run(run())


def consume_jsonl(args: argparse.Namespace, out: Any, stop: threading.Event) -> None:
    path = Path(args.path)
    while not path.exists() and not stop.is_set():
        time.sleep(0.001)
    Path(args.ready).touch()
    with path.open("r", encoding="utf-8") as lines:
        pending = ""
        while not stop.is_set():
            chunk = lines.readline()
            if not chunk:
                time.sleep(0.001)
                continue
            received = time.time()
            pending += chunk
            if not pending.endswith("\n"):
                continue
            record = json.loads(pending)
            pending = ""
            out.write(json.dumps([stream(record), record["frame_id"], received]) + "\n")


def consume_http(args: argparse.Namespace, out: Any, stop: threading.Event) -> None:
    import cv2
    import numpy as np

    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:, :, 1] = 200
    body = cv2.imencode(".png", image)[1].tobytes()
    url = f"http://127.0.0.1:{args.port}/classify"
    ready = False
    while not stop.is_set():
        sent = time.time()
        request = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http://127.0.0.1
                record = json.loads(response.read())
            received = time.time()
        except OSError:
            time.sleep(0.2)
            continue
        if not ready:
            Path(args.ready).touch()
            ready = True
        out.write(json.dumps([sent, received, record["inference_ms"]]) + "\n")
        time.sleep(max(0.0, 0.05 - (time.time() - sent)))


CONSUMERS = {
    "mqtt": consume_mqtt,
    "opcua": consume_opcua,
    "jsonl": consume_jsonl,
    "http": consume_http,
}


def consumer_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(CONSUMERS))
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready", required=True)
    for option in ("topic", "endpoint", "cert", "key", "server-cert", "cameras", "path"):
        parser.add_argument(f"--{option}")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Path(args.out).open("w", encoding="utf-8", buffering=1) as out:
        CONSUMERS[args.kind](args, out, stop)


# --- the run ---------------------------------------------------------------------------------


def make_bundle(folder: Path, model: str = "tiny") -> Path:
    """The tests' tiny ONNX classifier, or their deliberately slow one (tens of ms per frame)."""
    from tests.media import make_bundle as assemble
    from tests.models import slow_onnx_model, tiny_onnx_model

    path = folder / f"{model}-onnx.efb"
    if not path.exists():
        data = tiny_onnx_model(scale=40.0) if model == "tiny" else slow_onnx_model()
        assemble(path, data, "onnx", softmax=True)
    return path


def make_certs(folder: Path) -> dict[str, Path]:
    from edge_runtime.opcua_output import write_self_signed_certificate

    paths = {
        name: folder / name for name in ("server.der", "server.pem", "client.der", "client.pem")
    }
    if not paths["server.der"].exists():
        write_self_signed_certificate(
            paths["server.der"], paths["server.pem"], application_uri="urn:edgefleet:camera-box"
        )
        write_self_signed_certificate(
            paths["client.der"], paths["client.pem"], application_uri=CLIENT_URI, server=False
        )
    return paths


def device_config(
    folder: Path,
    bundle: Path,
    cameras: list[str],
    *,
    broker_port: int,
    opcua: tuple[str, dict[str, Path]] | None,
    classify_port: int | None,
    metrics_port: int,
) -> dict[str, Any]:
    source = {"type": "fake-camera", "fps": 30, "width": 64, "height": 48}
    config: dict[str, Any] = {
        "device_id": "bench-box",
        "bundle": str(bundle),
        "store": str(folder / "store"),
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "telemetry_interval_s": 5},
        "outputs": {"mqtt": {"qos": 0}, "jsonl": {"path": str(folder / "predictions.jsonl")}},
        "metrics": {"port": metrics_port},
        "health": {"startup_grace_s": 30},
    }
    if len(cameras) == 1:
        config["device_id"] = cameras[0]
        config["source"] = source
    else:
        config["cameras"] = [{"id": camera, "source": source} for camera in cameras]
        config["inference"] = INFERENCE
    if opcua is not None:
        endpoint, certs = opcua
        config["outputs"]["opcua"] = {
            "server": {
                "endpoint": endpoint,
                "security": ["Basic256Sha256_SignAndEncrypt"],
                "certificate": str(certs["server.der"]),
                "private_key": str(certs["server.pem"]),
                "trusted_clients": [str(certs["client.der"])],
            }
        }
    if classify_port is not None:
        config["local_service"] = {"enabled": True, "port": classify_port}
    return config


INFERENCE = "round-robin"
"""--inference: how a multi-camera device shares the model."""
SWITCH_INTERVAL_MS: float | None = None
"""--switch-interval-ms: the device process's GIL switch interval (None: Python's 5 ms)."""


def start_device(folder: Path, config: dict[str, Any], seconds: float) -> subprocess.Popen[bytes]:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    log = (folder / "device.log").open("wb")
    prelude = (
        ""
        if SWITCH_INTERVAL_MS is None
        else f"import sys; sys.setswitchinterval({SWITCH_INTERVAL_MS / 1e3!r}); "
    )
    # `edgefleet device run`, with the switch interval set first when asked
    code = prelude + "import sys; from edgefleet.cli import main; sys.exit(main())"
    argv = ["device", "run", "--config", str(path), "--duration", str(seconds)]
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=log, stderr=subprocess.STDOUT, cwd=folder
    )


def start_consumer(
    folder: Path, kind: str, **options: object
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out, ready = folder / f"{kind}.received", folder / f"{kind}.ready"
    argv = [sys.executable, __file__, "consume", kind, "--out", str(out), "--ready", str(ready)]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    log = (folder / f"{kind}.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    return process, out, ready


def wait_ready(paths: list[Path], processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        dead = [p.args for p in processes if p.poll() is not None]
        if dead:
            raise SystemExit(f"a consumer ended before it was ready: {dead}")
        if time.monotonic() > deadline:
            raise SystemExit(f"consumers not ready within {timeout:g} s: {paths}")
        time.sleep(0.05)


def stats_of(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return dict(json.loads(response.read()))


def run_scenario(
    work: Path,
    bundle: Path,
    certs: dict[str, Path],
    *,
    broker_port: int,
    n_cameras: int,
    seconds: float,
) -> dict[str, Any]:
    folder = work / f"{n_cameras}-camera"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        if stale.is_file():
            stale.unlink()
    cameras = ["belt-1"] if n_cameras == 1 else [f"belt-{i}" for i in range(1, n_cameras + 1)]
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/edgefleet/"
    classify_port, metrics_port = free_port(), free_port()
    config = device_config(
        folder, bundle, cameras, broker_port=broker_port, opcua=(endpoint, certs),
        classify_port=classify_port, metrics_port=metrics_port,
    )  # fmt: skip
    topic = f"edgefleet/devices/{config['device_id']}/predictions"
    mqtt_consumer = start_consumer(folder, "mqtt", topic=topic, port=broker_port)
    wait_ready([mqtt_consumer[2]], [mqtt_consumer[0]], 30)
    device = start_device(folder, config, seconds + 10)
    consumers = {
        "mqtt": mqtt_consumer,
        "opcua": start_consumer(
            folder,
            "opcua",
            endpoint=endpoint,
            cert=certs["client.der"],
            key=certs["client.pem"],
            server_cert=certs["server.der"],
            cameras=",".join(cameras),
        ),
        "jsonl": start_consumer(folder, "jsonl", path=folder / "predictions.jsonl"),
        "http": start_consumer(folder, "http", port=classify_port),
    }
    processes = [c[0] for c in consumers.values()]
    wait_ready([c[2] for c in consumers.values()], processes, 90)
    started = time.time()
    time.sleep(seconds)
    device_stats = stats_of(metrics_port)
    ended = time.time()
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=30)
    device.send_signal(signal.SIGTERM)
    device.wait(timeout=60)

    window = (started + WARMUP_S, ended - 1.0)  # every consumer had a second for the last frames
    records = {}
    for line in (folder / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        if window[0] <= record["captured_at"] <= window[1]:
            records[(stream(record), record["frame_id"])] = record
    pipeline = [r["latency_ms"] for r in records.values()]
    rows: dict[str, Any] = {}
    for kind in ("mqtt", "opcua", "jsonl"):
        latencies = []
        extra = []
        for line in consumers[kind][1].read_text().splitlines():
            device_id, frame_id, received = json.loads(line)
            record = records.get((device_id, frame_id))
            if record is not None:
                latency = (received - record["captured_at"]) * 1e3
                latencies.append(latency)
                extra.append(latency - record["latency_ms"])
        rows[kind] = {
            "received": len(latencies),
            "of": len(records),
            "p50_ms": quantile(latencies, 0.5),
            "p99_ms": quantile(latencies, 0.99),
            "beyond_pipeline_p50_ms": quantile(extra, 0.5),
            "beyond_pipeline_p99_ms": quantile(extra, 0.99),
        }
    http = [json.loads(line) for line in consumers["http"][1].read_text().splitlines()]
    http = [(r - s) * 1e3 for s, r, _ in http if window[0] <= s <= window[1]]
    rows["http"] = {"received": len(http), "of": len(http),
                    "p50_ms": quantile(http, 0.5), "p99_ms": quantile(http, 0.99)}  # fmt: skip
    stages = device_stats["metrics"]["histograms"]
    invoke = stages['edgefleet_stage_latency_seconds{stage="invoke"}']
    return {
        "cameras": n_cameras,
        "seconds": seconds,
        "predictions": len(records),
        "pipeline_p50_ms": quantile(pipeline, 0.5),
        "pipeline_p99_ms": quantile(pipeline, 0.99),
        "invoke_p50_ms": invoke["p50"] * 1e3,
        "invoke_p99_ms": invoke["p99"] * 1e3,
        "outputs": rows,
        "device_exit": device.returncode,
        "folder": str(folder),
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def measure_rss(
    work: Path, bundle: Path, certs: dict[str, Path], broker_port: int
) -> dict[str, Any]:
    """One 4-camera process against four 1-camera processes, each with MQTT, JSON lines and OPC UA."""
    settle = 12.0

    def config_for(folder: Path, cameras: list[str]) -> dict[str, Any]:
        return device_config(
            folder, bundle, cameras, broker_port=broker_port,
            opcua=(f"opc.tcp://127.0.0.1:{free_port()}/edgefleet/", certs),
            classify_port=None, metrics_port=free_port(),
        )  # fmt: skip

    one_folder = work / "rss-4-in-1"
    cameras = [f"belt-{i}" for i in range(1, 5)]
    one = start_device(one_folder, config_for(one_folder, cameras), settle + 20)
    singles = []
    for camera in cameras:
        folder = work / f"rss-{camera}"
        singles.append(start_device(folder, config_for(folder, [camera]), settle + 20))
    time.sleep(settle)
    result = {
        "one_process_4_cameras_mib": rss_kib(one.pid) / 1024,
        "four_processes_1_camera_mib": sum(rss_kib(p.pid) for p in singles) / 1024,
        "each_single_mib": [rss_kib(p.pid) / 1024 for p in singles],
    }
    for process in [one, *singles]:
        process.send_signal(signal.SIGTERM)
    for process in [one, *singles]:
        process.wait(timeout=60)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['cameras']} camera(s), {result['seconds']:g} s,"
        f" {result['model']} model, inference {result['inference']},"
        f" GIL switch interval {result['switch_interval_ms']:g} ms,"
        f" load average {result['load_avg'][0]:.1f}; {result['predictions']} predictions;"
        f" invoke p50 {result['invoke_p50_ms']:.3f} ms p99 {result['invoke_p99_ms']:.3f} ms;"
        f" pipeline (capture -> prediction) p50 {result['pipeline_p50_ms']:.2f} ms"
        f" p99 {result['pipeline_p99_ms']:.2f} ms"
    )
    print(
        f"{'output':<8} {'received':>14} {'p50 ms':>8} {'p99 ms':>8} {'+pipe p50':>10} {'+pipe p99':>10}  target"
    )
    for kind, row in result["outputs"].items():
        target = ""
        if kind in {"mqtt", "opcua"}:
            ok = row["p99_ms"] <= result["pipeline_p99_ms"] + 5.0
            target = f"p99 <= {result['pipeline_p99_ms'] + 5.0:.2f}: {'met' if ok else 'MISSED'}"
        beyond = (
            f"{row['beyond_pipeline_p50_ms']:>10.2f} {row['beyond_pipeline_p99_ms']:>10.2f}"
            if "beyond_pipeline_p50_ms" in row
            else f"{'(round trip)':>21}"
        )
        print(
            f"{kind:<8} {row['received']:>6}/{row['of']:<7} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
            f" {beyond}  {target}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "consume":
        consumer_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cameras", type=int, nargs="*", default=[1, 4], help="none: only --rss")
    parser.add_argument("--rss", action="store_true", help="also compare RSS: 1x4 cameras vs 4x1")
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        nargs="+",
        default=[None],
        help="the device process's GIL switch interval(s); several: each camera count runs"
        " once per value, in ABBA order (default: Python's own, 5 ms)",
    )
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "edgefleet-capture-to-consumer"
    )
    parser.add_argument(
        "--inference",
        nargs="+",
        default=["round-robin"],
        choices=["round-robin", "per-camera"],
        help="how several cameras share the model; several: ABBA order",
    )
    parser.add_argument(
        "--model",
        choices=["tiny", "slow"],
        default="tiny",
        help="the tests' tiny or slow ONNX model",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for the broker, the device and the consumers (negative needs root): on a"
        " shared machine, -10 approximates a box that runs only the device",
    )
    args = parser.parse_args()
    from edgefleet.testing.broker import LocalBroker

    if args.nice:
        os.nice(args.nice)  # inherited by every process this run starts

    args.work.mkdir(parents=True, exist_ok=True)
    bundle = make_bundle(args.work, args.model)
    certs = make_certs(args.work)
    broker = LocalBroker.mosquitto(args.work / "mosquitto")
    report: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "nice": args.nice},
        "scenarios": [],
    }
    try:
        global SWITCH_INTERVAL_MS, INFERENCE  # one setting for every device of a scenario
        variants = [(v, m) for v in args.switch_interval_ms for m in args.inference]
        order = variants if len(variants) == 1 else [*variants, *reversed(variants)]
        for n in args.cameras:
            for value, mode in order:
                if n == 1 and mode != args.inference[0]:
                    continue  # one camera: the inference mode does not apply
                SWITCH_INTERVAL_MS, INFERENCE = value, mode
                result = run_scenario(
                    args.work, bundle, certs, broker_port=broker.port, n_cameras=n,
                    seconds=args.seconds,
                )  # fmt: skip
                result["switch_interval_ms"] = 5.0 if value is None else value
                result["inference"] = mode if n > 1 else "single"
                result["model"] = args.model
                result["load_avg"] = os.getloadavg()
                report["scenarios"].append(result)
                print_table(result)
        if args.rss:
            report["rss"] = measure_rss(args.work, bundle, certs, broker.port)
            rss = report["rss"]
            print(
                f"\nRSS after 12 s: one 4-camera process {rss['one_process_4_cameras_mib']:.1f} MiB;"
                f" four 1-camera processes {rss['four_processes_1_camera_mib']:.1f} MiB in all"
                f" ({', '.join(f'{m:.1f}' for m in rss['each_single_mib'])})"
            )
    finally:
        broker.stop()
    report["machine"]["load_avg_after"] = os.getloadavg()
    out = ROOT / "benchmarks" / "reports" / "capture-to-consumer"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{report['when'].replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nreport: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
