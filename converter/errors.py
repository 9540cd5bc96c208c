"""The converter's errors: the input model, the data or the parity gate is at fault."""

from __future__ import annotations

from edge_runtime.errors import EdgefleetError

__all__ = [
    "ConversionError",
    "DatasetError",
    "ModelLoadError",
    "ParityGateError",
    "QuantizationError",
    "UnsupportedModelError",
]


class ConversionError(EdgefleetError):
    """Root of the converter's errors."""


class ModelLoadError(ConversionError):
    """The source model file is missing, corrupt or of an unsupported kind."""


class DatasetError(ConversionError):
    """A labelled image folder is empty, mismatched with the labels, or unreadable."""


class ParityGateError(ConversionError):
    """The converted model disagrees with the float model beyond the allowed thresholds."""


class UnsupportedModelError(ConversionError):
    """The model loads but cannot be converted as asked (input layout, ops, format pair)."""


class QuantizationError(ConversionError):
    """Calibration or quantisation failed inside the quantiser."""
