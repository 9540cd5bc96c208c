"""The bundle manifest: typed, versioned, and strict.

``manifest.json`` says everything a device needs to run the model and nothing
it must guess: the model file and its tensors, the preprocessing contract,
labels and postprocessing, golden vectors for the smoke test, the quality
report measured at conversion, provenance and compatibility. Unknown fields
are refused (``extra="forbid"``) so that a typo never silently changes
behaviour.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from edge_runtime import __version__
from edge_runtime.bundle.compat import compatibility_problem, declared_min_runtime
from edge_runtime.errors import ManifestError, RuntimeTooOldError, UnsupportedSchemaVersionError

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "ClassQuality",
    "Compatibility",
    "DType",
    "DatasetRef",
    "FileEntry",
    "FloatFallback",
    "GoldenSet",
    "GoldenVector",
    "ManifestSpec",
    "ModelSpec",
    "Postprocessing",
    "Preprocessing",
    "Provenance",
    "QualityReport",
    "Quantization",
    "TensorSpec",
    "dump_manifest",
    "is_safe_member_name",
    "load_manifest",
]

SCHEMA_VERSION = 1
"""The manifest schema version this runtime writes and reads."""

MANIFEST_NAME = "manifest.json"

_MEMBER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
MAX_MEMBER_NAME = 255

DType = Literal["float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"]
Backend = Literal["litert", "tflite-runtime", "tf-lite", "onnxruntime"]


def is_safe_member_name(name: str) -> bool:
    """True for a relative POSIX path of plain components: no ``..``, no leading ``/``."""
    if not name or len(name) > MAX_MEMBER_NAME or not _MEMBER_RE.match(name):
        return False
    return all(part not in {".", ".."} for part in name.split("/"))


def _check_member_name(name: str) -> str:
    if not is_safe_member_name(name):
        raise ValueError(
            f"{name!r} is not a safe member path (relative, '/'-separated, "
            "letters, digits, '.', '_' and '-' only, no '..')"
        )
    if name == MANIFEST_NAME:
        raise ValueError(f"{MANIFEST_NAME!r} is the manifest itself and cannot be listed as a file")
    return name


def _check_sha256(value: str) -> str:
    if not _SHA256_RE.match(value):
        raise ValueError("must be 64 lowercase hex digits (a sha256)")
    return value


def _check_finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


MemberName = Annotated[str, AfterValidator(_check_member_name)]
Sha256 = Annotated[str, AfterValidator(_check_sha256)]
Finite = Annotated[float, AfterValidator(_check_finite)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantization(_Strict):
    """Affine quantisation of a tensor: ``real = scale * (q - zero_point)``.

    One scale/zero point for a per-tensor scheme; one per channel along
    ``axis`` for a per-channel scheme.
    """

    scale: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = Field(min_length=1)
    zero_point: list[int] = Field(min_length=1)
    axis: int | None = None

    @model_validator(mode="after")
    def _same_length(self) -> Quantization:
        if len(self.scale) != len(self.zero_point):
            raise ValueError(
                f"scale has {len(self.scale)} values but zero_point has {len(self.zero_point)}"
            )
        if len(self.scale) > 1 and self.axis is None:
            raise ValueError("per-channel quantisation (several scales) needs an axis")
        return self


class TensorSpec(_Strict):
    """Name, shape (``-1`` for a dynamic dimension), dtype and quantisation of one tensor."""

    name: str = Field(min_length=1, max_length=256)
    shape: list[Annotated[int, Field(ge=-1)]] = Field(max_length=8)
    dtype: DType
    quantization: Quantization | None = None

    @field_validator("shape")
    @classmethod
    def _no_zero_dims(cls, shape: list[int]) -> list[int]:
        if any(dim == 0 for dim in shape):
            raise ValueError("dimensions must be positive, or -1 for dynamic")
        return shape

    @model_validator(mode="after")
    def _quantized_dtype(self) -> TensorSpec:
        if self.quantization is not None and self.dtype not in {"int8", "uint8", "int16", "int32"}:
            raise ValueError(f"quantization is given but dtype {self.dtype} is not an integer type")
        return self


class FloatFallback(_Strict):
    """Ops a quantised model keeps in float32 (the converter's accuracy-aware fallback)."""

    ops: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=4096, description="TFLite op scopes or ONNX node names"
    )
    float_mac_fraction: Fraction = Field(description="share of the model's MACs left in float")


class ModelSpec(_Strict):
    """The model member and its input/output tensors as the runtime will see them."""

    file: MemberName
    format: Literal["tflite", "onnx"]
    precision: Literal["fp32", "fp16", "dynamic-int8", "int8"]
    inputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    outputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    float_fallback: FloatFallback | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_fallback(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a model without fallback serialises as before: same bytes, readable by older runtimes
        data: dict[str, Any] = handler(self)
        if data.get("float_fallback") is None:
            data.pop("float_fallback", None)
        return data

    @model_validator(mode="after")
    def _extension_matches_format(self) -> ModelSpec:
        if not self.file.endswith(f".{self.format}"):
            raise ValueError(f"file {self.file!r} does not end in .{self.format}")
        return self


class Preprocessing(_Strict):
    """How a camera frame (uint8, H x W x 3, BGR as OpenCV reads it) becomes the input tensor.

    Steps, in order: resize to ``height`` x ``width`` by ``resize`` mode with
    ``interpolation``; reorder channels to ``color_order``; compute
    ``(pixel - mean) / std`` per channel in float32 (pixel in 0..255); quantise
    with the input tensor's scale/zero point if it is an integer tensor; lay out
    as ``layout`` with a batch dimension of 1.
    """

    height: int = Field(ge=1, le=4096)
    width: int = Field(ge=1, le=4096)
    resize: Literal["stretch", "center-crop", "letterbox"] = "stretch"
    crop_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    interpolation: Literal["nearest", "linear", "area", "cubic"] = "linear"
    color_order: Literal["rgb", "bgr"] = "rgb"
    layout: Literal["nhwc", "nchw"] = "nhwc"
    mean: tuple[Finite, Finite, Finite] = (0.0, 0.0, 0.0)
    std: tuple[Finite, Finite, Finite] = (1.0, 1.0, 1.0)
    letterbox_fill: int = Field(default=0, ge=0, le=255)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(value <= 0 for value in std):
            raise ValueError("every std value must be > 0")
        return std


class Postprocessing(_Strict):
    """How raw outputs become an answer: softmax or not, top-k, the 'uncertain' threshold."""

    output: str | None = Field(default=None, description="output tensor name; default the first")
    apply_softmax: bool = Field(description="true when the model outputs logits")
    top_k: int = Field(default=3, ge=1, le=100)
    confidence_threshold: Fraction = 0.0
    uncertain_label: str = Field(default="uncertain", min_length=1, max_length=64)


class GoldenVector(_Strict):
    """A real frame and the class scores the runtime must reproduce for it."""

    input: MemberName = Field(
        description="a .png (lossless) or .npy member: uint8 frame, H x W x 3, BGR"
    )
    expected: list[Finite] = Field(min_length=1, max_length=10_000)
    label: str | None = Field(default=None, description="the frame's true class, if known")


class GoldenSet(_Strict):
    """Golden vectors replayed by the device's smoke test before it activates the bundle.

    ``expected`` holds class scores after dequantisation and postprocessing
    softmax; a replay passes when every score is within ``atol`` and the top-1
    class is the same.
    """

    atol: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    vectors: list[GoldenVector] = Field(min_length=1, max_length=256)


class DatasetRef(_Strict):
    """Which images a figure was measured on."""

    name: str = Field(max_length=512)
    sha256: Sha256
    num_images: int = Field(ge=0)


class ClassQuality(_Strict):
    """Per-class accuracy of the float and the converted model."""

    label: str
    support: int = Field(ge=0)
    float_accuracy: Fraction | None = None
    accuracy: Fraction


class QualityReport(_Strict):
    """Float vs converted model on labelled images, as measured by the converter."""

    dataset: DatasetRef
    float_accuracy: Fraction | None = None
    accuracy: Fraction
    top1_agreement: Fraction | None = None
    accuracy_drop_points: float | None = None
    cosine_similarity: Fraction | None = None
    kl_divergence: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    per_class: list[ClassQuality] = Field(default_factory=list)
    confusion_float: list[list[int]] | None = None
    confusion: list[list[int]] | None = None
    class_distribution: list[Fraction] | None = Field(
        default=None, description="share of predictions per label on the dataset (drift baseline)"
    )
    mean_confidence: Fraction | None = None
    confidence_histogram: list[Fraction] | None = Field(
        default=None,
        min_length=2,
        max_length=100,
        description="share of predictions per equal bin of top-1 confidence over 0..1 (drift "
        "baseline); absent from bundles made before it",
    )
    passed: bool | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _omit_absent_histogram(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a report without one serialises as before: same bytes, readable by older runtimes
        data: dict[str, Any] = handler(self)
        if data.get("confidence_histogram") is None:
            data.pop("confidence_histogram", None)
        return data


class Provenance(_Strict):
    """Where the bundle came from; with the same inputs the bundle bytes are the same."""

    source_model_sha256: Sha256 | None = None
    calibration_data_sha256: Sha256 | None = None
    parity_data_sha256: Sha256 | None = None
    created_by: str = Field(default="edgefleet", max_length=128)
    created_at: str | None = Field(
        default=None, description="ISO 8601 time, taken from SOURCE_DATE_EPOCH for reproducibility"
    )
    tools: dict[str, str] = Field(default_factory=dict, description="library -> version")


class Compatibility(_Strict):
    """What the bundle needs from the device."""

    min_runtime_version: str = Field(default="0.1.0", pattern=_VERSION_RE.pattern)
    backends: list[Backend] = Field(default_factory=list)
    device_profiles: list[str] = Field(default_factory=list)
    latency_budget_ms: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None


class FileEntry(_Strict):
    """Size and sha256 of one archive member."""

    size: int = Field(ge=0)
    sha256: Sha256


class ManifestSpec(_Strict):
    """The whole ``manifest.json`` (schema version 1)."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=_SLUG_RE.pattern, description="model name, a lowercase slug")
    version: str = Field(pattern=_VERSION_RE.pattern, description="semantic version")
    description: str = Field(default="", max_length=4096)
    model: ModelSpec
    preprocessing: Preprocessing
    labels: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=10_000
    )
    postprocessing: Postprocessing
    golden: GoldenSet | None = None
    quality: QualityReport | None = None
    provenance: Provenance = Field(default_factory=Provenance)
    compatibility: Compatibility = Field(default_factory=Compatibility)
    files: dict[MemberName, FileEntry] = Field(default_factory=dict, max_length=63)

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        seen: set[str] = set()
        for label in labels:
            if label in seen:
                raise ValueError(f"label {label!r} appears twice")
            seen.add(label)
        return labels

    @model_validator(mode="after")
    def _consistent(self) -> ManifestSpec:
        output = self.scores_output()
        classes = output.shape[-1] if output.shape else None
        if classes is not None and classes != -1 and classes != len(self.labels):
            raise ValueError(
                f"output {output.name!r} has {classes} classes "
                f"but {len(self.labels)} labels are given"
            )
        if self.postprocessing.uncertain_label in self.labels:
            raise ValueError(
                f"postprocessing.uncertain_label {self.postprocessing.uncertain_label!r} "
                "is also a class label"
            )
        if self.golden is not None:
            for index, vector in enumerate(self.golden.vectors):
                if len(vector.expected) != len(self.labels):
                    raise ValueError(
                        f"golden.vectors.{index}.expected has {len(vector.expected)} scores "
                        f"for {len(self.labels)} labels"
                    )
        if self.files:
            for member in self.referenced_members():
                if member not in self.files:
                    raise ValueError(f"{member!r} is referenced but not listed in files")
        return self

    def scores_output(self) -> TensorSpec:
        """The output tensor whose last dimension holds one score per label."""
        wanted = self.postprocessing.output
        if wanted is None:
            return self.model.outputs[0]
        for spec in self.model.outputs:
            if spec.name == wanted:
                return spec
        raise ValueError(f"postprocessing.output {wanted!r} is not one of the model outputs")

    def referenced_members(self) -> list[str]:
        """Every member the manifest points at: the model and the golden inputs."""
        members = [self.model.file]
        if self.golden is not None:
            members.extend(vector.input for vector in self.golden.vectors)
        return members


def dump_manifest(manifest: ManifestSpec) -> bytes:
    """Canonical JSON bytes: sorted keys, fixed indentation, UTF-8, trailing newline."""
    data = manifest.model_dump(mode="json")
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestError(f"{MANIFEST_NAME}: key {key!r} appears twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> float:
    raise ManifestError(f"{MANIFEST_NAME}: {name} is not valid JSON")


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def load_manifest(raw: bytes) -> ManifestSpec:
    """Parse and validate ``manifest.json`` bytes; every failure is a :class:`ManifestError`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{MANIFEST_NAME} is not UTF-8: {exc}") from exc
    try:
        data = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{MANIFEST_NAME} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise ManifestError(f"{MANIFEST_NAME} nests too deeply") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{MANIFEST_NAME} must hold a JSON object, not {type(data).__name__}")
    version = data.get("schema_version")
    if version is None:
        raise ManifestError(f"{MANIFEST_NAME}: schema_version: field required")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestError(f"{MANIFEST_NAME}: schema_version: must be an integer, not {version!r}")
    if version != SCHEMA_VERSION:
        raise UnsupportedSchemaVersionError(
            f"{MANIFEST_NAME}: schema_version {version} is not supported by this runtime "
            f"(it reads version {SCHEMA_VERSION}); upgrade edgefleet on this machine"
        )
    try:
        return ManifestSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field_path(error['loc'])}: {error['msg']}" for error in exc.errors()[:10]
        )
        more = "" if exc.error_count() <= 10 else f" (and {exc.error_count() - 10} more)"
        needed = declared_min_runtime(data)
        why = None if needed is None else compatibility_problem(needed, __version__)
        if why is not None:  # most likely a field added after this runtime: say which runtime
            raise RuntimeTooOldError(
                f"{MANIFEST_NAME}: {why}, and this runtime cannot read it: {problems}{more}"
            ) from exc
        raise ManifestError(f"{MANIFEST_NAME} is invalid: {problems}{more}") from exc
