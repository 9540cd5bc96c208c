"""Backends, postprocessing and the classifier on real tiny models, run by the real runtimes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edge_runtime.backends import (
    available_backends,
    backend_class,
    backend_names,
    create_backend,
)
from edge_runtime.bundle import (
    GoldenSet,
    GoldenVector,
    Postprocessing,
    Quantization,
    TensorSpec,
    build_bundle,
    parse_bundle,
)
from edge_runtime.classifier import Classifier
from edge_runtime.config import parse_config
from edge_runtime.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    GoldenMismatchError,
)
from edge_runtime.postprocess import Postprocessor, dequantize, softmax
from edgefleet.testing import PluginDeclarations
from tests.conftest import golden_frame, manifest_for, members_for
from tests.models import LABELS, tflite_tensor_names


def test_registry_lists_installed_backends_per_format() -> None:
    assert set(backend_names()) == {"litert", "tflite-runtime", "tf-lite", "onnxruntime"}
    assert available_backends("onnx") == ["onnxruntime"]
    assert available_backends("tflite")[0] == "litert"


def test_missing_package_is_named() -> None:
    if "tflite-runtime" in available_backends():
        pytest.skip("tflite-runtime is installed here")
    with pytest.raises(BackendUnavailableError, match="'tflite-runtime' package"):
        create_backend("tflite-runtime", "tflite", b"")


ECHO_BACKEND = """
import numpy as np

from edge_runtime.backends import Backend
from edge_runtime.bundle import TensorSpec


class EchoBackend(Backend):
    name = "echo"
    formats = frozenset({"onnx"})
    package = "echo-runtime"
    module = "echo_runtime.session"
    priority = 1

    def __init__(self, model: bytes, threads: int = 1) -> None:
        self.inputs = [TensorSpec(name="x", shape=[1, 2], dtype="float32")]
        self.outputs = [TensorSpec(name="y", shape=[1, 2], dtype="float32")]

    def invoke(self, tensor):
        return [np.asarray(tensor)]
"""


def test_a_third_party_backend_is_one_class_and_one_entry_point(
    plugin_declarations: PluginDeclarations, onnx_model: bytes
) -> None:
    (plugin_declarations.folder / "echo_backend.py").write_text(ECHO_BACKEND)
    plugin_declarations.declare("edgefleet.backends", "echo", "echo_backend:EchoBackend")
    assert "echo" in backend_names()
    # declared with the highest preference, but its runtime is not installed: auto skips it
    assert available_backends("onnx") == ["onnxruntime"]
    with pytest.raises(
        BackendUnavailableError,
        match=r"'echo' needs the 'echo-runtime' package \(pip install echo-runtime\)",
    ):
        raise backend_class("echo").unavailable()
    echo = create_backend("echo", "onnx", onnx_model)
    assert echo.invoke(np.ones((1, 2), np.float32))[0].tolist() == [[1.0, 1.0]]
    with pytest.raises(BackendError, match="cannot run tflite"):
        create_backend("echo", "tflite", b"")
    # a misnamed or broken declaration is refused by name and hides no other backend
    plugin_declarations.declare("edgefleet.backends", "mirror", "echo_backend:EchoBackend")
    plugin_declarations.declare("edgefleet.backends", "gone", "no_such_module:Backend")
    with pytest.raises(BackendError, match=r"'mirror' names echo_backend:EchoBackend.*'echo'"):
        backend_class("mirror")
    with pytest.raises(BackendError, match=r"backend 'gone' cannot be loaded"):
        backend_class("gone")
    assert available_backends("onnx") == ["onnxruntime"]
    assert (
        parse_config("device_id: c\nsource:\n  type: synthetic\nbackend: echo\n").backend == "echo"
    )
    with pytest.raises(
        ConfigError, match=r"line 4: backend: .*unknown backend 'tensorrt'; known: auto, echo"
    ):
        parse_config("device_id: c\nsource:\n  type: synthetic\nbackend: tensorrt\n")


def test_wrong_format_and_unknown_backend(onnx_model: bytes) -> None:
    with pytest.raises(BackendError, match="cannot run onnx"):
        create_backend("litert", "onnx", onnx_model)
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'"):
        create_backend("tensorrt", "onnx", onnx_model)


def test_corrupt_model_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="cannot load"):
        create_backend("onnxruntime", "onnx", b"\x08\x07garbage")
    with pytest.raises(BackendError, match="cannot load"):
        create_backend("litert", "tflite", b"\0\0\0\0TFL3garbage")


@pytest.mark.parametrize("backend", ["litert", "tf-lite"])
def test_tflite_backends_agree(tflite_model: bytes, backend: str) -> None:
    frame_tensor = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    reference = create_backend("litert", "tflite", tflite_model).invoke(frame_tensor)[0]
    other = create_backend(backend, "tflite", tflite_model, threads=2)
    assert other.inputs[0].shape == [1, 32, 32, 3]
    np.testing.assert_allclose(other.invoke(frame_tensor)[0], reference, rtol=1e-5, atol=1e-6)
    assert reference.sum() == pytest.approx(1.0, abs=1e-5)


def test_postprocessing_dequantizes_softmaxes_and_thresholds() -> None:
    spec = TensorSpec(
        name="y",
        shape=[1, 3],
        dtype="int8",
        quantization=Quantization(scale=[0.5], zero_point=[-2]),
    )
    np.testing.assert_allclose(dequantize(np.array([[-2, 0, 4]], np.int8), spec), [[0.0, 1.0, 3.0]])
    np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0], np.float32)), [0.5, 0.5])
    post = Postprocessor(
        Postprocessing(apply_softmax=True, top_k=2, confidence_threshold=0.6), ["a", "b", "c"], spec
    )
    scores = post.scores(np.array([[-2, 0, 4]], np.int8))
    assert scores.sum() == pytest.approx(1.0)
    answer = post.answer(scores)
    assert answer.label == "c" and not answer.uncertain
    assert [name for name, _ in answer.top_k] == ["c", "b"]
    unsure = post.answer(np.array([0.4, 0.35, 0.25], np.float32))
    assert unsure.uncertain and unsure.label == "uncertain" and unsure.top_k[0][0] == "a"
    assert post.answer(np.array([np.nan, 0.1, 0.1], np.float32)).uncertain


def bundle_with_golden(
    model: bytes, fmt: str, names: tuple[str, str], atol: float = 1e-4, fudge: float = 0.0
):
    """A bundle whose golden vectors hold the scores the runtime really produces (plus ``fudge``)."""
    draft = parse_bundle(build_bundle(manifest_for(fmt, names=names), members_for(model, fmt)))
    classifier = Classifier(draft)
    vectors = [
        GoldenVector(
            input=f"golden/{i:03d}.npy",
            expected=[float(s) + fudge for s in classifier.scores(golden_frame(i))],
        )
        for i in range(2)
    ]
    manifest = manifest_for(fmt, names=names, golden=GoldenSet(atol=atol, vectors=vectors))
    return parse_bundle(build_bundle(manifest, members_for(model, fmt)))


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_classifier_runs_a_bundle_and_replays_golden(
    fmt: str, tflite_model: bytes, onnx_model: bytes
) -> None:
    model = tflite_model if fmt == "tflite" else onnx_model
    names = tflite_tensor_names(model) if fmt == "tflite" else ("image", "logits")
    bundle = bundle_with_golden(model, fmt, names)
    classifier = Classifier(bundle, threads=1)
    result = classifier.classify(golden_frame(5))
    assert result.answer.label in LABELS
    assert result.scores.shape == (6,) and result.scores.sum() == pytest.approx(1.0, abs=1e-4)
    assert result.invoke_ms > 0 and result.total_ms >= result.invoke_ms
    report = classifier.replay_golden()
    assert report.vectors == 2 and report.max_abs_error <= 1e-4


def test_golden_replay_catches_a_wrong_expectation(onnx_model: bytes) -> None:
    bundle = bundle_with_golden(onnx_model, "onnx", ("image", "logits"), atol=1e-3, fudge=0.01)
    with pytest.raises(
        GoldenMismatchError, match=r"golden vector 0 \(golden/000.npy\): score error"
    ):
        Classifier(bundle).replay_golden()


def test_manifest_that_lies_about_tensors_is_refused(
    make_bundle: Callable[..., bytes], onnx_model: bytes
) -> None:
    lying = manifest_for("onnx", names=("image", "logits"))
    lying = lying.model_copy(
        update={
            "model": lying.model.model_copy(
                update={"inputs": [TensorSpec(name="image", shape=[1, 32, 32, 3], dtype="uint8")]}
            )
        }
    )
    bundle = parse_bundle(build_bundle(lying, members_for(onnx_model)))
    with pytest.raises(
        BackendError, match="input 'image': runtime reports dtype float32, manifest says uint8"
    ):
        Classifier(bundle)
