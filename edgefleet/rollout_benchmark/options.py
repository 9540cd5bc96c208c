"""What ``edgefleet bench fleet`` is asked to do, and its one error type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_runtime.errors import EdgefleetError

__all__ = ["FLOOR_ORDERS", "FleetBenchError", "FleetBenchOptions", "FloorOrder"]

FloorOrder = Literal["both", "before", "after", "none"]
FLOOR_ORDERS: tuple[FloorOrder, ...] = ("both", "before", "after", "none")
"""When the transport floor is measured: before and after the rollout (its mean is the floor),
before only, after only, or not at all."""


class FleetBenchError(EdgefleetError):
    """The fleet benchmark could not set up or did not finish."""


@dataclass(frozen=True)
class FleetBenchOptions:
    """What ``edgefleet bench fleet`` is asked to do."""

    devices: int = 1000
    bundle_mb: float = 2.6
    bundle: Path | None = None
    broker_url: str | None = None
    workdir: Path | None = None
    canary: int = 10
    workers: int = 4
    timeout_s: float = 600.0
    keep: bool = False
    replicas: int = 1
    """How many ``edgefleet serve`` processes share the database and the broker."""
    db_url: str | None = None
    """The servers' database; None: SQLite in the state folder, or (``postgres``, or more than
    one replica) a throw-away PostgreSQL cluster started for the run."""
    postgres: bool = False
    """Start a throw-away PostgreSQL cluster for the run even with one replica."""
    floor: FloorOrder = "both"
    """When to measure the transport floor (see :data:`FLOOR_ORDERS`)."""
