"""The smoke test on real tiny models run by the real runtimes, and the pure probation monitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle import (
    MANIFEST_NAME,
    Bundle,
    Compatibility,
    GoldenSet,
    GoldenVector,
    ManifestSpec,
    Postprocessing,
    Preprocessing,
    TensorSpec,
    build_bundle,
    parse_bundle,
)
from edge_runtime.errors import SmokeTestError, UpdateError
from edge_runtime.prediction import Prediction
from edge_runtime.update import (
    ProbationMonitor,
    ProbationVerdict,
    SmokeReport,
    confidence_baseline,
    smoke_test,
)
from tests.conftest import manifest_for, members_for
from tests.media import frame, make_bundle
from tests.models import LABELS, slow_onnx_model

# --- helpers ----------------------------------------------------------------------------


def rebuild(bundle: Bundle, drop: tuple[str, ...] = (), **changes: Any) -> Bundle:
    """The same bundle with manifest fields replaced (and members dropped), properly rebuilt."""
    manifest = ManifestSpec.model_validate({**bundle.manifest.model_dump(), **changes})
    members = {
        name: data
        for name, data in bundle.members.items()
        if name != MANIFEST_NAME and name not in drop
    }
    return parse_bundle(build_bundle(manifest, members))


def onnx_model_with(poison: str) -> bytes:
    """The tiny ONNX classifier with its logits poisoned: NaN (log of -1) or inf (x / 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(7).normal(size=(3, len(LABELS))).astype(np.float32)
    if poison == "nan":
        tail = [
            helper.make_node("Log", ["minus_one"], ["nan"]),
            helper.make_node("Add", ["raw", "nan"], ["logits"]),
        ]
        constant = numpy_helper.from_array(np.array([-1.0], np.float32), "minus_one")
    else:
        tail = [helper.make_node("Div", ["raw", "zero"], ["logits"])]
        constant = numpy_helper.from_array(np.array([0.0], np.float32), "zero")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weights"], ["raw"]),
            *tail,
        ],
        "poisoned",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 32, 32, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, len(LABELS)])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(weights, "weights"),
            constant,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    from tests.models import tiny_onnx_model

    path = tmp_path_factory.mktemp("bundles") / "onnx.efb"
    return make_bundle(path, tiny_onnx_model(), "onnx", softmax=True)


# --- smoke test -------------------------------------------------------------------------


def test_good_tflite_bundle_passes_and_comes_back_loaded(
    tmp_path: Path, tflite_model: bytes
) -> None:
    bundle = make_bundle(tmp_path / "good.efb", tflite_model, "tflite")
    report = smoke_test(bundle)
    assert isinstance(report, SmokeReport)
    assert report.bundle is bundle and report.backend == "litert"
    assert report.golden.vectors == 2 and report.golden.max_abs_error <= 1e-4
    assert report.latency_runs == 20 and 0 < report.invoke_p50_ms <= report.invoke_p95_ms
    assert report.budget_ms is None
    # the caller can swap this classifier in without loading the model again
    result = report.classifier.classify(frame(3))
    assert result.answer.label in LABELS and np.all(np.isfinite(result.scores))


def test_good_onnx_bundle_passes_within_the_manifest_budget(onnx_bundle: Bundle) -> None:
    budgeted = rebuild(onnx_bundle, compatibility=Compatibility(latency_budget_ms=10_000))
    report = smoke_test(budgeted, backend="onnxruntime", threads=2, latency_runs=5)
    assert report.budget_ms == 10_000 and report.backend == "onnxruntime"
    assert report.latency_runs == 5


def test_bundle_without_golden_vectors_is_timed_on_synthetic_frames(onnx_bundle: Bundle) -> None:
    golden = onnx_bundle.manifest.golden
    assert golden is not None
    bare = rebuild(onnx_bundle, drop=tuple(v.input for v in golden.vectors), golden=None)
    report = smoke_test(bare, latency_runs=3)
    assert report.golden.vectors == 0 and report.invoke_p50_ms > 0


def test_wrong_golden_expectations_fail_with_the_vector_named(onnx_bundle: Bundle) -> None:
    golden = onnx_bundle.manifest.golden
    assert golden is not None
    vectors = list(golden.vectors)
    expected = list(vectors[1].expected)
    expected[0] += 0.31
    vectors[1] = GoldenVector(input=vectors[1].input, expected=expected, label=vectors[1].label)
    tampered = rebuild(onnx_bundle, golden=GoldenSet(atol=golden.atol, vectors=vectors))
    with pytest.raises(
        SmokeTestError, match=r"^golden vector 1 \(golden/001\.png\): score error 0\.31"
    ):
        smoke_test(tampered)


@pytest.mark.parametrize(("poison", "softmax"), [("nan", True), ("inf", False)])
def test_model_that_outputs_nan_or_inf_fails(poison: str, softmax: bool) -> None:
    manifest = manifest_for("onnx", postprocessing=Postprocessing(apply_softmax=softmax))
    bundle = parse_bundle(build_bundle(manifest, members_for(onnx_model_with(poison), "onnx")))
    with pytest.raises(SmokeTestError, match=r"^golden vector 0 \(golden/000\.npy\): .*NaN/inf"):
        smoke_test(bundle)


def test_slow_model_fails_its_latency_budget_naming_both_numbers(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "slow.efb", slow_onnx_model(), "onnx", softmax=True)
    with pytest.raises(SmokeTestError) as info:
        smoke_test(bundle, latency_runs=3, budget_ms=5)
    message = str(info.value)
    assert message.startswith("invoke latency p50 ")
    assert "is over the budget of 5 ms (3 runs on onnxruntime)" in message
    assert float(message.split()[3]) > 5


@pytest.mark.parametrize(
    ("model_format", "model"),
    [("tflite", b"\x00\x00\x00\x00TFL3" + b"\xff\x13" * 300), ("onnx", b"\x08\x07garbage")],
)
def test_model_bytes_that_crash_the_backend_on_load_fail_cleanly(
    model_format: str, model: bytes
) -> None:
    bundle = parse_bundle(
        build_bundle(manifest_for(model_format), members_for(model, model_format))
    )
    with pytest.raises(SmokeTestError, match=r"^cannot load: ") as info:
        smoke_test(bundle)
    assert isinstance(info.value, UpdateError)
    assert info.value.__cause__ is not None


def test_tensor_specs_that_differ_from_the_manifest_fail_on_load(onnx_model: bytes) -> None:
    manifest = manifest_for(
        "onnx",
        model=manifest_for("onnx").model.model_copy(
            update={"inputs": [TensorSpec(name="image", shape=[1, 16, 16, 3], dtype="float32")]}
        ),
        preprocessing=Preprocessing(height=16, width=16, mean=(0, 0, 0), std=(255, 255, 255)),
    )
    bundle = parse_bundle(build_bundle(manifest, members_for(onnx_model, "onnx")))
    with pytest.raises(
        SmokeTestError,
        match=r"^cannot load: input 'image': runtime reports shape \[1, 32, 32, 3\], "
        r"manifest says \[1, 16, 16, 3\]",
    ):
        smoke_test(bundle)


def test_latency_runs_must_be_positive(onnx_bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="latency_runs"):
        smoke_test(onnx_bundle, latency_runs=0)


# --- probation --------------------------------------------------------------------------


def feed(
    monitor: ProbationMonitor, count: int, confidence: float = 0.8, latency: float = 4.0
) -> None:
    for index in range(count):
        monitor.record_prediction(LABELS[index % len(LABELS)], confidence, latency)


def test_healthy_stream_passes_only_when_the_window_ends() -> None:
    monitor = ProbationMonitor(
        100.0, window_s=60, baseline_confidence=0.8, latency_budget_ms=10.0, min_predictions=30
    )
    feed(monitor, 25)
    assert monitor.verdict(130.0) is None  # window half over
    assert monitor.verdict(200.0) is None  # time is up, but too few predictions
    feed(monitor, 5)
    verdict = monitor.verdict(160.0)
    assert verdict is not None and verdict.passed
    assert verdict.reason.startswith("30 predictions without failure; latency p95 4.00 ms")
    assert monitor.labels["cardboard"] == 6 and monitor.mean_confidence == pytest.approx(0.8)


def test_window_by_prediction_count_alone() -> None:
    monitor = ProbationMonitor(0.0, min_predictions=10)
    feed(monitor, 9)
    assert monitor.verdict(0.0) is None
    feed(monitor, 1)
    assert monitor.verdict(0.0) == ProbationVerdict(
        passed=True,
        reason="10 predictions without failure; latency p95 4.00 ms, mean confidence 0.800",
    )


def test_nan_output_fails_at_once_and_stays_failed() -> None:
    monitor = ProbationMonitor(0.0, window_s=60)
    feed(monitor, 3)
    monitor.record_prediction("glass", 0.9, 4.0, finite=False)
    verdict = monitor.verdict(1.0)
    assert verdict == ProbationVerdict(passed=False, reason="NaN/inf output on prediction 4")
    feed(monitor, 100)
    assert monitor.verdict(1000.0) == verdict  # the first failure is final
    other = ProbationMonitor(0.0, window_s=60)
    other.record_prediction("glass", float("nan"), 4.0)
    assert other.verdict(0.0) == ProbationVerdict(False, "NaN/inf output on prediction 1")
    assert other.mean_confidence == 0.0  # statistics stay finite


def test_inference_error_fails() -> None:
    monitor = ProbationMonitor(0.0, window_s=60)
    feed(monitor, 3)
    monitor.record_error("onnxruntime failed to run the model: bad alloc")
    assert monitor.verdict(1.0) == ProbationVerdict(
        False, "inference error: onnxruntime failed to run the model: bad alloc"
    )


def test_latency_p95_over_budget_fails_once_enough_samples_are_in() -> None:
    monitor = ProbationMonitor(0.0, window_s=600, latency_budget_ms=20.0, min_samples=20)
    feed(monitor, 18, latency=5.0)
    feed(monitor, 1, latency=80.0)
    assert monitor.verdict(1.0) is None  # 19 samples: not judged yet
    feed(monitor, 1, latency=80.0)
    verdict = monitor.verdict(2.0)
    assert verdict is not None and not verdict.passed
    assert verdict.reason.startswith("latency p95 ")
    assert verdict.reason.endswith("ms is over the budget of 20 ms (20 predictions)")


def test_latency_is_judged_at_the_window_end_even_with_few_samples() -> None:
    monitor = ProbationMonitor(0.0, window_s=10, latency_budget_ms=20.0)
    feed(monitor, 3, latency=50.0)
    assert monitor.verdict(5.0) is None
    verdict = monitor.verdict(10.0)
    assert verdict is not None and not verdict.passed and "over the budget" in verdict.reason


def test_confidence_collapse_against_the_previous_bundle_fails() -> None:
    baseline = confidence_baseline([0.82] * 50)
    assert baseline == pytest.approx(0.82)
    monitor = ProbationMonitor(0.0, window_s=60, baseline_confidence=baseline)
    feed(monitor, 20, confidence=0.35)
    verdict = monitor.verdict(1.0)
    assert verdict == ProbationVerdict(
        False,
        "confidence collapse: mean confidence 0.350 is under 50% of the previous bundle's "
        "0.820 (20 predictions)",
    )
    # just above the floor is fine; a stricter ratio is configurable
    lenient = ProbationMonitor(0.0, min_predictions=20, baseline_confidence=0.82)
    feed(lenient, 20, confidence=0.42)
    assert lenient.verdict(0.0) == ProbationVerdict(
        True, "20 predictions without failure; latency p95 4.00 ms, mean confidence 0.420"
    )
    strict = ProbationMonitor(
        0.0, min_predictions=20, baseline_confidence=0.82, min_confidence_ratio=0.9
    )
    feed(strict, 20, confidence=0.70)
    verdict = strict.verdict(0.0)
    assert verdict is not None and not verdict.passed


def test_confidence_baseline_falls_back_to_the_quality_report() -> None:
    assert confidence_baseline([0.9] * 5, fallback=0.77) == 0.77
    assert confidence_baseline([float("nan")] * 30, fallback=None) is None
    assert confidence_baseline([0.5, 0.7] * 10) == pytest.approx(0.6)


def test_record_takes_pipeline_predictions() -> None:
    monitor = ProbationMonitor(0.0, min_predictions=1, latency_budget_ms=10.0)
    monitor.record(
        Prediction(
            device_id="cam-1",
            frame_id=1,
            captured_at=0.0,
            label="glass",
            confidence=0.9,
            top_k=[("glass", 0.9)],
            uncertain=False,
            latency_ms=40.0,
            inference_ms=12.5,
            bundle_name="m",
            bundle_version="1.0.0",
            bundle_sha256="b" * 64,
        )
    )
    verdict = monitor.verdict(0.0)
    assert verdict is not None and not verdict.passed
    assert verdict.reason == "latency p95 12.50 ms is over the budget of 10 ms (1 predictions)"


@pytest.mark.parametrize(
    "kwargs",
    [{"window_s": -1}, {"min_predictions": -1}, {"min_confidence_ratio": -0.1}],
)
def test_bad_monitor_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ProbationMonitor(0.0, **kwargs)
