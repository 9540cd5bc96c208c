"""edgefleet's device-side kernel.

Everything a camera box needs and nothing it does not: the model bundle
format, preprocessing, inference backends, trust verification and protocol
messages. This package never imports TensorFlow, ``converter`` or
``fleet_server``; a test enforces that.
"""

from __future__ import annotations

from edge_runtime.errors import EdgefleetError

__version__ = "0.1.0"

__all__ = ["EdgefleetError", "__version__"]
