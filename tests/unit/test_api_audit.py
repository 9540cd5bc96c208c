"""The audit trail and the request guard as ASGI middleware, driven with plain ASGI messages.

The apps behind them are small ASGI functions and the audit log a list, so
each edge is checked directly: a crash recorded as a 500, a recorder that
fails never costing the reply, a refused body never read, a database that
cannot check a token answered with a 503.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fleet_server.access import BOOTSTRAP_NAME, AuditRecord, Principal, Role
from fleet_server.api.audit import AuditTrail, error_message
from fleet_server.errors import RegistryStorageError
from fleet_server.http_guard import PRINCIPAL, RequestGuard

Message = dict[str, Any]


def scope(method: str = "POST", path: str = "/devices", token: str | None = "s3cret") -> Message:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"14")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "client": ("10.1.2.3", 50123),
    }


def call(app: Any, request: Message, body: bytes = b'{"id": "cam-1"}') -> list[Message]:
    """Run one request through ``app``: the messages it sent."""
    sent: list[Message] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(request, receive, send))
    return sent


async def reply(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_a_change_is_recorded_with_who_what_where_and_outcome_before_the_reply_ends() -> None:
    log: list[AuditRecord] = []
    order: list[str] = []

    async def app(request: Message, receive: Any, send: Any) -> None:
        await receive()  # the app reads the body
        request[PRINCIPAL] = Principal("alice", Role.OPERATOR)
        await reply(send, 409, {"error": "device 'cam-1' is already provisioned"})

    def record(entry: AuditRecord) -> None:
        order.append("recorded")
        log.append(entry)

    trail = AuditTrail(app, record=record, clock=lambda: 1234.5)
    sent = call(trail, scope())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (entry,) = log
    assert entry == AuditRecord(
        at=1234.5,
        actor="alice",
        role=Role.OPERATOR,
        client="10.1.2.3",
        method="POST",
        path="/devices",
        status=409,
        error="device 'cam-1' is already provisioned",
        body='{"id": "cam-1"}',
    )


def test_reads_are_not_recorded() -> None:
    log: list[AuditRecord] = []

    async def app(_request: Message, _receive: Any, send: Any) -> None:
        await reply(send, 200, [])

    for method in ("GET", "HEAD", "OPTIONS"):
        call(AuditTrail(app, record=log.append), scope(method))
    assert log == []


def test_a_crash_is_recorded_as_a_500_and_still_raised() -> None:
    log: list[AuditRecord] = []

    async def app(_request: Message, receive: Any, _send: Any) -> None:
        await receive()
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        call(AuditTrail(app, record=log.append), scope("DELETE", "/tokens/bob"))
    assert [(e.method, e.path, e.status, e.error) for e in log] == [
        ("DELETE", "/tokens/bob", 500, "internal server error")
    ]
    assert log[0].actor is None  # no guard ran: nobody is named


def test_a_recorder_that_fails_never_costs_the_client_its_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(_request: Message, _receive: Any, send: Any) -> None:
        await reply(send, 201, {"id": "cam-1"})

    def record(_entry: AuditRecord) -> None:
        raise RegistryStorageError("database sqlite:///x failed: disk I/O error")

    sent = call(AuditTrail(app, record=record), scope())
    assert sent[0]["status"] == 201 and json.loads(sent[1]["body"]) == {"id": "cam-1"}
    assert "cannot record POST /devices by an unauthenticated client (201)" in caplog.text


def test_a_body_that_is_not_text_is_noted_by_size_and_validation_errors_field_by_field() -> None:
    log: list[AuditRecord] = []

    async def app(_request: Message, receive: Any, send: Any) -> None:
        await receive()
        detail = [{"loc": ["body", "id"], "msg": "Field required", "type": "missing"}]
        await reply(send, 422, {"detail": detail})

    call(AuditTrail(app, record=log.append), scope(), body=b"\xff\xfe\x00binary")
    assert log[0].body == "<9 bytes, not text>" and log[0].error == "id: Field required"
    assert error_message(b"plain words") == "plain words"
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"


def test_the_guard_names_who_called_and_refuses_before_reading_a_body() -> None:
    reached: list[Principal] = []

    async def app(request: Message, _receive: Any, send: Any) -> None:
        reached.append(request[PRINCIPAL])
        await reply(send, 200, {})

    tokens = {"s3cret": Principal(BOOTSTRAP_NAME, Role.ADMIN), "v": Principal("carol", Role.VIEWER)}
    guard = RequestGuard(app, authenticate=tokens.get)
    assert call(guard, scope(token="v"))[0]["status"] == 200
    assert reached == [Principal("carol", Role.VIEWER)]

    read: list[bool] = []

    async def never(_request: Message, receive: Any, _send: Any) -> None:
        read.append(True)

    for token in (None, "wrong", "x" * 300, "s3cret\u00e9"):
        refused = call(RequestGuard(never, authenticate=tokens.get), scope(token=token))
        assert refused[0]["status"] == 401, token
    assert read == []

    def down(_secret: str) -> Principal | None:
        raise RegistryStorageError("database postgresql://db/fleet failed: connection refused")

    unavailable = call(RequestGuard(never, authenticate=down), scope())
    assert unavailable[0]["status"] == 503
    assert b"cannot check the token" in unavailable[1]["body"]
    # the single-token shorthand is the bootstrap admin
    call(RequestGuard(app, token="s3cret"), scope(token="s3cret"))
    assert reached[-1] == Principal(BOOTSTRAP_NAME, Role.ADMIN)
    with pytest.raises(ValueError, match="must not be empty"):
        RequestGuard(app, token="")
