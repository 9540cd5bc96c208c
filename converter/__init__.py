"""edgefleet's converter: trained models in, quantised and checked bundles out (workstation side)."""

from __future__ import annotations

from converter.errors import ConversionError

__all__ = ["ConversionError"]
