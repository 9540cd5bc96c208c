"""Services the integration tests need (Mosquitto, PostgreSQL): found, or a clear failure.

``make test`` installs both with apt-get (as root). A missing service fails the
test with a message that says so: a run can never pass by skipping the
broker or the database.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from fleet_server.broker_auth import mosquitto_binary

__all__ = ["require_mosquitto", "service_missing"]


def service_missing(message: str) -> NoReturn:
    """Fail the test with ``message``: the broker and the database are part of the suite."""
    pytest.fail(f"{message} (the tests need it: run make test, or install it)", pytrace=False)


def require_mosquitto() -> str:
    """The Mosquitto binary (the test fails when it is absent)."""
    binary = mosquitto_binary()
    if binary is None:
        service_missing(
            "mosquitto is not installed (make test installs it with apt-get when run as root)"
        )
    return binary
