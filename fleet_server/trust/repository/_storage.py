"""The metadata folder on disk: every file read and parsed as its role's type, written atomically.

It holds ``1.root.json``, ``2.root.json``, ... (every root version;
``root.json`` is a copy of the newest), one ``<role>.json`` per other role,
and ``assignment_counters.json`` (private bookkeeping, never published).
Nothing here signs or decides: the other modules of the repository do, and
hand finished metadata to :class:`MetadataFolder` to write.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, TypeVar

from tuf.api.exceptions import RepositoryError

# tuf.api.metadata re-exports its classes without __all__, which mypy (no implicit
# re-export) reads as private; the types still resolve.
from tuf.api.metadata import (  # type: ignore[attr-defined, unused-ignore]
    Metadata,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)

from edge_runtime.atomic import atomic_write_bytes, atomic_write_text
from fleet_server.errors import ReleaseError

__all__ = ["HASH_ALGORITHMS", "MetadataFolder", "RoleT"]

HASH_ALGORITHMS = ["sha256"]
"""How the repository pins a file it names (snapshot entries, assignment targets)."""

_ROOT_FILE_RE = re.compile(r"^([1-9][0-9]*)\.root\.json$")
_COUNTERS = "assignment_counters.json"

RoleT = TypeVar("RoleT", Root, Timestamp, Snapshot, Targets)


class MetadataFolder:
    """One folder of TUF metadata files: ``<N>.root.json``, ``root.json``, ``<role>.json``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def root_versions(self) -> list[int]:
        """Every root version in the folder, oldest first; empty when there is none (or no folder)."""
        try:
            names = [entry.name for entry in self.path.iterdir()]
        except OSError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _ROOT_FILE_RE.match(n)))

    @property
    def root_version(self) -> int:
        """The newest root version."""
        return self.root_versions()[-1]

    def holds_repository(self) -> bool:
        """Whether a root (numbered or the ``root.json`` copy) is already here."""
        return (self.path / "1.root.json").exists() or (self.path / "root.json").exists()

    def exists(self, role: str) -> bool:
        """Whether ``<role>.json`` has been written."""
        return (self.path / f"{role}.json").exists()

    def read(self, name: str) -> bytes:
        """The bytes of file ``name``, as published."""
        try:
            return (self.path / name).read_bytes()
        except OSError as exc:
            raise ReleaseError(f"cannot read {name} in {self.path}: {exc}") from exc

    def load(self, role: str, kind: type[RoleT]) -> Metadata[RoleT]:
        """``<role>.json`` parsed; refused unless it is TUF metadata of type ``kind``."""
        return self.parse(role, self.read(f"{role}.json"), kind)

    def parse(self, role: str, data: bytes, kind: type[RoleT]) -> Metadata[RoleT]:
        """``data`` (the bytes of ``<role>.json``) parsed; refused unless TUF metadata of type ``kind``."""
        try:
            md = Metadata[RoleT].from_bytes(data)
        except RepositoryError as exc:
            raise ReleaseError(f"{self.path / role}.json is not TUF metadata: {exc}") from exc
        if not isinstance(md.signed, kind):
            raise ReleaseError(f"{self.path / role}.json holds {md.signed.type} metadata")
        return md

    def load_root(self) -> Metadata[Root]:
        """The newest root metadata."""
        return self.load(f"{self.root_version}.root", Root)

    def root(self) -> Root:
        """The signed part of the newest root."""
        return self.load_root().signed

    def write(self, role: str, md: Metadata[Any]) -> bytes:
        """Write ``<role>.json`` atomically; return the bytes written."""
        data = md.to_bytes()
        self.write_bytes(role, data)
        return data

    def write_bytes(self, role: str, data: bytes) -> None:
        """Write ``<role>.json`` atomically from bytes already serialised (and hashed)."""
        atomic_write_bytes(self.path / f"{role}.json", data)

    def write_root(self, md: Metadata[Root]) -> None:
        """Write ``<N>.root.json``, then ``root.json`` (a copy of the newest root)."""
        data = md.to_bytes()
        atomic_write_bytes(self.path / f"{md.signed.version}.root.json", data)
        atomic_write_bytes(self.path / "root.json", data)

    def counters(self) -> dict[str, int]:
        """The last assignment number of every target path ever assigned (kept across unassigns)."""
        path = self.path / _COUNTERS
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"cannot read {path}: {exc}") from exc
        return {str(k): int(v) for k, v in data.items()}

    def write_counters(self, counters: dict[str, int]) -> None:
        """Replace the assignment counters atomically."""
        atomic_write_text(self.path / _COUNTERS, json.dumps(counters, indent=2, sort_keys=True))
