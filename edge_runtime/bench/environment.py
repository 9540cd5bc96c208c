"""Where a benchmark ran: CPU model, cores, OS, Python and library versions.

Read from ``/proc/cpuinfo`` and package metadata; nothing is imported to find
a version, so describing the environment loads no runtime.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = ["Environment", "collect_environment"]

_PACKAGES = (
    "edgefleet",
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "ai-edge-litert",
    "tflite-runtime",
    "onnxruntime",
    "tensorflow-cpu",
    "tensorflow",
)


@dataclass(frozen=True)
class Environment:
    """The machine and software a report was made on."""

    cpu_model: str
    logical_cores: int
    usable_cores: int
    machine: str
    system: str
    python: str
    libraries: dict[str, str] = field(default_factory=dict)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def collect_environment() -> Environment:
    """Describe this machine and the installed inference libraries."""
    libraries = {name: v for name in _PACKAGES if (v := _version(name)) is not None}
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return Environment(
        cpu_model=_cpu_model(),
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable,
        machine=platform.machine(),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        libraries=libraries,
    )
