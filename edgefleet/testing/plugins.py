"""Declare entry-point plug-ins for the length of a test, and make predictions to feed outputs.

A plug-in under test is usually not installed yet (or not in the version the
test wants). :class:`PluginDeclarations` writes a real distribution's metadata
(``*.dist-info`` with ``entry_points.txt``) into a folder and puts the folder on
``sys.path``, so edgefleet finds the plug-in exactly as it finds an installed one.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_runtime.prediction import Prediction

__all__ = ["PluginDeclarations", "declared_plugins", "sample_prediction"]

_counter = itertools.count(1)
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class PluginDeclarations:
    """Entry points declared by one throw-away distribution in ``folder``, found while active.

    ``declare(group, name, target)`` may be called before or after :meth:`activate`;
    every call rewrites the distribution's ``entry_points.txt``. Modules that the
    targets name may live in ``folder`` too (it is on ``sys.path`` while active).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.distribution = f"edgefleet_test_plugins_{next(_counter)}"
        self.declared: dict[str, dict[str, str]] = {}
        self._active = False

    @property
    def dist_info(self) -> Path:
        """The ``*.dist-info`` folder this declares its entry points in."""
        return self.folder / f"{self.distribution}-0.dist-info"

    def declare(self, group: str, name: str, target: str) -> None:
        """Declare ``name = target`` (``"module:attribute"``) in entry-point ``group``."""
        if not _TARGET.match(target):
            raise ValueError(f"an entry point names 'module:attribute', not {target!r}")
        if "=" in name or not name.strip():
            raise ValueError(f"{name!r} is not an entry-point name")
        self.declared.setdefault(group, {})[name] = target
        self._write()

    def activate(self) -> None:
        """Put the folder on ``sys.path`` (first), so the declarations are found."""
        self._write()
        if not self._active:
            sys.path.insert(0, str(self.folder))
            self._active = True
        importlib.invalidate_caches()

    def deactivate(self) -> None:
        """Take the folder off ``sys.path`` and forget the modules imported from it."""
        if not self._active:
            return
        self._active = False
        folder = str(self.folder)
        while folder in sys.path:
            sys.path.remove(folder)
        for name, module in list(sys.modules.items()):
            location = getattr(module, "__file__", None) or ""
            if location.startswith(folder + "/"):
                del sys.modules[name]
        importlib.invalidate_caches()

    def __enter__(self) -> PluginDeclarations:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    def _write(self) -> None:
        self.dist_info.mkdir(parents=True, exist_ok=True)
        (self.dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {self.distribution}\nVersion: 0\n", encoding="utf-8"
        )
        sections = [
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items())
            for group, entries in self.declared.items()
        ]
        (self.dist_info / "entry_points.txt").write_text("\n".join(sections), encoding="utf-8")


@contextmanager
def declared_plugins(
    folder: Path, groups: Mapping[str, Mapping[str, str]]
) -> Iterator[PluginDeclarations]:
    """Declare ``{group: {name: "module:attribute"}}`` while the block runs.

    ``with declared_plugins(tmp_path, {"edgefleet.outputs": {"sorter": "my_sorter:Sorter"}}):``
    """
    declarations = PluginDeclarations(folder)
    for group, entries in groups.items():
        for name, target in entries.items():
            declarations.declare(group, name, target)
    with declarations:
        yield declarations


def sample_prediction(**overrides: Any) -> Prediction:
    """A plausible prediction (glass at 0.91 from ``cam-1``); keyword arguments replace its fields."""
    sample = Prediction(
        device_id="cam-1",
        frame_id=0,
        captured_at=1_800_000_000.0,
        label="glass",
        confidence=0.91,
        top_k=[("glass", 0.91), ("plastic", 0.06), ("paper", 0.02)],
        uncertain=False,
        latency_ms=12.5,
        inference_ms=4.25,
        bundle_name="conveyor",
        bundle_version="1.0.0",
        bundle_sha256="ab" * 32,
    )
    return dataclasses.replace(sample, **overrides)
