"""A multi-camera device judges a new bundle on each camera's stream, end to end on a real Mosquitto.

A real TUF repository and chunk server (the kit's LocalFleet without the fleet
server), a real device with two fake cameras and its update agent. The new
bundle is a real ONNX classifier that answers well on coloured frames and
NaN on black ones (it takes the log of the mean colour): on a device where
one camera looks at a black belt, it must be rolled back with a reason that
names that camera; where both cameras see colour, the same bundle commits.
A camera that was already dead when the bundle was activated is left out of
the judgement (the bundle commits on the other camera, and the device names
the camera as not judged); one that goes dark during probation rolls the
bundle back, naming it; a box whose cameras are all dead refuses the bundle.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from edge_runtime.update import UpdatePhase
from edgefleet.testing import FakeCamera, RunningDevice, json_lines
from edgefleet.testing.fleet import LocalFleet
from tests.media import make_bundle
from tests.models import LABELS, SIZE, tiny_onnx_model

pytestmark = pytest.mark.broker

COLOURED = {"type": "fake-camera", "fps": 30, "colors": [[40, 200, 120], [90, 90, 200]]}
BLACK = {"type": "fake-camera", "fps": 30, "colors": [[0, 0, 0]]}
NEVER_OPENS = {"type": "fake-camera", "refuse_opens": 1_000_000}


def dark_blind_onnx_model(scale: float = 40.0, seed: int = 8) -> bytes:
    """Like ``tiny_onnx_model``, but on the log of the mean colour: NaN logits for a black frame."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = (rng.normal(size=(3, len(LABELS))) * scale).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
            helper.make_node("Log", ["pooled"], ["logs"]),
            helper.make_node("MatMul", ["logs", "weights"], ["logits"]),
        ],
        "dark-blind",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, len(LABELS)])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(weights, "weights"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: int) -> Iterator[LocalFleet]:
    with LocalFleet(tmp_path / "fleet", mosquitto, fleet_server=False) as fleet:
        make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True)
        make_bundle(tmp_path / "v2.efb", dark_blind_onnx_model(), "onnx", "2.0.0", True)
        fleet.release("v1", tmp_path / "v1.efb")
        fleet.release("v2", tmp_path / "v2.efb")
        fleet.start()
        yield fleet


def lines(path: Path) -> list[dict[str, Any]]:
    return json_lines(path)  # the device may be half-way through writing the last line


def box(
    fleet: LocalFleet, tmp_path: Path, belt_1: dict[str, Any], belt_2: dict[str, Any], **update: Any
) -> RunningDevice:
    return RunningDevice(
        fleet.device_config(
            "line-3-box",
            bundle="v1",
            source=None,
            cameras=[{"id": "belt-1", "source": belt_1}, {"id": "belt-2", "source": belt_2}],
            outputs={"jsonl": {"path": str(tmp_path / "{camera}.jsonl")}},
            health={"max_frame_age_s": 1.0, "startup_grace_s": 2.0},
            update={
                "probation_s": 1.5,
                "probation_min_predictions": 10,
                "smoke_latency_runs": 5,
                **update,
            },
        )
    )


@pytest.mark.parametrize(
    ("belt_2", "update", "outcome", "words"),
    [
        (BLACK, {}, UpdatePhase.ROLLED_BACK, "camera belt-2: NaN/inf output"),
        (COLOURED, {}, UpdatePhase.COMMITTED, "probation passed"),
        (NEVER_OPENS, {}, UpdatePhase.COMMITTED, "probation passed"),
        (
            NEVER_OPENS,
            {"exclude_dead_cameras": False},
            UpdatePhase.ROLLED_BACK,
            "camera belt-2: no prediction with the new bundle",
        ),
    ],
    ids=["black-belt", "both-coloured", "camera-dead-before", "camera-dead-before-judged"],
)
def test_a_multi_camera_device_judges_the_new_bundle_on_each_cameras_stream(
    fleet: LocalFleet,
    tmp_path: Path,
    *,
    belt_2: dict[str, Any],
    update: dict[str, Any],
    outcome: UpdatePhase,
    words: str,
) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    device = box(fleet, tmp_path, COLOURED, belt_2, **update)
    try:
        device.wait_for(device.connected)
        device.wait_for(lambda: len(lines(tmp_path / "belt-1.jsonl")) > 30)  # baselines
        fleet.assign(v2, "line-3-box")
        device.wait_for(lambda: device.agent.state.phase == outcome, timeout=60)
        state = device.agent.state
        ended = [e for e in state.history if e.bundle == v2.sha256 and e.to_state == outcome]
        assert len(ended) == 1 and ended[0].from_state == UpdatePhase.PROBATION, state.history
        assert words in ended[0].reason, ended[0].reason
        assert state.active is not None
        assert state.active.sha256 == (
            v1.sha256 if outcome == UpdatePhase.ROLLED_BACK else v2.sha256
        )
        excluded = device.agent.probation_excluded
        if belt_2 is NEVER_OPENS and not update:
            # left out, and named as such on /healthz and /metrics
            assert excluded == {"belt-2": "no frame since the device started, before activation"}
            details = device.runtime.health.evaluate().details
            assert details["probation_excluded"] == excluded
            metrics = generate_latest(device.runtime.registry).decode()
            assert 'edgefleet_camera_probation_excluded{camera="belt-2"} 1.0' in metrics
            assert 'edgefleet_camera_probation_excluded{camera="belt-1"} 0.0' in metrics
        else:
            assert excluded == {}
        if outcome == UpdatePhase.ROLLED_BACK:
            assert "belt-1" not in ended[0].reason  # the camera whose stream was fine
            # the old bundle serves both streams again
            count = len(lines(tmp_path / "belt-1.jsonl"))
            device.wait_for(lambda: len(lines(tmp_path / "belt-1.jsonl")) > count + 10)
            assert lines(tmp_path / "belt-1.jsonl")[-1]["bundle_sha256"] == v1.sha256
    finally:
        device.close()
    belt_1 = lines(tmp_path / "belt-1.jsonl")
    assert {(p["device_id"], p["camera_id"]) for p in belt_1} == {("line-3-box", "belt-1")}
    assert any(p["bundle_sha256"] == v2.sha256 for p in belt_1)  # it served during probation


def test_a_camera_that_goes_dark_during_probation_still_rolls_the_bundle_back(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    device = box(fleet, tmp_path, COLOURED, COLOURED, probation_s=3.0)
    try:
        device.wait_for(device.connected)
        device.wait_for(lambda: len(lines(tmp_path / "belt-2.jsonl")) > 30)
        fleet.assign(v2, "line-3-box")
        device.wait_for(lambda: device.agent.state.phase == UpdatePhase.PROBATION, timeout=60)
        served = len(lines(tmp_path / "belt-2.jsonl"))
        device.wait_for(lambda: len(lines(tmp_path / "belt-2.jsonl")) > served + 3)
        camera = device.runtime.cameras[1].capture.source
        assert isinstance(camera, FakeCamera)
        camera.unplug()  # alive at activation, dark from now on
        device.wait_for(lambda: device.agent.state.phase == UpdatePhase.ROLLED_BACK, timeout=30)
        state = device.agent.state
        (ended,) = [e for e in state.history if e.to_state == UpdatePhase.ROLLED_BACK]
        assert ended.from_state == UpdatePhase.PROBATION
        assert "camera belt-2: no prediction with the new bundle" in ended.reason, ended.reason
        assert "after" in ended.reason and "predictions" in ended.reason  # it had served some
        assert state.active is not None and state.active.sha256 == v1.sha256
        assert device.agent.probation_excluded == {}
    finally:
        device.close()


def test_a_box_whose_cameras_are_all_dead_refuses_the_bundle_without_activating_it(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    device = box(fleet, tmp_path, NEVER_OPENS, NEVER_OPENS)
    try:
        device.wait_for(device.connected)
        time.sleep(1.2)  # both past health.max_frame_age_s without a frame
        fleet.assign(v2, "line-3-box")
        device.wait_for(lambda: device.agent.state.phase == UpdatePhase.ROLLED_BACK, timeout=60)
        state = device.agent.state
        phases = [e.to_state for e in state.history if e.bundle == v2.sha256]
        assert UpdatePhase.ACTIVATING not in phases and UpdatePhase.PROBATION not in phases
        (ended,) = [e for e in state.history if e.to_state == UpdatePhase.ROLLED_BACK]
        assert ended.from_state == UpdatePhase.SMOKE_TESTING
        assert ended.reason.startswith(
            "not activated: every camera is dead, the bundle cannot be judged on any stream"
            " (belt-1: no frame since the device started"
        ), ended.reason
        assert "belt-2: no frame since the device started" in ended.reason
        assert state.active is not None and state.active.sha256 == v1.sha256
        assert device.active_sha256() == v1.sha256  # never swapped
    finally:
        device.close()
