"""Services the integration tests need (Mosquitto, PostgreSQL): found, or a clear skip or failure.

``make test`` installs both with apt-get when run as root and then sets
``EDGEFLEET_REQUIRE_SERVICES=1``: there a missing service is a failure, so a
CI run can never pass by skipping the broker or the database. Elsewhere
(a laptop without them) the tests skip with the message.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from fleet_server.broker_auth import mosquitto_binary

__all__ = ["REQUIRE_ENV", "require_mosquitto", "service_missing"]

REQUIRE_ENV = "EDGEFLEET_REQUIRE_SERVICES"


def service_missing(message: str) -> NoReturn:
    """Skip with ``message``, or fail with it where the services are required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1: this run must have it)", pytrace=False)
    pytest.skip(message)


def require_mosquitto() -> str:
    """The Mosquitto binary (see :func:`service_missing` for when it is absent)."""
    binary = mosquitto_binary()
    if binary is None:
        service_missing(
            "mosquitto is not installed (make test installs it with apt-get when run as root)"
        )
    return binary
