"""Every message of the protocol in one list, and the JSON Schema document generated from it.

``docs/protocol.schema.json`` is :func:`schema_text` committed (written by
``edgefleet protocol schema --out docs/protocol.schema.json``); a test checks
that the committed file is current and that ``docs/protocol.md`` documents
every message and field of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, TypeAdapter

from edge_runtime.protocol._wire import MAX_MESSAGE_BYTES, PROTOCOL_VERSION
from edge_runtime.protocol.chunks import (
    MAX_CHUNK_SIZE,
    MAX_META_BYTES,
    MAX_REQUEST_BYTES,
    ChunkMeta,
    DownloadRequest,
)
from edge_runtime.protocol.field_data import (
    MAX_SAMPLE_BYTES,
    FieldAck,
    FieldDataSettings,
)
from edge_runtime.protocol.predictions import PredictionReport
from edge_runtime.protocol.reports import (
    MAX_TELEMETRY_BYTES,
    Availability,
    EventReport,
    StateReport,
    TelemetryReport,
)
from edge_runtime.protocol.shadow import ShadowReport, ShadowRequest

__all__ = ["MESSAGES", "SCHEMA_PATH", "Message", "json_schemas", "schema_document", "schema_text"]

SCHEMA_PATH: Final = "docs/protocol.schema.json"
"""Where the generated schema is committed, relative to the repository root."""

Encoding = Literal["json", "text", "bytes"]


@dataclass(frozen=True)
class Message:
    """One kind of message: where it travels, how, and its model (None for raw bytes)."""

    name: str
    topic: str
    direction: str
    qos: int
    retained: bool
    encoding: Encoding
    max_bytes: int
    model: type[BaseModel] | type[Availability] | None

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the payload (of the text, for ``online``/``offline``); None for bytes."""
        if self.model is None:
            return None
        if isinstance(self.model, type) and issubclass(self.model, BaseModel):
            return self.model.model_json_schema(by_alias=True, mode="validation")
        return TypeAdapter(self.model).json_schema(mode="validation")


MESSAGES: Final[tuple[Message, ...]] = (
    Message(
        "state",
        "PREFIX/devices/<id>/state",
        "device -> server",
        1,
        True,
        "json",
        MAX_MESSAGE_BYTES,
        StateReport,
    ),
    Message(
        "event",
        "PREFIX/devices/<id>/events",
        "device -> server",
        1,
        False,
        "json",
        MAX_MESSAGE_BYTES,
        EventReport,
    ),
    Message(
        "telemetry",
        "PREFIX/devices/<id>/telemetry",
        "device -> server",
        0,
        False,
        "json",
        MAX_TELEMETRY_BYTES,
        TelemetryReport,
    ),
    Message(
        "availability",
        "PREFIX/devices/<id>/availability",
        "device -> server",
        1,
        True,
        "text",
        max(len(value.encode()) for value in Availability),
        Availability,
    ),
    Message(
        "download",
        "PREFIX/devices/<id>/download",
        "device -> server",
        1,
        False,
        "json",
        MAX_REQUEST_BYTES,
        DownloadRequest,
    ),
    Message(
        "meta",
        "PREFIX/bundles/<sha256>/meta",
        "server -> devices",
        1,
        True,
        "json",
        MAX_META_BYTES,
        ChunkMeta,
    ),
    Message(
        "chunk",
        "PREFIX/bundles/<sha256>/chunks/<i>",
        "server -> devices",
        1,
        False,
        "bytes",
        MAX_CHUNK_SIZE,
        None,
    ),
    Message(
        "prediction",
        "PREFIX/devices/<id>/predictions",
        "device -> anyone",
        0,
        False,
        "json",
        MAX_MESSAGE_BYTES,
        PredictionReport,
    ),
    Message(
        "field_settings",
        "PREFIX/devices/<id>/field-data/settings",
        "server -> device",
        1,
        True,
        "json",
        FieldDataSettings.max_bytes,
        FieldDataSettings,
    ),
    Message(
        "field_sample",
        "PREFIX/devices/<id>/field-data/samples",
        "device -> server",
        1,
        False,
        "bytes",
        MAX_SAMPLE_BYTES,
        None,
    ),
    Message(
        "field_ack",
        "PREFIX/devices/<id>/field-data/acks",
        "server -> device",
        1,
        False,
        "json",
        FieldAck.max_bytes,
        FieldAck,
    ),
    Message(
        "shadow_request",
        "PREFIX/devices/<id>/shadow/request",
        "server -> device",
        1,
        True,
        "json",
        ShadowRequest.max_bytes,
        ShadowRequest,
    ),
    Message(
        "shadow_report",
        "PREFIX/devices/<id>/shadow/report",
        "device -> server",
        1,
        False,
        "json",
        ShadowReport.max_bytes,
        ShadowReport,
    ),
)
"""Every message edgefleet defines (TUF metadata is python-tuf's, see ``docs/security.md``)."""


def json_schemas() -> dict[str, dict[str, Any] | None]:
    """Message name -> the JSON Schema of its payload (None for raw bytes)."""
    return {message.name: message.json_schema() for message in MESSAGES}


def schema_document() -> dict[str, Any]:
    """The whole protocol as one JSON document: each message's topic, QoS, retain flag and schema."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"edgefleet MQTT protocol {PROTOCOL_VERSION}",
        "description": (
            "Generated from edge_runtime.protocol by `edgefleet protocol schema`; do not edit. "
            "docs/protocol.md explains every message and field."
        ),
        "protocol": PROTOCOL_VERSION,
        "messages": {
            message.name: {
                "topic": message.topic,
                "direction": message.direction,
                "qos": message.qos,
                "retained": message.retained,
                "encoding": message.encoding,
                "max_bytes": message.max_bytes,
                "schema": message.json_schema(),
            }
            for message in MESSAGES
        },
    }


def schema_text() -> str:
    """:func:`schema_document` as the committed file's text."""
    return json.dumps(schema_document(), indent=2, ensure_ascii=False) + "\n"
