"""One run of ``edgefleet bench fleet``: the services, the transport floor, the rollout, measured."""

from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.bundle import read_bundle
from edgefleet.fleet_sim import SimFleetProcesses
from edgefleet.rollout_benchmark.counters import Counters, parse_counters
from edgefleet.rollout_benchmark.floor import FloorResult, measure_floor
from edgefleet.rollout_benchmark.options import FleetBenchError, FleetBenchOptions
from edgefleet.rollout_benchmark.payload import synthetic_bundle
from edgefleet.rollout_benchmark.report import build_report
from edgefleet.rollout_benchmark.sampling import MachineSnapshot, ProcessSampler, wait_quiet
from edgefleet.rollout_benchmark.services import (
    Api,
    ServerBusyError,
    ServerReplica,
    broker,
    postgres_cluster,
    start_replicas,
    stop_replicas,
)

__all__ = ["Measured", "run_fleet_bench"]

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


@dataclass
class Measured:
    """Everything one run measured, before it becomes the report."""

    options: FleetBenchOptions
    bundle_path: Path
    bundle_sha256: str
    database: str
    replicas: list[ServerReplica]
    view: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    commit_times: list[float] = field(default_factory=list)
    fetches: list[tuple[int, int, int]] = field(default_factory=list)
    """Each committed device's (download requests, chunks stored, duplicate chunks received)."""
    errors: list[str] = field(default_factory=list)
    servers: list[ProcessSampler] = field(default_factory=list)
    broker: ProcessSampler | None = None
    database_sampler: ProcessSampler | None = None
    simulators: list[ProcessSampler] = field(default_factory=list)
    counters: list[Counters] = field(default_factory=list)
    """Each replica's counter increase over the rollout."""
    floors: list[FloorResult] = field(default_factory=list)
    machine: tuple[MachineSnapshot, MachineSnapshot] | None = None
    """The machine's CPU use at the rollout's start and end."""
    timed_out: bool = False
    """The rollout had not finished after ``--timeout`` seconds (figures up to then)."""


def run_fleet_bench(options: FleetBenchOptions, console: Any) -> dict[str, Any]:
    """Run the benchmark; returns the report (the command prints it)."""
    from fleet_server.trust import Expiry, Repository, init_keys

    if options.replicas > 1 and options.db_url is not None and options.db_url.startswith("sqlite"):
        raise FleetBenchError("--replicas needs a database they can share: PostgreSQL, not SQLite")
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
        repo.release(bundle_path, keys.role("targets"))
        for offline in ("root", "targets"):  # the servers run with the online keys only
            for key in (workdir / "keys").glob(f"{offline}-*.pem"):
                key.unlink()
        with ExitStack() as stack:
            db_url, database, db_process = options.db_url, "SQLite (in the state folder)", None
            if db_url is not None:
                database = "PostgreSQL (given)" if "postgres" in db_url else db_url.split(":")[0]
            elif options.replicas > 1 or options.postgres:
                with console.status("starting a throw-away PostgreSQL cluster"):
                    db_url, db_process = stack.enter_context(postgres_cluster())
                database = "PostgreSQL (throw-away cluster)"
            host, port, broker_process = stack.enter_context(broker(options.broker_url, workdir))
            servers = f"{options.replicas} edgefleet serve process" + (
                "es" if options.replicas > 1 else ""
            )
            kept = f", kept in {workdir}" if options.workdir is not None else ""
            console.print(f"  {servers} on {database}, broker {host}:{port}{kept}")
            with console.status(f"starting {servers}"):
                replicas = start_replicas(
                    count=options.replicas,
                    workdir=workdir,
                    broker_url=f"mqtt://{host}:{port}",
                    db_url=db_url,
                )
            stack.callback(stop_replicas, replicas)
            measured = Measured(
                options=options,
                bundle_path=bundle_path,
                bundle_sha256=read_bundle(bundle_path).sha256,
                database=database,
                replicas=replicas,
                servers=[ProcessSampler(r.process.pid) for r in replicas],
                broker=None if broker_process is None else ProcessSampler(broker_process.pid),
                database_sampler=None
                if db_process is None
                else ProcessSampler(db_process.pid, tree=True),
            )
            _run(measured, repo.root_bytes(), host, port, console)
            return build_report(measured)
    finally:
        if not options.keep and options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(m: Measured, root: bytes, host: str, port: int, console: Any) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    options = m.options
    api = Api([r.http_url for r in m.replicas])
    fleet: SimFleetProcesses | None = None
    # The simulated devices' stores (TUF metadata, downloads with their fsyncs) go to memory
    # when /dev/shm exists: a thousand devices' disks are not what this measures.
    shm = Path("/dev/shm")  # noqa: S108 (a private mkdtemp folder inside it)
    device_store = Path(
        tempfile.mkdtemp(prefix="edgefleet-sim-", dir=shm if shm.is_dir() else m.bundle_path.parent)
    )
    background = [*m.servers, *[s for s in (m.broker, m.database_sampler) if s is not None]]
    try:
        for sampler in background:
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
            api("POST", "/bundles/import", {"path": str(m.bundle_path.resolve())}, replica=0)
            if options.floor in ("both", "before"):
                _floor(m, background, host, port, when="before", progress=progress)
            fleet = SimFleetProcesses(
                host, port, device_store, root, names, groups=[_TAG], workers=options.workers
            )
            task = progress.add_task("connecting devices", total=options.devices)
            fleet.start(lambda n: progress.update(task, completed=n))
            m.simulators = [ProcessSampler(pid) for pid in fleet.pids()]
            for sampler in m.simulators:
                sampler.start()
            _wait_idle(api, options.devices)
            wait_quiet(background)
            before = [parse_counters(api.metrics(i)) for i in range(len(m.replicas))]

            task = progress.add_task("rollout: devices committed", total=options.devices)
            machine_start = MachineSnapshot.now()
            m.started, wall_start = time.monotonic(), time.time()
            rollout = api.to_any(
                "POST",
                "/rollouts",
                {
                    "bundle_sha256": m.bundle_sha256,
                    "target": {"kind": "tags", "values": [_TAG]},
                    "waves": _waves(options),
                },
            )
            m.view, m.timed_out = _follow(
                api,
                rollout["id"],
                fleet,
                sha256=m.bundle_sha256,
                progress=progress,
                task=task,
                options=options,
            )
            m.finished = time.monotonic()
            m.machine = (machine_start, MachineSnapshot.now())
            m.elapsed = m.finished - m.started
            after = [parse_counters(api.metrics(i)) for i in range(len(m.replicas))]
            m.counters = [a.minus(b) for a, b in zip(after, before, strict=True)]
            m.commit_times = sorted(
                at - wall_start for at in fleet.committed(m.bundle_sha256).values()
            )
            m.fetches = list(fleet.fetched(m.bundle_sha256).values())
            fleet.stop()
            m.errors, fleet = fleet.errors, None
            for sampler in m.simulators:
                sampler.stop()
            if options.floor in ("both", "after"):
                _floor(m, background, host, port, when="after", progress=progress)
    finally:
        if fleet is not None:
            fleet.stop()
        shutil.rmtree(device_store, ignore_errors=True)
        for sampler in [*background, *m.simulators]:
            sampler.stop()


def _floor(
    m: Measured, background: list[ProcessSampler], host: str, port: int, *, when: str, progress: Any
) -> None:
    """Measure the transport floor once, from a machine at rest (see :mod:`.floor`)."""
    wait_quiet(background)
    m.floors.append(
        measure_floor(
            host,
            port,
            m.bundle_path,
            m.options.devices,
            when=when,
            timeout_s=m.options.timeout_s,
            progress=progress,
        )
    )


def _waves(options: FleetBenchOptions) -> list[dict[str, Any]]:
    """A canary wave, then everyone; no health window and no gate (no telemetry to judge)."""
    canary = min(options.canary, max(1, options.devices // 10))
    common = {"device_timeout_s": options.timeout_s, "health_window_s": 0, "gate": _NO_GATE}
    return [{"count": canary, **common}, {"percent": 100, **common}]


def _wait_idle(api: Api, expected: int, timeout: float = 120.0) -> None:
    """Until the servers have every device's first reported state (the fleet is at rest)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            devices = api("GET", f"/devices?tag={_TAG}")
        except ServerBusyError:
            continue  # a busy server is slow, not done: ask again until the deadline
        if sum(1 for d in devices if d.get("phase")) >= expected:
            return
        time.sleep(0.5)
    raise FleetBenchError("the servers did not see every simulated device's state in 120 s")


def _follow(
    api: Api,
    rollout_id: int,
    fleet: SimFleetProcesses,
    *,
    sha256: str,
    progress: Any,
    task: Any,
    options: FleetBenchOptions,
) -> tuple[dict[str, Any], bool]:
    """The rollout's final view, and whether it timed out (then the view is its last)."""
    deadline = time.monotonic() + options.timeout_s
    view: dict[str, Any] = {}
    while True:
        committed = len(fleet.committed(sha256))
        progress.update(task, completed=committed)
        try:
            view = api("GET", f"/rollouts/{rollout_id}")
        except ServerBusyError:
            if time.monotonic() > deadline:
                raise
            continue  # a server too busy to answer in 60 s is a finding, not the end of the run
        if view.get("finished"):
            progress.update(task, completed=committed)
            return view, False
        if time.monotonic() > deadline:
            return view, True
        time.sleep(0.5)  # the rollout view is not free for the server
