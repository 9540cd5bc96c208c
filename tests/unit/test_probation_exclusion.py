"""Cameras dead before activation are left out of probation; each stream's figures reach the event.

Pure: frame ages, predictions and times in; the cameras left out, verdicts,
figures and the event message out.
"""

from __future__ import annotations

import dataclasses

import pytest

from edge_runtime.protocol import EventReport, ProbationFigures, UpdatePhase
from edge_runtime.update import CameraProbation, ProbationMonitor, dead_cameras
from edgefleet.testing import sample_prediction

T0 = 1_800_000_000.0


def monitor(baseline: float | None = None) -> ProbationMonitor:
    return ProbationMonitor(
        T0, window_s=5.0, min_predictions=3, baseline_confidence=baseline, min_samples=3
    )


def seen(camera: str, at: float, **fields: object) -> object:
    return dataclasses.replace(
        sample_prediction(inference_ms=4.0, confidence=0.8),
        camera_id=camera,
        captured_at=at,
        **fields,  # type: ignore[arg-type]
    )


def test_a_camera_is_dead_when_its_newest_frame_is_older_than_the_limit_or_never_came() -> None:
    dead = dead_cameras({"belt-1": 0.1, "belt-2": 12.04, "belt-3": None, "belt-4": 5.0}, 5.0)
    assert dead == {
        "belt-2": "no frame for 12.0 s before activation (limit 5 s)",
        "belt-3": "no frame since the device started, before activation",
    }  # belt-4 is exactly at the limit: alive, as /healthz sees it


def test_an_excluded_camera_is_not_judged_and_is_named_in_the_reason_and_figures() -> None:
    probation = CameraProbation(
        {"belt-1": monitor(baseline=0.85)},
        silence_s=2.0,
        excluded={"belt-2": "no frame for 12.0 s before activation (limit 5 s)"},
    )
    for k in range(1, 7):
        probation.record(seen("belt-1", T0 + k))  # type: ignore[arg-type]
    probation.record(seen("belt-2", T0 + 6, confidence=float("nan")))  # type: ignore[arg-type]
    probation.record_error("it came back with a broken stream", "belt-2")
    verdict = probation.verdict(T0 + 6)  # belt-2 never delivered with the new bundle: no silence
    assert verdict is not None and verdict.passed, verdict
    assert verdict.reason.startswith("1 cameras without failure: belt-1: 6 predictions")
    assert verdict.reason.endswith(
        "; not judged: belt-2 (no frame for 12.0 s before activation (limit 5 s))"
    )
    belt_1, belt_2 = probation.figures()
    assert belt_1.model_dump(exclude={"mean_confidence"}) == ProbationFigures(
        camera="belt-1", predictions=6, latency_p95_ms=4.0, baseline_confidence=0.85
    ).model_dump(exclude={"mean_confidence"})
    assert belt_1.mean_confidence == pytest.approx(0.8)
    assert belt_2 == ProbationFigures(
        camera="belt-2", judged=False, note="no frame for 12.0 s before activation (limit 5 s)"
    )


def test_a_judged_camera_that_goes_dark_still_fails_and_its_figures_say_why() -> None:
    probation = CameraProbation({"belt-1": monitor(), "belt-2": monitor()}, silence_s=2.0)
    for k in range(1, 4):
        probation.record(seen("belt-1", T0 + k))  # type: ignore[arg-type]
        if k == 1:
            probation.record(seen("belt-2", T0 + k))  # type: ignore[arg-type]
    verdict = probation.verdict(T0 + 3.5)
    assert verdict is not None and not verdict.passed
    assert verdict.reason.startswith("camera belt-2: no prediction with the new bundle for 2.5 s")
    belt_1, belt_2 = probation.figures()
    assert (belt_1.camera, belt_1.predictions, belt_1.note) == ("belt-1", 3, None)
    assert (belt_2.camera, belt_2.predictions, belt_2.judged) == ("belt-2", 1, True)
    assert belt_2.note is not None and belt_2.note.startswith("no prediction with the new bundle")


def test_an_error_counts_on_its_stream_and_a_single_camera_has_one_unnamed_stream() -> None:
    single = CameraProbation({None: monitor()})
    single.record_error("boom")
    (figures,) = single.figures()
    assert figures.camera is None and figures.errors == 1
    assert figures.note == "inference error: boom"
    assert figures.latency_p95_ms is None and figures.mean_confidence is None
    with pytest.raises(ValueError, match="judged or excluded"):
        CameraProbation({"a": monitor()}, excluded={"a": "dead"})


def test_the_event_carries_the_figures_on_the_wire_and_in_its_message() -> None:
    figures = [
        ProbationFigures(
            camera="belt-1",
            predictions=45,
            latency_p95_ms=3.1,
            mean_confidence=0.842,
            baseline_confidence=0.851,
        ),
        ProbationFigures(camera="belt-2", judged=False, note="no frame for 12.0 s"),
    ]
    event = EventReport.transition(
        "line3-box1",
        bundle="ab" * 32,
        assignment=7,
        from_state=UpdatePhase.PROBATION,
        to_state=UpdatePhase.COMMITTED,
        reason="probation passed",
        at=T0,
        probation=figures,
    )
    parsed = EventReport.parse(event.encode(), "line3-box1")
    assert parsed == event and parsed.probation == figures
    assert parsed.message().endswith(
        ": probation passed [belt-1: 45 predictions, p95 3.10 ms, confidence 0.842 "
        "(before 0.851); belt-2: not judged (no frame for 12.0 s)]"
    )
    plain = event.model_copy(update={"probation": None})
    assert "probation" not in plain.to_dict()  # other events look as they always did
    assert EventReport.parse(plain.encode(), "line3-box1").probation is None
