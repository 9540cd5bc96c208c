"""The locked dependency sets (``locks/*.txt``) read as plain values, and compared with what is installed.

A lock is a hashed requirements file written by ``uv pip compile --universal``
(``make lock``): one ``name==version ; marker`` line per package and fork, each
followed by its ``--hash`` options. :func:`parse_lock` takes the text and does
no I/O; :func:`compare` takes the pins and a mapping of installed versions, so
``edgefleet device doctor`` and the tests share one judgement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from edge_runtime.errors import LockFileError

__all__ = ["LockComparison", "LockedPin", "applicable_pins", "compare", "parse_lock"]

_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
# What a fresh venv brings and what installs the project itself; not part of a role's set.
INSTALLERS = frozenset({"pip", "setuptools", "wheel"})


@dataclass(frozen=True)
class LockedPin:
    """One ``name==version`` line of a lock, with its environment marker and allowed hashes."""

    name: str
    """Canonical (PEP 503) distribution name."""
    version: str
    marker: str | None
    hashes: tuple[str, ...]
    line: int

    def applies(self, environment: Mapping[str, str] | None = None) -> bool:
        """Whether this pin is for ``environment`` (default: this interpreter)."""
        if self.marker is None:
            return True
        return Marker(self.marker).evaluate(dict(environment) if environment else None)


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Join backslash continuations and drop comments; yield (first line number, text)."""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer.append(line[:-1])
            continue
        buffer.append(line)
        joined = " ".join(part.strip() for part in buffer).strip()
        buffer = []
        if joined:
            yield start, joined
    if buffer and " ".join(buffer).strip():
        yield start, " ".join(part.strip() for part in buffer).strip()


def parse_lock(text: str, source: str = "lock") -> list[LockedPin]:
    """Every pin in a hashed requirements lock; raise :class:`LockFileError` naming the line."""
    pins: list[LockedPin] = []
    for number, line in _logical_lines(text):
        if line.startswith("-"):
            raise LockFileError(f"{source}:{number}: options are not allowed in a lock: {line}")
        hashes = tuple(_HASH.findall(line))
        spec = _HASH.sub("", line).strip()
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as exc:
            raise LockFileError(f"{source}:{number}: not a requirement: {exc}") from exc
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            raise LockFileError(
                f"{source}:{number}: {requirement.name} is not pinned to one version (name==x.y.z)"
            )
        if not hashes:
            raise LockFileError(f"{source}:{number}: {requirement.name} has no --hash")
        pins.append(
            LockedPin(
                name=canonicalize_name(requirement.name),
                version=specifiers[0].version,
                marker=str(requirement.marker) if requirement.marker else None,
                hashes=hashes,
                line=number,
            )
        )
    if not pins:
        raise LockFileError(f"{source}: holds no pinned requirements")
    return pins


def applicable_pins(
    pins: Iterable[LockedPin], environment: Mapping[str, str] | None = None
) -> dict[str, LockedPin]:
    """The pins for one environment, by name; a lock that pins a name twice there is refused."""
    chosen: dict[str, LockedPin] = {}
    for pin in pins:
        if not pin.applies(environment):
            continue
        if pin.name in chosen:
            raise LockFileError(
                f"{pin.name} is pinned twice for this environment "
                f"(lines {chosen[pin.name].line} and {pin.line})"
            )
        chosen[pin.name] = pin
    return chosen


@dataclass(frozen=True)
class LockComparison:
    """What is installed against what the lock pins for this environment."""

    matched: tuple[str, ...]
    missing: tuple[str, ...]
    """Locked for this environment, not installed."""
    different: tuple[tuple[str, str, str], ...]
    """(name, locked version, installed version)."""
    extra: tuple[tuple[str, str], ...]
    """Installed, not in the lock: (name, version)."""
    ignored: tuple[tuple[str, str], ...] = field(default=())
    """Installers and the project itself, reported but never a mismatch."""

    @property
    def exact(self) -> bool:
        """The installed set is the locked set, package for package, version for version."""
        return not (self.missing or self.different or self.extra)


def _same_version(locked: str, installed: str) -> bool:
    try:
        return Version(locked) == Version(installed)
    except InvalidVersion:
        return locked == installed


def compare(
    pins: Mapping[str, LockedPin],
    installed: Mapping[str, str],
    ignore: Iterable[str] = (),
) -> LockComparison:
    """Compare the applicable ``pins`` with ``installed`` (canonical name -> version).

    Names in ``ignore`` (the project's own distribution) and the installers
    (pip, setuptools, wheel) are never counted as extra; when the lock pins an
    installer, its version is still checked.
    """
    skip = {canonicalize_name(name) for name in ignore}
    matched: list[str] = []
    missing: list[str] = []
    different: list[tuple[str, str, str]] = []
    for name, pin in sorted(pins.items()):
        version = installed.get(name)
        if version is None:
            missing.append(name)
        elif _same_version(pin.version, version):
            matched.append(name)
        else:
            different.append((name, pin.version, version))
    extra: list[tuple[str, str]] = []
    ignored: list[tuple[str, str]] = []
    for name, version in sorted(installed.items()):
        if name in pins:
            continue
        if name in skip or name in INSTALLERS:
            ignored.append((name, version))
        else:
            extra.append((name, version))
    return LockComparison(
        matched=tuple(matched),
        missing=tuple(missing),
        different=tuple(different),
        extra=tuple(extra),
        ignored=tuple(ignored),
    )
