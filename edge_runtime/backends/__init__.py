"""Inference backends behind one interface, chosen through a registry.

A backend module is imported only when it is used, so a device without one
runtime still runs the others; ``auto`` picks the first installed backend
for the model's format.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from edge_runtime.backends.base import Backend
from edge_runtime.errors import BackendError, BackendUnavailableError

__all__ = ["BACKENDS", "Backend", "available_backends", "backend_class", "create_backend"]


@dataclass(frozen=True)
class _Entry:
    module: str
    attribute: str
    import_name: str
    """Top-level module whose presence means the backend can load."""
    package: str
    """The pip package to install for it."""
    formats: frozenset[str]


_TFLITE = frozenset({"tflite"})
# Insertion order is the preference order of ``auto``.
BACKENDS: dict[str, _Entry] = {
    "litert": _Entry(
        "edge_runtime.backends.tflite", "LiteRTBackend", "ai_edge_litert", "ai-edge-litert", _TFLITE
    ),
    "tflite-runtime": _Entry(
        "edge_runtime.backends.tflite",
        "TFLiteRuntimeBackend",
        "tflite_runtime",
        "tflite-runtime",
        _TFLITE,
    ),
    "tf-lite": _Entry(
        "edge_runtime.backends.tflite",
        "TFLiteTensorFlowBackend",
        "tensorflow",
        "tensorflow-cpu",
        _TFLITE,
    ),
    "onnxruntime": _Entry(
        "edge_runtime.backends.onnx",
        "OnnxRuntimeBackend",
        "onnxruntime",
        "onnxruntime",
        frozenset({"onnx"}),
    ),
}


def backend_class(name: str) -> type[Backend]:
    """The backend class registered under ``name`` (imports its module)."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    cls: type[Backend] = getattr(importlib.import_module(entry.module), entry.attribute)
    return cls


def available_backends(model_format: str | None = None) -> list[str]:
    """Registered backends whose package is installed (optionally: that read ``model_format``)."""
    return [
        name
        for name, entry in BACKENDS.items()
        if (model_format is None or model_format in entry.formats)
        and importlib.util.find_spec(entry.import_name) is not None
    ]


def create_backend(name: str, model_format: str, model: bytes, threads: int = 1) -> Backend:
    """Load ``model`` with backend ``name`` (or ``auto``: the first installed one for the format)."""
    if name == "auto":
        candidates = available_backends(model_format)
        if not candidates:
            wanted = [
                f"{n} ({e.package})" for n, e in BACKENDS.items() if model_format in e.formats
            ]
            raise BackendUnavailableError(
                f"no backend for {model_format} models is installed; install one of: "
                + ", ".join(wanted)
            )
        name = candidates[0]
    cls = backend_class(name)
    if model_format not in cls.formats:
        raise BackendError(f"backend {name!r} cannot run {model_format} models")
    return cls(model, threads=threads)
