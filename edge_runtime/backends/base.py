"""The one small interface every inference backend implements, and what a backend says about itself."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.errors import BackendUnavailableError

__all__ = ["Backend"]


class Backend(ABC):
    """Runs one model. Not thread-safe: use one instance per thread.

    Subclasses load the model from bytes in ``__init__`` with ``threads``
    intra-op threads, and describe the tensors the runtime actually sees.

    A backend is a plug-in: the class states its facts below, once, and one line
    in the ``edgefleet.backends`` entry-point group declares it under ``name``.
    Its module must import the runtime package lazily (in ``__init__``), so that
    the registry can read these facts on a box where the package is missing.
    """

    name: ClassVar[str]
    """The key in configs and on the command line; the entry point's name."""
    formats: ClassVar[frozenset[str]]
    """Model formats it runs (``tflite``, ``onnx``)."""
    package: ClassVar[str]
    """The pip package that provides the runtime (named in 'not installed' errors)."""
    module: ClassVar[str]
    """The module the runtime is imported from; its top-level package present means installed."""
    priority: ClassVar[int] = 100
    """``auto`` takes the installed backend with the lowest priority for the model's format."""

    @classmethod
    def installed(cls) -> bool:
        """Whether the runtime package is importable here (found, not imported)."""
        return importlib.util.find_spec(cls.module.partition(".")[0]) is not None

    @classmethod
    def unavailable(cls) -> BackendUnavailableError:
        """The error for a box without the runtime: it names the package to install."""
        return BackendUnavailableError(
            f"backend {cls.name!r} needs the {cls.package!r} package (pip install {cls.package})"
        )

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @abstractmethod
    def __init__(self, model: bytes, threads: int = 1) -> None: ...

    @abstractmethod
    def invoke(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        """Run the model on one input tensor; return the outputs in ``outputs`` order."""

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes free on GC
        """Release native resources early (optional)."""
