"""Fixtures shared by the unit tests of the registry and what is built on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgefleet.testing import FakeClock
from fleet_server.registry import Registry


@pytest.fixture
def clock(fake_clock: FakeClock) -> FakeClock:
    """The kit's fake clock (Unix time 1.8e9), which the registries opened here read."""
    return fake_clock


@pytest.fixture
def open_registry(database_url: str, clock: FakeClock) -> Iterator[Callable[..., Registry]]:
    """Open registries on the test's database (SQLite, and PostgreSQL where it is installed);
    several when a test restarts or runs replicas. All are closed at the end."""
    opened: list[Registry] = []

    def open_(**options: Any) -> Registry:
        options.setdefault("clock", clock)
        registry = Registry.open(database_url, **options)
        opened.append(registry)
        return registry

    yield open_
    for registry in opened:
        registry.close()


@pytest.fixture
def registry(open_registry: Callable[..., Registry]) -> Registry:
    """One registry on the test's database."""
    return open_registry()
