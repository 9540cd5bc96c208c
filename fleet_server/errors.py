"""The fleet server's errors: registry, rollout and delivery failures."""

from __future__ import annotations

from edge_runtime.errors import EdgefleetError

__all__ = ["FleetError", "RegistryError", "RolloutError"]


class FleetError(EdgefleetError):
    """Root of the fleet server's errors."""


class RegistryError(FleetError):
    """A device or bundle is unknown, duplicated or in a state that forbids the request."""


class RolloutError(FleetError):
    """A rollout cannot be created or moved on as asked."""
