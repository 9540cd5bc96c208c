"""Inference as a local service: ``POST /classify`` with an image, answered with the prediction record.

For other applications on the camera box (the "model as a service"
pattern): they ask the device's active model instead of shipping their own.
Off by default and bound to loopback by default. Routes:

- ``POST /classify``: the body is an encoded image (JPEG, PNG, ...); 200 with
  the same JSON record every output receives (``frame_id`` counts requests,
  ``captured_at`` is the request's arrival, ``latency_ms`` arrival to answer).
  On a multi-camera box, ``?camera=ID`` classifies with that camera's model:
  the box's bundle, or the camera's own when it is its own fleet device
  (``cameras[].fleet``; the record then names that device's id); the record
  carries ``camera_id``. Without ``camera`` the box's bundle answers; an
  unknown camera is a 404 that names the known ones;
  400 for a body that is not an image, 411 without ``Content-Length``, 413 over
  ``max_image_bytes``, 503 with ``Retry-After`` when ``max_concurrency``
  requests are already being classified or no model is active yet;
- ``GET /healthz``: 200 with the active bundle (and, on a multi-camera box,
  each camera's), or 503 before there is one.

Each request slot holds its own interpreter (a classifier is not
thread-safe); a slot whose interpreter belongs to an older bundle rebuilds it
from the active one before classifying, so a hot swap reaches the service at
the next request and a request in flight finishes on the model it started with.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Mapping
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from edge_runtime.classifier import Classifier
from edge_runtime.errors import EdgefleetError, StatusServerError
from edge_runtime.line_config import LocalServiceConfig
from edge_runtime.pipeline import ActiveModel
from edge_runtime.prediction import Prediction
from edge_runtime.sources import is_valid_frame

__all__ = ["CameraModel", "LocalClassifyService"]

log = logging.getLogger(__name__)


class CameraModel(NamedTuple):
    """The model a camera's frames are classified with, and the fleet device id its records name."""

    model: ActiveModel
    device_id: str


class _Slot:
    """One request's worth of inference: per model, an interpreter for the bundle it last served."""

    def __init__(self) -> None:
        self.classifiers: dict[int, Classifier] = {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("classify request from %s failed: %r", client_address, sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgefleet-classify"
    protocol_version = "HTTP/1.1"
    timeout = 10.0

    def __init__(self, app: LocalClassifyService, *args: Any, **kwargs: Any) -> None:
        self._app = app
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/classify":
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path: {url.path}"})
            return
        camera = parse_qs(url.query).get("camera", [None])[-1]
        if camera is not None and camera not in self._app.cameras:
            self.close_connection = True
            known = ", ".join(self._app.cameras) or "none: this device has one camera"
            self._reply(
                HTTPStatus.NOT_FOUND, {"error": f"no camera {camera!r} (known cameras: {known})"}
            )
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            self._reply(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return
        length = int(length_header)
        limit = self._app.config.max_image_bytes
        if length > limit:
            self.close_connection = True
            self._reply(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"image of {length} bytes is over the limit of {limit}"},
            )
            return
        body = self.rfile.read(length)
        status, payload, headers = self._app.classify_bytes(body, camera)
        self._reply(status, payload, headers)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            status, payload = self._app.health()
            self._reply(status, payload)
        elif path == "/classify":
            self._reply(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": "POST an image to /classify"},
                {"Allow": "POST"},
            )
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})

    def _reply(
        self,
        status: HTTPStatus,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class LocalClassifyService:
    """The device's ``POST /classify`` endpoint over the active model, with bounded concurrency."""

    def __init__(
        self,
        model: ActiveModel,
        config: LocalServiceConfig,
        *,
        device_id: str,
        cameras: Mapping[str, CameraModel] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.device_id = device_id
        self.cameras: dict[str, CameraModel] = dict(cameras or {})
        """Camera id -> its model and device id (a multi-camera box's; empty with one camera)."""
        self._slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for _ in range(config.max_concurrency):
            self._slots.put(_Slot())
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.answered = 0
        self.refused_busy = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def classify_bytes(
        self, body: bytes, camera: str | None = None
    ) -> tuple[HTTPStatus, dict[str, Any], dict[str, str] | None]:
        """Answer one request body with ``camera``'s model (default: the box's): (status, JSON
        payload, extra headers). ``camera`` is one of :attr:`cameras`."""
        arrived_wall, arrived = time.time(), time.monotonic()
        try:
            slot = self._slots.get_nowait()
        except queue.Empty:
            with self._lock:
                self.refused_busy += 1
            return (
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": f"busy: {self.config.max_concurrency} requests are being classified"},
                {"Retry-After": "1"},
            )
        try:
            return self._classify_in(slot, body, arrived_wall, arrived, camera)
        finally:
            self._slots.put(slot)

    def _classify_in(
        self,
        slot: _Slot,
        body: bytes,
        arrived_wall: float,
        arrived: float,
        camera: str | None = None,
    ) -> tuple[HTTPStatus, dict[str, Any], dict[str, str] | None]:
        model, device_id = (
            CameraModel(self.model, self.device_id) if camera is None else self.cameras[camera]
        )
        active = model.current
        if active is None:
            return (
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "no active model yet"},
                {"Retry-After": "1"},
            )
        decoded = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None or not is_valid_frame(decoded):
            return (
                HTTPStatus.BAD_REQUEST,
                {"error": "the body is not a decodable colour image"},
                None,
            )
        try:
            key = id(model)
            classifier = slot.classifiers.get(key)
            if classifier is None or classifier.bundle.sha256 != active.bundle.sha256:
                # release the old interpreter before building the new one
                slot.classifiers.pop(key, None)
                classifier = Classifier(
                    active.bundle, backend=active.backend.name, threads=self.config.threads
                )
                slot.classifiers[key] = classifier
            result = classifier.classify(np.asarray(decoded, dtype=np.uint8))
        except EdgefleetError as exc:
            log.warning("local classify failed: %s", exc)
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"inference failed: {exc}"}, None
        manifest = classifier.bundle.manifest
        prediction = Prediction(
            device_id=device_id,
            frame_id=next(self._ids),
            captured_at=arrived_wall,
            label=result.answer.label,
            confidence=result.answer.confidence,
            top_k=result.answer.top_k,
            uncertain=result.answer.uncertain,
            latency_ms=(time.monotonic() - arrived) * 1e3,
            inference_ms=result.total_ms,
            bundle_name=manifest.name,
            bundle_version=manifest.version,
            bundle_sha256=classifier.bundle.sha256,
            camera_id=camera,
        )
        with self._lock:
            self.answered += 1
        return HTTPStatus.OK, prediction.to_dict(), None

    def health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        """200 with the active bundle, 503 before there is one."""
        active = self.model.current
        if active is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "no active model"}
        payload: dict[str, Any] = {
            "status": "ok",
            "bundle": _bundle(active),
            "max_concurrency": self.config.max_concurrency,
        }
        if self.cameras:
            payload["cameras"] = {
                camera: {
                    "device_id": own.device_id,
                    "bundle": None if own.model.current is None else _bundle(own.model.current),
                }
                for camera, own in self.cameras.items()
            }
        return HTTPStatus.OK, payload

    def start(self) -> None:
        """Bind and serve in a daemon thread; :class:`StatusServerError` if the port is taken."""
        if self._server is not None:
            raise StatusServerError(f"local classify service already running on {self.url}")
        try:
            server = _Server((self.config.host, self.config.port), partial(_Handler, self))
        except OSError as exc:
            raise StatusServerError(
                f"cannot serve /classify on {self.config.host}:{self.config.port}: "
                f"{exc.strerror or exc}"
            ) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="local-classify",
            daemon=True,
        )
        self._thread.start()
        log.info("local classify service on %s/classify", self.url)

    def stop(self) -> None:
        """Stop serving and free the port (nothing when not running)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    @property
    def running(self) -> bool:
        """Whether the service is serving."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the OS's pick with ``port: 0``)."""
        if self._server is None:
            raise StatusServerError("local classify service is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running service."""
        return f"http://{self.config.host}:{self.port}"


def _bundle(classifier: Classifier) -> dict[str, str]:
    manifest = classifier.bundle.manifest
    return {
        "name": manifest.name,
        "version": manifest.version,
        "sha256": classifier.bundle.sha256,
    }
