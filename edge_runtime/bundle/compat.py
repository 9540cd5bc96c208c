"""Which runtime a bundle needs: ``compatibility.min_runtime_version`` against this runtime.

A bundle names the oldest runtime that can run it: :func:`~edge_runtime.bundle.fields.required_runtime`,
the newest "since" version among the manifest fields it carries
(:data:`~edge_runtime.bundle.fields.FIELDS_SINCE`; a runtime refuses a manifest with a field it does not
know). Three places check it:

- the fleet server leaves a device that reported an older runtime out of the
  rollout, with the reason (:mod:`fleet_server.rollout_plan`), as Mender does
  with an artifact that does not fit a device;
- the device refuses to install such a bundle, with the reason, when it gets
  one anyway (a device that never reported its version);
- a manifest that an older runtime cannot even parse (a field added after it)
  names the runtime it needs in its error, rather than only the unknown field.

Versions compare by semantic-version precedence: numbers first, a
pre-release (``1.2.0-rc.1``) before its release, build metadata (``+...``)
ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from edge_runtime import __version__

__all__ = [
    "compatibility_problem",
    "declared_min_runtime",
    "runtime_too_old",
    "version_key",
]

_VERSION = re.compile(
    r"^(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)

VersionKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def version_key(version: str) -> VersionKey:
    """A sort key giving semantic-version precedence; ValueError for a malformed version."""
    found = _VERSION.match(version)
    if found is None:
        raise ValueError(f"{version!r} is not a version like 1.2.3")
    pre = found["pre"]
    # a release sorts after every pre-release of it; numeric identifiers before alphanumeric
    parts = tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in (pre or "").split(".") if pre
    )
    return (int(found["major"]), int(found["minor"]), int(found["patch"]), 0 if pre else 1, parts)


def runtime_too_old(needed: str, runtime: str = __version__) -> bool:
    """Whether ``runtime`` is older than the ``needed`` version (malformed: ValueError)."""
    return version_key(runtime) < version_key(needed)


def compatibility_problem(needed: str, runtime: str | None = __version__) -> str | None:
    """Why a runtime cannot take a bundle that needs ``needed``, or None when it can (or when
    ``runtime`` is None or malformed: unknown, so not refused here)."""
    if runtime is None:
        return None
    try:
        if not runtime_too_old(needed, runtime):
            return None
    except ValueError:
        return None
    return f"the bundle needs edge_runtime >= {needed}; this runtime is {runtime}"


def declared_min_runtime(data: Mapping[str, Any]) -> str | None:
    """``compatibility.min_runtime_version`` of a raw (not yet validated) manifest, when it is a
    well-formed version; None otherwise."""
    compatibility = data.get("compatibility")
    if not isinstance(compatibility, Mapping):
        return None
    needed = compatibility.get("min_runtime_version")
    if not isinstance(needed, str) or _VERSION.match(needed) is None:
        return None
    return needed
