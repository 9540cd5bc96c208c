"""One conversion job: a trained model in, one checked bundle per format and precision out.

For each requested format and precision the model is converted (and
quantised with calibration images streamed through ``edge_runtime``'s own
preprocessing), then run through the device's own pipeline on the parity
images and compared with the float model. A conversion that misses the gate
writes no bundle (unless ``keep_failed``); one that passes gets golden
vectors, its quality report and provenance, and is written atomically next
to an HTML parity report.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from converter.adaround import adaround_onnx, adaround_tflite
from converter.dataset import LabelledFolder
from converter.disagreements import NEAR_TIE, Disagreement, find_disagreements, near_tie_count
from converter.equalise import equalise_onnx, equalise_tflite
from converter.errors import ConversionError, DatasetError, ParityGateError
from converter.fallback import FallbackLimits, FallbackOutcome, Selection, Trial, search_fallback
from converter.head import ClassifierHead, classifier_head
from converter.input_grid import input_levels
from converter.packaging import assemble_bundle
from converter.parity import compare_scores
from converter.quantize import (
    IoType,
    OnnxCalibration,
    OnnxInt8Quantizer,
    TfliteCalibration,
    TfliteInt8Quantizer,
    quantize_tflite,
)
from converter.report import render_report
from converter.rounding import Rounding, bias_correct_onnx, bias_correct_tflite
from converter.sensitivity import (
    FloatCandidate,
    SensitivityReport,
    count_candidates,
    measure_candidates,
    onnx_ops,
    onnx_output_error,
    onnx_output_names,
    onnx_tensor_errors,
    rank_ops,
    tflite_ops,
    tflite_output_error,
    tflite_output_names,
    tflite_tensor_errors,
)
from converter.source import SourceModel, load_source_model
from edge_runtime import __version__
from edge_runtime.atomic import atomic_write_text
from edge_runtime.backends import Backend, create_backend
from edge_runtime.bundle import (
    BUNDLE_SUFFIX,
    Compatibility,
    DatasetRef,
    Postprocessing,
    Preprocessing,
    Provenance,
    QualityReport,
    TensorSpec,
)
from edge_runtime.bundle.manifest import FloatFallback
from edge_runtime.classifier import Classifier
from edge_runtime.postprocess import softmax
from edge_runtime.preprocess import Preprocessor, half_way_down, quantize_half_way

__all__ = [
    "ConversionResult",
    "ConvertOptions",
    "Progress",
    "convert",
    "gate_error",
    "tool_versions",
]

log = logging.getLogger(__name__)

FORMAT_PRECISIONS = {"tflite": ("fp32", "fp16", "dynamic-int8", "int8"), "onnx": ("fp32", "int8")}
Progress = Callable[[str, int, int | None], None]
"""``progress(task, advance, total)``: ``total`` set once per task, then advances."""


@dataclass(frozen=True)
class ConvertOptions:
    """Everything one conversion job needs (the CLI's flags, parsed)."""

    model: Path
    out: Path
    parity: Path
    calibration: Path | None = None
    formats: tuple[str, ...] = ("tflite", "onnx")
    precisions: tuple[str, ...] = ("int8",)
    labels: list[str] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    calibration_samples: int = 200
    io_type: IoType = "int8"
    onnx_calibration: OnnxCalibration = "percentile"
    tflite_calibration: TfliteCalibration = "percentile"
    onnx_format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    max_accuracy_drop: float = 1.0
    min_agreement: float = 0.98
    keep_failed: bool = False
    strict: bool = False
    name: str | None = None
    version: str = "1.0.0"
    golden_count: int = 3
    apply_softmax: bool | None = None
    top_k: int = 3
    confidence_threshold: float = 0.0
    latency_budget_ms: float | None = None
    device_profiles: tuple[str, ...] = ()
    seed: int = 0
    fallback: bool = True
    """When an int8 model misses the gate, keep its most sensitive ops in float until it passes."""
    max_float_fraction: float = 0.10
    max_latency_ratio: float = 1.15
    max_fallback_steps: int = 16
    rounding: Rounding = "nearest"
    equalise: bool = True
    """Equalise the channels between each convolution and the depthwise convolution it feeds
    (:mod:`converter.equalise`) before int8 calibration."""
    float_head: bool = True
    """Keep the classifier head (the logits layer and its softmax, :mod:`converter.head`) of
    an int8 model in float32."""
    sensitivity_samples: int = 32
    selection_samples: int = 300
    """The fallback chooses its steps on up to this many class-balanced photos of the
    calibration folder that are neither calibration nor parity photos (0: on the parity
    photos, as the gate judges, the behaviour before selection sets)."""


@dataclass
class ConversionResult:
    """One format x precision: where it went and how it measured."""

    format: str
    precision: str
    model_size: int
    report: QualityReport
    latency_p50_ms: float
    bundle_path: Path | None
    report_path: Path
    bundle_id: str | None
    suffered: list[str]
    input_rounding_agreement: float | None = None
    """Top-1 agreement of the float model with itself fed the int8-rounded input
    (the noise floor of any int8 model of it); measured only when agreement failed."""
    sensitivity: SensitivityReport | None = None
    fallback: FallbackOutcome | None = None
    fallback_candidates: list[FloatCandidate] = field(default_factory=list)
    """Each candidate kept in float alone, measured (best first), when the fallback ran."""
    before_fallback: QualityReport | None = None
    """The full int8 model's figures, when the fallback ran."""
    disagreements: list[Disagreement] = field(default_factory=list)
    json_report_path: Path | None = None
    preparation: dict[str, Any] | None = None
    """What was done to the float model before int8 calibration (equalisation, rounding)."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage of this format's conversion (the export shared by its
    precisions is counted in the first)."""
    float_near_ties: int | None = None
    """Parity photos on which the float model's top two answers are within
    :data:`converter.disagreements.NEAR_TIE`."""
    vs_fp32_p50: float | None = None
    """This model's invoke p50 over the fp32 model's on this host (1 thread, the format's
    backend, timed alternately); above 1 the quantised model is *slower* here."""

    @property
    def passed(self) -> bool:
        """Whether the parity gate passed."""
        return bool(self.report.passed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary row."""
        return {
            "format": self.format,
            "precision": self.precision,
            "passed": self.passed,
            "model_bytes": self.model_size,
            "float_accuracy": self.report.float_accuracy,
            "accuracy": self.report.accuracy,
            "accuracy_drop_points": self.report.accuracy_drop_points,
            "top1_agreement": self.report.top1_agreement,
            "host_latency_p50_ms": round(self.latency_p50_ms, 3),
            "invoke_p50_vs_fp32": None if self.vs_fp32_p50 is None else round(self.vs_fp32_p50, 3),
            "bundle": str(self.bundle_path) if self.bundle_path else None,
            "bundle_id": self.bundle_id,
            "report": str(self.report_path),
            "suffered_classes": self.suffered,
            "input_rounding_agreement": self.input_rounding_agreement,
            "disagreements": len(self.disagreements),
            "near_tie_disagreements": sum(row.near_tie for row in self.disagreements),
            "float_near_ties": self.float_near_ties,
            "most_sensitive_ops": [row.to_dict() for row in self.sensitivity.top(5)]
            if self.sensitivity is not None
            else None,
            "fallback": self.fallback_summary(),
            "preparation": self.preparation,
            "stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()},
            "json_report": str(self.json_report_path) if self.json_report_path else None,
        }

    def fallback_summary(self) -> dict[str, Any] | None:
        """The fallback's outcome in brief (None when it did not run)."""
        if self.fallback is None:
            return None
        before = self.before_fallback
        return {
            "passed": self.fallback.passed,
            "stopped": self.fallback.stopped,
            "float_ops": [op.name for op in self.fallback.float_ops],
            "float_mac_fraction": round(self.fallback.float_mac_fraction, 6),
            "latency_ratio": self.fallback.latency_ratio,
            "steps": len(self.fallback.steps),
            "selection_set": self.fallback.selection_set,
            "selection_images": self.fallback.selection_images,
            "full_int8_agreement": before.top1_agreement if before else None,
            "full_int8_accuracy_drop_points": before.accuracy_drop_points if before else None,
            "bundle": str(self.fallback.bundle) if self.fallback.bundle else None,
        }

    def to_report_dict(self) -> dict[str, Any]:
        """The whole JSON report: the summary, every op's sensitivity, every fallback step,
        every disagreeing photo."""
        return {
            **self.to_dict(),
            "quality": self.report.model_dump(mode="json"),
            "full_int8_quality": self.before_fallback.model_dump(mode="json")
            if self.before_fallback
            else None,
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
            "fallback": self.fallback.to_dict() if self.fallback else None,
            "fallback_candidates": [c.to_dict() for c in self.fallback_candidates],
            "disagreements": [row.to_dict() for row in self.disagreements],
        }


def _check_requests(options: ConvertOptions) -> None:
    for fmt in options.formats:
        if fmt not in FORMAT_PRECISIONS:
            raise ConversionError(
                f"unknown format {fmt!r}; choose from {', '.join(FORMAT_PRECISIONS)}"
            )
    for precision in options.precisions:
        if not any(precision in FORMAT_PRECISIONS[f] for f in options.formats):
            raise ConversionError(
                f"precision {precision!r} is not available for {', '.join(options.formats)}"
            )
    needs_calibration = any(p == "int8" for p in options.precisions)
    if needs_calibration and options.calibration is None:
        raise ConversionError("int8 needs calibration images: pass --calibration DIR")


def _contract(source: SourceModel, overrides: dict[str, Any]) -> Preprocessing:
    inferred = source.inferred_preprocessing()
    fields: dict[str, Any] = {"height": inferred.height, "width": inferred.width}
    if inferred.mean is not None and inferred.std is not None:
        fields.update(mean=inferred.mean, std=inferred.std)
        log.info("preprocessing inferred from the model: %s", inferred.reason)
    fields.update(overrides)
    if (fields.get("height"), fields.get("width")) != (inferred.height, inferred.width):
        raise ConversionError(
            f"the model's input is {inferred.height}x{inferred.width}, "
            f"but the preprocessing asks for {fields.get('height')}x{fields.get('width')}"
        )
    if "mean" not in fields or "std" not in fields:
        raise ConversionError(
            "the model does not say how its input is normalised: pass --mean and --std "
            "(or --scale), or a --preprocessing YAML (e.g. mean 127.5 / std 127.5 for [-1, 1])"
        )
    try:
        return Preprocessing.model_validate(fields)
    except ValueError as exc:
        raise ConversionError(f"invalid preprocessing: {exc}") from exc


def _float_spec(contract: Preprocessing) -> TensorSpec:
    return TensorSpec(name="image", shape=[1, contract.height, contract.width, 3], dtype="float32")


def _created_at() -> str | None:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return None
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tool_versions() -> dict[str, str]:
    """Versions of edgefleet and the libraries that shaped a bundle (for provenance)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"edgefleet": __version__}
    for package in (
        "tensorflow-cpu",
        "tf2onnx",
        "onnx",
        "onnxruntime",
        "ai-edge-litert",
        "litert-quantizer",
        "numpy",
        "opencv-python-headless",
    ):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def _suffered(report: QualityReport, threshold_points: float) -> list[str]:
    """Classes whose accuracy fell by more than the allowed drop, worst first."""
    drops = [
        (100 * ((row.float_accuracy or 0.0) - row.accuracy), row.label)
        for row in report.per_class
        if row.float_accuracy is not None
    ]
    return [
        f"{label} (-{drop:.1f} points)"
        for drop, label in sorted(drops, reverse=True)
        if drop > threshold_points
    ]


class _Job:
    def __init__(self, options: ConvertOptions, progress: Progress | None) -> None:
        self.options = options
        self.progress = progress or (lambda task, advance, total: None)
        self.source = load_source_model(options.model)
        self.parity = LabelledFolder.scan(options.parity, options.labels)
        self.labels = self.parity.labels
        self.contract = _contract(self.source, options.preprocessing)
        self.preprocess = Preprocessor(self.contract, _float_spec(self.contract))
        self.calibration = None
        self.selection: LabelledFolder | None = None
        if options.calibration is not None:
            folder = LabelledFolder.scan(options.calibration, self.labels)
            self.calibration = folder.balanced(
                options.calibration_samples, seed=options.seed, shuffle=True
            )
            if options.selection_samples > 0:
                self.selection = selection_folder(
                    folder,
                    options.calibration_samples,
                    options.selection_samples,
                    self.parity,
                    seed=options.seed,
                )
        self.stage_seconds: dict[str, dict[str, float]] = {}
        """Per format, the wall time of each stage (export, calibrate, evaluate, ...)."""
        self.preparation: dict[str, dict[str, Any]] = {}
        """Per format, what :meth:`int8_quantizer` did to the float model."""
        self._selection_scores: (
            tuple[list[npt.NDArray[np.uint8]], npt.NDArray[np.float32]] | None
        ) = None
        self.name = options.name or _slug(options.model.stem)

    @contextlib.contextmanager
    def timed(self, fmt: str, stage: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``stage_seconds[fmt][stage]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            stages = self.stage_seconds.setdefault(fmt, {})
            stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - start

    def parity_frames(self) -> tuple[list[npt.NDArray[np.uint8]], npt.NDArray[np.int64]]:
        self.progress("decode parity images", 0, len(self.parity.items))
        frames, labels = [], []
        for _, frame, label in self.parity.frames(strict=self.options.strict):
            frames.append(frame)
            labels.append(label)
            self.progress("decode parity images", 1, None)
        if not frames:
            raise DatasetError(f"{self.options.parity}: no image could be decoded")
        if self.parity.skipped:
            log.warning("skipped %d undecodable parity images", len(self.parity.skipped))
        return frames, np.asarray(labels, dtype=np.int64)

    def selection_set(
        self, apply_softmax: bool
    ) -> tuple[list[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]:
        """The selection photos (decoded once) and the float model's scores on them."""
        assert self.selection is not None
        if self._selection_scores is None:
            task = "decode selection images"
            self.progress(task, 0, len(self.selection.items))
            frames = []
            for _, frame, _ in self.selection.frames(strict=self.options.strict):
                frames.append(frame)
                self.progress(task, 1, None)
            raw = self.float_scores(frames, "float model, selection images")
            self._selection_scores = (frames, softmax(raw) if apply_softmax else raw)
        return self._selection_scores

    def float_scores(
        self, frames: list[npt.NDArray[np.uint8]], task: str = "float model"
    ) -> npt.NDArray[np.float32]:
        self.progress(task, 0, len(frames))
        chunks = []
        for start in range(0, len(frames), 32):
            batch = np.concatenate([self.preprocess(f) for f in frames[start : start + 32]]).astype(
                np.float32
            )
            chunks.append(self.source.float_scores(batch).reshape(len(batch), -1))
            self.progress(task, len(batch), None)
        scores = np.concatenate(chunks)
        if scores.shape[1] != len(self.labels):
            raise ConversionError(
                f"the model outputs {scores.shape[1]} scores but {len(self.labels)} labels are given "
                f"({', '.join(self.labels)})"
            )
        return scores

    def input_rounding_agreement(
        self, frames: list[npt.NDArray[np.uint8]], raw_float: npt.NDArray[np.float32]
    ) -> float:
        """How often the float model keeps its top-1 answer when its input is rounded
        to the int8 grid an int8 model's input has (the calibrated exact range).

        No int8 model of this float model can be expected to agree better than
        this: it is the part of the disagreement that the input quantisation
        alone causes, before any weight or activation is rounded.
        """
        low, high = self.input_range()
        scale = (high - low) / 255.0
        zero_point = int(np.floor(-128.0 - low / scale + 0.5))
        levels = input_levels(list(self.contract.mean), list(self.contract.std))
        down = half_way_down(levels, scale, zero_point, -128, 127)
        self.progress("float model, int8-rounded input", 0, len(frames))
        chunks = []
        for start in range(0, len(frames), 32):
            batch = np.concatenate([self.preprocess(f) for f in frames[start : start + 32]])
            q = np.clip(quantize_half_way(batch, scale, zero_point, down=down), -128, 127)
            rounded = ((q - zero_point) * scale).astype(np.float32)
            chunks.append(self.source.float_scores(rounded).reshape(len(batch), -1))
            self.progress("float model, int8-rounded input", len(batch), None)
        rounded_scores = np.concatenate(chunks)
        return float(np.mean(rounded_scores.argmax(axis=1) == raw_float.argmax(axis=1)))

    def samples(self) -> Iterator[npt.NDArray[np.float32]]:
        assert self.calibration is not None
        for _, frame, _ in self.calibration.frames(strict=self.options.strict):
            self.progress("calibrate", 1, None)
            yield self.preprocess(frame).astype(np.float32)

    def quiet_samples(self, count: int) -> Iterator[npt.NDArray[np.float32]]:
        """The first ``count`` calibration inputs, without progress (sensitivity, rounding)."""
        assert self.calibration is not None
        frames = self.calibration.frames(strict=self.options.strict)
        for _, frame, _ in itertools.islice(frames, count):
            yield self.preprocess(frame).astype(np.float32)

    def convert_one(self, fmt: str, precision: str, float_model: bytes) -> bytes:
        """A non-int8 precision (int8 goes through :meth:`int8_quantizer`)."""
        if fmt == "tflite":
            return quantize_tflite(float_model, precision, io_type=self.options.io_type)
        return float_model

    def int8_quantizer(
        self, fmt: str, float_model: bytes
    ) -> TfliteInt8Quantizer | OnnxInt8Quantizer:
        """The format's int8 quantiser, calibrated once (with the rounding asked for)."""
        assert self.calibration is not None
        walks = 1
        if fmt == "tflite":  # the quantiser counts, then calibrates; histograms walk again
            walks = 3 if self.options.tflite_calibration in ("percentile", "mse") else 2
        elif self.options.onnx_calibration in ("percentile", "mse"):
            walks = 2  # min/max, then histograms; the quantiser then needs a few images only
        if self.options.equalise:
            walks += 1  # the equalisation's walk, on the same bar
        rounding = self.options.rounding
        count = min(64, self.options.calibration_samples)
        prepared: dict[str, Any] = {"equalisation": None, "rounding": rounding}
        self.preparation[fmt] = prepared
        self.progress("calibrate", 0, len(self.calibration.items) * walks)
        if fmt == "tflite":
            if self.options.equalise:
                float_model, equalised = equalise_tflite(float_model, self.samples())
                prepared["equalisation"] = equalised.to_dict()
            if rounding == "bias-correction":
                float_model = bias_correct_tflite(float_model, self.quiet_samples(count))
            elif rounding == "adaround":
                float_model, rounded = adaround_tflite(float_model, self.quiet_samples(count))
                prepared["adaround"] = rounded.to_dict()
            return TfliteInt8Quantizer(
                float_model,
                self.samples,
                io_type=self.options.io_type,
                input_range=self.input_range(),
                calibration_method=self.options.tflite_calibration,
            )

        def prepare(model: Any) -> Any:
            if self.options.equalise:
                model, equalised = equalise_onnx(model, self.samples())
                prepared["equalisation"] = equalised.to_dict()
            if rounding == "bias-correction":
                return bias_correct_onnx(model, self.quiet_samples(count))
            if rounding == "adaround":
                model, rounded = adaround_onnx(model, self.quiet_samples(count))
                prepared["adaround"] = rounded.to_dict()
            return model

        return OnnxInt8Quantizer(
            float_model,
            self.samples,
            per_channel=self.options.per_channel,
            method=self.options.onnx_calibration,
            quant_format=self.options.onnx_format,
            prepare=prepare if self.options.equalise or rounding != "nearest" else None,
            input_levels=input_levels(list(self.contract.mean), list(self.contract.std)),
            channel_axis=3 if self.contract.layout == "nhwc" else 1,
        )

    def keep_head_in_float(
        self, fmt: str, quantizer: TfliteInt8Quantizer | OnnxInt8Quantizer
    ) -> ClassifierHead | None:
        """Have ``quantizer`` keep the model's classifier head in float (``float_head``);
        the head, or None when off or the model has none (:func:`classifier_head`)."""
        prepared = self.preparation.setdefault(fmt, {})
        prepared["float_head"] = None
        if not self.options.float_head:
            return None
        if isinstance(quantizer, TfliteInt8Quantizer):
            ops = tflite_ops(quantizer.float_model)
            outputs = tflite_output_names(quantizer.float_model)
        else:
            prepared_model = quantizer.prepared_model()
            ops = onnx_ops(prepared_model)
            outputs = onnx_output_names(prepared_model)
        head = classifier_head(ops, outputs)
        if head is None:
            log.info("%s int8: no classifier head found to keep in float; all of it int8", fmt)
            return None
        quantizer.always_float = head.excluded
        prepared["float_head"] = head.to_dict()
        log.info(
            "%s int8: classifier head (%s) kept in float: %.3f%% of MACs",
            fmt,
            " -> ".join(op.kind for op in head.ops),
            100 * head.mac_fraction,
        )
        return head

    def sensitivity(
        self, fmt: str, quantizer: TfliteInt8Quantizer | OnnxInt8Quantizer, int8_model: bytes
    ) -> SensitivityReport:
        """Per-op error attribution of ``int8_model`` on the first calibration images."""
        count = self.options.sensitivity_samples
        self.progress(f"sensitivity {fmt}", 0, count)

        def samples() -> Iterator[npt.NDArray[np.float32]]:
            for sample in self.quiet_samples(count):
                yield sample
                self.progress(f"sensitivity {fmt}", 1, None)

        if isinstance(quantizer, TfliteInt8Quantizer):
            reference = quantizer.float_model
            errors, images = tflite_tensor_errors(reference, int8_model, samples())
            return rank_ops(tflite_ops(reference), errors, fmt, images)
        reference = quantizer.prepared_model()
        errors, images = onnx_tensor_errors(reference, int8_model, samples())
        return rank_ops(onnx_ops(reference), errors, fmt, images)

    def latency_ratio(self, fmt: str, model: bytes, baseline: bytes, rounds: int = 50) -> float:
        """Invoke time of ``model`` over ``baseline``'s (median of back-to-back pairs): one
        thread each, the host's backend for the format, timed alternately so that the
        machine's load hits both alike."""
        backends = [create_backend("auto", fmt, m, threads=1) for m in (model, baseline)]
        try:
            tensors = [_random_input(backend) for backend in backends]  # int8 or float input
            times: list[list[float]] = [[], []]
            for backend, tensor in zip(backends, tensors, strict=True):
                backend.invoke(tensor)  # warm up
            for _ in range(rounds):
                for which, backend in enumerate(backends):
                    start = time.perf_counter()
                    backend.invoke(tensors[which])
                    times[which].append(time.perf_counter() - start)
        finally:
            for backend in backends:
                backend.close()
        # the median of back-to-back ratios: a busy moment slows both of a pair alike
        pairs = np.asarray(times[0]) / np.maximum(np.asarray(times[1]), 1e-9)
        return float(np.median(pairs))

    def input_range(self) -> tuple[float, float]:
        """The exact range of preprocessed input values: pixels 0..255 through mean/std."""
        mean = np.asarray(self.contract.mean)
        std = np.asarray(self.contract.std)
        ends = np.concatenate([(0 - mean) / std, (255 - mean) / std])
        return float(ends.min()), float(ends.max())

    def evaluate(
        self, classifier: Classifier, frames: list[npt.NDArray[np.uint8]], task: str
    ) -> tuple[npt.NDArray[np.float32], float]:
        self.progress(task, 0, len(frames))
        scores, latencies = [], []
        for frame in frames:
            result = classifier.classify(frame)
            scores.append(result.scores)
            latencies.append(result.total_ms)
            self.progress(task, 1, None)
        return np.stack(scores), float(np.median(latencies))


def selection_folder(
    folder: LabelledFolder,
    calibration_samples: int,
    count: int,
    parity: LabelledFolder,
    *,
    seed: int = 0,
) -> LabelledFolder | None:
    """Up to ``count`` class-balanced photos of ``folder`` that are neither calibration photos
    (``folder.balanced(calibration_samples)``) nor parity photos: the next ones of the same
    class-balanced draw. Deterministic; None when no photo is left."""
    calibration = folder.balanced(calibration_samples, seed=seed)
    seen = {path.resolve() for path, _ in (*calibration.items, *parity.items)}
    wider = folder.balanced(calibration_samples + count, seed=seed)
    items = [item for item in wider.items if item[0].resolve() not in seen]
    if not items:
        return None
    return LabelledFolder(folder.root, folder.labels, items)


def selection_figure(
    float_scores: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]
) -> Selection:
    """A model's scores against the float model's: mean total-variation distance
    (half the summed absolute score difference, 0 to 1) and top-1 agreement."""
    distance = 0.5 * np.abs(scores.astype(np.float64) - float_scores.astype(np.float64)).sum(axis=1)
    agree = scores.argmax(axis=1) == float_scores.argmax(axis=1)
    return Selection(score_error=float(distance.mean()), agreement=float(agree.mean()))


def _slug(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in text.lower()).strip("-._")
    return (cleaned or "model")[:64]


def convert(options: ConvertOptions, progress: Progress | None = None) -> list[ConversionResult]:
    """Run the job; returns one result per format x precision (raises on unusable input)."""
    _check_requests(options)
    job = _Job(options, progress)
    options.out.mkdir(parents=True, exist_ok=True)
    frames, y_true = job.parity_frames()
    raw_float = job.float_scores(frames)
    probabilities = bool(
        np.all(raw_float >= 0) and np.allclose(raw_float.sum(axis=1), 1.0, atol=1e-3)
    )
    apply_softmax = (
        options.apply_softmax if options.apply_softmax is not None else not probabilities
    )
    float_scores = softmax(raw_float) if apply_softmax else raw_float
    parity_ref = DatasetRef(
        name=str(options.parity), sha256=job.parity.sha256(), num_images=len(frames)
    )
    golden = _golden(frames, y_true, job.labels, options.golden_count)
    postprocessing = Postprocessing(
        apply_softmax=apply_softmax,
        top_k=min(options.top_k, len(job.labels)),
        confidence_threshold=options.confidence_threshold,
    )
    provenance = Provenance(
        source_model_sha256=job.source.sha256,
        calibration_data_sha256=job.calibration.sha256() if job.calibration is not None else None,
        parity_data_sha256=parity_ref.sha256,
        created_by=f"edgefleet {__version__}",
        created_at=_created_at(),
        tools=tool_versions(),
    )
    results: list[ConversionResult] = []
    for fmt in options.formats:
        precisions = [p for p in options.precisions if p in FORMAT_PRECISIONS[fmt]]
        if not precisions:
            continue
        with job.timed(fmt, "export"):
            float_model = job.source.tflite_fp32() if fmt == "tflite" else job.source.onnx_fp32()
        for precision in precisions:
            with contextlib.ExitStack() as stack:
                results.append(
                    _convert_precision(
                        job,
                        fmt,
                        precision,
                        float_model,
                        stack,
                        frames,
                        y_true,
                        float_scores,
                        _Shared(parity_ref, golden, postprocessing, provenance),
                    )
                )
    missed = [
        r
        for r in results
        if r.precision == "int8" and (r.report.top1_agreement or 0.0) < options.min_agreement
    ]
    if missed:
        floor = job.input_rounding_agreement(frames, raw_float)
        for r in missed:
            r.input_rounding_agreement = floor
    return results


@dataclass(frozen=True)
class _Shared:
    """What every format and precision of one job shares."""

    parity_ref: DatasetRef
    golden: list[tuple[npt.NDArray[np.uint8], str | None]]
    postprocessing: Postprocessing
    provenance: Provenance


@dataclass(frozen=True)
class _Measured:
    report: QualityReport
    scores: npt.NDArray[np.float32]
    latency_p50_ms: float


def _random_input(backend: Backend) -> npt.NDArray[Any]:
    """A reproducible random tensor of the backend's first input (its shape and type)."""
    spec = backend.inputs[0]
    shape = [max(1, d) for d in spec.shape]
    rng = np.random.default_rng(0)
    if spec.dtype in ("int8", "uint8"):
        info = np.iinfo(spec.dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(spec.dtype)
    return rng.standard_normal(shape).astype(np.float32)


def _time_against_fp32(job: _Job, fmt: str, precision: str, model: bytes, fp32: bytes) -> float:
    """``model``'s invoke p50 over the fp32 model's on this host; warns where it is slower."""
    with job.timed(fmt, "time against fp32"):
        ratio = job.latency_ratio(fmt, model, fp32)
    if ratio > 1.0:
        log.warning(
            "%s %s is slower than fp32 on this host (invoke p50 x%.2f, 1 thread): its "
            "backend's kernels for this model favour float here; measure on the device "
            "(`edgefleet bench`) before choosing it for speed",
            fmt,
            precision,
            ratio,
        )
    return ratio


def _convert_precision(  # noqa: PLR0917 - one step of convert(), split out for length
    job: _Job,
    fmt: str,
    precision: str,
    float_model: bytes,
    stack: contextlib.ExitStack,
    frames: list[npt.NDArray[np.uint8]],
    y_true: npt.NDArray[np.int64],
    float_scores: npt.NDArray[np.float32],
    shared: _Shared,
) -> ConversionResult:
    options = job.options
    stem = f"{job.name}-{options.version}-{fmt}-{precision}"
    quantizer = None
    head: ClassifierHead | None = None
    if precision == "int8":
        with job.timed(fmt, "prepare and calibrate"):
            quantizer = job.int8_quantizer(fmt, float_model)
            stack.callback(quantizer.close)
            head = job.keep_head_in_float(fmt, quantizer)
            model = quantizer.quantize()
    else:
        model = job.convert_one(fmt, precision, float_model)

    def common(model: bytes, fallback: FloatFallback | None = None) -> dict[str, Any]:
        return {
            "name": job.name,
            "version": options.version,
            "model": model,
            "model_format": fmt,
            "precision": precision,
            "preprocessing": job.contract,
            "labels": job.labels,
            "postprocessing": shared.postprocessing,
            "description": f"{options.model.name} as {fmt} {precision}"
            + (f", {len(fallback.ops)} ops kept in float" if fallback else ""),
            "provenance": shared.provenance,
            "compatibility": Compatibility(  # min_runtime_version: what its fields need
                backends=["litert", "tflite-runtime", "tf-lite"]
                if fmt == "tflite"
                else ["onnxruntime"],
                device_profiles=list(options.device_profiles),
                latency_budget_ms=options.latency_budget_ms,
            ),
            "float_fallback": fallback,
        }

    def run(
        model: bytes, images: list[npt.NDArray[np.uint8]], task: str
    ) -> tuple[npt.NDArray[np.float32], float]:
        draft_path = options.out / f".{stem}.draft{BUNDLE_SUFFIX}"
        try:
            draft = assemble_bundle(draft_path, **common(model), golden_frames=[], golden_atol=0.0)
        finally:
            draft_path.unlink(missing_ok=True)
        return job.evaluate(Classifier(draft), images, task)

    def measure(model: bytes, task: str) -> _Measured:
        scores, latency = run(model, frames, task)
        report = compare_scores(
            float_scores,
            scores,
            y_true,
            job.labels,
            shared.parity_ref,
            max_accuracy_drop=options.max_accuracy_drop,
            min_agreement=options.min_agreement,
        )
        return _Measured(report, scores, latency)

    with job.timed(fmt, "evaluate"):
        measured = measure(model, f"evaluate {fmt} {precision}")
    full_int8_bytes = len(model)
    sensitivity, outcome, before, fallback_spec = None, None, None, None
    if quantizer is not None:
        sensitivity, outcome, before, fallback_spec, measured, model = _sensitivity_and_fallback(
            job,
            fmt,
            quantizer,
            (model, measured),
            measure=measure,
            run=run,
            shared=shared,
            head=head,
        )
    report = measured.report
    vs_fp32 = (
        None if precision == "fp32" else _time_against_fp32(job, fmt, precision, model, float_model)
    )
    disagreements = find_disagreements(frames, y_true, float_scores, measured.scores, job.labels)
    float_near_ties = near_tie_count(float_scores)
    report_path = options.out / f"{stem}.report.html"
    atomic_write_text(
        report_path,
        render_report(
            report,
            f"{job.name} {options.version}: {fmt} {precision}",
            job.labels,
            f"{options.model.name} on {shared.parity_ref.num_images} images of {options.parity}",
            sensitivity=sensitivity,
            fallback=outcome,
            before_fallback=before,
            full_int8_bytes=full_int8_bytes,
            disagreements=disagreements,
            preparation=job.preparation.get(fmt) if precision == "int8" else None,
            float_near_ties=float_near_ties,
        ),
    )
    suffered = _suffered(report, options.max_accuracy_drop)
    bundle_path = None
    bundle_id = None
    if report.passed or options.keep_failed:
        bundle_path = options.out / f"{stem}{BUNDLE_SUFFIX}"
        written = assemble_bundle(
            bundle_path,
            **common(model, fallback_spec),
            quality=report,
            golden_frames=shared.golden,
            golden_atol=0.02 if precision in {"int8", "dynamic-int8"} else 1e-3,
        )
        bundle_id = written.id
    if options.keep_failed and outcome is not None:
        _write_last_fallback(
            outcome, options.out / f"{stem}-fallback{BUNDLE_SUFFIX}", common, shared, head
        )
    result = ConversionResult(
        fmt,
        precision,
        len(model),
        report,
        measured.latency_p50_ms,
        bundle_path,
        report_path,
        bundle_id,
        suffered,
        sensitivity=sensitivity,
        fallback=outcome,
        fallback_candidates=outcome.candidates if outcome is not None else [],
        before_fallback=before,
        disagreements=disagreements,
        float_near_ties=float_near_ties,
        vs_fp32_p50=vs_fp32,
        json_report_path=options.out / f"{stem}.report.json",
        preparation=job.preparation.get(fmt) if precision == "int8" else None,
        stage_seconds=dict(job.stage_seconds.pop(fmt, {})),
    )
    log.info(
        "%s %s: %s",
        fmt,
        precision,
        ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.stage_seconds.items()),
    )
    atomic_write_text(
        options.out / f"{stem}.report.json", json.dumps(result.to_report_dict(), indent=2) + "\n"
    )
    return result


def _sensitivity_and_fallback(
    job: _Job,
    fmt: str,
    quantizer: TfliteInt8Quantizer | OnnxInt8Quantizer,
    full_int8: tuple[bytes, _Measured],
    *,
    measure: Callable[[bytes, str], _Measured],
    run: Callable[[bytes, list[npt.NDArray[np.uint8]], str], tuple[npt.NDArray[np.float32], float]],
    shared: _Shared,
    head: ClassifierHead | None = None,
) -> tuple[
    SensitivityReport,
    FallbackOutcome | None,
    QualityReport | None,
    FloatFallback | None,
    _Measured,
    bytes,
]:
    """The int8 model's sensitivity and, when it misses the gate, the fallback: the model
    settled on, its measurement, and what the manifest records of it."""
    model, measured = full_int8
    with job.timed(fmt, "sensitivity"):
        sensitivity = job.sensitivity(fmt, quantizer, model)
    top = ", ".join(f"{row.op.kind} {100 * row.added_noise:.3f}%" for row in sensitivity.top(3))
    log.info("%s int8: most sensitive ops (noise added): %s", fmt, top)
    if measured.report.passed or not job.options.fallback:
        return sensitivity, None, None, _float_ops(head, None), measured, model
    before = measured.report
    with job.timed(fmt, "fallback"):
        outcome, measured, model = _fallback(
            job,
            fmt,
            quantizer,
            (model, measured),
            measure=measure,
            run=run,
            apply_softmax=shared.postprocessing.apply_softmax,
            head=head,
        )
    spec = _float_ops(head, outcome if outcome.passed else None)
    return sensitivity, outcome, before, spec, measured, model


def _float_ops(
    head: ClassifierHead | None, outcome: FallbackOutcome | None
) -> FloatFallback | None:
    """What the manifest records of the ops kept in float: the classifier head's and the
    fallback's (None when the model is int8 throughout)."""
    ops = list(head.excluded) if head is not None else []
    fraction = head.mac_fraction if head is not None else 0.0
    if outcome is not None:
        ops += [m for op in outcome.float_ops for m in op.excluded]
        fraction += outcome.float_mac_fraction
    if not ops:
        return None
    return FloatFallback(ops=sorted(set(ops)), float_mac_fraction=round(min(fraction, 1.0), 6))


def _write_last_fallback(
    outcome: FallbackOutcome,
    path: Path,
    common: Callable[[bytes, FloatFallback | None], dict[str, Any]],
    shared: _Shared,
    head: ClassifierHead | None = None,
) -> None:
    """A failed search's last kept model as a bundle of its own (``--keep-failed``: what the
    fallback reached, e.g. to check it on held-out photos); recorded in ``outcome.bundle``."""
    if outcome.passed or outcome.model is None or outcome.trial is None:
        return
    last: _Measured = outcome.trial.detail
    assemble_bundle(
        path,
        **common(outcome.model, _float_ops(head, outcome)),
        quality=last.report,
        golden_frames=shared.golden,
        golden_atol=0.02,
    )
    outcome.bundle = path


def _fallback(
    job: _Job,
    fmt: str,
    quantizer: TfliteInt8Quantizer | OnnxInt8Quantizer,
    full_int8: tuple[bytes, _Measured],
    *,
    measure: Callable[[bytes, str], _Measured],
    run: Callable[[bytes, list[npt.NDArray[np.uint8]], str], tuple[npt.NDArray[np.float32], float]],
    apply_softmax: bool,
    head: ClassifierHead | None = None,
) -> tuple[FallbackOutcome, _Measured, bytes]:
    """Run the accuracy-aware fallback; the model it settled on (full int8 when none passed).
    The classifier head, already in float, is no candidate and spends its MACs' share of
    the budget."""
    options = job.options
    head_fraction = head.mac_fraction if head is not None else 0.0
    limits = FallbackLimits(
        max_float_fraction=max(0.0, options.max_float_fraction - head_fraction),
        max_latency_ratio=options.max_latency_ratio,
        max_steps=options.max_fallback_steps,
    )
    task = f"fallback {fmt}"
    job.progress(task, 0, options.max_fallback_steps)
    log.info(
        "%s int8 missed the gate: keeping its most sensitive ops in float (at most %.0f%% of "
        "MACs, invoke p50 at most x%.2f of full int8, %d steps)",
        fmt,
        100 * options.max_float_fraction,
        options.max_latency_ratio,
        options.max_fallback_steps,
    )
    measured: dict[int, _Measured] = {}

    def check(model: bytes) -> Trial:
        result = measure(model, f"evaluate {fmt} int8, fallback step")
        measured[id(model)] = result
        job.progress(task, 1, None)
        return Trial(
            passed=bool(result.report.passed),
            agreement=result.report.top1_agreement or 0.0,
            accuracy_drop=result.report.accuracy_drop_points or 0.0,
            detail=result,
        )

    samples = list(job.quiet_samples(options.sensitivity_samples))
    if isinstance(quantizer, TfliteInt8Quantizer):
        ops = tflite_ops(quantizer.float_model)
        error = tflite_output_error(quantizer.quantize, quantizer.float_model, samples)
    else:
        ops = onnx_ops(quantizer.prepared_model())
        error = onnx_output_error(full_int8[0], quantizer.prepared_model(), samples)
    in_head = {op.name for op in head.ops} if head is not None else set()
    open_ops = [op for op in ops if op.name not in in_head]
    measuring = f"fallback {fmt}: one candidate at a time in float"
    job.progress(measuring, 0, count_candidates(open_ops))
    with job.timed(fmt, "fallback candidates"):
        candidates = measure_candidates(
            open_ops,
            error,
            max_float_fraction=options.max_float_fraction,
            progress=lambda: job.progress(measuring, 1, None),
        )
    log.info(
        "%s int8: %d fallback candidates measured; the best removes %.0f%% of the output error",
        fmt,
        len(candidates),
        100 * candidates[0].gain if candidates else 0.0,
    )
    select: Callable[[bytes], Selection] | None = None
    baseline = None
    chosen_on = f"parity ({options.parity})"
    chosen_images = len(full_int8[1].scores)
    if job.selection is not None:
        selection_frames, selection_float = job.selection_set(apply_softmax)

        def select(model: bytes) -> Selection:
            scores, _ = run(model, selection_frames, f"select {fmt} int8, fallback step")
            return selection_figure(selection_float, scores)

        baseline = select(full_int8[0])
        chosen_on = f"selection: {options.calibration} photos that are neither calibration nor parity photos"
        chosen_images = len(selection_frames)
        log.info(
            "%s int8: the fallback chooses on %d photos of %s that are neither calibration nor "
            "parity photos (full int8: score error %.5f, agreement %.2f%%); the gate judges on %s",
            fmt,
            chosen_images,
            options.calibration,
            baseline.score_error,
            100 * baseline.agreement,
            options.parity,
        )
    outcome = search_fallback(
        candidates,
        sum(op.macs for op in ops),
        quantizer.quantize,
        check,
        lambda model: job.latency_ratio(fmt, model, full_int8[0]),
        limits=limits,
        select=select,
        baseline=baseline,
    )
    outcome.candidates = candidates
    outcome.selection_set = chosen_on
    outcome.selection_images = chosen_images
    if outcome.passed and outcome.model is not None and outcome.trial is not None:
        log.info(
            "%s int8 passes with %d ops in float (%.1f%% of MACs, invoke p50 x%.2f)",
            fmt,
            len(outcome.float_ops),
            100 * outcome.float_mac_fraction,
            outcome.latency_ratio or 0.0,
        )
        chosen: _Measured = outcome.trial.detail
        return outcome, chosen, outcome.model
    log.warning("%s int8: the fallback found no model that passes: %s", fmt, outcome.stopped)
    return outcome, full_int8[1], full_int8[0]


def _golden(
    frames: list[npt.NDArray[np.uint8]],
    y_true: npt.NDArray[np.int64],
    labels: list[str],
    count: int,
) -> list[tuple[npt.NDArray[np.uint8], str | None]]:
    """Up to ``count`` parity frames, one per class first (the first frame of each class in turn).

    A few are enough for the device's smoke test; each costs bundle bytes on
    every device (``assemble_bundle`` stores them cropped and at most about
    twice the model's input size).
    """
    chosen: list[int] = []
    for k in range(len(labels)):
        hits = np.flatnonzero(y_true == k)
        if len(hits) and len(chosen) < count:
            chosen.append(int(hits[0]))
    for index in range(len(frames)):
        if len(chosen) >= count:
            break
        if index not in chosen:
            chosen.append(index)
    return [(frames[i], labels[int(y_true[i])]) for i in sorted(chosen)]


def gate_error(results: list[ConversionResult], options: ConvertOptions) -> ParityGateError | None:
    """The error to exit with when any conversion missed the gate (None when all passed)."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return None
    lines = []
    for r in failed:
        drop = r.report.accuracy_drop_points or 0.0
        lines.append(
            f"{r.format} {r.precision}: accuracy drop {drop:.2f} points (max {options.max_accuracy_drop:g}), "
            f"agreement {100 * (r.report.top1_agreement or 0):.2f}% (min {100 * options.min_agreement:g}%)"
            + (f"; classes that suffered: {', '.join(r.suffered)}" if r.suffered else "")
            + (
                f"; {sum(d.near_tie for d in r.disagreements)} of the {len(r.disagreements)} "
                f"disagreeing photos are near ties (the float model's top two within "
                f"{100 * NEAR_TIE:g} points; it has {r.float_near_ties} such photos)"
                if r.disagreements and r.float_near_ties is not None
                else ""
            )
            + (
                f"; fallback tried {len(r.fallback.steps)} steps and stopped: {r.fallback.stopped}"
                if r.fallback is not None
                else ""
            )
            + ("; bundle kept (--keep-failed)" if r.bundle_path else "; no bundle written")
        )
    floor = next(
        (r.input_rounding_agreement for r in failed if r.input_rounding_agreement is not None),
        None,
    )
    if floor is not None and floor < 1.0:
        lines.append(
            f"note: the float model itself keeps only {100 * floor:.2f}% of its answers when its "
            "input is rounded to int8, before any weight or activation is quantised; a model "
            "this sensitive needs retraining for robustness (train-reference --recipe robust "
            "trains with crops, jitter, weight decay and label smoothing) or a lower --min-agreement"
        )
    return ParityGateError("parity gate failed:\n  " + "\n  ".join(lines))
