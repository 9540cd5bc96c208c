"""Reference classifiers trained from scratch (``weights=None``) on a labelled image folder.

Users and tests need a real trained model and no pretrained weights can be
downloaded, so this trains one: ``tiny`` (a small depthwise-separable CNN that
learns the synthetic conveyor set in seconds) or ``mobilenetv2`` (Keras'
MobileNetV2 with its BatchNorm momentum lowered from 0.999 to 0.9, without
which a model trained for ~1k steps stays at chance in inference mode).
Training images go through ``edge_runtime``'s own preprocessing, so the model
learns exactly the tensors the device will feed it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from converter.dataset import LabelledFolder
from edge_runtime.bundle import Preprocessing, TensorSpec
from edge_runtime.preprocess import Preprocessor

__all__ = [
    "REFERENCE_PREPROCESSING",
    "Recipe",
    "TrainedModel",
    "augment_batch",
    "export_tflite_fp32",
    "inject_quantisation_noise",
    "load_tensors",
    "simulated_int8_agreement",
    "train_reference",
]

log = logging.getLogger(__name__)

Architecture = Literal["tiny", "mobilenetv2"]


@dataclass(frozen=True)
class Recipe:
    """How a reference model is trained.

    ``basic`` (flips, Adam, plain cross-entropy) learns the synthetic set in
    seconds. ``robust`` adds random resized crops and brightness/contrast
    jitter, decoupled weight decay and label smoothing: on TrashNet it
    generalises better and its decisions survive int8 quantisation noise
    better (figures in benchmarks/README.md).

    ``quant_noise`` > 0 trains with simulated int8 rounding noise (see
    :func:`inject_quantisation_noise`): uniform noise of that many int8
    steps on the input and on every activation tensor an int8 model
    quantises. Nothing of it is saved with the model.
    """

    crops: bool = False
    jitter: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    learning_rate: float = 2e-3
    quant_noise: float = 0.0

    @classmethod
    def named(cls, name: str) -> Recipe:
        """``basic`` or ``robust``."""
        if name == "basic":
            return cls()
        if name == "robust":
            return cls(crops=True, jitter=0.2, weight_decay=0.05, label_smoothing=0.1)
        raise ValueError(f"unknown training recipe {name!r}; choose basic or robust")


def _noise_layer(strength: float, name: str, always: bool = False) -> Any:
    """A Keras layer adding uniform noise of ``strength`` int8 steps, in training mode only
    (or ``always``)."""
    import keras
    from keras import ops

    class QuantNoise(keras.layers.Layer):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(zlib.crc32(name.encode()))

        def call(self, x: Any, training: bool | None = None) -> Any:
            if not (training or always):
                return x
            # the per-tensor range of this batch stands in for the calibrated range
            step = ops.stop_gradient(ops.max(x) - ops.min(x)) / 255.0
            noise = keras.random.uniform(ops.shape(x), -0.5, 0.5, seed=self.seed_generator)
            return x + noise * step * strength

    return QuantNoise(name=name)


def _quantised_outputs(model: Any) -> list[Any]:
    """The layers whose output an int8 converter stores as its own int8 tensor.

    Activations (ReLU), residual adds, and BatchNorms that no activation
    follows (MobileNetV2's linear bottlenecks); a BatchNorm feeding a ReLU is
    folded into the convolution and only the ReLU's output is quantised.
    """
    import keras

    picked = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Add)):
            picked.append(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            consumers = [node.operation for node in layer._outbound_nodes]
            if not any(isinstance(c, keras.layers.ReLU) for c in consumers):
                picked.append(layer)
    return picked


def inject_quantisation_noise(model: Any, strength: float, *, always: bool = False) -> int:
    """Make ``model`` add int8-like rounding noise to its quantised tensors while training.

    Patches the ``call`` of each layer :func:`_quantised_outputs` picks (in
    nested models too) so that, in training mode only, its output gets
    uniform noise of ``strength`` int8 steps (``always``: in inference
    too, to measure a trained model). Inference is otherwise unchanged and
    saving writes the plain layers. A network trained this way keeps its
    decisions when the converter rounds every activation to int8: the
    training loss sees that perturbation and widens the margins it flips.
    Returns how many layers were patched.
    """
    import keras

    patched = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            patched += inject_quantisation_noise(layer, strength, always=always)
    for layer in _quantised_outputs(model):
        noise = _noise_layer(strength, f"{layer.name}_qnoise", always)
        original = layer.call

        def call(*args: Any, _original: Any = original, _noise: Any = noise, **kwargs: Any) -> Any:
            return _noise(_original(*args, **kwargs))

        layer.call = call
        patched += 1
    return patched


def simulated_int8_agreement(
    model_path: Path,
    images: npt.NDArray[np.float32],
    *,
    strength: float = 1.0,
    draws: int = 4,
    batch_size: int = 16,
) -> tuple[float, list[float]]:
    """How often a trained model keeps its top-1 answer under simulated int8 rounding noise.

    Takes the float answers on ``images`` (preprocessed, NHWC), then adds
    noise of ``strength`` int8 steps on every quantised tensor in inference
    (the step taken from each batch's range) and answers again per draw. Returns (the mean agreement, each draw's). Unlike
    one real int8 conversion, whose agreement on a few hundred photos moves
    by a point with a 0.1% change of the calibration ranges, the mean over
    draws compares how sensitive two models are; noise of 1 step lands
    close to what LiteRT and ONNX Runtime int8 give.
    """
    import keras

    model = keras.models.load_model(model_path, compile=False)
    answers = np.argmax(model.predict(images, batch_size=batch_size, verbose=0), axis=1)
    inject_quantisation_noise(model, strength, always=True)
    agreements = []
    for _ in range(draws):
        scores = np.concatenate(
            [
                np.asarray(model(images[i : i + batch_size], training=False))
                for i in range(0, len(images), batch_size)
            ]
        )
        agreements.append(float(np.mean(np.argmax(scores, axis=1) == answers)))
    return float(np.mean(agreements)), agreements


def augment_batch(
    x: npt.NDArray[np.float32], rng: np.random.Generator, recipe: Recipe
) -> npt.NDArray[np.float32]:
    """A randomly augmented copy of preprocessed NHWC images in [-1, 1].

    Always a horizontal flip with probability 1/2; with ``recipe.crops`` a
    random crop of 50-100% of the area (aspect 3/4..4/3) resized back to the
    input size; with ``recipe.jitter`` a random brightness shift and contrast
    scale of up to that fraction; with ``recipe.quant_noise`` uniform noise
    of that many int8 input steps (2/255). Values stay in [-1, 1] (give or
    take that noise), the range the preprocessing contract produces.
    """
    import cv2

    out = np.empty_like(x)
    n, height, width = x.shape[:3]
    for i in range(n):
        image = x[i]
        if recipe.crops:
            area = rng.uniform(0.5, 1.0) * height * width
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            h = int(min(height, round(np.sqrt(area / aspect))))
            w = int(min(width, round(np.sqrt(area * aspect))))
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            image = cv2.resize(
                image[top : top + h, left : left + w], (width, height), interpolation=cv2.INTER_AREA
            )
        if rng.random() < 0.5:
            image = image[:, ::-1]
        if recipe.jitter:
            scale = 1.0 + rng.uniform(-recipe.jitter, recipe.jitter)
            shift = rng.uniform(-recipe.jitter, recipe.jitter)
            image = np.clip(image * scale + shift, -1.0, 1.0)
        out[i] = image
    if recipe.quant_noise:
        # the int8 input grid of [-1, 1] has a step of 2/255
        out += rng.uniform(-0.5, 0.5, out.shape).astype(np.float32) * (2 / 255) * recipe.quant_noise
    return out


def REFERENCE_PREPROCESSING(size: int) -> Preprocessing:  # noqa: N802 - reads as a constant
    """The contract reference models are trained with: stretch, area, RGB, scaled to [-1, 1]."""
    return Preprocessing(
        height=size,
        width=size,
        resize="stretch",
        interpolation="area",
        color_order="rgb",
        layout="nhwc",
        mean=(127.5, 127.5, 127.5),
        std=(127.5, 127.5, 127.5),
    )


def float_input_spec(size: int) -> TensorSpec:
    """The float32 NHWC input of a reference model."""
    return TensorSpec(name="image", shape=[1, size, size, 3], dtype="float32")


def load_tensors(
    folder: LabelledFolder, contract: Preprocessing, progress: Callable[[int], None] | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Every image of ``folder`` preprocessed into one float32 array, with its labels."""
    pre = Preprocessor(contract, float_input_spec(contract.height))
    xs: list[npt.NDArray[Any]] = []
    ys: list[int] = []
    for _, frame, label in folder.frames():
        xs.append(pre(frame)[0])
        ys.append(label)
        if progress is not None:
            progress(1)
    return np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64)


def _build(arch: Architecture, size: int, classes: int, alpha: float) -> Any:
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    if arch == "mobilenetv2":
        backbone = keras.applications.MobileNetV2(
            input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None, pooling="avg"
        )
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        x = backbone(inputs)
    else:
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU(6.0)(x)
        for filters in (32, 64, 96):
            x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
            x = keras.layers.ReLU(6.0)(x)
            x = keras.layers.Conv2D(filters, 1, use_bias=False)(x)
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
            x = keras.layers.ReLU(6.0)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name=f"reference_{arch}")


@dataclass
class TrainedModel:
    """A trained Keras model with the contract it was trained under and its validation accuracy."""

    model: Any
    preprocessing: Preprocessing
    labels: list[str]
    val_accuracy: float | None


def train_reference(
    train: LabelledFolder,
    val: LabelledFolder | None,
    *,
    arch: Architecture = "tiny",
    size: int = 96,
    epochs: int = 8,
    alpha: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    recipe: Recipe | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Train a reference classifier with ``recipe`` (default ``basic``: flips only)."""
    import keras

    recipe = recipe or Recipe()
    keras.utils.set_random_seed(seed)
    contract = REFERENCE_PREPROCESSING(size)
    x_train, y_train = load_tensors(train, contract)
    validation = load_tensors(val, contract) if val is not None else None
    model = _build(arch, size, len(train.labels), alpha)
    if recipe.quant_noise:
        patched = inject_quantisation_noise(model, recipe.quant_noise)
        log.info("training with int8 rounding noise on the input and %d activations", patched)
    steps = epochs * -(-len(x_train) // batch_size)
    # cosine decay: the last epochs settle, so the final weights are not caught mid-jump
    schedule = keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate, decay_steps=steps, alpha=0.02
    )
    optimizer = (
        keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)
        if recipe.weight_decay
        else keras.optimizers.Adam(schedule)
    )
    classes = len(train.labels)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    y_onehot = np.eye(classes, dtype=np.float32)[y_train]
    val_onehot = (
        (validation[0], np.eye(classes, dtype=np.float32)[validation[1]])
        if validation is not None
        else None
    )
    rng = np.random.default_rng(seed)

    class _Report(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if on_epoch is not None:
                on_epoch(epoch, dict(logs or {}))

    for epoch in range(epochs):
        augmented = augment_batch(x_train, rng, recipe)
        model.fit(
            augmented,
            y_onehot,
            batch_size=batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            validation_data=val_onehot,
            shuffle=True,
            verbose=0,
            callbacks=[_Report()],
        )
    accuracy = None
    if validation is not None:
        predictions = model.predict(validation[0], batch_size=64, verbose=0)
        accuracy = float(np.mean(np.argmax(predictions, axis=1) == validation[1]))
        log.info("reference %s: validation accuracy %.3f", arch, accuracy)
    return TrainedModel(
        model=model, preprocessing=contract, labels=train.labels, val_accuracy=accuracy
    )


def export_tflite_fp32(model: Any, size: int) -> bytes:
    """A float32 TFLite flatbuffer with a fixed ``[1, size, size, 3]`` input.

    Goes through a batch-1 Keras wrapper and ``from_keras_model``: a plain
    ``tf.function`` over a Keras 3 model converts, but to NaN outputs.
    """
    import keras
    import tensorflow as tf

    image = keras.Input((size, size, 3), batch_size=1, name="image")
    fixed = keras.Model(image, model(image, training=False))
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its signatures
        return bytes(tf.lite.TFLiteConverter.from_keras_model(fixed).convert())
