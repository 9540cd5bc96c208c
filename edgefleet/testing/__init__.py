"""edgefleet's test kit: what our own tests use, offered to anyone testing code that plugs into edgefleet.

- :class:`FakeClock`: time that moves only when the test moves it;
- :class:`FakeCamera` (``type: fake-camera`` in a device config): generated
  frames, with the refused opens and dropped streams of a real camera;
- :class:`PluginDeclarations` and :func:`sample_prediction`: declare an output
  (or backend, or source) plug-in for one test and feed it predictions;
- :class:`RunningDevice`, :func:`wait_for` and :func:`json_lines`: a real device loop in
  a thread, and the complete records of a JSON lines file it is writing;
- :mod:`edgefleet.testing.broker`: MQTT brokers on loopback (embedded amqtt, Mosquitto);
- :mod:`edgefleet.testing.fleet`: a local fleet (keys, releases, fleet server,
  devices), which needs ``edgefleet[server]``;
- :mod:`edgefleet.testing.pytest_plugin`: the same as pytest fixtures.

See docs/testing.md. This module imports only what a camera box has installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgefleet.testing.camera import FakeCamera, FakeCameraConfig
    from edgefleet.testing.clock import FakeClock
    from edgefleet.testing.device import RunningDevice, json_lines, wait_for
    from edgefleet.testing.plugins import PluginDeclarations, declared_plugins, sample_prediction

__all__ = [
    "FakeCamera",
    "FakeCameraConfig",
    "FakeClock",
    "PluginDeclarations",
    "RunningDevice",
    "declared_plugins",
    "json_lines",
    "sample_prediction",
    "wait_for",
]

_HOMES = {
    "FakeCamera": "camera",
    "FakeCameraConfig": "camera",
    "FakeClock": "clock",
    "RunningDevice": "device",
    "wait_for": "device",
    "json_lines": "device",
    "PluginDeclarations": "plugins",
    "declared_plugins": "plugins",
    "sample_prediction": "plugins",
}


def __getattr__(name: str) -> Any:
    """Import each part on first use, so the pytest plug-in and the fake camera load only theirs."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
