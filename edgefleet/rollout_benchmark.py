"""``edgefleet bench fleet``: how long a staged rollout to N devices takes, and what it costs the server.

One run, everything real except the devices' cameras and models:

1. a fresh TUF repository with its keys, and a released bundle (``--bundle``,
   or a synthetic payload of ``--bundle-size`` MB that devices verify but
   never run);
2. Mosquitto started on loopback (or ``--broker``), and ``edgefleet serve``
   started as its own process, so its RSS and CPU are its own;
3. N devices provisioned through the HTTP API, then N simulated devices
   (:mod:`edgefleet.fleet_sim`) connected, each verifying the TUF metadata;
4. the clock starts with ``POST /rollouts`` (a canary wave, then everyone)
   and stops when the server reports the rollout finished with every
   device committed.

The server and the broker are sampled every 0.2 s for RSS and CPU.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edge_runtime import __version__
from edge_runtime.bundle import (
    ManifestSpec,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    TensorSpec,
    build_bundle,
    read_bundle,
)
from edge_runtime.errors import EdgefleetError
from edgefleet.fleet_sim import SimFleetProcesses
from fleet_server.broker_auth import mosquitto_binary
from fleet_server.process import free_port

__all__ = ["FleetBenchOptions", "ProcessSampler", "run_fleet_bench", "synthetic_bundle"]

_TOKEN = "fleet-bench"  # noqa: S105 (loopback server started and stopped by the benchmark)
_TAG = "bench"
_NO_GATE = dict.fromkeys(
    [
        "max_latency_ratio",
        "max_budget_ratio",
        "max_error_rate",
        "max_confidence_drop",
        "max_baseline_confidence_drop",
        "max_class_shift",
        "max_baseline_class_shift",
    ]
)
"""Every quality-gate check off: simulated devices run no model, so they send no telemetry."""


class FleetBenchError(EdgefleetError):
    """The fleet benchmark could not set up or did not finish."""


@dataclass(frozen=True)
class FleetBenchOptions:
    """What ``edgefleet bench fleet`` is asked to do."""

    devices: int = 1000
    bundle_mb: float = 2.6
    bundle: Path | None = None
    broker_url: str | None = None
    workdir: Path | None = None
    canary: int = 10
    workers: int = 4
    timeout_s: float = 600.0
    keep: bool = False


@dataclass
class ProcessSampler:
    """Samples a process's RSS and CPU time on a background thread."""

    pid: int
    interval_s: float = 0.2
    peak_rss: int = 0
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(monotonic time, cumulative CPU seconds, RSS bytes)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._process = psutil.Process(self.pid)
        self._thread = threading.Thread(target=self._run, name=f"sample-{self.pid}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._process.oneshot():
                    times = self._process.cpu_times()
                    rss = self._process.memory_info().rss
            except psutil.Error:
                return
            self.samples.append((time.monotonic(), times.user + times.system, rss))
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval_s)

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds, mean and peak CPU % (of one core) and peak RSS between two instants."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {"cpu_s": 0.0, "cpu_mean_pct": 0.0, "cpu_peak_pct": 0.0, "peak_rss_mb": 0.0}
        cpu = inside[-1][1] - inside[0][1]
        rates = [
            100.0 * (b[1] - a[1]) / (b[0] - a[0])
            for a, b in itertools.pairwise(inside)
            if b[0] > a[0]
        ]
        return {
            "cpu_s": round(cpu, 2),
            "cpu_mean_pct": round(100.0 * cpu / (inside[-1][0] - inside[0][0]), 1),
            "cpu_peak_pct": round(max(rates), 1),
            "peak_rss_mb": round(max(s[2] for s in inside) / 2**20, 1),
        }


def synthetic_bundle(path: Path, size_mb: float, version: str = "1.0.0") -> Path:
    """A valid bundle whose model member is ``size_mb`` MB of random bytes behind a TFLite header.

    Simulated devices check its signature, length and hash like any bundle;
    nothing ever runs it (its name and description say so).
    """
    wanted = int(size_mb * 1_000_000)
    size = max(64, wanted - 4096)
    data = _payload_bundle(size, version)
    if len(data) > wanted:  # the archive's records and manifest: take their size off the model
        data = _payload_bundle(max(64, size - (len(data) - wanted) - 10240), version)
    path.write_bytes(data)
    return path


def _payload_bundle(size: int, version: str) -> bytes:
    payload = bytearray(np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes())
    payload[4:8] = b"TFL3"
    manifest = ManifestSpec(
        name="fleet-bench-payload",
        version=version,
        description="synthetic payload for `edgefleet bench fleet`: verified, never run",
        model=ModelSpec(
            file="model.tflite",
            format="tflite",
            precision="int8",
            inputs=[TensorSpec(name="input", shape=[1, 224, 224, 3], dtype="uint8")],
            outputs=[TensorSpec(name="scores", shape=[1, 6], dtype="float32")],
        ),
        preprocessing=Preprocessing(height=224, width=224),
        labels=["cardboard", "glass", "metal", "paper", "plastic", "trash"],
        postprocessing=Postprocessing(apply_softmax=False),
    )
    # random bytes do not compress: a plain archive keeps the size exact and packing fast
    return build_bundle(manifest, {"model.tflite": bytes(payload)}, compress=False)


class _Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (loopback, our own server)
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {_TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:  # noqa: S310
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise FleetBenchError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from exc

    def wait_healthy(self, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise FleetBenchError(f"edgefleet serve exited with status {process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):  # noqa: S310
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise FleetBenchError("edgefleet serve did not answer /healthz within 60 s")


@contextmanager
def _broker(
    url: str | None, folder: Path
) -> Iterator[tuple[str, int, subprocess.Popen[bytes] | None]]:
    """The broker to use: ``url`` as it is, or a Mosquitto started for the run."""
    if url is not None:
        from fleet_server.process import parse_broker_url

        host, port = parse_broker_url(url)
        yield host, port, None
        return
    with _mosquitto(folder) as (host, port, process):
        yield host, port, process


@contextmanager
def _mosquitto(folder: Path) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    binary = mosquitto_binary()
    if binary is None:
        raise FleetBenchError(
            "mosquitto is not installed: `apt-get install mosquitto`, or give --broker mqtt://HOST:PORT"
        )
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\nmax_queued_messages 10000\n"
    )
    log_file = (folder / "mosquitto.log").open("wb")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=log_file, stderr=log_file)
    try:
        deadline = time.monotonic() + 10
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise FleetBenchError("mosquitto did not start") from None
                time.sleep(0.05)
        yield "127.0.0.1", port, process
    finally:
        process.terminate()
        process.wait(timeout=10)
        log_file.close()


def run_fleet_bench(options: FleetBenchOptions, console: Any) -> dict[str, Any]:
    """Run the benchmark; returns the report (also printed by the command)."""
    from fleet_server.trust import Expiry, Repository, init_keys

    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="edgefleet-fleet-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        keys = init_keys(workdir / "keys")
        repo = Repository.create(workdir / "repo", keys, Expiry())
        bundle_path = workdir / "bundle.efb"
        if options.bundle is not None:
            shutil.copyfile(options.bundle, bundle_path)
        else:
            synthetic_bundle(bundle_path, options.bundle_mb)
        bundle = read_bundle(bundle_path)
        repo.release(bundle_path, keys.role("targets"))
        for offline in ("root", "targets"):  # the server runs with the online keys only
            for key in (workdir / "keys").glob(f"{offline}-*.pem"):
                key.unlink()
        with _broker(options.broker_url, workdir) as (host, port, process):
            return _run(
                options=options,
                console=console,
                workdir=workdir,
                repo=repo,
                bundle_path=bundle_path,
                bundle=bundle,
                host=host,
                port=port,
                broker=process,
            )
    finally:
        if not options.keep and options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(
    *,
    options: FleetBenchOptions,
    console: Any,
    workdir: Path,
    repo: Any,
    bundle_path: Path,
    bundle: Any,
    host: str,
    port: int,
    broker: subprocess.Popen[bytes] | None,
) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    http_port = free_port()
    api = _Api(f"http://127.0.0.1:{http_port}")
    server_log = (workdir / "server.log").open("wb")
    server = _start_server(workdir, f"mqtt://{host}:{port}", http_port, server_log)
    fleet: SimFleetProcesses | None = None
    # The simulated devices' stores (TUF metadata, downloads with their fsyncs) go to memory
    # when /dev/shm exists: a thousand devices' disks are not what this measures.
    shm = Path("/dev/shm")  # noqa: S108 (a private mkdtemp folder inside it)
    device_store = Path(
        tempfile.mkdtemp(prefix="edgefleet-sim-", dir=shm if shm.is_dir() else workdir)
    )
    samplers = [ProcessSampler(server.pid)]
    if broker is not None:
        samplers.append(ProcessSampler(broker.pid))
    simulators: list[ProcessSampler] = []
    try:
        api.wait_healthy(server)
        for sampler in samplers:
            sampler.start()
        names = [f"sim-{i:04d}" for i in range(options.devices)]
        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("provisioning devices", total=options.devices)
            for name in names:
                api("POST", "/devices", {"id": name, "tags": [_TAG]})
                progress.advance(task)
            api("POST", "/bundles/import", {"path": str(bundle_path.resolve())})
            fleet = SimFleetProcesses(
                host,
                port,
                device_store,
                repo.root_bytes(),
                names,
                groups=[_TAG],
                workers=options.workers,
            )
            task = progress.add_task("connecting devices", total=options.devices)
            fleet.start(lambda n: progress.update(task, completed=n))
            simulators = [ProcessSampler(pid) for pid in fleet.pids()]
            for sampler in simulators:
                sampler.start()
            _wait_idle(api, options.devices)

            task = progress.add_task("rollout: devices committed", total=options.devices)
            started = time.monotonic()
            wall_start = time.time()
            rollout = api(
                "POST",
                "/rollouts",
                {
                    "bundle_sha256": bundle.sha256,
                    "target": {"kind": "tags", "values": [_TAG]},
                    "waves": _waves(options),
                },
            )
            view = _follow(
                api=api,
                rollout_id=rollout["id"],
                fleet=fleet,
                sha256=bundle.sha256,
                progress=progress,
                task=task,
                options=options,
            )
            finished = time.monotonic()
        elapsed = finished - started
        commit_times = sorted(at - wall_start for at in fleet.committed(bundle.sha256).values())
        fleet.stop()
        errors, fleet = fleet.errors, None
        return _report(
            options=options,
            bundle_path=bundle_path,
            bundle=bundle,
            view=view,
            elapsed=elapsed,
            commit_times=commit_times,
            errors=errors,
            samplers=samplers,
            simulators=simulators,
            started=started,
            finished=finished,
        )
    finally:
        if fleet is not None:
            fleet.stop()
        shutil.rmtree(device_store, ignore_errors=True)
        for sampler in [*samplers, *simulators]:
            sampler.stop()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        server_log.close()


def _waves(options: FleetBenchOptions) -> list[dict[str, Any]]:
    """A canary wave, then everyone; no health window and no gate (no telemetry to judge)."""
    canary = min(options.canary, max(1, options.devices // 10))
    common = {"device_timeout_s": options.timeout_s, "health_window_s": 0, "gate": _NO_GATE}
    return [{"count": canary, **common}, {"percent": 100, **common}]


def _start_server(
    workdir: Path, broker_url: str, http_port: int, log_file: Any
) -> subprocess.Popen[bytes]:
    """``edgefleet serve`` as its own process (its RSS and CPU are measured apart)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgefleet",
            "--log-level",
            "warning",
            "serve",
            "--state",
            str(workdir / "state"),
            "--repo",
            str(workdir / "repo"),
            "--keys",
            str(workdir / "keys"),
            "--broker",
            broker_url,
            "--http-port",
            str(http_port),
        ],
        stdout=log_file,
        stderr=log_file,
        env={**os.environ, "EDGEFLEET_TOKEN": _TOKEN},
    )


def _wait_idle(api: _Api, expected: int, timeout: float = 120.0) -> None:
    """Until the server has every device's first reported state (the fleet is at rest)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        devices = api("GET", f"/devices?tag={_TAG}")
        if sum(1 for d in devices if d.get("phase")) >= expected:
            return
        time.sleep(0.5)
    raise FleetBenchError("the server did not see every simulated device's state in 120 s")


def _follow(
    *,
    api: _Api,
    rollout_id: int,
    fleet: SimFleetProcesses,
    sha256: str,
    progress: Any,
    task: Any,
    options: FleetBenchOptions,
) -> dict[str, Any]:
    deadline = time.monotonic() + options.timeout_s
    while True:
        committed = len(fleet.committed(sha256))
        progress.update(task, completed=committed)
        view: dict[str, Any] = api("GET", f"/rollouts/{rollout_id}")
        if view.get("finished"):
            progress.update(task, completed=committed)
            return view
        if time.monotonic() > deadline:
            raise FleetBenchError(
                f"the rollout did not finish within {options.timeout_s:.0f} s "
                f"({committed}/{options.devices} devices committed)"
            )
        time.sleep(0.5)  # the rollout view is not free for the server


def _report(
    *,
    options: FleetBenchOptions,
    bundle_path: Path,
    bundle: Any,
    view: dict[str, Any],
    elapsed: float,
    commit_times: list[float],
    errors: list[str],
    samplers: list[ProcessSampler],
    simulators: list[ProcessSampler],
    started: float,
    finished: float,
) -> dict[str, Any]:
    times = np.asarray(commit_times) if commit_times else np.asarray([np.nan])
    counts = view.get("counts") or {}
    report: dict[str, Any] = {
        "benchmark": "fleet-rollout",
        "devices": options.devices,
        "bundle_bytes": bundle_path.stat().st_size,
        "bundle": "synthetic payload" if options.bundle is None else str(options.bundle),
        "bundle_sha256": bundle.sha256,
        "rollout_status": view.get("status"),
        "device_counts": counts,
        "committed": len(commit_times),
        "wall_s": round(elapsed, 2),
        "target_s": 60.0,
        "met": bool(
            view.get("status") == "completed"
            and len(commit_times) == options.devices
            and elapsed <= 60.0
        ),
        "device_commit_s": {
            "p50": round(float(np.percentile(times, 50)), 2),
            "p90": round(float(np.percentile(times, 90)), 2),
            "max": round(float(np.max(times)), 2),
        },
        "delivered_mb": round(len(commit_times) * bundle_path.stat().st_size / 1e6, 1),
        "server": samplers[0].window(started, finished)
        | {"peak_rss_mb_run": round(samplers[0].peak_rss / 2**20, 1)},
        "broker": samplers[1].window(started, finished) if len(samplers) > 1 else None,
        "simulator": {
            "processes": len(simulators),
            "cpu_s": round(sum(p.window(started, finished)["cpu_s"] for p in simulators), 2),
        },
        "device_errors": len(errors),
        "device_error_samples": errors[:5],
        "environment": {
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "edgefleet": __version__,
        },
        "waves": ["canary", "100%"],
        "notes": "health windows 0 s and no quality gate: simulated devices send no telemetry",
    }
    return report
