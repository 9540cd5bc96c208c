"""pytest fixtures of the edgefleet test kit, loaded automatically where edgefleet is installed.

The ``pytest11`` entry point ``edgefleet`` loads this module in every pytest run
(``-p no:edgefleet`` turns it off); a project may instead list it in its
``conftest.py``: ``pytest_plugins = ["edgefleet.testing.pytest_plugin"]``.

Fixtures: ``fake_clock``, ``mqtt_broker`` (the embedded amqtt broker),
``mosquitto_broker``, ``local_fleet`` (needs ``edgefleet[server]``) and
``plugin_declarations``. Heavy parts are imported only by the fixtures that use them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edgefleet.testing.broker import LocalBroker, LocalBrokerError
from edgefleet.testing.clock import FakeClock
from edgefleet.testing.plugins import PluginDeclarations

if TYPE_CHECKING:
    from edgefleet.testing.fleet import LocalFleet

__all__ = [
    "fake_clock",
    "local_fleet",
    "mosquitto_broker",
    "mqtt_broker",
    "plugin_declarations",
]


@pytest.fixture
def fake_clock() -> FakeClock:
    """A :class:`~edgefleet.testing.FakeClock` at its default time; it moves when the test says."""
    return FakeClock()


@pytest.fixture
def mqtt_broker() -> Iterator[LocalBroker]:
    """The embedded amqtt broker (MQTT 3.1.1, anonymous) on a free loopback port."""
    with LocalBroker.amqtt() as broker:
        yield broker


@pytest.fixture
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """Mosquitto (default limits, anonymous) on a free loopback port; the test fails without it."""
    try:
        broker = LocalBroker.mosquitto(tmp_path_factory.mktemp("mosquitto"))
    except LocalBrokerError as exc:
        pytest.fail(f"{exc}: this test needs a Mosquitto broker", pytrace=False)
    with broker:
        yield broker


@pytest.fixture
def local_fleet(tmp_path: Path, mqtt_broker: LocalBroker) -> Iterator[LocalFleet]:
    """A :class:`~edgefleet.testing.fleet.LocalFleet` with the fleet server on ``mqtt_broker``.

    Not started: release bundles and provision devices, then call ``start()``.
    """
    from edgefleet.testing.fleet import LocalFleet

    with LocalFleet(tmp_path / "fleet", mqtt_broker.port) as fleet:
        yield fleet


@pytest.fixture
def plugin_declarations(tmp_path: Path) -> Iterator[PluginDeclarations]:
    """Entry points the test declares (``.declare(group, name, "module:attr")``), found until it ends.

    Modules written to ``plugin_declarations.folder`` are importable too.
    """
    with PluginDeclarations(tmp_path / "plugins") as declarations:
        yield declarations
