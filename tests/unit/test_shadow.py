"""Shadow evaluation with plain values and a real tiny model: the gate, the planner's shadow wave,
the device's window and runner (budget, drops, agreement), the wire messages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_runtime.classifier import Classifier
from edge_runtime.errors import MalformedMessageError
from edge_runtime.prediction import Prediction
from edge_runtime.protocol.shadow import ShadowReport, ShadowRequest
from edge_runtime.shadow import ShadowRunner, ShadowWindow
from edge_runtime.sources.base import Frame
from fleet_server.quality_gate import GateOutcome
from fleet_server.rollout_plan import Assign, EventKind, RolloutState, RolloutStatus, WaveStatus
from fleet_server.rollout_progress import StartShadow, StopShadow
from fleet_server.rollout_spec import RolloutSpec, TargetDevice, WaveSpec
from fleet_server.shadow_gate import ShadowStage, evaluate_shadow, sum_reports
from tests.media import frame, make_bundle
from tests.models import tiny_onnx_model

NEW, OLD = "b" * 64, "a" * 64
T0 = 1_800_000_000.0
STAGE = ShadowStage(min_duration_s=60, min_frames=100, timeout_s=600, window_s=10)
DEVICES = ("cam-1", "cam-2")


def report(device: str = "cam-1", **fields: Any) -> ShadowReport:
    values: dict[str, Any] = {
        "device_id": device,
        "candidate_sha256": NEW,
        "active_sha256": OLD,
        "status": "running",
        "window_start": T0,
        "window_end": T0 + 10,
        "compared": 100,
        "agreed": 97,
        "candidate_confidence": 0.9,
        "active_confidence": 0.92,
        "candidate_classes": {"glass": 50, "metal": 50},
        "active_classes": {"glass": 52, "metal": 48},
        "candidate_ms": 4.0,
        "candidate_p95_ms": 6.0,
        "active_ms": 3.0,
    }
    return ShadowReport(**{**values, **fields})


# --- the gate ---------------------------------------------------------------------------


def test_the_gate_waits_for_every_device_enough_frames_and_the_minimum_duration() -> None:
    one = sum_reports([report(compared=40, agreed=40)])
    verdict = evaluate_shadow(one, STAGE, DEVICES, elapsed_s=30)
    assert verdict.outcome is GateOutcome.UNDECIDED
    assert "1 of 2 devices not running it yet (cam-2)" in verdict.reason
    assert "40 of 100 frames compared" in verdict.reason and "30 of 60 s run" in verdict.reason
    both = sum_reports([report(), report("cam-2")])
    assert evaluate_shadow(both, STAGE, DEVICES, elapsed_s=61).outcome is GateOutcome.PASSED


def test_the_gate_passes_with_the_figures_in_its_reason() -> None:
    verdict = evaluate_shadow(sum_reports([report(), report("cam-2")]), STAGE, DEVICES, 61)
    assert verdict.outcome is GateOutcome.PASSED
    assert "200 frames on 2 devices, agreement 97.0%" in verdict.reason
    assert "largest class shift metal 2.0 points" in verdict.reason
    assert {c.name for c in verdict.checks} == {
        "agreement",
        "class-shift",
        "errors",
        "latency-ratio",
    }


@pytest.mark.parametrize(
    ("fields", "stage", "said"),
    [
        ({"agreed": 50}, {}, "agreement with the active model 73.5% over 200 frames (min 90%)"),
        (
            {"candidate_classes": {"glass": 80, "metal": 20}},
            {"min_agreement": 0.0},
            "metal's share moved 13.0 points: 96 frames for the active model, 70 for the candidate",
        ),
        (
            {"errors": 10, "last_error": "boom"},
            {},
            "failed on 10 of 210 frames (4.8%, max 1.0%): boom",
        ),
        (
            {"candidate_ms": 9.0},
            {},
            "takes 6.50 ms a frame, the active model 3.00 ms (x2.17, max x2)",
        ),
        (
            {"candidate_p95_ms": 30.0},
            {"max_latency_ms": 20.0},
            "p95 is 30.00 ms a frame (max 20 ms)",
        ),
    ],
)
def test_the_gate_fails_on_each_limit(
    fields: dict[str, Any], stage: dict[str, Any], said: str
) -> None:
    figures = sum_reports([report(**fields), report("cam-2")])
    verdict = evaluate_shadow(figures, STAGE.model_copy(update=stage), DEVICES, 61)
    assert verdict.outcome is GateOutcome.FAILED
    assert said in verdict.reason


def test_a_device_that_cannot_run_the_candidate_fails_the_gate_unless_it_ran_it_later() -> None:
    failed = report(status="failed", reason="cannot run bbbb in shadow: not released", compared=0)
    verdict = evaluate_shadow(sum_reports([failed, report("cam-2")]), STAGE, DEVICES, 1)
    assert verdict.outcome is GateOutcome.FAILED
    assert "cam-1: cannot run bbbb in shadow: not released" in verdict.reason
    later = report(window_start=T0 + 10, window_end=T0 + 20)
    figures = sum_reports([later, failed, report("cam-2")])
    assert evaluate_shadow(figures, STAGE, DEVICES, 61).outcome is GateOutcome.PASSED


# --- the planner -----------------------------------------------------------------------


def rollout(**shadow: Any) -> RolloutState:
    spec = RolloutSpec(
        bundle=NEW,
        previous_bundle=OLD,
        devices=tuple(TargetDevice(device_id=f"cam-{i}", active=OLD) for i in range(1, 5)),
        waves=(
            WaveSpec(devices=DEVICES, shadow=STAGE.model_copy(update=shadow)),
            WaveSpec(percent=100, health_window_s=1),
        ),
    )
    return RolloutState.create(spec, T0)


def test_a_shadow_wave_asks_its_devices_to_run_the_bundle_and_assigns_nothing() -> None:
    state = rollout()
    assert state.waves[0].devices == DEVICES
    assert state.waves[1].devices == ("cam-1", "cam-2", "cam-3", "cam-4")
    assert {d: p.wave for d, p in state.devices.items()} == dict.fromkeys(state.waves[1].devices, 1)
    step = state.start(T0)
    assert step.actions == [StartShadow(DEVICES, NEW, 5, 0.25, 10.0)]
    assert step.state.waves[0].status is WaveStatus.RUNNING
    assert EventKind.SHADOW_STARTED in {e.kind for e in step.events}
    # without figures it waits (said once), and the quality gate is never due for it
    waiting = step.state.tick(T0 + 1)
    assert waiting.state.waves[0].undecided_since == T0 + 1 and not waiting.actions
    assert waiting.state.tick(T0 + 2).events == []
    assert waiting.state.gate_due(T0 + 100) is None


def test_a_passing_shadow_wave_ends_the_shadow_runs_and_sends_the_real_wave() -> None:
    state = rollout().start(T0).state
    figures = sum_reports([report(), report("cam-2")])
    step = state.tick(T0 + 61, shadow=figures)
    assert step.state.waves[0].status is WaveStatus.PASSED
    assert step.state.waves[0].verdict is not None
    assert StopShadow(DEVICES) in step.actions
    assigned = [a for a in step.actions if isinstance(a, Assign)]
    assert assigned == [Assign(("cam-1", "cam-2", "cam-3", "cam-4"), NEW)]
    assert step.state.current_wave == 1 and step.state.status is RolloutStatus.RUNNING


def test_a_failing_shadow_wave_aborts_with_the_figures_and_rolls_nothing_back() -> None:
    state = rollout().start(T0).state
    figures = sum_reports([report(agreed=41), report("cam-2", agreed=40)])
    step = state.tick(T0 + 61, shadow=figures)
    assert step.state.status is RolloutStatus.ABORTED
    assert step.state.reason.startswith("wave 1 (shadow) failed: agreement with the active")
    assert "40.5% over 200 frames" in step.state.reason
    assert StopShadow(DEVICES) in step.actions
    assert not [a for a in step.actions if isinstance(a, Assign)]
    assert {p.rollback_sent for p in step.state.devices.values()} == {False}


def test_no_decision_by_the_timeout_fails_the_shadow_wave() -> None:
    state = rollout().start(T0).state
    step = state.tick(T0 + 600, shadow=sum_reports([report()]))
    assert step.state.status is RolloutStatus.ABORTED
    assert "no shadow decision 600 s after it started" in step.state.reason
    assert "cam-2" in step.state.reason


def test_an_operator_abort_in_shadow_ends_the_shadow_runs_and_a_restart_asks_again() -> None:
    from fleet_server.rollout_plan import recover

    state = rollout().start(T0).state
    assert recover(state, T0 + 5).actions[0] == StartShadow(DEVICES, NEW, 5, 0.25, 10.0)
    step = state.abort("changed my mind", T0 + 5)
    assert step.state.status is RolloutStatus.ABORTED
    assert StopShadow(DEVICES) in step.actions


def test_only_the_first_wave_may_be_a_shadow_wave_and_not_the_only_one() -> None:
    devices = (TargetDevice(device_id="cam-1"),)
    with pytest.raises(ValidationError, match="only the first wave may be a shadow wave"):
        RolloutSpec(
            bundle=NEW,
            devices=devices,
            waves=(WaveSpec(count=1), WaveSpec(percent=100, shadow=STAGE)),
        )
    with pytest.raises(ValidationError, match="needs a wave after it"):
        RolloutSpec(bundle=NEW, devices=devices, waves=(WaveSpec(count=1, shadow=STAGE),))


# --- the device -------------------------------------------------------------------------


def test_the_wire_messages_are_bounded_and_typed() -> None:
    request = ShadowRequest(bundle_sha256=NEW, every_nth=3)
    assert ShadowRequest.parse(request.encode()) == request
    with pytest.raises(MalformedMessageError, match="cpu_budget"):
        ShadowRequest.parse({"bundle_sha256": NEW, "cpu_budget": 2.0})
    with pytest.raises(MalformedMessageError, match="names device"):
        ShadowReport.parse(report().encode(), "cam-9")


def test_a_window_counts_agreement_classes_and_a_non_finite_answer_as_an_error() -> None:
    window = ShadowWindow(start=T0)
    common: dict[str, Any] = {"active_confidence": 0.8, "active_ms": 2.0, "candidate_ms": 4.0}
    assert window.compare(active_label="a", candidate_label="a", candidate_confidence=0.9, **common)
    assert not window.compare(
        active_label="a", candidate_label="b", candidate_confidence=0.7, **common
    )
    window.compare(
        active_label="a", candidate_label="b", candidate_confidence=float("nan"), **common
    )
    sent = window.report("cam-1", NEW, OLD, T0 + 5)
    assert (sent.compared, sent.agreed, sent.errors) == (2, 1, 1)
    assert sent.candidate_classes == {"a": 1, "b": 1} and sent.active_classes == {"a": 2}
    assert sent.candidate_confidence == pytest.approx(0.8)
    assert sent.candidate_ms == 4.0 and sent.candidate_p95_ms == 4.0 and sent.active_ms == 2.0


def _predict(active: Classifier, index: int) -> tuple[Frame, Prediction]:
    image = frame(index)
    result = active.classify(image)
    manifest = active.bundle.manifest
    return Frame(image, index, time.monotonic(), time.time()), Prediction(
        device_id="cam-1",
        frame_id=index,
        captured_at=time.time(),
        label=result.answer.label,
        confidence=result.answer.confidence,
        top_k=result.answer.top_k,
        uncertain=result.answer.uncertain,
        latency_ms=result.total_ms,
        inference_ms=result.total_ms,
        bundle_name=manifest.name,
        bundle_version=manifest.version,
        bundle_sha256=active.bundle.sha256,
    )


def test_the_runner_takes_every_nth_frame_within_its_budget_and_drops_the_rest(
    tmp_path: Path,
) -> None:
    active = Classifier(
        make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True),
        backend="onnxruntime",
    )
    same = Classifier(
        make_bundle(tmp_path / "v2.efb", tiny_onnx_model(scale=40.0), "onnx", "2.0.0", True),
        backend="onnxruntime",
    )
    sent: list[ShadowReport] = []
    # generous budget: every 2nd frame is compared when the runner keeps up
    runner = ShadowRunner(
        "cam-1",
        same,
        ShadowRequest(bundle_sha256=same.bundle.sha256, every_nth=2, cpu_budget=1.0, window_s=3600),
        sent.append,
    )
    runner.start()
    try:
        for i in range(40):
            runner.observe(*_predict(active, i))
            deadline = time.monotonic() + 5
            while (
                runner._busy and time.monotonic() < deadline
            ):  # the test waits; the pipeline never does
                time.sleep(0.001)
    finally:
        runner.stop()
    whole = runner.flush()
    assert (whole.offered, whole.compared, whole.agreed) == (20, 20, 20)
    assert whole.skipped_budget == whole.skipped_busy == 0
    assert sent == [whole] and whole.active_sha256 == active.bundle.sha256

    # a tiny budget: after one frame the candidate pauses for 999 times its cost: the rest skipped
    frugal = ShadowRunner(
        "cam-1",
        same,
        ShadowRequest(
            bundle_sha256=same.bundle.sha256, every_nth=1, cpu_budget=0.001, window_s=3600
        ),
        sent.append,
    )
    frugal.start()
    try:
        for i in range(20):
            frugal.observe(*_predict(active, i))
            while frugal._busy:
                time.sleep(0.001)
    finally:
        frugal.stop()
    capped = frugal.flush()
    assert capped.compared == 1 and capped.skipped_budget == 19

    # no waiting at all: a busy candidate drops frames rather than queueing them
    busy = ShadowRunner(
        "cam-1",
        same,
        ShadowRequest(bundle_sha256=same.bundle.sha256, every_nth=1, cpu_budget=1.0, window_s=3600),
        sent.append,
    )
    pairs = [_predict(active, i) for i in range(50)]
    for pair in pairs:  # not started: the first frame holds the place, the rest find it taken
        busy.observe(*pair)
    dropped = busy.flush()
    assert dropped.offered == 50 and dropped.skipped_busy == 49 and dropped.compared == 0

    # frames the candidate itself served are not compared
    own = ShadowRunner(
        "cam-1", active, ShadowRequest(bundle_sha256=active.bundle.sha256), sent.append
    )
    own.observe(*pairs[0])
    assert own.flush().offered == 0
    # nor the frames of another fleet device (a camera that is its own) in the same process
    other = ShadowRunner(
        "box-1", same, ShadowRequest(bundle_sha256=same.bundle.sha256, every_nth=1), sent.append
    )
    other.observe(*pairs[0])  # cam-1's prediction
    assert other.flush().offered == 0


def test_frames_the_candidate_answers_otherwise_go_to_field_data_under_its_rule_and_caps(
    tmp_path: Path,
) -> None:
    from edge_runtime.field_data import FieldCollector
    from edge_runtime.protocol.field_data import FieldDataSettings, FieldSample

    active = Classifier(
        make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True),
        backend="onnxruntime",
    )
    other = Classifier(
        make_bundle(
            tmp_path / "v3.efb", tiny_onnx_model(scale=40.0, seed=8), "onnx", "3.0.0", True
        ),
        backend="onnxruntime",
    )
    collector = FieldCollector("cam-1", tmp_path / "field")
    rules = FieldDataSettings(enabled=True, below_confidence=None, per_minute=3)
    handed: list[str] = []

    def disagreed(image: Any, prediction: Prediction) -> None:
        handed.append(prediction.label)
        collector.shadow_disagreed(image, prediction)

    request = ShadowRequest(bundle_sha256=other.bundle.sha256, every_nth=1, cpu_budget=1.0)
    runner = ShadowRunner("cam-1", other, request, lambda _r: None, on_disagreement=disagreed)
    runner.start()
    try:
        for i in range(12):
            if i == 6:  # the rule switched on half-way
                collector.apply(rules.model_copy(update={"shadow_disagreement": True}))
            elif i == 0:
                collector.apply(rules)
            runner.observe(*_predict(active, i))
            while runner._busy:
                time.sleep(0.001)
    finally:
        runner.stop()
    window = runner.flush()
    assert len(handed) == window.compared - window.agreed > 3
    kept = collector.drain()
    assert kept == 3  # the per-minute cap, of the disagreements after the rule was switched on
    assert collector.caps.refused >= 1
    samples = [FieldSample.parse(payload, "cam-1") for _, payload in collector.ring.oldest(10)]
    assert [s.header.reason for s in samples] == ["shadow-disagreement"] * 3
    assert {s.header.bundle_sha256 for s in samples} == {
        active.bundle.sha256
    }  # the active's answer


def test_a_camera_the_candidate_misreads_fails_the_wave_though_the_average_passes() -> None:
    from edge_runtime.protocol.shadow import ShadowCamera

    belts = {
        "belt-1": ShadowCamera(compared=80, agreed=80),
        "belt-2": ShadowCamera(compared=20, agreed=17),
    }
    good = report(agreed=97, cameras=belts)
    verdict = evaluate_shadow(sum_reports([good, report("cam-2")]), STAGE, DEVICES, 61)
    assert verdict.outcome is GateOutcome.FAILED
    assert "camera cam-1/belt-2: agreement 85.0% over 20 frames (min 90%)" in verdict.reason
    # a camera with too few frames to judge is left to the average
    few = {
        "belt-1": ShadowCamera(compared=81, agreed=81),
        "belt-2": ShadowCamera(compared=19, agreed=16),
    }
    verdict = evaluate_shadow(
        sum_reports([report(cameras=few), report("cam-2")]), STAGE, DEVICES, 61
    )
    assert verdict.outcome is GateOutcome.PASSED
    assert verdict.check("camera-agreement").measured == 1.0  # belt-1's; belt-2 not judged


def test_a_window_counts_each_cameras_frames() -> None:
    window = ShadowWindow(start=T0)
    common: dict[str, Any] = {
        "active_confidence": 0.8,
        "active_ms": 2.0,
        "candidate_ms": 4.0,
        "active_label": "a",
    }
    window.compare(candidate_label="a", candidate_confidence=0.9, camera="belt-1", **common)
    window.compare(candidate_label="b", candidate_confidence=0.9, camera="belt-2", **common)
    window.compare(candidate_label="a", candidate_confidence=0.9, camera="belt-2", **common)
    sent = window.report("cam-1", NEW, OLD, T0 + 1)
    assert {k: (v.compared, v.agreed) for k, v in sent.cameras.items()} == {
        "belt-1": (1, 1),
        "belt-2": (2, 1),
    }
    assert ShadowReport.parse(sent.encode(), "cam-1") == sent
    single = ShadowWindow(start=T0)
    single.compare(candidate_label="a", candidate_confidence=0.9, **common)
    assert single.report("cam-1", NEW, OLD, T0 + 1).cameras == {}


def test_a_camera_whose_class_mix_moves_fails_the_wave_though_the_average_passes() -> None:
    from edge_runtime.protocol.shadow import ShadowCamera

    stage = STAGE.model_copy(update={"max_class_shift": 0.05})
    even = {"glass": 30, "metal": 30}
    belts = {
        "belt-1": ShadowCamera(compared=60, agreed=60, candidate_classes=even, active_classes=even),
        # 92.5% agreement, but every disagreement calls metal glass: metal's share drops 7.5
        "belt-2": ShadowCamera(
            compared=40,
            agreed=37,
            candidate_confidence=0.8,
            active_confidence=0.9,
            candidate_classes={"glass": 23, "metal": 17},
            active_classes={"glass": 20, "metal": 20},
        ),
    }
    figures = sum_reports([report(cameras=belts), report("cam-2")])
    verdict = evaluate_shadow(figures, stage, DEVICES, 61)
    assert verdict.outcome is GateOutcome.FAILED, verdict.reason
    assert verdict.check("class-shift").status.value == "passed"  # the average: 2 points
    expected = (
        "camera cam-1/belt-2: metal's share moved 7.5 points: 20 frames for the active model,"
        " 17 for the candidate (max 5)"
    )
    assert expected in verdict.reason, verdict.reason
    shown = figures.as_dict()["cameras"]["cam-1/belt-2"]  # type: ignore[index]
    assert shown["candidate_confidence"] == pytest.approx(0.8)
    assert shown["active_classes"] == {"glass": 20, "metal": 20}
    # under 20 frames, or from a device that sends no class counts: not judged
    few = {**belts, "belt-2": belts["belt-2"].model_copy(update={"compared": 19, "agreed": 16})}
    old = {**belts, "belt-2": ShadowCamera(compared=40, agreed=37)}
    for cameras in (few, old):
        verdict = evaluate_shadow(
            sum_reports([report(cameras=cameras), report("cam-2")]), stage, DEVICES, 61
        )
        assert verdict.outcome is GateOutcome.PASSED, verdict.reason
        assert verdict.check("camera-class-shift").measured == 0.0  # belt-1's


def test_a_window_reports_each_cameras_classes_and_confidences_within_the_size_cap() -> None:
    window = ShadowWindow(start=T0)
    window.compare(
        active_label="a", active_confidence=0.6, active_ms=2.0, candidate_label="b",
        candidate_confidence=0.9, candidate_ms=4.0, camera="belt-1",
    )  # fmt: skip
    window.compare(
        active_label="a", active_confidence=0.8, active_ms=2.0, candidate_label="a",
        candidate_confidence=0.7, candidate_ms=4.0, camera="belt-1",
    )  # fmt: skip
    belt = window.report("cam-1", NEW, OLD, T0 + 1).cameras["belt-1"]
    assert (belt.candidate_classes, belt.active_classes) == ({"a": 1, "b": 1}, {"a": 2})
    assert belt.candidate_confidence == pytest.approx(0.8)
    assert belt.active_confidence == pytest.approx(0.7)
    # 64 cameras with 32 long labels a side would pass the 32 KiB cap: the counts only
    crowded = ShadowWindow(start=T0)
    for camera in range(64):
        for label in range(32):
            crowded.compare(
                active_label=f"{label:03d}" + "x" * 120, active_confidence=0.5, active_ms=1.0,
                candidate_label=f"{label:03d}" + "y" * 120, candidate_confidence=0.5,
                candidate_ms=1.0, camera=f"belt-{camera}",
            )  # fmt: skip
    sent = crowded.report("cam-1", NEW, OLD, T0 + 1)
    assert len(sent.cameras) == 64
    assert all((c.compared, c.candidate_classes) == (32, {}) for c in sent.cameras.values())
    assert ShadowReport.parse(sent.encode(), "cam-1") == sent


def test_the_candidates_own_latency_budget_is_checked_when_asked_through_the_rollout() -> None:
    from fleet_server.quality_gate import Baseline

    figures = sum_reports([report(candidate_p95_ms=30.0), report("cam-2")])
    stage = STAGE.model_copy(update={"max_budget_ratio": 1.0})
    verdict = evaluate_shadow(figures, stage, DEVICES, 61, budget_ms=25.0)
    assert verdict.outcome is GateOutcome.FAILED
    assert "p95 is 30.00 ms a frame, its budget 25 ms (max x1)" in verdict.reason
    assert evaluate_shadow(figures, stage, DEVICES, 61).outcome is GateOutcome.PASSED  # no budget
    # the planner hands the bundle's budget (its manifest's, in the spec's baseline) to the gate
    spec = rollout(max_budget_ratio=1.0).spec.model_copy(
        update={"baseline": Baseline(latency_budget_ms=25.0)}
    )
    state = RolloutState.create(spec, T0).start(T0).state
    step = state.tick(T0 + 61, shadow=figures)
    assert step.state.status is RolloutStatus.ABORTED
    assert "its budget 25 ms" in step.state.reason


def test_every_nth_frame_is_counted_per_camera(tmp_path: Path) -> None:
    """Two cameras served in turn with every_nth=2: a count over both would only ever pick one."""
    import dataclasses

    active = Classifier(
        make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True),
        backend="onnxruntime",
    )
    request = ShadowRequest(bundle_sha256=NEW, every_nth=2, cpu_budget=1.0, window_s=3600)
    runner = ShadowRunner("box", active, request, lambda _r: None)
    runner.start()
    try:
        for i in range(8):
            frame_, prediction = _predict(active, i)
            camera = f"belt-{i % 2 + 1}"
            runner.observe(
                frame_,
                dataclasses.replace(
                    prediction, device_id="box", camera_id=camera, bundle_sha256=OLD
                ),
            )
            while runner._busy:
                time.sleep(0.001)
    finally:
        runner.stop()
    sent = runner.flush()
    assert {k: v.compared for k, v in sent.cameras.items()} == {"belt-1": 2, "belt-2": 2}


def test_the_budget_pause_does_not_starve_a_camera(tmp_path: Path) -> None:
    """Two cameras served in turn, one's frame always landing in the pause that the other's
    comparison started: the candidate takes the camera it served least recently (it took
    belt-1's frame every time before, and belt-2 was never compared after the first)."""
    import dataclasses

    active = Classifier(
        make_bundle(tmp_path / "v1.efb", tiny_onnx_model(scale=40.0), "onnx", "1.0.0", True),
        backend="onnxruntime",
    )
    request = ShadowRequest(bundle_sha256=NEW, every_nth=1, cpu_budget=0.01, window_s=3600)
    runner = ShadowRunner("box", active, request, lambda _r: None)

    def offer(i: int, camera: str) -> None:
        frame_, prediction = _predict(active, i)
        runner.observe(
            frame_,
            dataclasses.replace(prediction, device_id="box", camera_id=camera, bundle_sha256=OLD),
        )
        while runner._busy:
            time.sleep(0.001)

    runner.start()
    try:
        for i in range(12):
            offer(2 * i, "belt-2")  # right after the last comparison: in its pause
            while time.monotonic() < runner._resume_at:
                time.sleep(0.001)
            offer(2 * i + 1, "belt-1")  # the pause is over
    finally:
        runner.stop()
    compared = {k: v.compared for k, v in runner.flush().cameras.items()}
    assert compared["belt-2"] >= 4 and compared["belt-1"] >= 4, compared
