"""The TUF repository the fleet publishes: release-signed bundles, online-signed assignments.

One metadata folder holds ``1.root.json``, ``2.root.json``, ... (every root
version; ``root.json`` is a copy of the newest), ``targets.json``,
``assignments.json``, one ``assignments-bin-<hex>.json`` per hashed bin,
``snapshot.json`` and ``timestamp.json``, each written atomically, plus
``assignment_counters.json`` (private bookkeeping, never published).
Consistent snapshots are off: MQTT keeps one retained payload per topic
(``docs/protocol.md``, "TUF metadata over MQTT").

- The top-level ``targets`` role (the *release key*) lists every released
  bundle as ``bundles/<sha256>.efb`` and delegates ``assignments/devices/*``
  and ``assignments/groups/*`` to the ``assignments`` role (terminating).
- The ``assignments`` role (online key) lists no target itself: it delegates
  every path to ``2**bit_length`` *hashed bins* (TUF TAP 15 succinct
  delegation, as PEP 458 does; ``bit_length`` is chosen at
  :meth:`Repository.create` and kept in the metadata). A path belongs to the
  bin numbered by the leading ``bit_length`` bits of its sha256, named
  ``assignments-bin-<hex>``; every bin is signed by the same online
  assignments key(s).
- Each bin maps its ``assignments/<kind>/<name>`` paths to
  ``custom: {"bundle": "bundles/<sha256>.efb", "assignment": <n>}``. A change
  re-signs only the bins it touches, and a device loads only the bins its
  own paths hash into, however large the fleet.
- ``snapshot`` and ``timestamp`` (online keys) pin the versions, lengths and
  sha256 of what they describe (snapshot: targets, assignments, every bin).

The fleet server needs only the online keys: :meth:`Repository.assign`,
:meth:`Repository.unassign` and :meth:`Repository.snapshot_and_timestamp`
never touch the release key, and :meth:`Repository.assign` refuses bundles
the release key did not sign.

Inside, one module per idea: ``_storage`` (the folder, atomic writes),
``_signing`` (expiry, versions, threshold-checked signatures), ``_bins``
(the hashed-bin delegation), ``_releases`` (targets), ``_assignments``
(the bins' contents), ``_snapshot`` (snapshot and timestamp), ``_rotation``
(key changes and re-signing), ``_create`` (a new repository) and
``_repository`` (the :class:`Repository` facade over them).
"""

from __future__ import annotations

from fleet_server.trust.repository._bins import (
    ASSIGNMENT_PATHS,
    ASSIGNMENTS_ROLE,
    BIN_NAME_PREFIX,
    DEFAULT_BINS,
    AssignmentKind,
)
from fleet_server.trust.repository._releases import ReleasedBundle
from fleet_server.trust.repository._repository import Repository
from fleet_server.trust.repository._signing import Expiry, Signers

__all__ = [
    "ASSIGNMENTS_ROLE",
    "ASSIGNMENT_PATHS",
    "BIN_NAME_PREFIX",
    "DEFAULT_BINS",
    "AssignmentKind",
    "Expiry",
    "ReleasedBundle",
    "Repository",
    "Signers",
]
