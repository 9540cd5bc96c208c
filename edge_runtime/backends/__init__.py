"""Inference backends behind one interface, found through the ``edgefleet.backends`` entry points.

A backend is one :class:`Backend` subclass that states its name, formats, pip
package and runtime module, declared by one entry-point line (edgefleet's own
in its ``pyproject.toml``). Backend modules import their runtime only when a
model is loaded, so a device without one runtime still runs the others;
``auto`` picks the installed backend with the lowest ``priority`` for the
model's format.
"""

from __future__ import annotations

import logging

from edge_runtime.backends.base import Backend
from edge_runtime.errors import BackendError, BackendUnavailableError
from edge_runtime.plugins import (
    BACKENDS_GROUP,
    describe_installed,
    find_entry_point,
    installed_names,
    load_entry_point,
)

__all__ = [
    "BACKENDS_GROUP",
    "Backend",
    "available_backends",
    "backend_class",
    "backend_classes",
    "backend_names",
    "create_backend",
]

log = logging.getLogger(__name__)


def backend_names() -> list[str]:
    """The declared backends' names, sorted (nothing is imported)."""
    return installed_names(BACKENDS_GROUP)


def backend_class(name: str) -> type[Backend]:
    """The backend class declared under ``name`` (imports its module, not its runtime)."""
    ep = find_entry_point(BACKENDS_GROUP, name)
    if ep is None:
        raise BackendError(
            f"unknown backend {name!r}: no entry point in group {BACKENDS_GROUP!r}"
            f" ({describe_installed(BACKENDS_GROUP)})"
        )
    cls = load_entry_point(ep, "backend", BackendError)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(f"backend {name!r} ({ep.value}) is not a Backend subclass")
    if cls.name != name:
        raise BackendError(
            f"backend entry point {name!r} names {ep.value}, whose name is {cls.name!r}"
        )
    return cls


def backend_classes() -> dict[str, type[Backend]]:
    """Every declared backend that loads, in ``auto``'s order of preference (priority, then name).

    A declared backend whose module does not import is logged and left out, so
    one broken plug-in never hides the others.
    """
    classes: list[type[Backend]] = []
    for name in backend_names():
        try:
            classes.append(backend_class(name))
        except BackendError as exc:
            log.warning("leaving out backend %s: %s", name, exc)
    return {cls.name: cls for cls in sorted(classes, key=lambda c: (c.priority, c.name))}


def available_backends(model_format: str | None = None) -> list[str]:
    """Backends whose package is installed (optionally: that read ``model_format``), preferred first."""
    return [
        name
        for name, cls in backend_classes().items()
        if (model_format is None or model_format in cls.formats) and cls.installed()
    ]


def create_backend(name: str, model_format: str, model: bytes, threads: int = 1) -> Backend:
    """Load ``model`` with backend ``name`` (or ``auto``: the preferred installed one for the format)."""
    if name == "auto":
        candidates = available_backends(model_format)
        if not candidates:
            wanted = [
                f"{n} ({cls.package})"
                for n, cls in backend_classes().items()
                if model_format in cls.formats
            ]
            raise BackendUnavailableError(
                f"no backend for {model_format} models is installed; install one of: "
                + (", ".join(wanted) or f"(none declared in {BACKENDS_GROUP!r})")
            )
        name = candidates[0]
    cls = backend_class(name)
    if model_format not in cls.formats:
        raise BackendError(f"backend {name!r} cannot run {model_format} models")
    return cls(model, threads=threads)
