"""Shared fixtures: tiny real models and valid bundles built from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle import (
    GoldenSet,
    GoldenVector,
    ManifestSpec,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    TensorSpec,
    build_bundle,
    encode_frame,
)
from edgefleet.testing.broker import LocalBroker
from tests.models import LABELS, SIZE, tiny_onnx_model, tiny_tflite_model

pytest_plugins = ["tests.postgres"]


@pytest.fixture(scope="session")
def tflite_model() -> bytes:
    return tiny_tflite_model()


@pytest.fixture(scope="session")
def onnx_model() -> bytes:
    return tiny_onnx_model()


def golden_frame(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A deterministic BGR uint8 frame."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def manifest_for(
    model_format: str = "onnx", names: tuple[str, str] = ("image", "logits"), **overrides: Any
) -> ManifestSpec:
    """A valid manifest for the tiny models (golden vectors reference golden/000.npy, 001)."""
    in_name, out_name = names
    fields: dict[str, Any] = {
        "name": "tiny-classifier",
        "version": "1.0.0",
        "description": "test model",
        "model": ModelSpec(
            file=f"model.{model_format}",
            format=model_format,  # type: ignore[arg-type]
            precision="fp32",
            inputs=[TensorSpec(name=in_name, shape=[1, SIZE, SIZE, 3], dtype="float32")],
            outputs=[TensorSpec(name=out_name, shape=[1, len(LABELS)], dtype="float32")],
        ),
        "preprocessing": Preprocessing(
            height=SIZE, width=SIZE, mean=(0, 0, 0), std=(255, 255, 255)
        ),
        "labels": LABELS,
        "postprocessing": Postprocessing(apply_softmax=model_format == "onnx", top_k=3),
        "golden": GoldenSet(
            atol=1e-3,
            vectors=[
                GoldenVector(input=f"golden/{i:03d}.npy", expected=[1 / 6] * 6, label=LABELS[i])
                for i in range(2)
            ],
        ),
    }
    fields.update(overrides)
    return ManifestSpec(**fields)


def members_for(model: bytes, model_format: str = "onnx") -> dict[str, bytes]:
    return {
        f"model.{model_format}": model,
        "golden/000.npy": encode_frame(golden_frame(0)),
        "golden/001.npy": encode_frame(golden_frame(1)),
    }


@pytest.fixture
def make_bundle(onnx_model: bytes) -> Callable[..., bytes]:
    """Build valid bundle bytes (ONNX tiny model) with manifest overrides.

    Compressed like every canonical bundle; ``compress=False`` gives the plain
    ustar archive, for tests that edit the archive's structure byte by byte.
    """

    def make(*, compress: bool = True, **overrides: Any) -> bytes:
        return build_bundle(
            manifest_for("onnx", **overrides), members_for(onnx_model, "onnx"), compress=compress
        )

    return make


@pytest.fixture
def valid_bundle(make_bundle: Callable[..., bytes]) -> bytes:
    """A canonical (gzip-compressed) bundle."""
    return make_bundle()


@pytest.fixture
def plain_bundle(make_bundle: Callable[..., bytes]) -> bytes:
    """The same bundle as a plain ustar archive (``compress=False``)."""
    return make_bundle(compress=False)


# --- real MQTT brokers on loopback --------------------------------------------------
# The brokers themselves are the test kit's (edgefleet.testing, its pytest plug-in gives
# mosquitto_broker and mqtt_broker); most tests need only the port.


@pytest.fixture
def mosquitto(mosquitto_broker: LocalBroker) -> int:
    """A real Mosquitto broker on a free loopback port (default limits); its port."""
    return mosquitto_broker.port


@pytest.fixture
def amqtt_broker(mqtt_broker: LocalBroker) -> int:
    """The embedded amqtt broker (MQTT 3.1.1) in-process, on its own event loop thread; its port."""
    return mqtt_broker.port
