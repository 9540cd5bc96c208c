"""The synthetic bundle a fleet benchmark rolls out when it is given none."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.bundle import (
    ManifestSpec,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    TensorSpec,
    build_bundle,
)

__all__ = ["synthetic_bundle"]


def synthetic_bundle(path: Path, size_mb: float, version: str = "1.0.0") -> Path:
    """A valid bundle whose model member is ``size_mb`` MB of random bytes behind a TFLite header.

    Simulated devices check its signature, length and hash like any bundle;
    nothing ever runs it (its name and description say so).
    """
    wanted = int(size_mb * 1_000_000)
    size = max(64, wanted - 4096)
    data = _payload_bundle(size, version)
    if len(data) > wanted:  # the archive's records and manifest: take their size off the model
        data = _payload_bundle(max(64, size - (len(data) - wanted) - 10240), version)
    path.write_bytes(data)
    return path


def _payload_bundle(size: int, version: str) -> bytes:
    payload = bytearray(np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes())
    payload[4:8] = b"TFL3"
    manifest = ManifestSpec(
        name="fleet-bench-payload",
        version=version,
        description="synthetic payload for `edgefleet bench fleet`: verified, never run",
        model=ModelSpec(
            file="model.tflite",
            format="tflite",
            precision="int8",
            inputs=[TensorSpec(name="input", shape=[1, 224, 224, 3], dtype="uint8")],
            outputs=[TensorSpec(name="scores", shape=[1, 6], dtype="float32")],
        ),
        preprocessing=Preprocessing(height=224, width=224),
        labels=["cardboard", "glass", "metal", "paper", "plastic", "trash"],
        postprocessing=Postprocessing(apply_softmax=False),
    )
    # random bytes do not compress: a plain archive keeps the size exact and packing fast
    return build_bundle(manifest, {"model.tflite": bytes(payload)}, compress=False)
