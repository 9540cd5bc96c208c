"""edgefleet: the umbrella command line and the end-to-end demo.

The product lives in three import packages: ``converter`` (workstation),
``fleet_server`` (operator's server) and ``edge_runtime`` (each camera box).
"""

from __future__ import annotations

from edge_runtime import __version__
from edge_runtime.errors import EdgefleetError

__all__ = ["EdgefleetError", "__version__"]
