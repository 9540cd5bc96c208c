"""Devices' broker credentials: made at provisioning, rotated, revoked, and the broker told.

With per-device credentials (``serve --broker-auth-dir``) each device gets a
random password at provisioning, shown once and kept only as a hash; every
change rewrites the broker's password and ACL files (:class:`BrokerAuth`).
Without them the broker is open and devices get none.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from fleet_server.broker_auth import BrokerAuth, hash_password, new_password
from fleet_server.errors import FleetError
from fleet_server.records import DeviceInfo
from fleet_server.registry import Registry

__all__ = ["DeviceCredentials"]


class DeviceCredentials:
    """Provisioning with credentials, rotation and revocation, under the server's lock."""

    def __init__(
        self, registry: Registry, broker_auth: BrokerAuth | None, lock: threading.RLock
    ) -> None:
        self.registry = registry
        self.broker_auth = broker_auth
        self._lock = lock

    def provision(
        self, device_id: str, tags: Sequence[str] = (), profile: str | None = None
    ) -> tuple[DeviceInfo, str | None]:
        """Register a device; with broker auth, also its broker password (returned once, never kept)."""
        if self.broker_auth is None:
            return self.registry.provision_device(device_id, tags, profile), None
        password = new_password()
        with self._lock:
            info = self.registry.provision_device(
                device_id, tags, profile, credentials_hash=hash_password(password)
            )
            self.broker_auth.write(self.registry.credentials_hashes())
        return info, password

    def rotate(self, device_id: str) -> str:
        """A new broker password for a device; the old one stops working at the broker's reload."""
        password = new_password()
        self._set(device_id, hash_password(password))
        return password

    def revoke(self, device_id: str) -> None:
        """Remove a device's broker credentials: it cannot connect after the broker's reload."""
        self._set(device_id, None)

    def write_broker_files(self) -> None:
        """Bring the broker's password and ACL files in line with the database (at start)."""
        if self.broker_auth is not None:
            self.broker_auth.write(self.registry.credentials_hashes())

    def _set(self, device_id: str, hashed: str | None) -> None:
        if self.broker_auth is None:
            raise FleetError(
                "this server does not manage broker credentials (no --broker-auth-dir)"
            )
        with self._lock:
            self.registry.set_credentials_hash(device_id, hashed)
            self.broker_auth.write(self.registry.credentials_hashes())
