"""Predictions to the sorter's PLC over OPC UA (``asyncua``): the device's own server, or writes to the PLC's.

Two ways, either or both:

- **server** (:class:`OpcUaServer`): the device runs an OPC UA server whose
  address space a PLC integrator browses: ``Objects/Edgefleet/<camera>`` with
  the variables of :data:`VARIABLES` (label, confidence, frame id, capture
  time, model version, ...), node ids ``ns=<namespace>;s=<camera>.<Variable>``
  so that they can be typed into a PLC project. Each prediction updates all of
  a camera's variables in one step (``FrameId`` last), so a client subscribed
  with a publishing interval of 0 receives every frame's values, in order.
- **write** (:class:`OpcUaWriteSink`): the device connects as a client to the
  PLC's server and writes each prediction to configured node ids.

Security is what OPC UA users expect: ``Basic256Sha256`` with ``Sign`` or
``SignAndEncrypt`` and application certificates (DER or PEM); the server can
pin the client certificates it accepts. ``None`` (no security) is offered only
when the config lists it. ``asyncua`` runs on its own event-loop thread. The
server's camera sinks never wait (each has a bounded newest-first queue the
loop drains: writing to its own address space waits for no client); the
write sink waits for the PLC, so the device runs it behind a
:class:`~edge_runtime.output_queue.QueuedSink`, and a PLC that stops
answering never stalls classification.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import cert_gen, security_policies
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_runtime.errors import OutputError
from edge_runtime.line_config import (
    VARIABLES,
    WRITTEN_FIRST,
    OpcUaServerConfig,
    OpcUaWriteConfig,
    SecurityName,
)
from edge_runtime.opcua_keepalive import keep_alive
from edge_runtime.output_queue import OutputQueueStats
from edge_runtime.outputs import PredictionSink
from edge_runtime.prediction import Prediction

__all__ = ["OpcUaCameraSink", "OpcUaServer", "OpcUaWriteSink", "write_self_signed_certificate"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class _LoopThread:
    """An asyncio event loop in a daemon thread; coroutines are run on it from other threads."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:  # not the builtin one before Python 3.11
            future.cancel()
            raise OutputError(f"OPC UA call did not finish within {timeout:g} s") from exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self.loop.close()


_INITIAL: dict[str, object] = {
    "String": "",
    "Double": 0.0,
    "Boolean": False,
    "UInt64": 0,
    "DateTime": 0.0,
}
"""Each type's value before the first prediction (DateTime: the Unix epoch)."""


def _policy(name: SecurityName) -> Any:
    return {
        "None": ua.SecurityPolicyType.NoSecurity,
        "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
        "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    }[name]


def _variant(value: object, type_name: str) -> Any:
    variant_type: ua.VariantType = getattr(ua.VariantType, type_name)
    if type_name == "DateTime":
        value = datetime.fromtimestamp(float(value), tz=timezone.utc)  # type: ignore[arg-type]
    return ua.Variant(value, variant_type)


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OutputError(f"cannot read OPC UA certificate {path}: {exc.strerror}") from exc
    try:
        return (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as exc:
        raise OutputError(f"{path} is not an X.509 certificate (DER or PEM): {exc}") from exc


class OpcUaServer:
    """The device's OPC UA server: one object per camera under ``Objects/Edgefleet``.

    Add the cameras (:meth:`camera`), then :meth:`start` serving; :meth:`close` at the end.
    """

    def __init__(self, config: OpcUaServerConfig, *, timeout_s: float = 2.0) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self._loop = _LoopThread("opcua-server")
        self._server: Server = Server()
        self._namespace = 0
        self._root: Any = None
        self._nodes: dict[str, list[tuple[ua.NodeId, str, str]]] = {}
        self._pins = (
            None
            if config.trusted_clients is None
            else {_fingerprint(_load_certificate(p)) for p in config.trusted_clients}
        )
        self._serving = False
        self._keep_alive: asyncio.Task[None] | None = None
        try:
            self._loop.call(self._prepare(), timeout=30.0)
        except Exception:
            self._loop.stop()
            raise

    async def _prepare(self) -> None:
        server, config = self._server, self.config
        await server.init()
        server.set_endpoint(config.endpoint)
        server.set_server_name("edgefleet camera box")
        await server.set_application_uri(config.application_uri)
        server.set_security_policy([_policy(name) for name in config.security])
        if config.certificate is not None and config.private_key is not None:
            try:
                await server.load_certificate(str(config.certificate))
                await server.load_private_key(str(config.private_key))
            except (OSError, ValueError) as exc:
                raise OutputError(
                    f"cannot load the OPC UA server's certificate or key: {exc}"
                ) from exc
        if self._pins is not None:
            server.set_certificate_validator(self._validate_client)
        self._namespace = await server.register_namespace(config.namespace)
        self._root = await server.nodes.objects.add_object(
            ua.NodeId.from_string(f"ns={self._namespace};s=Edgefleet"),
            f"{self._namespace}:Edgefleet",
        )

    def start(self) -> None:
        """Serve on the endpoint (after the cameras were added, so a client never sees half a node set)."""
        self._loop.call(self._serve(), timeout=30.0)
        self._serving = True

    async def _serve(self) -> None:
        config = self.config
        try:
            await self._server.start()
        except OSError as exc:
            raise OutputError(f"cannot serve OPC UA on {config.endpoint}: {exc}") from exc
        # subscriptions at publishing interval 0 get keep-alives (see opcua_keepalive)
        self._keep_alive = asyncio.get_running_loop().create_task(keep_alive(self._server))
        log.info("OPC UA server on %s (security %s)", config.endpoint, ", ".join(config.security))

    async def _validate_client(self, cert: x509.Certificate, _app: object) -> None:
        if self._pins is not None and _fingerprint(cert) not in self._pins:
            log.warning("OPC UA client certificate %s refused (not trusted)", cert.subject)
            raise UaError(StatusCodes.BadCertificateUntrusted)

    @property
    def namespace_index(self) -> int:
        """The index of :attr:`OpcUaServerConfig.namespace` in the server's namespace array."""
        return self._namespace

    def node_id(self, camera: str, variable: str) -> str:
        """The node id of one camera variable, as a string (``ns=2;s=cam-1.Label``)."""
        return f"ns={self._namespace};s={camera}.{variable}"

    def camera(self, camera: str, capacity: int = 256, *, label: str = "") -> OpcUaCameraSink:
        """Add ``camera``'s object and variables (once) and return the sink that updates them.

        ``label`` is the sink's ``camera`` metrics label ('' on a single-camera device).
        """
        if camera not in self._nodes:
            self._nodes[camera] = self._loop.call(self._add_camera(camera), self.timeout_s)
        sink = OpcUaCameraSink(self, camera, capacity)
        sink.stats_camera = label
        return sink

    async def _add_camera(self, camera: str) -> list[tuple[ua.NodeId, str, str]]:
        ns = self._namespace
        obj = await self._root.add_object(
            ua.NodeId.from_string(f"ns={ns};s={camera}"), f"{ns}:{camera}"
        )
        nodes = []
        for browse, type_name, field in VARIABLES:
            node_id = ua.NodeId.from_string(f"ns={ns};s={camera}.{browse}")
            variant = _variant(_INITIAL[type_name], type_name)
            await obj.add_variable(node_id, f"{ns}:{browse}", variant)
            nodes.append((node_id, type_name, field))
        return nodes

    def publish(self, camera: str, prediction: Prediction) -> None:
        """Write one prediction to ``camera``'s variables now (blocks up to ``timeout_s``)."""
        self._loop.call(self._write(self._nodes[camera], prediction), self.timeout_s)

    async def _write(self, nodes: list[tuple[ua.NodeId, str, str]], prediction: Prediction) -> None:
        for node_id, type_name, field in nodes:
            value = ua.DataValue(_variant(getattr(prediction, field), type_name))
            await self._server.write_attribute_value(node_id, value)

    def submit(self, sink: OpcUaCameraSink) -> None:
        """Have the event loop drain ``sink``'s waiting predictions (called from any thread)."""
        self._loop.loop.call_soon_threadsafe(self._drain_soon, sink)

    def _drain_soon(self, sink: OpcUaCameraSink) -> None:
        if not sink.draining:
            sink.draining = True
            self._loop.loop.create_task(self._drain(sink))

    async def _drain(self, sink: OpcUaCameraSink) -> None:
        nodes = self._nodes[sink.camera]
        try:
            while (prediction := sink.take()) is not None:
                try:
                    await self._write(nodes, prediction)
                except Exception:  # counted; the next prediction is still written
                    sink.errors += 1
                    log.exception("OPC UA update of %s failed", sink.camera)
                else:
                    sink.delivered += 1
        finally:
            sink.draining = False
            if sink.waiting():  # arrived between the last take and now
                self._drain_soon(sink)

    @property
    def alive(self) -> bool:
        """Whether the server's event-loop thread runs."""
        return self._loop.alive

    def close(self) -> None:
        """Stop serving and free the port."""
        if self._serving:
            self._serving = False
            if self._keep_alive is not None:
                self._loop.loop.call_soon_threadsafe(self._keep_alive.cancel)
            try:
                self._loop.call(self._server.stop(), timeout=5.0)
            except Exception:  # shutting down: say so, and still stop the loop
                log.exception("OPC UA server did not stop cleanly")
        self._loop.stop()


class OpcUaCameraSink(PredictionSink):
    """One camera's predictions to its object on the device's :class:`OpcUaServer`.

    Never waits: ``emit`` puts the prediction in a bounded queue (the oldest
    waiting one is dropped when full) that the server's event loop drains in
    order. Writing to the server's own address space waits for no client, so
    no extra thread is needed; :meth:`stats` reports like a
    :class:`~edge_runtime.output_queue.QueuedSink`.
    """

    name = "opcua"
    blocking = False

    def __init__(self, server: OpcUaServer, camera: str, capacity: int = 256) -> None:
        self.server = server
        self.camera = camera
        self.capacity = capacity
        self._lock = threading.Lock()
        self._queue: deque[Prediction] = deque()
        self.draining = False
        """Set while the loop drains this camera (touched only on the loop's thread)."""
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self.stats_camera = ""
        """The ``camera`` label of this output's metrics ('' on a single-camera device)."""

    def emit(self, prediction: Prediction) -> None:
        with self._lock:
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(prediction)
        self.server.submit(self)

    def take(self) -> Prediction | None:
        """The oldest waiting prediction, or None."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def waiting(self) -> int:
        """Predictions not yet written."""
        with self._lock:
            return len(self._queue)

    def stats(self) -> OutputQueueStats:
        """Counts now, in the queued outputs' shape."""
        with self._lock:
            queued = len(self._queue)
        return OutputQueueStats(
            output=self.name,
            camera=self.stats_camera,
            delivered=self.delivered,
            dropped=self.dropped,
            errors=self.errors,
            queued=queued,
            alive=self.server.alive,
        )

    def problem(self) -> str | None:
        """A sentence when the server's event loop stopped (nothing reaches OPC UA clients)."""
        if self.server.alive:
            return None
        return f"OPC UA server loop for camera {self.camera!r} stopped; {self.dropped} dropped"


class OpcUaWriteSink(PredictionSink):
    """Writes each prediction to a PLC's OPC UA server; reconnects on the next prediction after a failure."""

    name = "opcua-write"

    def __init__(self, config: OpcUaWriteConfig) -> None:
        self.config = config
        self._loop = _LoopThread("opcua-write")
        self._client: Client | None = None
        self._nodes: list[tuple[Any, str, str]] = []

    async def _connect(self) -> Client:
        config = self.config
        client = Client(config.url, timeout=config.timeout_s)
        if config.security != "None":
            if config.certificate is None or config.private_key is None:  # the config refuses this
                raise OutputError("OPC UA security needs a certificate and a private key")
            mode = (
                ua.MessageSecurityMode.SignAndEncrypt
                if config.security.endswith("SignAndEncrypt")
                else ua.MessageSecurityMode.Sign
            )
            cert = _load_certificate(config.certificate)
            uri = _application_uri(cert)
            if uri is not None:
                client.application_uri = uri
            await client.set_security(
                security_policies.SecurityPolicyBasic256Sha256,
                str(config.certificate),
                str(config.private_key),
                server_certificate=None
                if config.server_certificate is None
                else str(config.server_certificate),
                mode=mode,
            )
        await client.connect()
        writable = (*WRITTEN_FIRST, *VARIABLES)
        types = {field: type_name for _, type_name, field in writable}
        order = [field for _, _, field in writable]
        fields = sorted(config.nodes, key=order.index)
        self._nodes = [
            (client.get_node(config.nodes[field]), types[field], field) for field in fields
        ]
        return client

    async def _write(self, prediction: Prediction) -> None:
        if self._client is None:
            self._client = await self._connect()
        try:
            for node, type_name, field in self._nodes:
                value = getattr(prediction, field)
                await node.write_value(
                    ua.DataValue(_variant("" if value is None else value, type_name))
                )
        except Exception:
            client, self._client = self._client, None
            try:
                await client.disconnect()
            except Exception:  # the link is already broken; reconnect on the next prediction
                log.debug("OPC UA disconnect after a failed write failed", exc_info=True)
            raise

    def emit(self, prediction: Prediction) -> None:
        try:
            self._loop.call(self._write(prediction), self.config.timeout_s * 2)
        except OutputError:
            raise
        except Exception as exc:
            raise OutputError(f"OPC UA write to {self.config.url} failed: {exc!r}") from exc

    def close(self) -> None:
        if self._client is not None:
            try:
                self._loop.call(self._client.disconnect(), timeout=5.0)
            except Exception:  # shutting down
                log.debug("OPC UA client did not disconnect cleanly", exc_info=True)
        self._loop.stop()


def _application_uri(cert: x509.Certificate) -> str | None:
    """The URI in the certificate's subject alternative names (the client's application URI must match)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def write_self_signed_certificate(
    cert_path: Path,
    key_path: Path,
    *,
    application_uri: str,
    hostname: str = "localhost",
    server: bool = True,
    days: int = 365,
) -> None:
    """A self-signed OPC UA application certificate (DER) and its RSA key (PEM, mode 0600).

    For a test bench or a first installation; a plant's own CA usually signs
    the certificates of its line.
    """
    key = cert_gen.generate_private_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        hostname,
        {"organizationName": "edgefleet"},
        [x509.UniformResourceIdentifier(application_uri), x509.DNSName(hostname)],
        extended=[usage],
        days=days,
    )
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.touch(mode=0o600)
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
