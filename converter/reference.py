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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from converter.dataset import LabelledFolder
from edge_runtime.bundle import Preprocessing, TensorSpec
from edge_runtime.preprocess import Preprocessor

__all__ = [
    "REFERENCE_PREPROCESSING",
    "TrainedModel",
    "export_tflite_fp32",
    "load_tensors",
    "train_reference",
]

log = logging.getLogger(__name__)

Architecture = Literal["tiny", "mobilenetv2"]


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
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Train a reference classifier; flips are the only augmentation."""
    import keras

    keras.utils.set_random_seed(seed)
    contract = REFERENCE_PREPROCESSING(size)
    x_train, y_train = load_tensors(train, contract)
    validation = load_tensors(val, contract) if val is not None else None
    model = _build(arch, size, len(train.labels), alpha)
    steps = epochs * -(-len(x_train) // batch_size)
    # cosine decay: the last epochs settle, so the final weights are not caught mid-jump
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(seed)

    class _Report(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if on_epoch is not None:
                on_epoch(epoch, dict(logs or {}))

    for epoch in range(epochs):
        flip = rng.random(len(x_train)) < 0.5
        augmented = np.where(flip[:, None, None, None], x_train[:, :, ::-1], x_train)
        model.fit(
            augmented,
            y_train,
            batch_size=batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            validation_data=validation,
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
