"""The device's side of a shadow wave: a retained request in, a verified candidate run in shadow, reports out.

:class:`ShadowController` subscribes to ``devices/<id>/shadow/request``. A
request names a candidate bundle: the controller's worker checks that the
release key signed it (the device's TUF metadata, as for any update), takes
it from the bundle store when the device holds it already or fetches it over
MQTT in chunks like an update (into its own downloads folder, never the
update agent's), verifies the bytes against the signed length and hash and
installs them in the bundle store (so the update that activates it later
needs no second download), smoke-tests it (golden vectors, specs) and only
then starts a
:class:`~edge_runtime.shadow.runner.ShadowRunner` beside the active model.
While it prepares it reports ``preparing``; when it cannot run the candidate,
``failed`` with the reason. An empty request (or one for another bundle) ends
the run. The update lifecycle is never touched: the active bundle, probation
and the outputs are the same with or without a shadow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge_runtime.bundle.model_bundle import Bundle
from edge_runtime.chunk_download import ChunkDownload
from edge_runtime.chunk_fetch import BundleFetcher
from edge_runtime.classifier import Classifier
from edge_runtime.errors import EdgefleetError, TrustError
from edge_runtime.mqtt_link import MqttLink, device_topic
from edge_runtime.prediction import Prediction
from edge_runtime.protocol.shadow import ShadowReport, ShadowRequest
from edge_runtime.shadow.runner import ShadowRunner
from edge_runtime.shadow.window import ShadowWindow
from edge_runtime.sources.base import Frame
from edge_runtime.supervise import SupervisedThread
from edge_runtime.update import smoke_test

if TYPE_CHECKING:
    from edge_runtime.trust import TrustClient
    from edge_runtime.update import BundleStore

__all__ = ["ShadowController"]

log = logging.getLogger(__name__)

METADATA_WAIT_S = 120.0
"""How long a request waits for metadata that lists the candidate before it fails."""
PREPARING_EVERY_S = 10.0
"""How often a ``preparing`` report goes out while the candidate is fetched."""


class ShadowController:
    """Runs the candidate the server asks for in shadow (see the module)."""

    def __init__(
        self,
        device_id: str,
        link: MqttLink,
        trust: TrustClient,
        store: BundleStore,
        folder: Path,
        *,
        backend: str = "auto",
        window_timeout_s: float = 10.0,
        on_disagreement: Callable[[npt.NDArray[np.uint8], Prediction], object] | None = None,
    ) -> None:
        self.device_id = device_id
        self.link = link
        self.trust = trust
        self.store = store
        self.folder = Path(folder)
        self.backend = backend
        self.window_timeout_s = window_timeout_s
        self.on_disagreement = on_disagreement
        """Each frame a candidate answered otherwise (field data's ``shadow_disagreement`` rule)."""
        prefix = link.config.topic_prefix
        self._request_topic = device_topic(prefix, device_id, "shadow/request")
        self._report_topic = device_topic(prefix, device_id, "shadow/report")
        self._lock = threading.Lock()
        self._wanted: ShadowRequest | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self.runner: ShadowRunner | None = None
        """The shadow run in progress, if any."""
        self.failure: str | None = None
        """Why the last request could not run, if it could not."""

    # --- from other threads ---------------------------------------------------------------

    def observe(self, frame: Frame, prediction: Prediction) -> None:
        """The FrameObserver the pipelines call: hands the frame to the current run, if any."""
        runner = self.runner
        if runner is not None:
            runner.observe(frame, prediction)

    def _on_request(self, _topic: str, payload: bytes) -> None:
        wanted: ShadowRequest | None = None
        if payload:
            try:
                wanted = ShadowRequest.parse(payload)
            except EdgefleetError as exc:
                log.warning("ignored shadow request: %s", exc)
                return
        with self._lock:
            self._wanted = wanted
        self._wake.set()

    # --- the worker -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                wanted = self._wanted
            runner = self.runner
            if runner is not None and (wanted is None or wanted != runner.request):
                self._end_run("the server ended it" if wanted is None else "a new request")
            if wanted is not None and self.runner is None and self.failure != wanted.bundle_sha256:
                self._begin(wanted)

    def _begin(self, request: ShadowRequest) -> None:
        sha = request.bundle_sha256
        started = time.time()
        try:
            bundle = self._candidate(request, started)
            if bundle is None:
                return  # the request changed, or the device is stopping
            smoke_test(bundle, backend=self.backend, threads=1)
            classifier = Classifier(bundle, backend=self.backend, threads=1)
        except EdgefleetError as exc:
            self.failure = sha
            reason = f"cannot run {sha[:12]} in shadow: {exc}"
            log.warning("%s", reason)
            self._send(ShadowWindow(start=started).report(
                self.device_id, sha, None, time.time(), status="failed", reason=reason
            ))  # fmt: skip
            return
        self.failure = None
        runner = ShadowRunner(
            self.device_id, classifier, request, self._send, on_disagreement=self.on_disagreement
        )
        runner.start()
        self.runner = runner
        log.info(
            "shadow run of %s %s (%s) started: every %d frames, %.0f%% of a core",
            bundle.manifest.name,
            bundle.manifest.version,
            sha[:12],
            request.every_nth,
            request.cpu_budget * 100,
        )

    def _candidate(self, request: ShadowRequest, started: float) -> Bundle | None:
        """The verified candidate, or None when the request went away while waiting."""
        sha = request.bundle_sha256
        target = None
        while target is None:
            try:
                target = self.trust.bundle_target(sha)
            except TrustError as exc:
                if time.time() - started > METADATA_WAIT_S:
                    raise
                log.debug("shadow candidate %s not known yet: %s", sha[:12], exc)
                if not self._still_wanted(request, 1.0):
                    return None
        if not self.store.has(sha):
            self.store.check_space(target.length, "the shadow candidate")
            self.folder.mkdir(parents=True, exist_ok=True)
            download = ChunkDownload(
                self.folder / "downloads", sha, target.length, window_timeout=self.window_timeout_s
            )
            fetcher = BundleFetcher(self.link, download)
            fetcher.start()
            try:
                last = 0.0
                path = fetcher.wait(1.0)
                while path is None:
                    if not self._still_wanted(request, 0.0):
                        return None
                    if time.time() - last >= PREPARING_EVERY_S:
                        last = time.time()
                        self._send(ShadowWindow(start=started).report(
                            self.device_id, sha, None, last, status="preparing",
                            reason=f"fetching: {download.have} chunks received",
                        ))  # fmt: skip
                    path = fetcher.wait(1.0)
            finally:
                fetcher.stop()
            try:
                self.trust.verify_file(path, target)
            except TrustError:
                path.unlink(missing_ok=True)
                raise
            self.store.install(path, sha)
        return self.store.load(sha)

    def _still_wanted(self, request: ShadowRequest, wait_s: float) -> bool:
        if wait_s > 0:
            self._stop.wait(wait_s)
        with self._lock:
            return not self._stop.is_set() and self._wanted == request

    def _end_run(self, why: str) -> None:
        runner, self.runner = self.runner, None
        if runner is None:
            return
        runner.stop()
        runner.flush()  # the last window's figures count too
        log.info("shadow run of %s ended: %s", runner.sha256[:12], why)

    def _send(self, report: ShadowReport) -> None:
        self.link.publish(self._report_topic, report.encode(), qos=1)

    # --- start and stop -------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the request and start the worker."""
        if self._thread is not None:
            return
        self.link.subscribe(self._request_topic, self._on_request)
        self._stop.clear()
        self._thread = SupervisedThread(self._loop, f"shadow-{self.device_id}")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker and any shadow run (a retained request starts it again next time)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop(timeout=timeout)
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.stop()

    def worker_problem(self) -> str | None:
        """Why the shadow worker is not running (for ``/healthz``), or None."""
        thread = self._thread
        if thread is None or thread.health().alive:
            return None
        return f"the shadow worker is not running ({thread.health().last_error or 'ended'})"
