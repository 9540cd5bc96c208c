"""edge_runtime.protocol: what the device encodes the server parses back, and hostile payloads are refused.

Every message is built the way its sender builds it, encoded to the wire
bytes, and parsed the way its reader parses them; the result must equal what
was sent. Then every reader is fed what an attacker or a broken device could
publish: oversized, deeply nested, non-JSON, another protocol, another
device, NaN and infinity, wrong types and lengths.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from edge_runtime.errors import EdgefleetError, MalformedMessageError
from edge_runtime.health import HealthState
from edge_runtime.metrics import RuntimeMetrics
from edge_runtime.prediction import Prediction
from edge_runtime.protocol import (
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_TELEMETRY_BYTES,
    Availability,
    ChunkMeta,
    DeviceReport,
    DownloadRequest,
    EventReport,
    PredictionReport,
    StateReport,
    TelemetryReport,
    UpdatePhase,
    decode_object,
)
from edge_runtime.telemetry import QualityTracker, TelemetryPublisher
from edge_runtime.update import lifecycle
from edge_runtime.update.lifecycle import BundleRef, UpdateState, event_report, state_report
from fleet_server.errors import MalformedReportError, MalformedRequestError, RegistryError
from fleet_server.reports import parse_availability, parse_event, parse_state, parse_telemetry

A = BundleRef(sha256="a" * 64, name="sorter", version="1.0.0")
B = BundleRef(sha256="b" * 64, name="sorter", version="1.1.0")
T0 = 1_800_000_000.0


def probation_state() -> UpdateState:
    state = UpdateState.initial(active=A, now=T0, epoch="9f2c4e1a0b7d3c55")
    state = state.assignment_seen(B, 7, T0 + 1).state
    state = state.download_complete(T0 + 1).state
    state = state.verified(T0 + 1).state
    state = state.smoke_started(T0 + 1).state
    state = state.smoke_passed(T0 + 1).state
    state = state.activated(T0 + 1).state
    assert state.phase is UpdatePhase.PROBATION
    return state


def telemetry_publisher(link: list[bytes]) -> TelemetryPublisher:
    class Link:
        def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
            link.append(payload)

    metrics = RuntimeMetrics(clock=lambda: 100.0)
    metrics.set_active_bundle("sorter", "1.1.0", B.sha256)
    metrics.record_prediction(99.5, uncertain=False, staleness_ms=5.0)
    metrics.observe_stages(0.1, 0.5, 3.0, 0.1, 4.0)
    tracker = QualityTracker()
    tracker.emit(prediction(confidence=0.75))
    return TelemetryPublisher(
        Link(),
        "edgefleet/devices/cam-1/telemetry",
        device_id="cam-1",
        metrics=metrics,
        quality=tracker,
        health=HealthState(startup_grace_s=15.0),
        info=lambda: {"device_id": "cam-1", "source": "synthetic", "dropped": 3},
        clock=lambda: T0,
    )


def prediction(confidence: float = 0.9) -> Prediction:
    return Prediction(
        device_id="cam-1",
        frame_id=12,
        captured_at=T0,
        label="glass",
        confidence=confidence,
        top_k=[("glass", confidence), ("paper", float("nan"))],
        uncertain=False,
        latency_ms=7.4123,
        inference_ms=3.1,
        bundle_name="sorter",
        bundle_version="1.1.0",
        bundle_sha256=B.sha256,
    )


# --- round trips: the sender's bytes, the reader's objects -----------------------------


def test_reported_state_round_trip_and_its_wire_object() -> None:
    state = probation_state()
    sent = state_report("cam-1", state, "0.1.0")
    received = StateReport.parse(sent.encode(), "cam-1")
    assert received == sent
    assert (received.state, received.sequence, received.epoch) == (
        UpdatePhase.PROBATION,
        state.sequence,
        "9f2c4e1a0b7d3c55",
    )
    assert received.active is not None and received.active.bundle == B.sha256
    assert received.target is not None and received.target.assignment == 7
    assert "store_problem" not in sent.to_dict()  # only while there is one
    assert lifecycle.reported_state("cam-1", state, "0.1.0") == sent.to_dict()
    # the server's entry point returns the same model
    assert parse_state(sent.encode(), "cam-1") == sent
    assert parse_state(json.loads(sent.encode()), "cam-1") == sent

    full = state_report("cam-1", state, "0.1.0", store_problem="disk full: " + "x" * 600)
    back = StateReport.parse(full.encode(), "cam-1")
    assert back.store_problem is not None and len(back.store_problem) == 500


def test_events_round_trip_transitions_without_kind_refusals_without_transition_fields() -> None:
    transition = probation_state().probation_failed("confidence collapsed", T0 + 9)
    sent = event_report("cam-1", transition.events[0])
    wire = json.loads(sent.encode())
    assert "kind" not in wire and wire["from"] == "probation" and wire["to"] == "rolled-back"
    received = EventReport.parse(sent.encode(), "cam-1")
    assert received == sent and received.kind == "transition"
    assert received.dedupe_key("cam-1") == sent.dedupe_key("cam-1")
    assert lifecycle.event_payload("cam-1", transition.events[0]) == wire

    refusal = EventReport.refusal("cam-1", "replayed timestamp " + "r" * 5000, T0)
    wire = json.loads(refusal.encode())
    assert set(wire) == {"protocol", "device_id", "kind", "reason", "at"}
    assert len(wire["reason"]) == 1024  # clipped by the sender, under the reader's 4,096
    assert parse_event(refusal.encode(), "cam-1") == refusal
    assert refusal.message().startswith("refused: replayed timestamp")


def test_telemetry_round_trip_keeps_the_envelope_typed_and_the_metrics_free() -> None:
    published: list[bytes] = []
    publisher = telemetry_publisher(published)
    sent = publisher.report()
    received = TelemetryReport.parse(sent.encode(), "cam-1")
    assert received == sent
    assert publisher.publish_once()
    assert TelemetryReport.parse(published[0], "cam-1").to_dict() == json.loads(published[0])
    assert received.quality is not None and received.quality.class_counts == {"glass": 1}
    assert received.quality.mean_confidence == pytest.approx(0.75)
    assert received.health is not None and received.health.status == "ok"
    assert received.info == {"device_id": "cam-1", "source": "synthetic", "dropped": 3}
    assert isinstance(received.metrics.get("counters"), dict)
    # the registry stores the fields the device sent, as it sent them
    assert parse_telemetry(published[0], "cam-1") == json.loads(published[0])


def test_telemetry_without_health_or_info_and_with_odd_info_values() -> None:
    published: list[bytes] = []
    publisher = telemetry_publisher(published)
    publisher.health = None
    publisher.info = lambda: {"path": __import__("pathlib").Path("/dev/video0"), "n": None}
    assert publisher.publish_once()
    data = json.loads(published[0])
    assert data["health"] is None and data["info"] == {"path": "/dev/video0", "n": None}
    assert TelemetryReport.parse(published[0], "cam-1").health is None


def test_availability_is_text_both_ways() -> None:
    assert Availability.ONLINE.encode() == b"online"
    assert Availability.parse(b"offline", "cam-1") is Availability.OFFLINE
    assert parse_availability(Availability.ONLINE.encode(), "cam-1") is Availability.ONLINE
    for junk in (b"", b"ONLINE", b"online\n", b"\xff\xfe", b'"online"', b"1"):
        with pytest.raises(MalformedMessageError, match="not 'online' or 'offline'"):
            Availability.parse(junk, "cam-1")
    with pytest.raises(MalformedReportError):
        parse_availability(b"maybe", "cam-1")


def test_download_request_and_meta_round_trip() -> None:
    request = DownloadRequest(bundle=B.sha256, want=[[0, 3], [5, 6]], have=2)
    back = DownloadRequest.parse(request.encode(), "cam-1")
    assert back == request and back.indices() == [0, 1, 2, 5] and back.count() == 4

    data = bytes(range(256)) * 41
    meta = ChunkMeta.for_bytes(data, 1000)
    assert (meta.chunks, meta.chunk_length(10), meta.length) == (11, 496, 10_496)
    assert ChunkMeta.parse(meta.encode()) == meta
    assert ChunkMeta.parse(meta.to_dict()) == meta
    wrongs: list[tuple[dict[str, Any], str]] = [
        ({"chunks": 12}, "chunks is 12"),
        ({"chunk_sha256": meta.chunk_sha256[:-1]}, "must list 11 hashes"),
        ({"chunk_size": 256 * 1024 + 1}, "chunk_size"),
        ({"length": 0}, "length"),
        ({"chunk_sha256": ["AB" * 32] * 11}, "chunk_sha256.0"),
    ]
    for wrong, problem in wrongs:
        with pytest.raises(MalformedMessageError, match=problem):
            ChunkMeta.parse({**meta.to_dict(), **wrong})


def test_prediction_model_is_the_object_the_device_writes() -> None:
    sent = prediction()
    report = PredictionReport.parse(sent.to_json().encode(), "cam-1")
    assert report.to_dict() == sent.to_dict()
    assert report.top_k[1].score is None  # NaN scores are written as null
    assert set(PredictionReport.model_fields) == set(sent.to_dict())


def test_a_multi_camera_prediction_names_the_device_and_its_camera() -> None:
    single = prediction()
    assert single.to_dict()["camera_id"] is None
    assert PredictionReport.parse(single.to_json().encode(), "cam-1").camera_id is None
    sent = dataclasses.replace(single, device_id="line-3-box", camera_id="belt-2")
    report = PredictionReport.parse(sent.to_json().encode(), "line-3-box")  # the box's topic
    assert (report.device_id, report.camera_id) == ("line-3-box", "belt-2")
    assert report.to_dict() == sent.to_dict()
    with pytest.raises(MalformedMessageError, match="names device"):
        PredictionReport.parse(sent.to_json().encode(), "belt-2")
    with pytest.raises(MalformedMessageError, match="camera_id"):
        PredictionReport.parse({**sent.to_dict(), "camera_id": "b" * 65}, "line-3-box")


def test_one_phase_vocabulary_and_one_error_tree() -> None:
    assert lifecycle.UpdatePhase is UpdatePhase
    assert issubclass(MalformedReportError, MalformedMessageError)
    assert issubclass(MalformedReportError, RegistryError)
    assert issubclass(MalformedRequestError, MalformedMessageError)
    assert issubclass(MalformedMessageError, EdgefleetError)


# --- hostile payloads --------------------------------------------------------------------

STATE = {"protocol": 1, "device_id": "cam-1", "state": "idle", "updated_at": T0}
EVENT = {
    "protocol": 1,
    "device_id": "cam-1",
    "bundle": "a" * 64,
    "assignment": 1,
    "to": "idle",
    "at": T0,
}
TELEMETRY = {"protocol": 1, "device_id": "cam-1", "at": T0, "metrics": {}, "info": {}}
DOWNLOAD = {"protocol": 1, "bundle": "a" * 64, "want": [[0, 2]], "have": 0}
PREDICTION = prediction().to_dict()
VALID: list[tuple[type[DeviceReport], dict[str, Any]]] = [
    (StateReport, STATE),
    (EventReport, EVENT),
    (TelemetryReport, TELEMETRY),
    (DownloadRequest, DOWNLOAD),
    (PredictionReport, PREDICTION),
]
IDS = [model.__name__ for model, _ in VALID]


@pytest.mark.parametrize(("model", "good"), VALID, ids=IDS)
def test_valid_payloads_parse_from_bytes_and_values_and_ignore_unknown_fields(
    model: type[DeviceReport], good: dict[str, Any]
) -> None:
    from_bytes = model.parse(json.dumps(good).encode(), "cam-1")
    assert model.parse(good, "cam-1") == from_bytes
    newer = {**good, "added_in_1_7": {"anything": [1, 2]}}
    assert model.parse(json.dumps(newer).encode(), "cam-1") == from_bytes


def _refused(model: type[DeviceReport], payload: object, match: str) -> None:
    with pytest.raises(MalformedMessageError, match=match):
        model.parse(payload, "cam-1")


@pytest.mark.parametrize(("model", "good"), VALID, ids=IDS)
def test_oversized_payloads_are_refused_before_they_are_decoded(
    model: type[DeviceReport], good: dict[str, Any]
) -> None:
    padded = {**good, "padding": "x" * (model.max_bytes + 1)}
    _refused(model, json.dumps(padded).encode(), "over the")
    _refused(model, padded, "over the")  # a decoded value is measured as compact JSON
    _refused(model, b" " * (model.max_bytes + 1), "over the")


@pytest.mark.parametrize(("model", "good"), VALID, ids=IDS)
def test_another_protocol_or_another_device_is_refused(
    model: type[DeviceReport], good: dict[str, Any]
) -> None:
    for protocol in (2, 0, "1", True, 1.0, None, [1]):
        _refused(model, {**good, "protocol": protocol}, "uses protocol")
    _refused(model, {**good, "device_id": "cam-2"}, "names device 'cam-2'")
    _refused(model, {**good, "device_id": None}, "names device None")


@pytest.mark.parametrize(("model", "good"), VALID, ids=IDS)
def test_nan_infinity_and_out_of_range_numbers_are_refused(
    model: type[DeviceReport], good: dict[str, Any]
) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        raw = (
            json.dumps({**good, "extra": 0}).encode().replace(b'"extra": 0', b'"extra": ' + literal)
        )
        _refused(model, raw, "not UTF-8 JSON")
    _refused(
        model, {**good, "extra": {"deep": [math.nan]}}, r"not JSON-safe.*extra\.deep\[0\] is nan"
    )
    _refused(model, {**good, "extra": math.inf}, "extra is inf")


@pytest.mark.parametrize(("model", "good"), VALID, ids=IDS)
def test_not_json_not_an_object_and_deep_nesting_are_refused(
    model: type[DeviceReport], good: dict[str, Any]
) -> None:
    for raw in (b"", b"not json", b"\xff\xfe{}", b"[1, 2]", b"null", b'"state"', b"{"):
        _refused(model, raw, "not UTF-8 JSON|not a JSON object")
    _refused(model, b"[" * 5000, "nested too deeply|not UTF-8 JSON|over the")
    _refused(model, b'{"a":' * 3000, "nested too deeply|not UTF-8 JSON|over the")
    nested: Any = 1
    for _ in range(MAX_DEPTH):
        nested = {"n": nested}
    _refused(model, {**good, "extra": nested}, f"deeper than {MAX_DEPTH} levels")
    _refused(model, json.dumps({**good, "extra": nested}).encode(), "deeper than")
    _refused(model, {**good, "extra": {1, 2}}, "extra is a set")
    _refused(model, [good], "not a JSON object")


@pytest.mark.parametrize(
    ("model", "good", "field", "values"),
    [
        (StateReport, STATE, "state", ["napping", 1, None, ["idle"]]),
        (StateReport, STATE, "updated_at", ["1800000000", True, -1.0, None]),
        (StateReport, STATE, "sequence", ["5", True, 1.5, -1, 2**63]),
        (StateReport, STATE, "epoch", ["X" * 40, "not-hex", 12]),
        (StateReport, STATE, "active", [{"bundle": "xyz"}, {"bundle": "A" * 64}, "a" * 64, []]),
        (
            StateReport,
            STATE,
            "target",
            [{"bundle": "a" * 64, "assignment": "7"}, {"bundle": "a" * 64}],
        ),
        (StateReport, STATE, "runtime_version", ["v" * 65, 1]),
        (StateReport, STATE, "store_problem", ["p" * 501, 3]),
        (EventReport, EVENT, "assignment", [True, "1", 1.0, -1]),
        (EventReport, EVENT, "to", ["sideways", 3]),
        (EventReport, EVENT, "kind", ["other", 1]),
        (EventReport, EVENT, "reason", ["r" * 4097, ["list"]]),
        (EventReport, EVENT, "at", ["now", None, -5.0]),
        (
            TelemetryReport,
            TELEMETRY,
            "quality",
            [
                {"predictions": -1},
                {"predictions": 1.5},
                {"class_counts": {"glass": "3"}},
                {"class_counts": {"l" * 129: 1}},
                {"class_counts": {f"c{i}": 1 for i in range(1025)}},
                {"bundle": "xyz"},
            ],
        ),
        (TelemetryReport, TELEMETRY, "health", [{"reasons": ["r"] * 33}, {"status": 1}, "ok"]),
        (
            TelemetryReport,
            TELEMETRY,
            "metrics",
            [[1, 2], "counters", {f"k{i}": 0 for i in range(257)}],
        ),
        (TelemetryReport, TELEMETRY, "bundle", ["xyz", 5]),
        (
            DownloadRequest,
            DOWNLOAD,
            "want",
            [
                [],
                [[3, 3]],
                [[-1, 2]],
                [[0, True]],
                [[0, 1, 2]],
                [[0, 1]] * 17,
                [[0, 10**9]],
                "0-2",
                [[0.0, 1.0]],
            ],
        ),
        (DownloadRequest, DOWNLOAD, "have", [-1, "2", True]),
        (DownloadRequest, DOWNLOAD, "bundle", ["abc", None, "A" * 64]),
        (PredictionReport, PREDICTION, "uncertain", ["false", 0]),
        (PredictionReport, PREDICTION, "top_k", [[["glass", 0.9]], [{"label": "glass"}]]),
    ],
)
def test_wrong_types_and_lengths_are_refused_naming_the_field(
    model: type[DeviceReport], good: dict[str, Any], field: str, values: list[Any]
) -> None:
    for value in values:
        with pytest.raises(MalformedMessageError, match=f"invalid: .*{field}") as caught:
            model.parse({**good, field: value}, "cam-1")
        assert len(str(caught.value)) < 1200  # never the whole hostile payload


def test_a_transition_needs_its_fields_and_missing_required_fields_are_named() -> None:
    _refused(EventReport, {"protocol": 1, "to": "idle", "at": T0}, "a transition needs bundle")
    _refused(StateReport, {"protocol": 1, "state": "idle"}, "updated_at: Field required")
    _refused(DownloadRequest, {"bundle": "a" * 64}, "want: Field required")
    assert EventReport.parse({"kind": "refused", "at": T0}, "cam-1").reason == ""


def test_the_servers_readers_raise_its_own_error_with_the_protocols_message() -> None:
    with pytest.raises(MalformedReportError, match="state from cam-1 uses protocol 2"):
        parse_state({**STATE, "protocol": 2}, "cam-1")
    with pytest.raises(MalformedReportError, match="event from cam-1 is invalid"):
        parse_event({**EVENT, "at": "now"}, "cam-1")
    with pytest.raises(MalformedReportError, match="over the 100-byte cap"):
        parse_telemetry(TELEMETRY | {"info": {"x": "y" * 100}}, "cam-1", max_bytes=100)
    assert len(json.dumps(TELEMETRY)) < MAX_TELEMETRY_BYTES < MAX_MESSAGE_BYTES


def test_decode_object_turns_tuples_into_lists_and_names_what_it_read() -> None:
    assert decode_object({"want": ((0, 1),)}, "x", 100) == {"want": [[0, 1]]}
    with pytest.raises(MalformedMessageError, match=r"^download from cam-9 is not a JSON object$"):
        decode_object(b"[]", "download from cam-9", 100)
