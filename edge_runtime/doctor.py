"""What a camera box actually runs: installed packages against the lock, backends, CPU features.

``edgefleet device doctor`` prints this; an operator runs it after an install
(or from the fleet's remote shell) to prove that the box runs exactly the
locked set, that the installed files are the ones the wheels brought, which
inference backends load and whether LiteRT applies XNNPACK, and which CPU
features the int8 kernels can use.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from edge_runtime.backends import backend_classes
from edge_runtime.errors import LockFileError
from edge_runtime.lockfile import LockComparison, applicable_pins, compare, parse_lock

__all__ = [
    "BackendCheck",
    "CpuInfo",
    "FileCheck",
    "PackagesCheck",
    "check_backends",
    "check_files",
    "check_packages",
    "cpu_info",
    "find_lock",
    "installed_distributions",
]

PROJECT = "edgefleet"
LOCK_ENV = "EDGEFLEET_LOCK"
# Where the install instructions (docs/operations.md) put the device lock on a box.
INSTALLED_LOCK = Path("/opt/edgefleet/device.lock.txt")
# CPU features that decide which int8/fp32 kernels XNNPACK and ONNX Runtime can use.
_INTERESTING = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16",
    "avx_vnni", "amx_int8", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2",
)  # fmt: skip


def find_lock(explicit: Path | None) -> Path:
    """The lock to check: ``--lock``, then ``$EDGEFLEET_LOCK``, the box's installed copy, a checkout's."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    elif os.environ.get(LOCK_ENV):
        candidates.append(Path(os.environ[LOCK_ENV]))
    else:
        candidates.append(INSTALLED_LOCK)
        candidates.append(Path.cwd() / "locks" / "device.lock.txt")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise LockFileError(f"no lock file found (tried {tried}); give one with --lock")


def installed_distributions() -> dict[str, importlib.metadata.Distribution]:
    """Every distribution this interpreter can import, by canonical name (first on sys.path wins)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist)
    return found


@dataclass(frozen=True)
class PackagesCheck:
    """The installed set against one lock, for this interpreter and platform."""

    lock: str
    environment: str
    locked_here: int
    """How many of the lock's pins apply to this interpreter (0: the lock does not cover it)."""
    comparison: LockComparison

    @property
    def ok(self) -> bool:
        return self.locked_here > 0 and self.comparison.exact


def _environment_text() -> str:
    return f"Python {platform.python_version()} on {sys.platform} {platform.machine()}"


def check_packages(lock: Path) -> PackagesCheck:
    """Read ``lock`` and compare its pins for this interpreter with what is installed."""
    try:
        text = lock.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LockFileError(f"cannot read {lock}: {exc}") from exc
    pins = applicable_pins(parse_lock(text, source=str(lock)))
    installed = {name: dist.version for name, dist in installed_distributions().items()}
    return PackagesCheck(
        lock=str(lock),
        environment=_environment_text(),
        locked_here=len(pins),
        comparison=compare(pins, installed, ignore=[PROJECT]),
    )


@dataclass(frozen=True)
class FileCheck:
    """Installed files of the locked packages against the hashes in each wheel's RECORD."""

    checked: int
    modified: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.modified or self.missing)


def _record_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def check_files(names: Iterable[str]) -> FileCheck:
    """Hash every file the RECORD of each named distribution lists with a sha256 (bytecode aside)."""
    dists = installed_distributions()
    checked = 0
    modified: list[str] = []
    missing: list[str] = []
    for name in sorted(names):
        dist = dists.get(canonicalize_name(name))
        if dist is None:
            continue
        for entry in dist.files or ():
            if entry.hash is None or entry.hash.mode != "sha256" or entry.suffix == ".pyc":
                # bytecode is rewritten by the interpreter whenever its source is newer
                continue
            path = Path(str(dist.locate_file(entry)))
            checked += 1
            try:
                if _record_digest(path) != entry.hash.value:
                    modified.append(f"{name}: {entry}")
            except FileNotFoundError:
                missing.append(f"{name}: {entry}")
    return FileCheck(checked=checked, modified=tuple(modified), missing=tuple(missing))


@dataclass(frozen=True)
class BackendCheck:
    """One registered inference backend on this box."""

    name: str
    package: str
    installed: bool
    version: str | None
    detail: str = ""
    """ONNX Runtime's execution providers, or why the backend cannot load."""


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_backends() -> list[BackendCheck]:
    """Each backend in the registry: is its package importable, which version, which providers."""
    checks: list[BackendCheck] = []
    for name, cls in backend_classes().items():
        installed = cls.installed()
        detail = ""
        if installed and cls.module == "onnxruntime":
            try:
                import onnxruntime

                detail = "providers: " + ", ".join(onnxruntime.get_available_providers())
            except ImportError as exc:  # installed but broken (a missing shared library)
                installed, detail = False, f"cannot import: {exc}"
        checks.append(
            BackendCheck(
                name=name,
                package=cls.package,
                installed=installed,
                version=_version(cls.package) if installed else None,
                detail=detail,
            )
        )
    return checks


@dataclass(frozen=True)
class CpuInfo:
    """The processor as the kernels see it."""

    machine: str
    model: str
    cores: int
    usable_cores: int
    features: tuple[str, ...] = field(default=())
    """The int8/fp32-relevant features present (see ``_INTERESTING``)."""
    int8_dot_product: bool = False
    """VNNI (x86) or the dot-product extension (ARM): XNNPACK's fast int8 path."""


def cpu_info(cpuinfo_text: str | None = None) -> CpuInfo:
    """Parse ``/proc/cpuinfo`` (or the given text) for the model name and feature flags."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo_text = ""
    model = ""
    flags: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in {"model name", "hardware", "cpu model"} and not model:
            model = value.strip()
        elif key in {"flags", "features"}:
            flags.update(value.split())
    present = tuple(feature for feature in _INTERESTING if feature in flags)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return CpuInfo(
        machine=platform.machine(),
        model=model or platform.processor() or "unknown",
        cores=os.cpu_count() or 1,
        usable_cores=usable,
        features=present,
        int8_dot_product=bool(flags & {"avx512_vnni", "avx_vnni", "asimddp"}),
    )
