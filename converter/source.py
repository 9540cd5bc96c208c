"""The trained model that goes in: Keras (.keras, .h5), a TensorFlow SavedModel folder, or ONNX.

A :class:`SourceModel` knows its input size, what it infers about its own
preprocessing (a leading ``Rescaling`` layer means it wants raw 0..255
pixels), how to compute float reference scores, and how to become a float32
TFLite flatbuffer (TFLite converter) or a float32 ONNX model (tf2onnx from a
SavedModel).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from converter.errors import ModelLoadError, UnsupportedModelError
from converter.onnx_canonical import canonicalize

__all__ = ["InferredPreprocessing", "SourceModel", "load_source_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferredPreprocessing:
    """What the model itself says about its input."""

    height: int
    width: int
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    reason: str = ""


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class SourceModel:
    """A loaded trained model and the conversions it supports."""

    def __init__(self, path: Path, kind: str, model: Any) -> None:
        self.path = path
        self.kind = kind  # "keras" | "savedmodel" | "onnx"
        self.model = model
        self.sha256 = _sha256_path(path)
        self._onnx_fp32: bytes | None = None

    # --- what the model says about itself ---------------------------------------

    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the image input (NHWC)."""
        if self.kind == "onnx":
            dims = [d.dim_value for d in self.model.graph.input[0].type.tensor_type.shape.dim]
            if len(dims) == 4 and dims[1] == 3 and dims[3] != 3:
                raise UnsupportedModelError(
                    f"{self.path}: NCHW ONNX inputs {dims} are not supported yet; export NHWC"
                )
            shape: tuple[Any, ...] = tuple(dims)
        else:
            shape = self._keras_input_shape()
        if len(shape) != 4 or shape[3] != 3 or not shape[1] or not shape[2]:
            raise UnsupportedModelError(
                f"{self.path}: expected an image input of shape [batch, height, width, 3], got {list(shape)}"
            )
        return int(shape[1]), int(shape[2]), int(shape[3])

    def _keras_input_shape(self) -> tuple[Any, ...]:
        if self.kind == "keras":
            return tuple(self.model.inputs[0].shape)
        signature = self.model.signatures["serving_default"]
        spec = next(iter(signature.structured_input_signature[1].values()))
        return tuple(spec.shape.as_list())

    def inferred_preprocessing(self) -> InferredPreprocessing:
        """Input size, and normalisation when a leading Rescaling layer fixes it."""
        height, width, _ = self.input_shape()
        if self.kind == "keras":
            import keras

            for layer in self.model.layers[:4]:
                if isinstance(layer, keras.layers.Rescaling):
                    return InferredPreprocessing(
                        height,
                        width,
                        mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0),
                        reason=f"the model starts with Rescaling (scale={layer.scale}, offset={layer.offset}): it takes raw 0..255 pixels",
                    )
        return InferredPreprocessing(height, width)

    # --- float reference ----------------------------------------------------------

    def float_scores(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Raw float outputs for a batch of preprocessed NHWC float inputs."""
        if self.kind == "keras":
            return np.asarray(self.model.predict(batch, batch_size=32, verbose=0), dtype=np.float32)
        if self.kind == "onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(self.onnx_fp32(), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            return np.concatenate(
                [session.run(None, {name: batch[i : i + 1]})[0] for i in range(len(batch))]
            ).astype(np.float32)
        function = self.model.signatures["serving_default"]
        key = next(iter(function.structured_input_signature[1]))
        outputs = [
            next(iter(function(**{key: batch[i : i + 32]}).values())).numpy()
            for i in range(0, len(batch), 32)
        ]
        return np.concatenate(outputs).astype(np.float32)

    # --- float conversions ---------------------------------------------------------

    def tflite_fp32(self) -> bytes:
        """A float32 TFLite flatbuffer with a batch-1 input."""
        import tensorflow as tf

        if self.kind == "onnx":
            raise UnsupportedModelError(
                f"{self.path}: TFLite output needs a Keras or SavedModel source; "
                "convert ONNX models with --formats onnx"
            )
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its signatures
            if self.kind == "keras":
                import keras

                height, width, channels = self.input_shape()
                image = keras.Input((height, width, channels), batch_size=1, name="image")
                fixed = keras.Model(
                    image, self.model(image, training=False), name="edgefleet_export"
                )
                converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
            else:
                converter = tf.lite.TFLiteConverter.from_saved_model(str(self.path))
            try:
                return bytes(converter.convert())
            except Exception as exc:
                raise UnsupportedModelError(
                    f"{self.path}: TFLite conversion failed: {exc}"
                ) from exc

    def onnx_fp32(self) -> bytes:
        """A float32 ONNX model (tf2onnx from a SavedModel for Keras and SavedModel sources)."""
        if self._onnx_fp32 is not None:
            return self._onnx_fp32
        if self.kind == "onnx":
            self._onnx_fp32 = self.path.read_bytes()
            return self._onnx_fp32
        with tempfile.TemporaryDirectory(prefix="edgefleet-onnx-") as tmp:
            saved = self.path
            if self.kind == "keras":
                # a fresh process: TensorFlow's name counters start at zero, so the bytes repeat
                saved = Path(tmp) / "savedmodel"
                _run(
                    [sys.executable, "-m", "converter._export", str(self.path), str(saved)],
                    self.path,
                    "SavedModel export",
                )
            out = Path(tmp) / "model.onnx"
            tf2onnx = [
                sys.executable,
                "-m",
                "tf2onnx.convert",
                "--saved-model",
                str(saved),
                "--output",
                str(out),
                "--opset",
                "17",
            ]
            _run(tf2onnx, self.path, "tf2onnx")
            self._onnx_fp32 = canonicalize(out.read_bytes())
        return self._onnx_fp32


def _run(command: list[str], model: Path, what: str) -> None:
    """Run a conversion step in a fresh process; a failure names the model and the step."""
    # a fixed hash seed: tf2onnx names shared constants in set-iteration order
    env = {**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise UnsupportedModelError(f"{model}: {what} failed:\n{tail}")


def load_source_model(path: Path) -> SourceModel:
    """Load ``.keras``/``.h5`` with Keras, a SavedModel folder with TensorFlow, ``.onnx`` with onnx."""
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist")
    try:
        if path.is_dir():
            if not (path / "saved_model.pb").exists():
                raise ModelLoadError(
                    f"{path} is a folder without saved_model.pb (not a SavedModel)"
                )
            import tensorflow as tf

            return SourceModel(path, "savedmodel", tf.saved_model.load(str(path)))
        suffix = path.suffix.lower()
        if suffix in {".keras", ".h5"}:
            import keras

            return SourceModel(path, "keras", keras.models.load_model(path, compile=False))
        if suffix == ".onnx":
            import onnx

            model = onnx.load_model_from_string(path.read_bytes())
            onnx.checker.check_model(model)
            return SourceModel(path, "onnx", model)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load model {path}: {type(exc).__name__}: {exc}") from exc
    raise ModelLoadError(
        f"{path}: unsupported model file (expected .keras, .h5, .onnx or a SavedModel folder)"
    )
