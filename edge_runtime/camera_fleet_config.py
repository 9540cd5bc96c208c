"""The checks on a multi-camera config's ``cameras[].fleet`` sections (see :mod:`edge_runtime.camera_fleet`).

Kept apart so that :mod:`edge_runtime.config` can run them without importing
the update agent. Every refusal names the key to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_runtime.config import CameraConfig, DeviceConfig

__all__ = ["camera_store", "check_camera_fleets"]


def camera_store(box: DeviceConfig, camera: CameraConfig) -> Path:
    """Where a camera device keeps its bundles and state: ``fleet.store``, else ``<store>/cameras/<id>``."""
    if camera.fleet is not None and camera.fleet.store is not None:
        return camera.fleet.store
    return box.store / "cameras" / camera.id


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def check_camera_fleets(config: DeviceConfig) -> None:
    """Refuse a config whose camera devices would be ambiguous; the message names the key."""
    cameras = config.cameras or []
    own = [(i, c) for i, c in enumerate(cameras) if c.fleet is not None]
    if not own:
        return
    first = own[0][0]
    if config.mqtt is None or config.update is None:
        raise ValueError(
            f"cameras[{first}].fleet: a camera that is its own fleet device takes its bundles over"
            " MQTT; the device needs the mqtt and update sections (the camera uses them with its"
            " own identity)"
        )
    if len(own) == len(cameras):
        raise ValueError(
            f"cameras[*].fleet: every camera is its own fleet device, so the box's device_id"
            f" ({config.device_id}) would serve none; leave fleet out on one camera (it is then"
            f" the fleet device {config.device_id})"
        )
    ids = {config.device_id: "the box's device_id"}
    stores = [(config.store, "the box's store")]
    for i, camera in own:
        fleet = camera.fleet
        if fleet is None:
            continue
        where = f"cameras[{i}].fleet"
        if fleet.device_id in ids:
            raise ValueError(
                f"{where}.device_id: {fleet.device_id} is already {ids[fleet.device_id]};"
                " a camera device needs an id of its own"
            )
        ids[fleet.device_id] = f"camera {camera.id}'s fleet device_id"
        store = camera_store(config, camera)
        for other, whose in stores:
            if _same(store, other):
                raise ValueError(
                    f"{where}.store: {store} is already {whose}; each fleet device needs its own"
                    " store (one state.json each)"
                )
        stores.append((store, f"camera {camera.id}'s store"))
        if config.mqtt.password is not None and fleet.password is None:
            raise ValueError(
                f"{where}.password: the device logs in to the broker with a password, and the"
                f" broker lets a user publish under its own device id only; give camera"
                f" {camera.id} the password of its own user ({fleet.username or fleet.device_id})"
            )
        box_tls = config.mqtt.tls
        if box_tls is not None and box_tls.cert_file is not None and fleet.tls is None:
            raise ValueError(
                f"{where}.tls: the device logs in with a client certificate, which names the box;"
                f" give camera {camera.id} a tls section with its own cert_file"
            )
