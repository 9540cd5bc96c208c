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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory):
    """A real Mosquitto broker on a free loopback port (default limits); yields the port."""
    import subprocess

    from tests.services import require_mosquitto

    binary = require_mosquitto()
    port = free_port()
    folder = tmp_path_factory.mktemp("mosquitto")
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def amqtt_broker():
    """The embedded amqtt broker (MQTT 3.1.1) in-process, on its own event loop thread; yields the port."""
    import asyncio
    import threading

    from amqtt.broker import Broker

    port = free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="amqtt", daemon=True)
    thread.start()

    async def start() -> Broker:
        broker = Broker(config)
        await broker.start()
        return broker

    broker = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        wait_for_port(port)
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
