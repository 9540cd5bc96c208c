"""Releases (release key): the top-level ``targets`` role lists every released bundle.

Each bundle is the target ``bundles/<sha256>.efb`` with its length, sha256
and ``custom: {name, version, format, precision}`` from its manifest.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

# tuf.api.metadata re-exports its classes without __all__, which mypy (no implicit
# re-export) reads as private; the types still resolve.
from tuf.api.metadata import TargetFile, Targets  # type: ignore[attr-defined, unused-ignore]

from edge_runtime.bundle import read_bundle
from edge_runtime.errors import BundleError
from fleet_server.errors import ReleaseError
from fleet_server.trust.repository._signing import Expiry, Signers, new_version, sign
from fleet_server.trust.repository._storage import MetadataFolder

__all__ = ["ReleasedBundle", "read_released", "release"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleasedBundle:
    """A bundle listed in the release-signed targets role."""

    path: str
    sha256: str
    length: int
    custom: dict[str, Any]


def read_released(folder: MetadataFolder) -> dict[str, ReleasedBundle]:
    """Every released bundle, by sha256."""
    bundles: dict[str, ReleasedBundle] = {}
    for path, info in folder.load("targets", Targets).signed.targets.items():
        sha256 = info.hashes.get("sha256", "")
        custom = info.custom if isinstance(info.custom, dict) else {}
        bundles[sha256] = ReleasedBundle(path, sha256, info.length, dict(custom))
    return bundles


def release(
    folder: MetadataFolder,
    expiry: Expiry,
    bundle_path: str | os.PathLike[str],
    release_signer: Signers,
) -> ReleasedBundle:
    """Add the bundle at ``bundle_path`` to the targets role, signed by the release key(s).

    Releasing the same bytes again changes nothing; another bundle with an
    already released name and version is refused.
    """
    try:
        bundle = read_bundle(bundle_path)
    except BundleError as exc:
        raise ReleaseError(f"cannot release {bundle_path}: {exc}") from exc
    manifest = bundle.manifest
    custom = {
        "name": manifest.name,
        "version": manifest.version,
        "format": manifest.model.format,
        "precision": manifest.model.precision,
    }
    path = f"bundles/{bundle.sha256}.efb"
    released = ReleasedBundle(path, bundle.sha256, bundle.size, custom)
    md = folder.load("targets", Targets)
    if path in md.signed.targets:
        log.info("bundle %s is already released", bundle.sha256[:12])
        return released
    for other in read_released(folder).values():
        if (other.custom.get("name"), other.custom.get("version")) == (
            manifest.name,
            manifest.version,
        ):
            raise ReleaseError(
                f"{manifest.name} {manifest.version} is already released as bundle "
                f"{other.sha256[:12]}...; give the new bundle a new version"
            )
    md.signed.targets[path] = TargetFile(
        bundle.size, {"sha256": bundle.sha256}, path, {"custom": custom}
    )
    new_version(md, expiry, "targets")
    sign(md, release_signer, folder.root(), "targets")
    folder.write("targets", md)
    log.info(
        "released %s %s as bundle %s (targets v%d)",
        manifest.name,
        manifest.version,
        bundle.sha256[:12],
        md.signed.version,
    )
    return released
