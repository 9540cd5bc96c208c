"""Devices: provisioning, first contact, tags and groups, broker credentials, pins."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from fleet_server import db
from fleet_server.errors import NotFoundError, RegistryError
from fleet_server.records import (
    DeviceInfo,
    TargetSelector,
)
from fleet_server.registry._rows import (
    check_id,
    check_tags,
    device_info,
    get_bundle,
    get_device,
    new_device,
    replace_tags,
    timeline_entry,
)
from fleet_server.registry.unit import UnitOfWork

log = logging.getLogger(__name__)

__all__ = ["Devices"]


class Devices(UnitOfWork):
    """Devices: provisioning, first contact, tags and groups, broker credentials, pins."""

    # --- devices ------------------------------------------------------------------------

    def provision_device(
        self,
        device_id: str,
        tags: Iterable[str] = (),
        profile: str | None = None,
        *,
        credentials_hash: str | None = None,
    ) -> DeviceInfo:
        """Register a device ahead of its first contact (or adopt one that already made contact).

        A device provisioned before is refused: change it with :meth:`set_tags` and :meth:`pin`.
        """
        check_id(device_id)
        wanted = check_tags(tags)
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                row = session.get(db.Device, device_id)
                if row is not None and row.origin == "provisioned":
                    raise RegistryError(f"device {device_id!r} is already provisioned")
                if row is None:
                    row = new_device(device_id, "provisioned", now)
                    session.add(row)
                row.origin = "provisioned"
                row.profile = profile
                row.credentials_hash = credentials_hash
                replace_tags(row, wanted)
                session.add(
                    timeline_entry(
                        "device-provisioned",
                        f"provisioned with tags {list(wanted)}",
                        device_id=device_id,
                        at=now,
                    )
                )
                session.flush()
                info = device_info(row)
        except IntegrityError as exc:
            raise RegistryError(f"device {device_id!r} was registered concurrently; retry") from exc
        self._known_devices.add(device_id)
        return info

    def register_on_first_contact(self, device_id: str) -> DeviceInfo:
        """The device, registered now (untagged) if it was unknown.

        Without ``auto_register`` an unknown device is a :class:`NotFoundError`.
        """
        check_id(device_id)
        if not self.auto_register:
            with self._transaction() as session:
                if (row := session.get(db.Device, device_id)) is None:
                    raise NotFoundError(
                        f"unknown device {device_id!r}: it is not provisioned and this "
                        "server does not register devices on first contact"
                    )
                return device_info(row)
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                row = session.get(db.Device, device_id)
                if row is None:
                    row = new_device(device_id, "first-contact", now)
                    session.add(row)
                    session.add(
                        timeline_entry(
                            "device-registered",
                            "registered on first contact",
                            device_id=device_id,
                            at=now,
                        )
                    )
                    log.info("device %s registered on first contact", device_id)
                session.flush()
                info = device_info(row)
        except IntegrityError:
            info = self.device(device_id)  # another server replica registered it first
        self._known_devices.add(device_id)
        return info

    def devices(self, tags: Iterable[str] | None = None) -> list[DeviceInfo]:
        """Every device, or those carrying every one of ``tags``, by id."""
        if tags is not None:
            return self.devices_with_tags(tags)
        with self._transaction() as session:
            return [
                device_info(row)
                for row in session.scalars(select(db.Device).order_by(db.Device.id))
            ]

    def device(self, device_id: str) -> DeviceInfo:
        """The device with this id."""
        with self._transaction() as session:
            return device_info(get_device(session, device_id))

    def devices_with_tags(self, tags: Iterable[str], *, match: str = "all") -> list[DeviceInfo]:
        """Group membership: devices carrying every tag (``match="all"``) or any of them ("any")."""
        wanted = check_tags(tags)
        if match not in {"all", "any"}:
            raise RegistryError(f"match must be 'all' or 'any', not {match!r}")
        if not wanted:
            return self.devices() if match == "all" else []
        needed = len(wanted) if match == "all" else 1
        members = (
            select(db.DeviceTag.device_id)
            .where(db.DeviceTag.tag.in_(wanted))
            .group_by(db.DeviceTag.device_id)
            .having(func.count() >= needed)
        )
        with self._transaction() as session:
            rows = session.scalars(
                select(db.Device).where(db.Device.id.in_(members)).order_by(db.Device.id)
            )
            return [device_info(row) for row in rows]

    def groups(self) -> dict[str, list[str]]:
        """Every tag in use and the ids of the devices carrying it."""
        with self._transaction() as session:
            rows = session.execute(
                select(db.DeviceTag.tag, db.DeviceTag.device_id).order_by(
                    db.DeviceTag.tag, db.DeviceTag.device_id
                )
            )
            result: dict[str, list[str]] = {}
            for tag, device_id in rows:
                result.setdefault(tag, []).append(device_id)
            return result

    def select_devices(self, target: TargetSelector) -> list[DeviceInfo]:
        """The devices a rollout target covers; named devices must all be registered."""
        if target.kind == "all":
            return self.devices()
        if target.kind == "tags":
            return self.devices_with_tags(target.values)
        with self._transaction() as session:
            return [device_info(get_device(session, device_id)) for device_id in target.values]

    def set_tags(self, device_id: str, tags: Iterable[str]) -> DeviceInfo:
        """Replace the device's tags."""
        wanted = check_tags(tags)
        with self._transaction(write=True) as session:
            row = self._locked_device(session, device_id)
            replace_tags(row, wanted)
            session.flush()
            return device_info(row)

    def set_credentials_hash(self, device_id: str, credentials_hash: str | None) -> None:
        """Store (or clear) the hash of the device's broker credentials."""
        with self._transaction(write=True) as session:
            self._locked_device(session, device_id).credentials_hash = credentials_hash

    def credentials_hash(self, device_id: str) -> str | None:
        """The hash of the device's broker credentials, if it has any."""
        with self._transaction() as session:
            return get_device(session, device_id).credentials_hash

    def credentials_hashes(self) -> dict[str, str]:
        """Every device's broker credentials hash, by device id (devices without any are left out)."""
        with self._transaction() as session:
            rows = session.execute(
                select(db.Device.id, db.Device.credentials_hash).where(
                    db.Device.credentials_hash.is_not(None)
                )
            )
            return {device_id: hashed for device_id, hashed in rows if hashed is not None}

    def pin(self, device_id: str, sha256: str | None) -> DeviceInfo:
        """Keep the device on a bundle whatever rollouts say (``None`` unpins)."""
        now = self._clock()
        with self._transaction(write=True) as session:
            row = self._locked_device(session, device_id)
            if sha256 is not None:
                get_bundle(session, sha256)
            if row.pinned_bundle != sha256:
                row.pinned_bundle = sha256
                message = "unpinned" if sha256 is None else f"pinned to bundle {sha256[:12]}"
                session.add(
                    timeline_entry(
                        "device-pinned",
                        message,
                        device_id=device_id,
                        data={"bundle": sha256},
                        at=now,
                    )
                )
            session.flush()
            return device_info(row)

    def devices_by_id(self, device_ids: Sequence[str]) -> list[DeviceInfo]:
        """The devices named (unknown ids left out), by id: what a rollout leader re-reads of the
        states other replicas stored."""
        found: list[DeviceInfo] = []
        with self._transaction() as session:
            for start in range(0, len(device_ids), 500):
                chunk = list(device_ids[start : start + 500])
                rows = session.scalars(
                    select(db.Device).where(db.Device.id.in_(chunk)).order_by(db.Device.id)
                )
                found.extend(device_info(row) for row in rows)
        return found
