"""The MQTT protocol's messages, typed once: the device builds them, the fleet server parses them.

Every message of ``docs/protocol.md`` but TUF metadata (python-tuf's own) is
a model here. A sender builds the model and publishes ``encode()``; a reader
calls ``parse(payload, device_id)`` (device reports) or ``parse(payload)``
(server messages) once, at the boundary, and hands the typed object on.
``parse`` takes the payload bytes or an already decoded value, and refuses
with :class:`~edge_runtime.errors.MalformedMessageError`: payloads over the
message's size cap, nested past :data:`MAX_DEPTH`, not a JSON object, of
another protocol major version, naming another device than the topic, with
NaN or infinity, or with a field of the wrong type or length. Unknown fields
are ignored, so a newer minor version's additions do not break older readers.

=================  =====================================  ======================
message            model                                  sent by
=================  =====================================  ======================
state              :class:`StateReport`                   device (retained)
event              :class:`EventReport`                   device
telemetry          :class:`TelemetryReport`               device
availability       :class:`Availability` (text)           device (and its Will)
download           :class:`DownloadRequest`               device
meta               :class:`ChunkMeta`                     server (retained)
chunk              raw bytes                              server
prediction         :class:`PredictionReport`              device
field_settings     :class:`FieldDataSettings`             server (retained)
field_sample       :class:`FieldSample` (framed bytes)    device
field_ack          :class:`FieldAck`                      server
=================  =====================================  ======================

:data:`MESSAGES` lists them with their topics; :func:`schema_document` is
their JSON Schema (committed as ``docs/protocol.schema.json``).
"""

from __future__ import annotations

from edge_runtime.errors import MalformedMessageError
from edge_runtime.protocol._wire import (
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    DeviceReport,
    WireMessage,
    decode_object,
)
from edge_runtime.protocol.catalogue import (
    MESSAGES,
    SCHEMA_PATH,
    Message,
    json_schemas,
    schema_document,
    schema_text,
)
from edge_runtime.protocol.chunks import (
    CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MAX_META_BYTES,
    MAX_REQUEST_BYTES,
    WINDOW,
    ChunkMeta,
    DownloadRequest,
)
from edge_runtime.protocol.field_data import (
    MAX_SAMPLE_BYTES,
    FieldAck,
    FieldDataSettings,
    FieldSample,
    FieldSampleHeader,
)
from edge_runtime.protocol.predictions import PredictionReport, ScoredLabel
from edge_runtime.protocol.reports import (
    MAX_REASON_CHARS,
    MAX_TELEMETRY_BYTES,
    RECENT_EVENTS,
    RECENT_REASON_CHARS,
    Availability,
    EventReport,
    ProbationFigures,
    ReportedBundle,
    ReportedTarget,
    StateReport,
    TelemetryHealth,
    TelemetryQuality,
    TelemetryReport,
    UpdatePhase,
)

__all__ = [
    "CHUNK_SIZE",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_META_BYTES",
    "MAX_REASON_CHARS",
    "MAX_REQUEST_BYTES",
    "MAX_SAMPLE_BYTES",
    "MAX_TELEMETRY_BYTES",
    "MESSAGES",
    "PROTOCOL_VERSION",
    "RECENT_EVENTS",
    "RECENT_REASON_CHARS",
    "SCHEMA_PATH",
    "WINDOW",
    "Availability",
    "ChunkMeta",
    "DeviceReport",
    "DownloadRequest",
    "EventReport",
    "FieldAck",
    "FieldDataSettings",
    "FieldSample",
    "FieldSampleHeader",
    "MalformedMessageError",
    "Message",
    "PredictionReport",
    "ProbationFigures",
    "ReportedBundle",
    "ReportedTarget",
    "ScoredLabel",
    "StateReport",
    "TelemetryHealth",
    "TelemetryQuality",
    "TelemetryReport",
    "UpdatePhase",
    "WireMessage",
    "decode_object",
    "json_schemas",
    "schema_document",
    "schema_text",
]
