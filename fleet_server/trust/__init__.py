"""Trust on the release/server side: TUF keys and the metadata repository the fleet publishes.

:mod:`fleet_server.trust.keys` creates and loads the role keys;
:mod:`fleet_server.trust.repository` signs releases (release key),
assignments (spread over hashed bins, re-signed only where they change),
snapshot and timestamp (online keys) and key rotations (root keys), and gives
the payloads to publish retained on ``PREFIX/tuf/<suffix>``.
Devices verify them with :mod:`edge_runtime.trust`.
"""

from __future__ import annotations

from fleet_server.trust.keys import (
    OFFLINE_ROLES,
    ONLINE_ROLES,
    ROLES,
    KeySet,
    generate_key,
    init_keys,
    load_keys,
    load_public_key,
    load_signer,
    public_key_path,
)
from fleet_server.trust.repository import (
    ASSIGNMENT_PATHS,
    ASSIGNMENTS_ROLE,
    BIN_NAME_PREFIX,
    DEFAULT_BINS,
    AssignmentKind,
    Expiry,
    ReleasedBundle,
    Repository,
    Signers,
)

__all__ = [
    "ASSIGNMENTS_ROLE",
    "ASSIGNMENT_PATHS",
    "BIN_NAME_PREFIX",
    "DEFAULT_BINS",
    "OFFLINE_ROLES",
    "ONLINE_ROLES",
    "ROLES",
    "AssignmentKind",
    "Expiry",
    "KeySet",
    "ReleasedBundle",
    "Repository",
    "Signers",
    "generate_key",
    "init_keys",
    "load_keys",
    "load_public_key",
    "load_signer",
    "public_key_path",
]
