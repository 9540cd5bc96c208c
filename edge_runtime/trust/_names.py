"""Which retained topic carries which TUF metadata file: the naming both sides of the protocol share.

The fleet server publishes each role on ``PREFIX/tuf/<suffix>``
(``docs/protocol.md``, "TUF metadata over MQTT"); the device's fetcher
answers ngclient's requests for ``<role>.json`` from the payload of that
suffix. Root versions are ``root/<N>``, the top-level roles and the
delegating ``assignments`` role are their own names, and the hashed bins the
``assignments`` role delegates to are ``bins/assignments-bin-<hex>``.
"""

from __future__ import annotations

import re

__all__ = [
    "BIN_NAME_PREFIX",
    "BIN_TOPIC_PREFIX",
    "ROLE_SUFFIXES",
    "bin_of_suffix",
    "suffix_for_role",
    "suffix_for_url_name",
]

BIN_NAME_PREFIX = "assignments-bin"
"""``name_prefix`` of the succinct (hashed-bin) delegation: bins are ``assignments-bin-<hex>``."""
BIN_TOPIC_PREFIX = "bins/"
"""Topic suffixes of the bins: ``bins/assignments-bin-<hex>``."""
ROLE_SUFFIXES = frozenset({"timestamp", "snapshot", "targets", "assignments"})
"""Roles published under their own name."""

_BIN_NAME_RE = re.compile(rf"^{re.escape(BIN_NAME_PREFIX)}-[0-9a-f]{{1,8}}$")
_ROOT_NAME_RE = re.compile(r"^([1-9][0-9]{0,9})\.root\.json$")


def suffix_for_role(role: str) -> str | None:
    """The topic suffix of (non-root) role ``role``: its name, or ``bins/<name>`` for a bin; else None."""
    if role in ROLE_SUFFIXES:
        return role
    if _BIN_NAME_RE.match(role):
        return f"{BIN_TOPIC_PREFIX}{role}"
    return None


def bin_of_suffix(suffix: str) -> str | None:
    """The bin role name a ``bins/<name>`` suffix carries; None for any other suffix."""
    name = suffix.removeprefix(BIN_TOPIC_PREFIX)
    return name if name != suffix and _BIN_NAME_RE.match(name) else None


def suffix_for_url_name(name: str) -> str | None:
    """The topic suffix (after ``PREFIX/tuf/``) carrying ngclient's metadata file ``name``.

    ``3.root.json`` -> ``root/3``; ``timestamp.json``, ``snapshot.json``,
    ``targets.json``, ``assignments.json`` -> the role name;
    ``assignments-bin-3f.json`` -> ``bins/assignments-bin-3f``; anything else -> None.
    """
    if match := _ROOT_NAME_RE.match(name):
        return f"root/{int(match.group(1))}"
    if not name.endswith(".json"):
        return None
    return suffix_for_role(name.removesuffix(".json"))
