"""One exception hierarchy: every package's errors derive from EdgefleetError."""

from __future__ import annotations

import inspect

import converter.errors
import edge_runtime.errors
import fleet_server.errors
from edgefleet import EdgefleetError


def test_every_public_error_class_derives_from_the_root() -> None:
    classes = [
        obj
        for module in (edge_runtime.errors, converter.errors, fleet_server.errors)
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name))
    ]
    assert len(classes) >= 20
    assert all(issubclass(cls, EdgefleetError) for cls in classes)
    # each package has one sub-tree root
    assert issubclass(converter.errors.ParityGateError, converter.errors.ConversionError)
    assert issubclass(fleet_server.errors.RolloutError, fleet_server.errors.FleetError)
    assert issubclass(
        edge_runtime.errors.UnsupportedSchemaVersionError, edge_runtime.errors.BundleError
    )
    assert not issubclass(converter.errors.ConversionError, edge_runtime.errors.BundleError)
