"""The demo script: each step a user would take, in order, with the live view while the fleet runs."""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from edgefleet.commands._console import progress_bar
from edgefleet.demo.field_data import FieldDataDemo
from edgefleet.demo.fleet import GROUP, CameraSettings, LocalFleet
from edgefleet.demo.models import (
    LATENCY_BUDGET_MS,
    MAX_ACCURACY_DROP,
    MIN_AGREEMENT,
    DataSet,
    ModelVersion,
    convert_version,
    make_data,
    make_stale_golden_bundle,
    train_version,
    write_conveyor_video,
)
from edgefleet.demo.predictions import PredictionLog
from edgefleet.demo.report import RolloutOutcome, print_summary, write_reports
from edgefleet.demo.settings import Scale, scale_for
from edgefleet.demo.view import FleetView
from fleet_server.records import TargetSelector
from fleet_server.rollout_spec import WaveSpec
from fleet_server.statuses import TERMINAL_ROLLOUT_STATUSES, WORKING_PHASES

__all__ = ["DemoError", "DemoOptions", "run_demo"]

log = logging.getLogger(__name__)

_REFRESH_S = 0.25


class DemoError(Exception):
    """A step of the demo did not come out as it should; the message says which and why."""


@dataclass(frozen=True)
class DemoOptions:
    """What the demo does and where it writes."""

    workdir: Path
    data: Path | None = None
    fast: bool = False
    seed: int = 0
    keep: bool = False
    """Leave the fleet (server, console, cameras) running at the end, until Ctrl-C."""
    console_port: int = 8080
    """Where the operator's console is served (a free port when this one is taken; 0: any)."""


@dataclass
class _Run:
    options: DemoOptions
    console: Console
    scale: Scale
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    bad_bundle: Path | None = None
    sha_to_version: dict[str, str] = field(default_factory=dict)
    fleet: LocalFleet | None = None
    logs: dict[str, PredictionLog] = field(default_factory=dict)
    checkpoints: list[tuple[str, float, dict[str, int]]] = field(default_factory=list)
    rollouts: list[RolloutOutcome] = field(default_factory=list)
    console_url: str | None = None
    console_token: str | None = None
    kept: bool = False
    field_data: FieldDataDemo | None = None

    @property
    def workdir(self) -> Path:
        return self.options.workdir

    @contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        self.console.print(f"\n[bold]{title}[/]")
        began = time.monotonic()
        yield
        self.timings[name] = round(time.monotonic() - began, 1)

    # --- the ML engineer ---------------------------------------------------------------

    def data(self) -> DataSet:
        with self.step("data", "1/7 data: the conveyor set and a conveyor video"):
            s = self.scale
            data = make_data(
                self.workdir, self.options.data, s.per_train, s.per_val, self.options.seed
            )
            where = "drew" if data.generated else "using"
            self.console.print(
                f"  {where} {data.root}: {len(data.train.items)} training and "
                f"{len(data.val.items)} validation images, classes {', '.join(data.train.labels)}"
            )
            video = self.workdir / "conveyor.avi"
            frames = write_conveyor_video(video, data, 30.0, s.video_fps, self.options.seed)
            self.console.print(
                f"  wrote {video}: {frames} frames at {s.video_fps:g} fps, "
                + ("items drawn on the belt" if data.generated else "validation photos")
                + ", each for 4 frames (the cameras loop it in real time)"
            )
        return data

    def model(self, data: DataSet, version: str, epochs: int, number: int) -> ModelVersion:
        s = self.scale
        keras_path = self.workdir / "models" / f"conveyor-{version}.keras"
        keras_path.parent.mkdir(parents=True, exist_ok=True)
        with self.step(
            f"train {version}",
            f"{number}/7 train {version}: the reference CNN from scratch, {s.size}x{s.size}, "
            f"{epochs} epochs",
        ):
            with progress_bar(self.console, indent="  ") as bar:
                task = bar.add_task("training", total=epochs)

                def on_epoch(_epoch: int, logs: dict[str, float]) -> None:
                    bar.update(
                        task,
                        advance=1,
                        description=f"training (loss {logs.get('loss', 0):.3f}, "
                        f"val acc {logs.get('val_accuracy', 0):.2f})",
                    )

                accuracy = train_version(
                    data,
                    keras_path,
                    size=s.size,
                    epochs=epochs,
                    seed=self.options.seed,
                    on_epoch=on_epoch,
                )
            self.console.print(f"  Keras validation accuracy {100 * accuracy:.1f}%")
        with self.step(
            f"convert {version}",
            f"   convert {version}: int8 TFLite and int8 ONNX, each checked against the float "
            f"model (gate: drop <= {MAX_ACCURACY_DROP:g} points, agreement >= "
            f"{100 * MIN_AGREEMENT:g}%)",
        ):
            with progress_bar(self.console, indent="  ") as bar:
                tasks: dict[str, Any] = {}

                def progress(name: str, advance: int, total: int | None) -> None:
                    if name not in tasks:
                        tasks[name] = bar.add_task(name, total=total)
                    elif total is not None:
                        bar.reset(tasks[name], total=total)
                    if advance:
                        bar.advance(tasks[name], advance)

                results = convert_version(
                    data,
                    keras_path,
                    self.workdir / "bundles",
                    version,
                    calibration_samples=s.calibration_samples,
                    seed=self.options.seed,
                    progress=progress,
                )
            for r in results:
                q = r.report
                self.console.print(
                    f"  {r.format:6} int8 {r.model_size / 1024:4.0f} KiB: accuracy "
                    f"{100 * q.accuracy:.1f}% (float {100 * (q.float_accuracy or 0):.1f}%), "
                    f"agreement {100 * (q.top1_agreement or 0):.1f}%, host p50 "
                    f"{r.latency_p50_ms:.2f} ms -> {r.report_path.name}"
                )
        made = ModelVersion(version, epochs, keras_path, accuracy, results)
        self.versions[version] = made
        return made

    def bad_version(self, v1: ModelVersion, v2: ModelVersion) -> Path:
        with self.step("bad v3", "4/7 v3: deliberately bad (v2's model with v1's golden vectors)"):
            path = self.workdir / "bundles" / "conveyor-3.0.0-tflite-int8.efb"
            bundle = make_stale_golden_bundle(
                v2.bundle_path("tflite"), v1.bundle_path("tflite"), path, "3.0.0"
            )
            self.console.print(
                f"  {path.name}: well formed and it will be signed, but its golden vectors were "
                "recorded with another model; the camera's smoke test must refuse it"
            )
            self.sha_to_version[bundle.sha256] = "3.0.0"
        self.bad_bundle = path
        return path

    # --- the release manager and the operator --------------------------------------------

    def release(self) -> tuple[Any, Any]:
        from edge_runtime.bundle import read_bundle
        from fleet_server.trust import Repository, init_keys

        with self.step(
            "keys and release",
            "5/7 keys and release: TUF keys; the release key signs the TFLite bundles the fleet runs",
        ):
            keys = init_keys(self.workdir / "keys")
            repository = Repository.create(self.workdir / "repo", keys)
            self.console.print(
                f"  keys in {self.workdir / 'keys'} (root and the release key are offline keys; "
                "the server gets snapshot, timestamp and assignments only)"
            )
            for path in self.bundle_paths():
                released = repository.release(path, keys.role("targets"))
                bundle = read_bundle(path)
                self.sha_to_version[bundle.sha256] = bundle.manifest.version
                self.console.print(
                    f"  released {path.name} ({released.length} bytes, sha256 {bundle.sha256[:12]})"
                )
        return repository, keys

    def bundle_paths(self) -> list[Path]:
        """The bundles the fleet runs: TFLite int8 (the ONNX ones stay on the workstation)."""
        paths = [v.bundle_path("tflite") for v in self.versions.values()]
        if self.bad_bundle is not None:
            paths.append(self.bad_bundle)
        return paths

    def sha(self, version: str) -> str:
        return next(s for s, v in self.sha_to_version.items() if v == version)

    def start_fleet(self, repository: Any, keys: Any) -> LocalFleet:
        s = self.scale
        with self.step(
            "fleet up",
            f"6/7 fleet: the fleet server with its embedded MQTT broker, and {s.cameras} cameras "
            "(each an `edgefleet device run` process reading the video)",
        ):
            fleet = LocalFleet(self.workdir, repository, keys)
            self.fleet = fleet
            fleet.start_server(self.bundle_paths())
            cameras = fleet.start_cameras(
                s.cameras,
                CameraSettings(
                    video=self.workdir / "conveyor.avi",
                    probation_s=s.probation_s,
                ),
            )
            self.logs = {c.device_id: PredictionLog(c.predictions) for c in cameras}
            self.console.print(
                f"  server database {fleet.db_url}, broker {fleet.broker_address} (embedded amqtt)"
            )
            self.console.print(
                f"  cameras {', '.join(c.device_id for c in cameras)}: configs, stores and logs "
                f"in {self.workdir / 'devices'}"
            )
            self.open_console(fleet)
            assert self.console_url is not None and self.console_token is not None
            assert fleet.registry is not None
            self.field_data = FieldDataDemo(
                api_url=self.console_url.removesuffix("/console"),
                token=self.console_token,
                registry=fleet.registry,
                images=fleet.server_dir / "field-data",
                group=GROUP,
            )
        return fleet

    def open_console(self, fleet: LocalFleet) -> None:
        """Serve the operator's console with a fresh admin token, and say where."""
        from edge_runtime.atomic import atomic_write_text
        from fleet_server.access import new_secret

        token = new_secret()
        self.console_url = fleet.serve_console(token, self.options.console_port)
        self.console_token = token
        atomic_write_text(self.workdir / "console-token", token + "\n", mode=0o600)
        self.print_console("  ")

    def print_console(self, indent: str) -> None:
        if self.console_url is None:
            return
        self.console.print(f"{indent}operator's console: [bold]{self.console_url}[/]")
        self.console.print(
            f"{indent}login token (admin): [bold]{self.console_token}[/] "
            f"(also in {self.workdir / 'console-token'})",
            soft_wrap=True,
        )

    def keep_running(self) -> None:
        """Write the report, then leave the fleet running for the console until Ctrl-C."""
        assert self.fleet is not None
        self.poll_logs()
        summary = self.summary(0, None)
        paths = write_reports(self.workdir, summary)
        self.console.print()
        print_summary(summary, paths, self.console)
        self.kept = True
        self.console.print()
        self.console.rule("[bold]the fleet keeps running (--keep)")
        self.print_console("")
        self.console.print(
            "click through what just happened: the fleet, each camera's versions and events, "
            "the bundles' quality reports, the rollouts' waves and gate verdicts. "
            "Ctrl-C stops the cameras, the server and the broker."
        )
        reported: set[str] = set()
        while True:
            self.poll_logs()
            for camera in self.fleet.dead_cameras():
                if camera.device_id not in reported:  # the console shows it offline
                    reported.add(camera.device_id)
                    self.console.print(f"{camera.device_id} exited (see {camera.log})")
            time.sleep(1.0)

    # --- rollouts under the live view ----------------------------------------------------

    def poll_logs(self) -> None:
        for log_ in self.logs.values():
            log_.poll()

    def poll(self) -> None:
        self.poll_logs()
        if self.fleet is not None:
            dead = self.fleet.dead_cameras()
            if dead:
                names = ", ".join(f"{c.device_id} (see {c.log})" for c in dead)
                raise DemoError(f"camera process exited: {names}")

    def summary(self, status: int, error: str | None) -> dict[str, Any]:
        """Everything the run measured, as JSON-friendly values (the report is made from this)."""
        devices: dict[str, Any] = {}
        registry = self.fleet.registry if self.fleet is not None else None
        states = {d.id: d for d in registry.devices()} if registry is not None else {}
        for device_id, log_ in sorted(self.logs.items()):
            state = states.get(device_id)
            served_from = next(
                (at for _name, at, counts in self.checkpoints if counts.get(device_id)), None
            )
            devices[device_id] = {
                "active_version": self.sha_to_version.get(state.active_bundle or "", None)
                if state is not None
                else None,
                "active_bundle": state.active_bundle if state is not None else None,
                "phase": state.phase if state is not None else None,
                "predictions": log_.count,
                "predictions_by_version": dict(log_.by_version),
                "first_prediction_at": log_.first_at,
                "last_prediction_at": log_.last_at,
                "max_gap_s": round(log_.max_gap_s, 3),
                "counting_from": served_from,
                "latency_ms": {
                    version: {
                        "predictions": summary.predictions,
                        "p50": round(summary.p50_ms, 3),
                        "p95": round(summary.p95_ms, 3),
                        "max": round(summary.max_ms, 3),
                    }
                    for version, summary in log_.latency().items()
                },
                "predictions_file": str(log_.path),
            }
        bundles = {
            version: {
                "epochs": made.epochs,
                "keras_val_accuracy": made.val_accuracy,
                "conversions": [r.to_dict() for r in made.results],
            }
            for version, made in self.versions.items()
        }
        return {
            "ok": status == 0,
            "error": error,
            "fast": self.options.fast,
            "data": str(self.options.data) if self.options.data is not None else "synthetic",
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "timings_s": self.timings,
            "latency_budget_ms": LATENCY_BUDGET_MS,
            "bundles": bundles,
            "bad_bundle": str(self.bad_bundle) if self.bad_bundle is not None else None,
            "versions_by_sha256": self.sha_to_version,
            "database": self.fleet.db_url if self.fleet is not None else None,
            "rollouts": [r.to_dict() for r in self.rollouts],
            "checkpoints": [
                {"name": name, "at": at, "predictions": counts}
                for name, at, counts in self.checkpoints
            ],
            "devices": devices,
            "field_data": self.field_data.result if self.field_data is not None else None,
        }

    def checkpoint(self, name: str) -> None:
        self.poll()
        self.checkpoints.append(
            (name, time.time(), {d: log_.count for d, log_ in self.logs.items()})
        )

    def wait(
        self, live: Live, view: FleetView, done: Callable[[], bool], timeout: float, what: str
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            live.update(view.render(), refresh=True)
            if done():
                return
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(_REFRESH_S)

    def fleet_loop(self, fleet: LocalFleet) -> None:
        assert fleet.server is not None and fleet.registry is not None
        server, registry = fleet.server, fleet.registry
        view = FleetView(registry, self.logs, self.sha_to_version, step="cameras connecting")
        cameras = set(self.logs)

        def fleet_state() -> dict[str, Any]:
            return {d.id: d for d in registry.devices() if d.id in cameras}

        with Live(view.render(), console=self.console, auto_refresh=False, transient=False) as live:
            self.wait(
                live,
                view,
                lambda: (
                    all(d.availability == "online" for d in fleet_state().values())
                    and len(fleet_state()) == len(cameras)
                ),
                60,
                "every camera to connect",
            )
            self.checkpoint("cameras online")
            self.collect_field_data(live)
            plan = [
                ("1.0.0", None, self.scale.first_install(), "completed"),
                ("2.0.0", "1.0.0", self.scale.shadowed(), "completed"),
                ("3.0.0", "2.0.0", self.scale.staged(), "rolled-back"),
            ]
            for version, previous, waves, expected in plan:
                self.rollout(
                    live,
                    view=view,
                    version=version,
                    previous=previous,
                    waves=waves,
                    expected=expected,
                    fleet_state=fleet_state,
                )
            view.step = f"serving: the fleet keeps classifying for {self.scale.settle_s:g} s"
            view.rollout_id = None
            settle_until = time.monotonic() + self.scale.settle_s
            self.wait(live, view, lambda: time.monotonic() > settle_until, 60, "the end")
            self.export_field_data(live, view)
            self.checkpoint("end")
        del server

    def collect_field_data(self, live: Live) -> None:
        """The operator switches field-data collection on for the cameras' group."""
        from edgefleet.demo.field_data import BELOW_CONFIDENCE, PER_MINUTE

        assert self.field_data is not None
        self.field_data.enable()
        live.console.print(
            f"[bold]field data[/]: {GROUP} keeps the frames its cameras answer with less than "
            f"{BELOW_CONFIDENCE:.0%} confidence (at most {PER_MINUTE} a minute each) and uploads them"
        )

    def export_field_data(self, live: Live, view: FleetView) -> None:
        """Export the uncertain frames the cameras collected (a few seconds for the last uploads)."""
        assert self.field_data is not None
        field_data = self.field_data
        view.step = "exporting the uncertain frames the cameras collected"
        deadline = time.monotonic() + 10  # a model sure of every frame: nothing, no failure
        while field_data.stored() == 0 and time.monotonic() < deadline:
            self.poll()
            live.update(view.render(), refresh=True)
            time.sleep(_REFRESH_S)
        done = field_data.export(self.workdir / "uncertain-frames")
        answers = ", ".join(f"{k}: {n}" for k, n in done["by_answer"].items()) or "none"
        live.console.print(
            f"  {done['samples']} uncertain frames exported to {done['folder']} "
            f"(by the cameras' answers: {answers})"
        )

    def rollout(
        self,
        live: Live,
        *,
        view: FleetView,
        version: str,
        previous: str | None,
        waves: list[WaveSpec],
        expected: str,
        fleet_state: Callable[[], dict[str, Any]],
    ) -> None:
        assert self.fleet is not None and self.fleet.server is not None
        registry = self.fleet.registry
        assert registry is not None
        sha = self.sha(version)
        previous_sha = self.sha(previous) if previous is not None else None
        shape = "all cameras at once" if len(waves) == 1 else "canary, then 40%, then the rest"
        if waves[0].shadow is not None:
            shape = (
                f"{waves[0].count} cameras run it beside {previous} first (shadow), then {shape}"
            )
        view.step = f"rollout of {version} ({shape})"
        live.console.print(f"[bold]rollout of {version}[/]: {shape}")
        began = time.time()
        rollout_id = self.fleet.server.create_rollout(
            sha, TargetSelector.tags([GROUP]), waves, previous_sha256=previous_sha
        )
        view.rollout_id = rollout_id
        self.wait(
            live,
            view,
            lambda: registry.rollout(rollout_id).status in TERMINAL_ROLLOUT_STATUSES,
            300,
            f"the rollout of {version} to finish",
        )
        settled = sha if previous_sha is None or expected != "rolled-back" else previous_sha
        self.wait(
            live,
            view,
            lambda: (
                all(
                    d.active_bundle == settled and (d.phase or "idle") not in WORKING_PHASES
                    for d in fleet_state().values()
                )
                and all(log_.version == self.sha_to_version[settled] for log_ in self.logs.values())
            ),
            120,
            f"every camera to serve {self.sha_to_version[settled]}",
        )
        info = registry.rollout(rollout_id)
        outcome = RolloutOutcome.collect(registry, rollout_id, version, began, self.sha_to_version)
        self.rollouts.append(outcome)
        self.checkpoint(f"after {version}")
        style = "green" if info.status == expected else "red"
        live.console.print(
            f"  [{style}]{info.status}[/] in {outcome.duration_s:.0f} s"
            + (f": {info.reason}" if info.reason else "")
        )
        for line in outcome.device_lines():
            live.console.print(f"    {line}")
        if info.status != expected:
            raise DemoError(
                f"the rollout of {version} ended {info.status}, expected {expected}"
                + (f": {info.reason}" if info.reason else "")
            )

    def steps(self) -> None:
        """Every step, in order."""
        scale = self.scale
        data = self.data()
        v1 = self.model(data, "1.0.0", scale.epochs_v1, 2)
        v2 = self.model(data, "2.0.0", scale.epochs_v2, 3)
        self.bad_version(v1, v2)
        repository, keys = self.release()
        fleet = self.start_fleet(repository, keys)
        with self.step("rollouts", "7/7 rollouts: v1, then v2 in waves, then the bad v3"):
            self.fleet_loop(fleet)

    def finish(self, status: int, error: str | None, previous_sigterm: Any) -> None:
        """Stop the cameras, report (unless interrupted), stop the server and the broker."""
        # a second Ctrl-C must not cut the clean-up short
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if self.fleet is not None:
                self.fleet.stop_cameras()
                self.poll_logs()
            if status != 130 and not self.kept:
                summary = self.summary(status, error)
                paths = write_reports(self.workdir, summary)
                self.console.print()
                print_summary(summary, paths, self.console)
        finally:
            if self.fleet is not None:
                # a normal disconnect on the way out is not worth a warning
                logging.getLogger("fleet_server.process").setLevel(logging.ERROR)
                self.fleet.stop()
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)
            signal.signal(signal.SIGINT, previous_sigint)


MARKER = ".edgefleet-demo-workdir"
"""The file that marks a folder as the demo's own, so that a second run may empty it."""


def prepare_workdir(workdir: Path) -> None:
    """Empty the previous run's workdir (only one the demo made) and mark it as the demo's."""
    if workdir.exists():
        if not workdir.is_dir():
            raise DemoError(f"--workdir {workdir} is not a folder")
        if any(workdir.iterdir()):
            if not (workdir / MARKER).is_file():
                raise DemoError(
                    f"--workdir {workdir} holds files the demo did not make (no {MARKER} in it); "
                    "the demo empties its workdir, so remove it or choose another"
                )
            shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by edgefleet demo; emptied by the next run\n")


def _interrupt_on_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def run_demo(options: DemoOptions, console: Console) -> int:
    """Run the demo; the exit status: 0 ok, 1 a step failed, 2 unusable workdir, 130 interrupted."""
    scale = scale_for(options.fast)
    run = _Run(options, console, scale)
    console.rule("[bold]edgefleet demo" + (" --fast" if options.fast else ""))
    console.print(
        "data -> two trained versions -> int8 TFLite/ONNX with parity reports -> signed releases "
        f"-> a fleet server and {scale.cameras} cameras -> v1 everywhere, v2 through a canary and "
        "waves, a bad v3 stopped by its canary"
    )
    try:
        prepare_workdir(options.workdir)
    except DemoError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    previous = _interrupt_on_sigterm()
    status = 0
    error: str | None = None
    try:
        run.steps()
        if options.keep:
            run.keep_running()
        else:
            console.print(
                "\nthe console stops with the fleet: `edgefleet demo --keep` (or "
                "`make demo DEMO_ARGS=--keep`) leaves both running at the end"
            )
    except KeyboardInterrupt:
        if run.kept:  # --keep: Ctrl-C is how a finished demo ends
            console.print("\nstopping the cameras, the server and the broker")
        else:
            status, error = 130, "interrupted"
            console.print(
                "\n[yellow]interrupted: stopping the cameras, the server and the broker[/]"
            )
    except Exception as exc:  # boundary: any failed step ends the demo with its reason
        status, error = 1, f"{type(exc).__name__}: {exc}"
        log.debug("demo failed", exc_info=True)
        console.print(f"\n[red]demo failed: {error}[/]")
    finally:
        run.finish(status, error, previous)
    if status == 130:
        console.print("stopped cleanly")
    return status
