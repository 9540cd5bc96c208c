"""The HTTP API's front door: authentication and a body-size cap before any byte of a body is read.

FastAPI reads (and parses) a request's body before its dependencies run, so a
token check in a dependency comes after an unauthenticated client has already
made the server hold its whole body in memory. :class:`RequestGuard` is an
ASGI middleware that answers from the headers alone: ``401`` without a valid
bearer token (except on the public paths), ``413`` for a declared body over
the cap, ``411`` for a body whose length is not declared (chunked uploads),
``400`` for a malformed ``Content-Length``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DOCS_PATHS", "RequestGuard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""The largest request body taken: a rollout with 100 waves is a few KiB."""
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class RequestGuard:
    """ASGI middleware: bearer token and body size checked from the headers, before the app runs."""

    def __init__(
        self,
        app: App,
        *,
        token: str,
        public_paths: Iterable[str] = ("/healthz",),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self.app = app
        self._token = token.encode("utf-8")
        self._public = frozenset(public_paths)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(bytes(name).lower(), bytes(value))
        if scope.get("path") not in self._public and not self._authorised(headers):
            await _reply(
                send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]
            )
            return
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

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)


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
