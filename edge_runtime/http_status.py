"""The device's local status endpoint: ``/metrics``, ``/healthz`` and ``/stats`` over HTTP.

Standard library only (``http.server`` in a daemon thread), bound to loopback
by default. Routes:

- ``GET /metrics``: Prometheus text exposition format 0.0.4;
- ``GET /healthz``: 200 ``{"status": "ok", ...}`` or 503 ``{"status": "unhealthy", "reasons": [...]}``;
- ``GET /stats``: JSON with the metrics snapshot, the health report and ``extra_info``;
- any other path is 404, any other method on a known or unknown path 405.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from edge_runtime.errors import StatusServerError
from edge_runtime.health import HealthState
from edge_runtime.metrics import MetricsRegistry

__all__ = ["PROMETHEUS_CONTENT_TYPE", "StatusServer"]

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_JSON_CONTENT_TYPE = "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # restart at once after a crash despite TIME_WAIT sockets
    allow_reuse_port = False  # never share the port with another process

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is not our fault; keep it off stderr.
        # socketserver calls this inside its ``except`` block.
        log.debug("status request from %s failed: %r", client_address, sys.exc_info()[1])


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgefleet-status"
    timeout = 10.0  # a stalled client must not hold a thread forever

    def __init__(self, app: StatusServer, *args: Any, **kwargs: Any) -> None:
        self._app = app
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        route = self._app.routes().get(path)
        if route is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
            return
        try:
            status, content_type, body = route()
        except Exception:  # boundary: a failing callback must not kill the server
            log.exception("status endpoint %s failed", path)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
            return
        self._send(status, content_type, body)

    def _method_not_allowed(self) -> None:
        self._send_json(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"method {self.command} not allowed"},
            extra_headers={"Allow": "GET"},
        )

    do_HEAD = _method_not_allowed  # noqa: N815
    do_POST = _method_not_allowed  # noqa: N815
    do_PUT = _method_not_allowed  # noqa: N815
    do_PATCH = _method_not_allowed  # noqa: N815
    do_DELETE = _method_not_allowed  # noqa: N815
    do_OPTIONS = _method_not_allowed  # noqa: N815
    do_TRACE = _method_not_allowed  # noqa: N815
    do_CONNECT = _method_not_allowed  # noqa: N815

    def _send_json(
        self,
        status: HTTPStatus,
        payload: Mapping[str, Any],
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._send(status, _JSON_CONTENT_TYPE, _json_bytes(payload), extra_headers)

    def _send(
        self,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, default=str, allow_nan=False).encode("utf-8")


_Route = Callable[[], tuple[HTTPStatus, str, bytes]]


class StatusServer:
    """Serves the runtime's metrics and health on a local HTTP port from a daemon thread.

    ``port=0`` picks a free port; read the real one from :attr:`port` after
    :meth:`start`. ``extra_info`` adds a JSON-friendly mapping (device id,
    config summary) to ``/stats``.
    """

    def __init__(
        self,
        registry: MetricsRegistry,
        health: HealthState,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_info: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.registry = registry
        self.health = health
        self.host = host
        self._requested_port = port
        self.extra_info = extra_info
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the port and serve in the background; :class:`StatusServerError` if it cannot."""
        with self._lock:
            if self._server is not None:
                raise StatusServerError(f"status server already running on {self.url}")
            server_cls = _Server6 if ":" in self.host else _Server
            try:
                server = server_cls((self.host, self._requested_port), partial(_Handler, self))
            except OSError as exc:
                raise StatusServerError(
                    f"cannot serve status on {self.host}:{self._requested_port}: "
                    f"{exc.strerror or exc}"
                ) from exc
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"status-http-{server.server_address[1]}",
                daemon=True,
            )
            self._server, self._thread = server, thread
            thread.start()
        log.info("status endpoint listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving and free the port (does nothing when not running)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        log.info("status endpoint on port %d stopped", server.server_address[1])

    def __enter__(self) -> StatusServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when constructed with ``port=0``)."""
        server = self._server
        if server is None:
            raise StatusServerError("status server is not running")
        return int(server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:43125``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def routes(self) -> dict[str, _Route]:
        """Path -> handler returning ``(status, content type, body)``."""
        return {"/metrics": self._metrics, "/healthz": self._healthz, "/stats": self._stats}

    def _metrics(self) -> tuple[HTTPStatus, str, bytes]:
        body = self.registry.render_prometheus().encode("utf-8")
        return HTTPStatus.OK, PROMETHEUS_CONTENT_TYPE, body

    def _healthz(self) -> tuple[HTTPStatus, str, bytes]:
        report = self.health.evaluate()
        status = HTTPStatus.OK if report.healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return status, _JSON_CONTENT_TYPE, _json_bytes(report.to_dict())

    def _stats(self) -> tuple[HTTPStatus, str, bytes]:
        payload = {
            "health": self.health.evaluate().to_dict(),
            "metrics": self.registry.snapshot(),
            "info": dict(self.extra_info()) if self.extra_info is not None else {},
        }
        return HTTPStatus.OK, _JSON_CONTENT_TYPE, _json_bytes(payload)
