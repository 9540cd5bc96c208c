"""Plug-ins found through entry points: outputs, inference backends and frame sources.

Every kind of plug-in is declared the same way, once, by the distribution that
ships it: one line in an entry-point group names the class (or callable), and
the class carries everything else about itself. edgefleet's own backends and
sources are declared in its ``pyproject.toml`` exactly like a third party's::

    [project.entry-points."edgefleet.sources"]
    synthetic = "edge_runtime.sources.synthetic:SyntheticSource"

A registry lists names without importing anything and loads a plug-in only
when it is asked for it by name, so a broken or heavy plug-in costs nothing
until it is used.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from edge_runtime.errors import EdgefleetError

__all__ = [
    "BACKENDS_GROUP",
    "OUTPUTS_GROUP",
    "SOURCES_GROUP",
    "describe_installed",
    "find_entry_point",
    "installed_names",
    "load_entry_point",
]

OUTPUTS_GROUP = "edgefleet.outputs"
"""Prediction outputs: a callable taking the prediction's dict, or a class with ``emit``."""
BACKENDS_GROUP = "edgefleet.backends"
"""Inference backends: :class:`~edge_runtime.backends.Backend` subclasses."""
SOURCES_GROUP = "edgefleet.sources"
"""Frame sources: :class:`~edge_runtime.sources.FrameSource` subclasses with a ``config_type``."""


def installed_names(group: str) -> list[str]:
    """The names declared in ``group`` by the installed distributions, sorted (nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=group)})


def find_entry_point(group: str, name: str) -> EntryPoint | None:
    """The entry point ``name`` in ``group`` (the first distribution's, if several declare it)."""
    for ep in entry_points(group=group, name=name):
        return ep
    return None


def load_entry_point(ep: EntryPoint, kind: str, error: type[EdgefleetError]) -> object:
    """Import what ``ep`` names; ``error`` saying which ``kind`` of plug-in failed, and why."""
    try:
        return ep.load()
    except (ImportError, AttributeError) as exc:
        raise error(f"{kind} {ep.name!r} cannot be loaded ({ep.value}): {exc}") from exc


def describe_installed(group: str) -> str:
    """``installed: a, b`` or ``none installed``, for 'unknown name' messages."""
    names = installed_names(group)
    return f"installed: {', '.join(names)}" if names else "none installed"
