"""edgefleet's fleet server: registry, staged rollouts, MQTT delivery (operator side)."""

from __future__ import annotations

from fleet_server.errors import FleetError

__all__ = ["FleetError"]
