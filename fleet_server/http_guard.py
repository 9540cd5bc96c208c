"""The HTTP API's front door: authentication and a body-size cap before any byte of a body is read.

FastAPI reads (and parses) a request's body before its dependencies run, so a
token check in a dependency comes after an unauthenticated client has already
made the server hold its whole body in memory. :class:`RequestGuard` is an
ASGI middleware that answers from the headers alone: ``401`` without a valid
bearer token (except on the public paths), ``413`` for a declared body over
the cap, ``411`` for a body whose length is not declared (chunked uploads),
``400`` for a malformed ``Content-Length``, ``503`` when the token cannot be
checked (the database is down).

Any token ``authenticate`` accepts is valid (the bootstrap token and the
stored ones: :mod:`fleet_server.api.auth`); the guard leaves who it is in the
request's scope under :data:`PRINCIPAL`, for the routes' role checks and the
audit log. ``authenticate`` may query the database, so it runs on a worker
thread, never on the event loop.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import anyio.to_thread

from edge_runtime.errors import EdgefleetError
from fleet_server.access import BOOTSTRAP_NAME, MAX_SECRET_LENGTH, Principal, Role

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DOCS_PATHS", "PRINCIPAL", "RequestGuard"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""The largest request body taken: a rollout with 100 waves is a few KiB."""
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PRINCIPAL = "edgefleet.principal"
"""The scope key under which the guard leaves the request's :class:`Principal`."""


class RequestGuard:
    """ASGI middleware: bearer token and body size checked from the headers, before the app runs.

    ``authenticate`` maps a presented token to who holds it (None: refused);
    ``token`` alone is shorthand for a single admin token.
    """

    def __init__(
        self,
        app: App,
        *,
        token: str | None = None,
        authenticate: Callable[[str], Principal | None] | None = None,
        public_paths: Iterable[str] = ("/healthz",),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if authenticate is None:
            if not token:
                raise ValueError("the API token must not be empty")
            authenticate = _single_token(token)
        self.app = app
        self._authenticate = authenticate
        self._public = frozenset(public_paths)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(bytes(name).lower(), bytes(value))
        if scope.get("path") not in self._public:
            try:
                principal = await self._principal(headers)
            except EdgefleetError as exc:
                log.error("cannot check an API token: %s", exc)  # noqa: TRY400 - typed, no trace
                await _reply(send, 503, f"cannot check the token: {exc}")
                return
            if principal is None:
                await _reply(
                    send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]
                )
                return
            scope[PRINCIPAL] = principal
        length = headers.get(b"content-length")
        if length is None:
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                await _reply(send, 411, "send a Content-Length: chunked bodies are not taken")
                return
        else:
            try:
                declared = int(length)
            except ValueError:
                await _reply(send, 400, "Content-Length is not a number")
                return
            if declared > self.max_body_bytes:
                await _reply(
                    send,
                    413,
                    f"request body of {declared} bytes is over the {self.max_body_bytes}-byte cap",
                )
                return
        await self.app(scope, receive, send)

    async def _principal(self, headers: dict[bytes, bytes]) -> Principal | None:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        secret = given.strip()
        if scheme.lower() != b"bearer" or not secret or len(secret) > MAX_SECRET_LENGTH:
            return None
        try:
            text = secret.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return await anyio.to_thread.run_sync(self._authenticate, text)


def _single_token(token: str) -> Callable[[str], Principal | None]:
    expected = token.encode("utf-8")
    admin = Principal(BOOTSTRAP_NAME, Role.ADMIN)

    def authenticate(given: str) -> Principal | None:
        return admin if hmac.compare_digest(given.encode("utf-8"), expected) else None

    return authenticate


async def _reply(
    send: Send, status: int, error: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": error}).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
