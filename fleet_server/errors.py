"""The fleet server's errors: registry, rollout and delivery failures."""

from __future__ import annotations

from edge_runtime.errors import EdgefleetError, MalformedMessageError

__all__ = [
    "CertificateAuthorityError",
    "DeliveryServerError",
    "FleetError",
    "IllegalRolloutTransitionError",
    "KeyManagementError",
    "LeaseLostError",
    "MalformedReportError",
    "MalformedRequestError",
    "NotFoundError",
    "NotLeaderError",
    "RegistryError",
    "RegistryStorageError",
    "ReleaseError",
    "RolloutError",
    "RolloutPlanError",
]


class FleetError(EdgefleetError):
    """Root of the fleet server's errors."""


class RegistryError(FleetError):
    """A device or bundle is unknown, duplicated or in a state that forbids the request."""


class NotFoundError(RegistryError):
    """The device, bundle, rollout or wave named is not in the registry (an HTTP 404)."""


class RolloutError(FleetError):
    """A rollout cannot be created or moved on as asked."""


class KeyManagementError(FleetError):
    """Keys cannot be created, loaded (wrong passphrase, bad file) or rotated as asked."""


class CertificateAuthorityError(FleetError):
    """The fleet CA cannot be created, opened or used as asked, or a CRL is not the fleet CA's."""


class ReleaseError(FleetError):
    """A bundle cannot be released or assigned (unreadable, already released differently, unknown)."""


class DeliveryServerError(FleetError):
    """The server cannot serve bundle chunks (unknown bundle, unreadable file)."""


class MalformedRequestError(DeliveryServerError, MalformedMessageError):
    """A device's chunk request is not valid: not JSON, wrong fields, ranges out of bounds, unknown bundle."""


class MalformedReportError(RegistryError, MalformedMessageError):
    """A device's state, event or telemetry payload is not valid: wrong fields, wrong device, too large."""


class RegistryStorageError(RegistryError):
    """The registry's database cannot be reached, is locked too long, or holds an unknown schema."""


class RolloutPlanError(RolloutError):
    """A rollout's spec cannot be planned: unknown or repeated named devices, devices no wave takes."""


class IllegalRolloutTransitionError(RolloutError):
    """An operator command does not apply to the rollout's status (approve when not awaiting approval)."""


class LeaseLostError(FleetError):
    """This replica no longer holds the lease it wrote under: another replica took over."""


class NotLeaderError(FleetError):
    """Another server replica leads the rollouts: send rollout changes to it (an HTTP 503)."""
