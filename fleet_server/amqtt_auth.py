"""Per-device credentials on the embedded amqtt broker: the same password file and rules as Mosquitto.

With ``edgefleet serve --broker-auth-dir DIR`` and no ``--broker``, the
embedded broker loads these two plugins instead of anonymous access:

- :class:`PasswdFileAuth` checks a client's username and password against
  ``DIR/passwd``, the file the server writes for Mosquitto (PBKDF2-SHA512 in
  Mosquitto's ``$7$`` format), re-read whenever it changes, so a rotated or
  revoked password stops working at once. A device must connect with its
  username as client id, so no device can take another's session.
- :class:`DeviceTopicAcl` applies the rules of the generated Mosquitto ACL: a
  device publishes and subscribes only under ``PREFIX/devices/<its id>/`` and
  reads ``PREFIX/tuf/#`` and ``PREFIX/bundles/#``; the server's user may do
  anything under ``PREFIX/``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from fleet_server.broker_auth import SERVER_USERNAME, verify_password

__all__ = ["DeviceTopicAcl", "PasswdFileAuth", "embedded_auth_plugins"]

log = logging.getLogger(__name__)


def embedded_auth_plugins(passwd_path: Path, prefix: str = "edgefleet") -> dict[str, Any]:
    """The amqtt ``plugins`` section for an authenticated embedded broker."""
    return {
        f"{__name__}.PasswdFileAuth": {"password_file": str(passwd_path)},
        f"{__name__}.DeviceTopicAcl": {"prefix": prefix},
    }


class PasswdFileAuth(BaseAuthPlugin):  # type: ignore[misc,unused-ignore]  # amqtt: untyped
    """Username, password and client id checked against the server's Mosquitto password file."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._loaded: tuple[int, int] | None = None
        self._users: dict[str, str] = {}

    def _current_users(self) -> dict[str, str]:
        path = Path(self._get_config_option("password_file", ""))
        try:
            stat = path.stat()
        except OSError:
            log.warning("embedded broker: password file %s is missing; refusing logins", path)
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._loaded:
            users: dict[str, str] = {}
            for line in path.read_text(encoding="utf-8").splitlines():
                name, sep, stored = line.partition(":")
                if sep and name and not name.startswith("#"):
                    users[name] = stored
            self._users, self._loaded = users, stamp
        return self._users

    async def authenticate(self, *, session: Any) -> bool | None:
        """True only for a known user with the right password (and, for a device, its own id)."""
        if session is None or not session.username:
            return False
        stored = self._current_users().get(session.username)
        if stored is None or not verify_password(session.password or "", stored):
            return False
        if session.username not in (SERVER_USERNAME, session.client_id):
            log.warning(
                "embedded broker: %s tried to connect as client id %r; a device's client id is "
                "its username",
                session.username,
                session.client_id,
            )
            return False
        return True

    @dataclass
    class Config:
        """Where the password file is."""

        password_file: str = os.devnull


class DeviceTopicAcl(BaseTopicPlugin):  # type: ignore[misc,unused-ignore]
    """The generated Mosquitto ACL, for the embedded broker."""

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        """Whether ``session`` may ``action`` ``topic``."""
        prefix = str(self._get_config_option("prefix", "edgefleet"))
        username = getattr(session, "username", None)
        if not username or topic is None:
            return False
        if username == SERVER_USERNAME:
            return topic == prefix or topic.startswith(prefix + "/")
        if topic.startswith(f"{prefix}/devices/{username}/"):
            return True
        readable = topic.startswith((f"{prefix}/tuf/", f"{prefix}/bundles/"))
        return readable and action in (Action.SUBSCRIBE, Action.RECEIVE)

    @dataclass
    class Config:
        """The topic prefix."""

        prefix: str = "edgefleet"
