"""The audit trail: every API request that could change something, recorded with its outcome.

:class:`AuditTrail` is the outermost ASGI middleware of the API, so it sees
every request that is not a read (``GET``, ``HEAD``, ``OPTIONS``), those the
guard refuses (401, 413 ...) and those the routes refuse (403, 404, 409,
422) included. For each it records who (the token's name and role, left in
the scope by the guard; none for a refused token), what (method, path and
the first KiB of the body the app read: a refused request's body is never
read), when, from where (the client's address) and the outcome (the HTTP
status and the error it answered with). The entry is written before the
last byte of the reply is sent, so a client that got its answer finds it in
``GET /audit``; a route that crashed is recorded as a 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from fleet_server.access import AuditRecord, Principal
from fleet_server.http_guard import PRINCIPAL, App, Message, Receive, Scope, Send

__all__ = ["READS", "AuditTrail", "error_message"]

log = logging.getLogger(__name__)

READS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing: not recorded."""
_KEEP_BYTES = 4096
"""How much of a request body and of an error reply is kept in memory for the record."""


def error_message(raw: bytes) -> str:
    """The error of a reply body: ``{"error": ...}``, or FastAPI's validation details, field by field."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip() or "no message"
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                continue
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return "; ".join(parts) or "invalid request"
    return str(detail if detail is not None else payload)


def _body_text(body: bytes, truncated: bool) -> str | None:
    if not body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)}{'+' if truncated else ''} bytes, not text>"
    return text + ("..." if truncated else "")


class AuditTrail:
    """ASGI middleware: each non-read request handed to ``record`` (run on a worker thread)."""

    def __init__(
        self,
        app: App,
        *,
        record: Callable[[AuditRecord], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self._record = record
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") in READS:
            await self.app(scope, receive, send)
            return
        at = self._clock()
        body = bytearray()
        reply = bytearray()
        state: dict[str, Any] = {"status": None, "recorded": False, "truncated": False}

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunk = bytes(message.get("body", b""))
                room = _KEEP_BYTES - len(body)
                body.extend(chunk[: max(room, 0)])
                state["truncated"] = state["truncated"] or len(chunk) > room
            return message

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
            elif message["type"] == "http.response.body":
                if (state["status"] or 0) >= 400 and len(reply) < _KEEP_BYTES:
                    reply.extend(bytes(message.get("body", b""))[: _KEEP_BYTES - len(reply)])
                if not message.get("more_body", False) and not state["recorded"]:
                    state["recorded"] = True
                    await self._write(
                        scope,
                        at=at,
                        status=state["status"] or 500,
                        reply=reply,
                        body=body,
                        truncated=state["truncated"],
                    )
            await send(message)

        try:
            await self.app(scope, receive_and_keep, send_and_record)
        except BaseException:
            if not state["recorded"]:
                state["recorded"] = True
                reply[:] = b'{"error": "internal server error"}'
                await self._write(
                    scope, at=at, status=500, reply=reply, body=body, truncated=state["truncated"]
                )
            raise

    async def _write(
        self,
        scope: Scope,
        *,
        at: float,
        status: int,
        reply: bytearray,
        body: bytearray,
        truncated: bool,
    ) -> None:
        principal = scope.get(PRINCIPAL)
        who = principal if isinstance(principal, Principal) else None
        client = scope.get("client")
        entry = AuditRecord(
            at=at,
            actor=None if who is None else who.name,
            role=None if who is None else who.role,
            client=None if not client else str(client[0]),
            method=str(scope.get("method", "")),
            path=str(scope.get("path", "")),
            status=status,
            error=error_message(bytes(reply)) if status >= 400 else None,
            body=_body_text(bytes(body), truncated),
        )
        with anyio.CancelScope(shield=True):  # a client that hangs up is still recorded
            try:
                await anyio.to_thread.run_sync(self._record, entry)
            except Exception:  # the boundary: the reply still goes out, the failure is logged
                log.exception(
                    "cannot record %s %s by %s (%d) in the audit log",
                    entry.method,
                    entry.path,
                    entry.actor or "an unauthenticated client",
                    status,
                )
