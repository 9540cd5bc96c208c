"""``edgefleet device doctor --config``: each fleet identity's bundle store, read only.

A multi-camera box whose cameras are their own fleet devices (``cameras[].fleet``,
``docs/line.md``) keeps one store per identity: the box's ``store`` and each
camera device's (``fleet.store``, else ``<store>/cameras/<id>``). Each is
checked alike, without changing it (no folder created, no leftover removed):

- the update state: ``state.json`` parses (else ``state.json.bak`` does: a
  warning; neither: a problem, the device would boot from a fresh idle state
  and forget its active bundle);
- the active bundle the state names is in ``bundles/`` and its bytes hash
  to its sha256 (else a problem: the device cannot boot it);
- the folder is writable and has at least the store's reserve free (else a
  problem: updates are held);
- a store that does not exist yet is a warning (the device has not run).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from edge_runtime.bundle.model_bundle import BUNDLE_SUFFIX
from edge_runtime.camera_fleet_config import camera_store
from edge_runtime.config import DeviceConfig
from edge_runtime.update.lifecycle import UpdateState
from edge_runtime.update.store import BACKUP_NAME, STATE_NAME

__all__ = ["StoreCheck", "check_store", "check_stores"]

RESERVE_BYTES = 1024 * 1024
"""The free space a store keeps for state writes (:class:`~edge_runtime.update.BundleStore`'s)."""


@dataclass
class StoreCheck:
    """One fleet identity's store: where, its update state, its active bundle, what is wrong."""

    device_id: str
    camera: str | None
    """The camera whose fleet device owns the store; None for the box's."""
    path: str
    state_source: str = "none"
    """``state.json``, ``state.json.bak``, or ``none`` (no readable state)."""
    phase: str | None = None
    active: str | None = None
    """The active bundle's sha256, per the state."""
    bundles: int = 0
    free_bytes: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_state(root: Path, check: StoreCheck) -> UpdateState | None:
    found: list[str] = []
    for name in (STATE_NAME, BACKUP_NAME):
        try:
            raw = (root / name).read_bytes()
        except FileNotFoundError:
            found.append(f"{name} is missing")
            continue
        except OSError as exc:
            found.append(f"{name} is unreadable ({exc.strerror or exc})")
            continue
        try:
            state = UpdateState.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            found.append(f"{name} is corrupt ({where}: {first['msg']})")
            continue
        check.state_source = name
        if found:
            check.warnings.append(f"{'; '.join(found)}; the device boots from {name}")
        return state
    if all(text.endswith("is missing") for text in found):
        check.warnings.append("no update state yet (the device has not committed a bundle)")
    else:
        check.problems.append(f"{'; '.join(found)}: the device would start from a fresh idle state")
    return None


def check_store(device_id: str, root: Path, camera: str | None = None) -> StoreCheck:
    """Check one store without changing it (see the module)."""
    check = StoreCheck(device_id=device_id, camera=camera, path=str(root))
    if not root.is_dir():
        check.warnings.append("the store does not exist yet (the device has not run)")
        return check
    bundles = root / "bundles"
    check.bundles = len(list(bundles.glob(f"*{BUNDLE_SUFFIX}"))) if bundles.is_dir() else 0
    try:
        stats = os.statvfs(root)
        check.free_bytes = stats.f_bavail * stats.f_frsize
    except OSError as exc:
        check.problems.append(f"cannot read its free space ({exc.strerror or exc})")
    if check.free_bytes is not None and check.free_bytes < RESERVE_BYTES:
        check.problems.append(
            f"{check.free_bytes} bytes free, under the {RESERVE_BYTES} kept for state writes:"
            " updates are held"
        )
    if not os.access(root, os.W_OK | os.X_OK):
        check.problems.append("not writable by this user: the update state cannot be saved")
    state = _read_state(root, check)
    if state is None:
        return check
    check.phase = state.phase.value
    if state.active is None:
        return check
    sha = state.active.sha256
    check.active = sha
    path = bundles / f"{sha}{BUNDLE_SUFFIX}"
    if not path.is_file():
        check.problems.append(f"the active bundle {sha[:12]} is not in bundles/")
    else:
        try:
            actual = _sha256(path)
        except OSError as exc:
            check.problems.append(f"the active bundle {sha[:12]} is unreadable ({exc})")
        else:
            if actual != sha:
                check.problems.append(
                    f"the active bundle {sha[:12]} is damaged: its bytes hash to {actual[:12]}"
                )
    return check


def check_stores(config: DeviceConfig) -> list[StoreCheck]:
    """The box's store, then each camera device's (``cameras[].fleet``), in config order."""
    checks = [check_store(config.device_id, config.store)]
    for camera in config.cameras or []:
        if camera.fleet is not None:
            checks.append(
                check_store(camera.fleet.device_id, camera_store(config, camera), camera.id)
            )
    return checks
