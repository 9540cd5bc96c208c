"""The device's update agent: verified assignments in, a bundle that works (or the last good one) out.

It ties the parts together on one worker thread, so that every lifecycle
decision is taken in order: TUF metadata arrives retained over MQTT and is
verified by :class:`TrustClient`; a verified assignment starts a
receiver-driven chunk download; the download is checked against the signed
length and hash, moved into the store, smoke-tested, swapped in between two
frames, and watched during probation by the predictions the pipeline makes
(on a multi-camera device, each camera's stream judged on its own, but for
the cameras that were already dead at activation). The event that ends
probation carries each stream's figures.
A failure anywhere brings back (or keeps) the last good bundle. The state is
persisted atomically after every transition and reported retained, with an
event that says why.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_runtime import __version__
from edge_runtime.bundle.compat import compatibility_problem
from edge_runtime.bundle.model_bundle import Bundle, read_bundle
from edge_runtime.chunk_download import ChunkDownload
from edge_runtime.chunk_fetch import BundleFetcher
from edge_runtime.classifier import Classifier
from edge_runtime.config import DeviceConfig, UpdateConfig
from edge_runtime.errors import EdgefleetError, StoreError, TrustError, UpdateError
from edge_runtime.mqtt_link import MqttLink, device_topic
from edge_runtime.outputs import PredictionSink
from edge_runtime.pipeline import ActiveModel
from edge_runtime.prediction import Prediction
from edge_runtime.protocol import EventReport, ProbationFigures, WireMessage
from edge_runtime.supervise import SupervisedThread
from edge_runtime.trust import Assignment, TrustClient
from edge_runtime.update import (
    BundleRef,
    BundleStore,
    CameraProbation,
    ProbationMonitor,
    Transition,
    UpdatePhase,
    UpdateState,
    dead_cameras,
    event_report,
    protected_bundles,
    recover,
    smoke_test,
    state_report,
)

__all__ = ["UpdateAgent"]

log = logging.getLogger(__name__)

_TICK_S = 0.2


@dataclass
class _Probation:
    monitor: CameraProbation
    previous: Classifier | None
    sha256: str


class _AgentSink(PredictionSink):
    """Sees every prediction: feeds probation and the confidence baseline of the active bundle."""

    name = "update-agent"

    def __init__(self, agent: UpdateAgent) -> None:
        self._agent = agent

    def emit(self, prediction: Prediction) -> None:
        self._agent.observe(prediction)


class UpdateAgent:
    """Takes new bundles from the fleet and never leaves the device without a working one."""

    def __init__(self, config: DeviceConfig, model: ActiveModel, link: MqttLink) -> None:
        if config.update is None:
            raise UpdateError("the update agent needs an `update:` section in the device config")
        self.config = config
        self.settings: UpdateConfig = config.update
        self.model = model
        self.link = link
        self.prefix = link.config.topic_prefix
        self.store = BundleStore(config.store)
        self.trust = self._trust_client()
        self.sink = _AgentSink(self)
        self._events: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self._lock = threading.Lock()
        self._recent_confidence: dict[str | None, deque[float]] = {}
        """Per camera (None on a single-camera device): the serving bundle's recent confidences."""
        self._probation: _Probation | None = None
        self._fetcher: BundleFetcher | None = None
        self._assignment: Assignment | None = None
        self.refusals: list[str] = []
        self._unsaved: UpdateState | None = None
        self.store_problem: str | None = None
        """Why the update state cannot be persisted now (a full disk); None when it can."""
        self._frame_ages: dict[str, Callable[[], float | None]] = {}
        self.probation_excluded: dict[str, str] = {}
        """The cameras the latest activated bundle was not judged on (dead at activation), with why."""
        self.state = self._boot_state()

    # --- start-up ----------------------------------------------------------------

    def _trust_client(self) -> TrustClient:
        metadata = Path(self.config.store) / "metadata"
        root = self.settings.trusted_root
        if (metadata / "root.json").exists() or root is None:
            return TrustClient(metadata)
        return TrustClient.provision(metadata, root.read_bytes())

    def _boot_state(self) -> UpdateState:
        now = time.time()
        state = self.store.load_state(now)
        target = state.target
        present = target is not None and (
            self.store.has(target.bundle.sha256)
            or (Path(self.config.store) / "downloads" / f"{target.bundle.sha256}.download").exists()
        )
        recovered = recover(state, now, bundle_present=present)
        state = self._commit_transition(recovered, publish=False, tolerate_store=True)
        self._boot_events = recovered.events  # published once connected
        if state.active is None and self.config.bundle is not None:
            # first boot: the provisioned bundle becomes active and last good
            bundle = read_bundle(self.config.bundle)
            self.store.add(self.config.bundle.read_bytes())
            ref = _ref(bundle)
            state = UpdateState.initial(active=ref, now=now).model_copy(update={"last_good": ref})
            self.store.save_state(state)
        return state

    def boot_classifier(self) -> Classifier | None:
        """The classifier for the bundle the device should serve after (re)boot."""
        active = self.state.active
        if active is None:
            return None
        return self._classifier(self.store.load(active.sha256))

    def _classifier(self, bundle: Bundle) -> Classifier:
        return Classifier(bundle, backend=self.config.backend, threads=self.config.threads)

    def start(self) -> None:
        """Subscribe to the metadata and start the worker thread."""
        self.link.subscribe(f"{self.prefix}/tuf/#", self._on_metadata)
        self.link.add_connect_listener(self._publish_state)
        self._thread = SupervisedThread(self._run, "update-agent")
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker (an update in progress resumes after the next start)."""
        self._stop.set()
        self._events.put("stop")
        if self._fetcher is not None:
            self._fetcher.stop()
        if self._thread is not None:
            self._thread.stop(timeout=10)

    # --- inputs from other threads -----------------------------------------------

    def _on_metadata(self, topic: str, payload: bytes) -> None:
        suffix = topic[len(self.prefix) + len("/tuf/") :]
        if self.trust.offer(suffix, payload):
            self._events.put("metadata")

    def observe(self, prediction: Prediction) -> None:
        """Called by the pipeline (through the sink) for every prediction."""
        with self._lock:
            probation = self._probation
            if probation is not None and prediction.bundle_sha256 == probation.sha256:
                probation.monitor.record(prediction, finite=math.isfinite(prediction.confidence))
            elif math.isfinite(prediction.confidence):
                recent = self._recent_confidence.get(prediction.camera_id)
                if recent is None:
                    recent = self._recent_confidence[prediction.camera_id] = deque(maxlen=200)
                recent.append(prediction.confidence)

    def watch_camera(self, camera: str, frame_age: Callable[[], float | None]) -> None:
        """How to ask a camera of a multi-camera device for the seconds since its newest frame
        (None: none yet); asked when a bundle is activated, to leave dead cameras out."""
        self._frame_ages[camera] = frame_age

    def record_inference_error(self, message: str, camera: str | None = None) -> None:
        """An inference failed on the serving model, on ``camera`` of a multi-camera device
        (counts against probation)."""
        with self._lock:
            if self._probation is not None:
                self._probation.monitor.record_error(message, camera)

    # --- the worker --------------------------------------------------------------

    def _run(self) -> None:
        for boot_event in self._boot_events:
            self._publish("events", event_report(self.config.device_id, boot_event), retain=False)
        self._publish_state()
        while not self._stop.is_set():
            try:
                event = self._events.get(timeout=_TICK_S)
            except queue.Empty:
                event = "tick"
            if event == "stop":
                break
            if not self._retry_save():
                continue  # serving on; metadata is read again once the state can be saved
            try:
                if event == "metadata":
                    self._refresh()
                self._advance()
            except EdgefleetError as exc:
                self._fail(str(exc))
            except Exception as exc:
                log.exception("update agent error")
                self._fail(f"internal error: {type(exc).__name__}: {exc}")

    def _refresh(self) -> None:
        try:
            complete = self.trust.refresh()
            for warning in self.trust.take_warnings():
                self._refuse(warning)  # refused, reported, and updates go on without it
            if not complete:
                log.debug("metadata not complete yet: %s", self.trust.last_error)
                return
            assignment = self.trust.assignment(self.config.device_id, self.settings.groups)
        except TrustError as exc:
            self._refuse(str(exc))
            return
        if assignment is None:
            return
        self._assignment = assignment
        custom = self.trust.bundle_target(assignment.bundle_sha256).custom
        ref = BundleRef(
            sha256=assignment.bundle_sha256,
            name=str(custom.get("name", "bundle")),
            version=str(custom.get("version", "0")),
        )
        handled = self.state.handled_assignment
        newer = handled is None or assignment.assignment > handled
        current = self.state.target
        superseded = current is not None and current.bundle.sha256 != ref.sha256
        if (
            newer
            and superseded
            and self.state.phase in (UpdatePhase.ACTIVATING, UpdatePhase.PROBATION)
        ):
            self._end_probation(restore=True)  # the lifecycle rolls back before the new update
        self._apply(self.state.assignment_seen(ref, assignment.assignment, time.time()))

    def _advance(self) -> None:
        phase = self.state.phase
        if phase == UpdatePhase.DOWNLOADING:
            self._download()
        elif phase == UpdatePhase.VERIFYING:
            self._verify()
        elif phase == UpdatePhase.STAGED:
            self._apply(self.state.smoke_started(time.time()))
            self._smoke_and_activate()
        elif phase == UpdatePhase.SMOKE_TESTING:
            self._smoke_and_activate()
        elif phase == UpdatePhase.PROBATION:
            self._judge_probation()

    def _download(self) -> None:
        target = self.state.target
        if target is None or self._assignment is None:
            return  # resumes once verified metadata says what to fetch
        sha = target.bundle.sha256
        if self.store.has(sha):
            self._apply(self.state.download_complete(time.time()))
            return
        if self._fetcher is not None and self._fetcher.download.sha256 == sha:
            if self._fetcher.done.is_set():
                fetcher, self._fetcher = self._fetcher, None
                if fetcher.error is not None:
                    raise fetcher.error
                self._apply(self.state.download_complete(time.time()))
            return
        if self._fetcher is not None:
            self._fetcher.stop()
        length = self._assignment.length
        self.store.check_space(length)
        download = ChunkDownload(
            Path(self.config.store) / "downloads",
            sha,
            length,
            window_timeout=self.settings.window_timeout_s,
        )
        self._fetcher = BundleFetcher(
            self.link, download, on_done=lambda _f: self._events.put("fetched")
        )
        self._fetcher.start()

    def _verify(self) -> None:
        target = self.state.target
        assert target is not None
        sha = target.bundle.sha256
        now = time.time()
        if not self.store.has(sha):
            downloaded = Path(self.config.store) / "downloads" / f"{sha}.download"
            try:
                if self._assignment is None:
                    return  # after a restart: wait for verified metadata
                self.trust.verify_file(downloaded, self.trust.bundle_target(sha))
                self.store.install(downloaded, sha)
            except TrustError as exc:
                downloaded.unlink(missing_ok=True)
                self._apply(self.state.verification_failed(str(exc), now))
                return
        try:
            loaded = self.store.load(sha)
        except EdgefleetError as exc:
            self._apply(self.state.verification_failed(str(exc), now))
            return
        too_old = compatibility_problem(loaded.manifest.compatibility.min_runtime_version)
        if too_old is not None:  # the server leaves such devices out when it knows their version
            self._apply(self.state.verification_failed(too_old, now))
            return
        self._apply(self.state.verified(now))

    def _smoke_and_activate(self) -> None:
        target = self.state.target
        assert target is not None
        key = target.key
        bundle = self.store.load(target.bundle.sha256)
        try:
            report = smoke_test(
                bundle,
                backend=self.config.backend,
                threads=self.config.threads,
                latency_runs=self.settings.smoke_latency_runs,
            )
        except EdgefleetError as exc:
            if self.state.target is not None and self.state.target.key == key:
                self._apply(self.state.smoke_failed(str(exc), time.time()))
            return
        if self.state.target is None or self.state.target.key != key:
            return  # superseded while testing: never activate an old result
        cameras: list[str | None] = (
            [None] if self.config.cameras is None else [c.id for c in self.config.cameras]
        )
        excluded = self._dead_cameras()
        if excluded and len(excluded) == len(cameras):
            self._apply(
                self.state.failed(
                    "not activated: every camera is dead, the bundle cannot be judged on any "
                    "stream ("
                    + "; ".join(f"{camera}: {why}" for camera, why in excluded.items())
                    + ")",
                    time.time(),
                )
            )
            return
        self._apply(self.state.smoke_passed(time.time()))
        judged = [camera for camera in cameras if camera is None or camera not in excluded]
        with self._lock:
            baselines = {camera: self._baseline(camera) for camera in judged}
            now = time.time()
            monitors = {
                camera: ProbationMonitor(
                    now,
                    window_s=self.settings.probation_s,
                    min_predictions=self.settings.probation_min_predictions,
                    baseline_confidence=baselines[camera],
                    latency_budget_ms=bundle.manifest.compatibility.latency_budget_ms,
                    min_confidence_ratio=self.settings.min_confidence_ratio,
                )
                for camera in judged
            }
            # several cameras: one that stops answering with the new bundle for as long as
            # /healthz allows a camera without frames fails it (a single camera waits, as ever)
            silence = None if self.config.cameras is None else self.config.health.max_frame_age_s
            judge = CameraProbation(monitors, silence_s=silence, excluded=excluded)
            # swapped only now that the monitors are built: nothing can fail in between
            previous = self.model.swap(report.classifier)
            self._probation = _Probation(monitor=judge, previous=previous, sha256=bundle.sha256)
            self.probation_excluded = excluded
        if excluded:
            log.warning(
                "bundle %s is not judged on %s: %s",
                bundle.sha256[:12],
                ", ".join(excluded),
                "; ".join(excluded.values()),
            )
        self._apply(self.state.activated(now))

    def _dead_cameras(self) -> dict[str, str]:
        """The cameras of a multi-camera device that are dead now (none when they are judged anyway)."""
        if self.config.cameras is None or not self.settings.exclude_dead_cameras:
            return {}
        ages = {camera: age() for camera, age in self._frame_ages.items()}
        return dead_cameras(ages, self.config.health.max_frame_age_s)

    def _baseline(self, camera: str | None) -> float | None:
        """Mean confidence of the serving bundle's recent predictions on ``camera`` (20 at least)."""
        recent = self._recent_confidence.get(camera, ())
        return sum(recent) / len(recent) if len(recent) >= 20 else None

    def _judge_probation(self) -> None:
        with self._lock:
            probation = self._probation
            if probation is None:
                # restarted into probation cannot happen (recover rolls back); be safe
                self._apply(self.state.probation_failed("probation lost its monitor", time.time()))
                return
            verdict = probation.monitor.verdict(time.time())
            figures = probation.monitor.figures() if verdict is not None else None
        if verdict is None:
            return
        if verdict.passed:
            self._end_probation(restore=False)
            self._apply(self.state.probation_passed(time.time()), probation=figures)
            self.store.prune(protected_bundles(self.state))
        else:
            self._end_probation(restore=True)
            self._apply(self.state.probation_failed(verdict.reason, time.time()), probation=figures)

    def _end_probation(self, restore: bool) -> None:
        with self._lock:
            probation, self._probation = self._probation, None
            self._recent_confidence.clear()
        if restore and probation is not None:
            previous = probation.previous
            if previous is None and self.state.last_good is not None:
                previous = self._classifier(self.store.load(self.state.last_good.sha256))
            if previous is not None:
                self.model.swap(previous)

    def _fail(self, reason: str) -> None:
        log.warning("update failed: %s", reason)
        if self.state.phase in (UpdatePhase.ACTIVATING, UpdatePhase.PROBATION):
            self._end_probation(restore=True)
        if self._fetcher is not None:
            self._fetcher.stop()
            self._fetcher = None
        try:
            self._apply(self.state.failed(reason, time.time()))
        except UpdateError:
            self._refuse(reason)

    # --- state, events ---------------------------------------------------------------

    def _apply(
        self, transition: Transition, *, probation: list[ProbationFigures] | None = None
    ) -> None:
        """Persist and publish ``transition``; ``probation``: the figures of the probation it ends."""
        self.state = self._commit_transition(transition, publish=True, probation=probation)

    def _commit_transition(
        self,
        transition: Transition,
        publish: bool,
        *,
        tolerate_store: bool = False,
        probation: list[ProbationFigures] | None = None,
    ) -> UpdateState:
        state = transition.state
        try:
            self.store.save_state(state)
        except StoreError as exc:
            if not tolerate_store:
                raise
            self._hold_unsaved(state, exc)
        if publish:
            for event in transition.events:
                log.info(
                    "update %s -> %s: %s",
                    event.from_state.value,
                    event.to_state.value,
                    event.reason,
                )
                figures = probation if event.from_state == UpdatePhase.PROBATION else None
                report = event_report(self.config.device_id, event, figures)
                self._publish("events", report, retain=False)
            if transition.events:
                self.state = state
                self._publish_state()
        return state

    def worker_problem(self) -> str | None:
        """Why the update agent's worker is not running (for ``/healthz``), or None."""
        if self._thread is None:
            return None
        health = self._thread.health()
        if health.alive:
            return None
        return f"the update agent's worker is not running ({health.last_error or 'ended'})"

    def store_warning(self) -> str | None:
        """The store problem that holds updates back (for ``/healthz``), or None."""
        if self.store_problem is None:
            return None
        return f"update state not persisted, updates held: {self.store_problem}"

    def _hold_unsaved(self, state: UpdateState, error: StoreError) -> None:
        """Keep ``state`` in memory, classify on with its active bundle, retry saving each tick.

        Booting on a full disk must not leave the camera blind: the last good
        bundle is intact on disk and serves; no update moves until the state
        can be persisted again (a power cut meanwhile boots the state on disk).
        """
        if self._unsaved is None:
            log.error(
                "cannot persist the update state (%s): classifying on with the active bundle; "
                "updates wait until it can be saved",
                error,
            )
        self._unsaved = state
        self.store_problem = str(error)

    def _retry_save(self) -> bool:
        """Persist the held state; True when nothing is held any more."""
        if self._unsaved is None:
            return True
        try:
            self.store.save_state(self._unsaved)
        except StoreError as exc:
            self.store_problem = str(exc)
            return False
        log.warning("the update state is saved again; updates resume")
        self._unsaved = None
        self.store_problem = None
        self._publish_state()
        self._events.put("metadata")  # what arrived meanwhile is read now
        return True

    def _refuse(self, reason: str) -> None:
        """Metadata or a bundle was refused: say why, keep serving what runs now."""
        log.warning("refused: %s", reason)
        self.refusals.append(reason)
        self._publish(
            "events", EventReport.refusal(self.config.device_id, reason, time.time()), retain=False
        )

    def _publish_state(self) -> None:
        report = state_report(
            self.config.device_id, self.state, __version__, store_problem=self.store_problem
        )
        self._publish("state", report, retain=True)

    def _publish(self, leaf: str, message: WireMessage, retain: bool) -> None:
        topic = device_topic(self.prefix, self.config.device_id, leaf)
        self.link.publish(topic, message.encode(), qos=1, retain=retain)


def _ref(bundle: Bundle) -> BundleRef:
    return BundleRef(
        sha256=bundle.sha256, name=bundle.manifest.name, version=bundle.manifest.version
    )
