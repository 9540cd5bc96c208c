"""Field data without a network: the rules, the caps under a flood, the on-disk ring, the wire
format's bounds, and the server's store (deduplicated, labelled, bounded) on a real SQLite registry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import MalformedMessageError
from edge_runtime.field_data import Caps, FieldCollector, SampleRing, choose_reason
from edge_runtime.field_data.collector import ACK_TIMEOUT_S, IN_FLIGHT
from edge_runtime.prediction import Prediction
from edge_runtime.protocol.field_data import (
    MAX_SAMPLE_BYTES,
    FieldAck,
    FieldDataSettings,
    FieldSample,
    FieldSampleHeader,
)
from edge_runtime.protocol.predictions import ScoredLabel
from edge_runtime.sources.base import Frame
from edgefleet.testing import FakeClock
from fleet_server.errors import NotFoundError, RegistryError
from fleet_server.field_data import FieldDataError, FieldRetention, FieldStore, export_folder
from fleet_server.registry import Registry

BUNDLE = "b" * 64
ON = FieldDataSettings(enabled=True, below_confidence=0.5, per_minute=5, per_day=12)


def prediction(confidence: float, label: str = "glass", at: float = 0.0) -> Prediction:
    return Prediction(
        device_id="cam-1",
        frame_id=0,
        captured_at=at,
        label=label,
        confidence=confidence,
        top_k=[(label, confidence)],
        uncertain=False,
        latency_ms=1.0,
        inference_ms=1.0,
        bundle_name="tiny",
        bundle_version="1.0.0",
        bundle_sha256=BUNDLE,
    )


def test_rules_pick_low_confidence_then_classes_then_the_random_fraction() -> None:
    assert choose_reason(FieldDataSettings(), prediction(0.1), 0.0) is None  # off by default
    assert choose_reason(ON, prediction(0.1), 0.9) == "low-confidence"
    assert choose_reason(ON, prediction(float("nan")), 0.9) == "low-confidence"
    assert choose_reason(ON, prediction(0.9), 0.0) is None
    chosen = ON.model_copy(update={"classes": ["metal"], "random_fraction": 0.1})
    assert choose_reason(chosen, prediction(0.9, "metal"), 0.9) == "class"
    assert choose_reason(chosen, prediction(0.9), 0.05) == "random"
    assert choose_reason(chosen, prediction(0.9), 0.5) is None


def test_caps_hold_in_every_sliding_minute_and_every_day_under_a_flood() -> None:
    caps = Caps(per_minute=5, per_day=40)
    admitted = [t / 30 for t in range(30 * 3600) if caps.admit(t / 30)]  # 30 fps for an hour
    assert len(admitted) == 40  # the day's cap
    for index in range(len(admitted) - 5):
        assert admitted[index + 5] - admitted[index] >= 60.0  # no 6 in any minute
    assert caps.refused == 30 * 3600 - 40
    assert caps.admit(86400.0 * 2)  # a new UTC day


def frame(seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    return Frame(image=image, frame_id=seed, captured_monotonic=0.0, captured_wall=float(seed))


def test_a_flood_of_low_confidence_frames_stays_within_every_cap(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = ON.model_copy(update={"max_disk_bytes": 40_000})
    collector = FieldCollector("cam-1", tmp_path / "ring", settings=settings, clock=clock, seed=1)
    for minute in range(4):
        for index in range(30 * 60):  # a minute at 30 fps, every frame uncertain
            collector.observe(frame(minute * 1800 + index), prediction(0.2, at=clock.now))
            clock.advance(1 / 30)
        collector.drain()  # the worker's turn
        assert collector.stored <= 5 * (minute + 1)
    assert collector.chosen == 4 * 30 * 60
    assert collector.stored == 12  # the day's cap
    assert collector.ring.total_bytes <= 40_000
    assert len(collector.ring) + collector.ring.dropped == 12
    assert collector.ring.dropped > 0  # random 64x48 frames do not compress: the ring wrapped
    refused = collector.caps.refused
    assert refused == collector.chosen - 12
    collector.apply(settings.model_copy(update={"per_day": 100}))  # new settings, fresh caps
    assert collector.caps.refused == refused  # ... but the counter carries on


def test_the_ring_drops_the_oldest_and_survives_a_restart(tmp_path: Path) -> None:
    ring = SampleRing(tmp_path, max_bytes=250)
    for index in range(5):
        assert ring.put(f"{index:064x}", bytes([index]) * 100)
    assert len(ring) == 2 and ring.dropped == 3
    (tmp_path / ".x.sample.123.tmp").write_bytes(b"half")  # a write a power cut interrupted
    again = SampleRing(tmp_path, max_bytes=250)
    assert [sha for sha, _ in again.oldest(10)] == [f"{3:064x}", f"{4:064x}"]
    assert not (tmp_path / ".x.sample.123.tmp").exists()
    assert again.remove(f"{3:064x}") and not again.remove(f"{3:064x}")
    assert not again.put("f" * 64, b"x" * 251)  # can never fit


def sample(image: bytes = b"\xff\xd8jpeg", device: str = "cam-1") -> FieldSample:
    header = FieldSampleHeader(
        device_id=device,
        sha256=hashlib.sha256(image).hexdigest(),
        image_format="jpeg",
        captured_at=1.0,
        reason="low-confidence",
        label="glass",
        confidence=0.2,
        top_k=[ScoredLabel(label="glass", score=0.2)],
        bundle_sha256=BUNDLE,
        bundle_name="tiny",
        bundle_version="1.0.0",
    )
    return FieldSample(header, image)


def test_the_sample_framing_is_bounded_and_checked() -> None:
    good = sample().encode()
    assert FieldSample.parse(good, "cam-1").image == b"\xff\xd8jpeg"
    with pytest.raises(MalformedMessageError, match="names device"):
        FieldSample.parse(good, "cam-2")
    with pytest.raises(MalformedMessageError, match="sha256"):
        FieldSample.parse(good[:-1] + b"X", "cam-1")
    with pytest.raises(MalformedMessageError, match="cap"):
        FieldSample.parse(good + b"\0" * MAX_SAMPLE_BYTES, "cam-1")
    with pytest.raises(MalformedMessageError, match="out of bounds"):
        FieldSample.parse(b"\xff\xff\xff\xff" + good[4:], "cam-1")
    with pytest.raises(MalformedMessageError, match="short"):
        FieldSample.parse(b"\0", "cam-1")
    with pytest.raises(MalformedMessageError):
        FieldDataSettings.parse(b'{"enabled": true, "per_minute": -1}')


def test_the_server_keeps_each_image_once_labels_and_bounds_them(
    tmp_path: Path, database_url: str
) -> None:
    clock = FakeClock()
    store = FieldStore(tmp_path / "images")
    with Registry.open(database_url, clock=clock) as registry:
        registry.provision_device("cam-1", tags=["line-1"])
        first = sample(b"one")
        assert store.put(first.header.sha256, "jpeg", first.image)
        assert not store.put(first.header.sha256, "jpeg", first.image)
        assert registry.add_field_sample(first.header, 3)
        assert not registry.add_field_sample(first.header, 3)  # a resend: counted, not stored
        assert registry.field_sample(first.header.sha256).uploads == 2
        for index in range(4):
            clock.advance(10)
            registry.add_field_sample(sample(f"img{index}".encode()).header, 4)
        assert len(registry.field_samples()) == 5
        assert registry.field_samples(labelled=True) == []
        labelled = registry.label_field_sample(first.header.sha256, "paper", by="ann")
        assert labelled.true_label == "paper" and labelled.labelled_by == "ann"
        with pytest.raises(FieldDataError):
            registry.label_field_sample(first.header.sha256, "../etc")
        with pytest.raises(NotFoundError):
            registry.label_field_sample("0" * 64, "paper")
        # retention: 3 kept; unlabelled ones go first, the labelled (oldest) one stays
        dropped = registry.prune_field_samples(FieldRetention(max_samples=3, max_age_s=None))
        assert len(dropped) == 2 and first.header.sha256 not in {sha for sha, _ in dropped}
        assert len(registry.field_samples()) == 3
        # age: the unlabelled older than an hour go
        clock.advance(7200)
        dropped = registry.prune_field_samples(FieldRetention(max_age_s=3600))
        assert [s.sha256 for s in registry.field_samples()] == [first.header.sha256]
        assert store.delete([(first.header.sha256, "jpeg")]) == 1
        # settings per group, resolved per device
        registry.set_field_settings("line-1", ON)
        assert registry.device_field_settings()["cam-1"].enabled
        assert registry.clear_field_settings("line-1")
        assert not registry.device_field_settings()["cam-1"].enabled
        with pytest.raises(ValueError, match="tag"):
            registry.set_field_settings("bad tag!", ON)
        with pytest.raises(RegistryError):
            registry.field_samples(limit=0)


def test_export_writes_class_folders_of_labelled_samples_only(tmp_path: Path) -> None:
    clock = FakeClock()
    with Registry.open(f"sqlite:///{tmp_path / 'fleet.db'}", clock=clock) as registry:
        for index, label in enumerate(["glass", "paper", None]):
            header = sample(f"im{index}".encode()).header
            registry.add_field_sample(header, 3)
            if label:
                registry.label_field_sample(header.sha256, label)
        samples = registry.field_samples()
    written = export_folder(samples, [b"x"] * len(samples), tmp_path / "out")
    assert written == {"glass": 1, "paper": 1}
    assert sorted(p.parent.name for p in (tmp_path / "out").rglob("*.jpg")) == ["glass", "paper"]


class RecordingLink:
    """A FieldLink that keeps what was published and lets the test play the server."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.handlers: dict[str, Callable[[str, bytes], None]] = {}
        self.listeners: list[Callable[[], None]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload))

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None]) -> None:
        self.handlers[topic_filter] = handler

    def add_connect_listener(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)


def test_the_uploader_keeps_to_its_budget_and_resends_what_was_not_acknowledged(
    tmp_path: Path,
) -> None:
    link = RecordingLink()
    collector = FieldCollector("cam-1", tmp_path / "ring", link, seed=1)
    collector.start()
    try:
        topic = "edgefleet/devices/cam-1/field-data"
        assert set(link.handlers) == {f"{topic}/settings", f"{topic}/acks"}
        settings = ON.model_copy(update={"per_minute": 100, "upload_bytes_per_s": 1024})
        link.handlers[f"{topic}/settings"](f"{topic}/settings", settings.encode())
        assert collector.settings.per_minute == 100
        collector.stop()  # the test drives the worker's steps itself from here
        for index in range(10):
            image = frame(index).image
            assert collector.encode(image, prediction(0.2), "low-confidence")
        size = len(collector.ring.oldest(1)[0][1])
        assert size > 1024
        # 1 KiB/s: one sample, then nothing until the debt is paid back
        t = 1e6
        assert collector.upload(now_monotonic=t) == 1
        assert collector.upload(now_monotonic=t + 0.5 * size / 1024) == 0
        assert collector.upload(now_monotonic=t + 1.5 * size / 1024) == 1
        # a larger budget: at most 4 unacknowledged at a time (within the ack timeout)
        fast = settings.model_copy(update={"upload_bytes_per_s": 10_000_000})
        link.handlers[f"{topic}/settings"](f"{topic}/settings", fast.encode())
        assert collector.upload(now_monotonic=t + 20) == IN_FLIGHT - 2
        assert collector.upload(now_monotonic=t + 21) == 0
        assert len(link.published) == IN_FLIGHT
        # an ack frees a slot and removes the sample from the disk
        first = FieldSample.parse(link.published[0][1], "cam-1").header.sha256
        link.handlers[f"{topic}/acks"](f"{topic}/acks", FieldAck(sha256=first).encode())
        assert len(collector.ring) == 9 and collector.acked == 1
        assert collector.upload(now_monotonic=t + 22) == 1
        before = len(link.published)
        # an ack that never comes: sent again after the timeout
        late = collector.upload(now_monotonic=t + 22 + ACK_TIMEOUT_S + 1)
        assert late == IN_FLIGHT
        # a reconnect: everything unacknowledged goes again, the acknowledged one never
        before = len(link.published)
        for listener in link.listeners:
            listener()
        collector.upload(now_monotonic=t + 22 + ACK_TIMEOUT_S + 2)
        resent = [FieldSample.parse(p, "cam-1").header.sha256 for _, p in link.published[before:]]
        assert first not in resent and len(resent) == IN_FLIGHT
        link.handlers[f"{topic}/settings"](f"{topic}/settings", b"")  # cleared: collection off
        assert not collector.settings.enabled
    finally:
        collector.stop()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.integers(0, 2**32 - 1))
def test_any_bytes_are_a_sample_or_a_clear_refusal(junk: bytes, length: int) -> None:
    for payload in (junk, length.to_bytes(4, "big") + junk, sample().encode()[:-1] + junk):
        try:
            parsed = FieldSample.parse(payload, "cam-1")
        except MalformedMessageError as exc:
            assert "field-data sample from cam-1" in str(exc)
        else:
            assert hashlib.sha256(parsed.image).hexdigest() == parsed.header.sha256
