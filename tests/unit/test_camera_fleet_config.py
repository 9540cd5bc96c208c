"""``cameras[].fleet``: a camera of its own in the fleet; ambiguous setups refused, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_runtime.camera_fleet import shared_config, unit_config
from edge_runtime.config import parse_config
from edge_runtime.errors import ConfigError

CAMERA = {"type": "fake-camera", "fps": 30}


def config(*fleets: dict[str, Any] | None, **top: Any) -> str:
    document: dict[str, Any] = {
        "device_id": "box",
        "store": "/var/lib/edgefleet",
        "cameras": [
            {"id": f"belt-{i + 1}", "source": CAMERA, **({"fleet": f} if f is not None else {})}
            for i, f in enumerate(fleets)
        ],
        "mqtt": {"host": "broker", "username": "box", "password": "secret"},
        "update": {"groups": ["line3"], "probation_s": 5},
    }
    for key, value in top.items():
        if value is None:
            document.pop(key)
        elif isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return yaml.safe_dump(document)


def test_a_camera_device_gets_its_identity_and_the_boxs_settings() -> None:
    parsed = parse_config(
        config(None, {"device_id": "belt-2-dev", "password": "p2", "groups": ["glass"]})
    )
    camera = parsed.camera_list()[1]
    unit = unit_config(parsed, camera)
    assert unit.device_id == "belt-2-dev"
    assert unit.mqtt is not None and unit.update is not None
    assert (unit.mqtt.username, unit.mqtt.password) == ("belt-2-dev", "p2")  # the ACL's %u
    assert unit.mqtt.host == "broker"
    assert unit.update.groups == ["glass"] and unit.update.probation_s == 5
    assert unit.store == Path("/var/lib/edgefleet/cameras/belt-2")
    assert [c.id for c in unit.camera_list()] == ["belt-2"]
    assert unit.camera_list()[0].fleet is None
    assert unit.metrics.enabled is False  # the box serves /metrics
    # the box's own agent judges only the cameras that share its bundle
    assert [c.id for c in shared_config(parsed).camera_list()] == ["belt-1"]
    plain = parse_config(config(None, None))
    assert shared_config(plain) is plain


def test_without_a_box_password_the_camera_device_needs_none() -> None:
    parsed = parse_config(
        config(None, {"device_id": "cam"}, mqtt={"username": None, "password": None})
    )
    unit = unit_config(parsed, parsed.camera_list()[1])
    assert unit.mqtt is not None and (unit.mqtt.username, unit.mqtt.password) == (None, None)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            config({"device_id": "a", "password": "x"}, {"device_id": "b", "password": "y"}),
            "cameras[*].fleet: every camera is its own fleet device",
        ),
        (
            config(None, {"device_id": "box", "password": "x"}),
            "cameras[1].fleet.device_id: box is already the box's device_id",
        ),
        (
            config(None, {"device_id": "a", "password": "x"}, {"device_id": "a", "password": "y"}),
            "cameras[2].fleet.device_id: a is already camera belt-2's fleet device_id",
        ),
        (
            config(None, {"device_id": "a", "password": "x", "store": "/var/lib/edgefleet"}),
            "cameras[1].fleet.store: /var/lib/edgefleet is already the box's store",
        ),
        (
            config(None, {"device_id": "a"}),
            "cameras[1].fleet.password: the device logs in to the broker with a password",
        ),
        (
            config(None, {"device_id": "a", "password": "x"}, update=None),
            "cameras[1].fleet: a camera that is its own fleet device takes its bundles over MQTT",
        ),
        (
            config(
                None,
                {"device_id": "a", "password": "x"},
                mqtt={"tls": {"cert_file": "/etc/box.crt", "key_file": "/etc/box.key"}},
            ),
            "cameras[1].fleet.tls: the device logs in with a client certificate",
        ),
        (
            config(None, {"device_id": "a", "password": "x", "colour": "red"}),
            "cameras.1.fleet.colour: Extra inputs are not permitted",
        ),
    ],
    ids=[
        "every-camera",
        "box-id",
        "same-id",
        "box-store",
        "no-password",
        "no-update",
        "box-certificate",
        "unknown-key",
    ],
)
def test_ambiguous_camera_devices_are_refused_naming_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert words in str(raised.value)
