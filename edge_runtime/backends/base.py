"""The one small interface every inference backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from edge_runtime.bundle.manifest import TensorSpec

__all__ = ["Backend"]


class Backend(ABC):
    """Runs one model. Not thread-safe: use one instance per thread.

    Subclasses load the model from bytes in ``__init__`` with ``threads``
    intra-op threads, and describe the tensors the runtime actually sees.
    """

    name: ClassVar[str]
    formats: ClassVar[frozenset[str]]
    package: ClassVar[str]
    """The pip package that provides the runtime (named in 'not installed' errors)."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @abstractmethod
    def __init__(self, model: bytes, threads: int = 1) -> None: ...

    @abstractmethod
    def invoke(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        """Run the model on one input tensor; return the outputs in ``outputs`` order."""

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes free on GC
        """Release native resources early (optional)."""
