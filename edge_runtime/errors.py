"""The edgefleet exception hierarchy, rooted in :class:`EdgefleetError`.

Every package raises its own sub-tree (``converter.errors``,
``fleet_server.errors`` extend it); broad ``except`` clauses exist only at a
boundary (CLI, network handler) and always re-raise as one of these with
``raise ... from e``. Class names say who is at fault, in the manner of
python-tuf's ``RepositoryError`` / ``DownloadError``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "BadSignatureError",
    "BundleArchiveError",
    "BundleError",
    "BundleTooLargeError",
    "ChunkIntegrityError",
    "ConfigError",
    "DeliveryError",
    "DiskFullError",
    "DuplicateMemberError",
    "EdgefleetError",
    "GoldenMismatchError",
    "HashMismatchError",
    "IllegalTransitionError",
    "IncompleteMetadataError",
    "InconsistentMetadataError",
    "LockFileError",
    "MalformedMessageError",
    "ManifestError",
    "MemberContentError",
    "MetadataExpiredError",
    "MissingMemberError",
    "OutputError",
    "PreprocessingError",
    "RollbackError",
    "RuntimeDeviceError",
    "RuntimeTooOldError",
    "SmokeTestError",
    "SourceError",
    "SourceUnavailableError",
    "StatusServerError",
    "StoreError",
    "TargetMismatchError",
    "TrustError",
    "UnexpectedMemberError",
    "UnknownTargetError",
    "UnsafeMemberError",
    "UnsupportedSchemaVersionError",
    "UpdateError",
]


class EdgefleetError(Exception):
    """Root of every error that edgefleet raises on purpose."""


# --- model bundle -----------------------------------------------------------


class BundleError(EdgefleetError):
    """A model bundle is unreadable, unsafe or inconsistent; it must not be used."""


class BundleArchiveError(BundleError):
    """The archive itself is malformed: not ustar, truncated, bad checksum, trailing data."""


class BundleTooLargeError(BundleError):
    """The archive, one member or the number of members is over its size cap."""


class UnsafeMemberError(BundleError):
    """A member could escape or abuse the destination: traversal, absolute path, link, device."""


class DuplicateMemberError(BundleError):
    """The same member name appears twice in the archive."""


class MissingMemberError(BundleError):
    """A member the manifest lists (or ``manifest.json`` itself) is not in the archive."""


class UnexpectedMemberError(BundleError):
    """The archive holds a member that the manifest does not list."""


class HashMismatchError(BundleError):
    """A member's bytes do not match the size or sha256 recorded in the manifest."""


class ManifestError(BundleError):
    """``manifest.json`` is not valid JSON or breaks the schema; the message names the field."""


class UnsupportedSchemaVersionError(ManifestError):
    """The manifest was written for a schema version this runtime does not know."""


class RuntimeTooOldError(ManifestError):
    """The bundle's ``compatibility.min_runtime_version`` is newer than this runtime."""


class MemberContentError(BundleError):
    """A member's content is unusable (model without its format's magic, bad golden array)."""


# --- device runtime ---------------------------------------------------------


class RuntimeDeviceError(EdgefleetError):
    """Root of the device runtime's own errors (sources, backends, config)."""


class ConfigError(RuntimeDeviceError):
    """The device config is unreadable or invalid; the message names the field and line."""


class LockFileError(ConfigError):
    """A dependency lock (``locks/*.txt``) is unreadable, or a line is not one hashed pin."""


class OutputError(RuntimeDeviceError):
    """A prediction output (file, plug-in) cannot be opened or loaded."""


class PreprocessingError(RuntimeDeviceError):
    """A frame or a preprocessing contract cannot produce the model's input tensor."""


class BackendError(RuntimeDeviceError):
    """An inference backend is missing, cannot load the model, or failed to run it."""


class BackendUnavailableError(BackendError):
    """The package a backend needs is not installed; the message names it."""


class GoldenMismatchError(RuntimeDeviceError):
    """Replaying a bundle's golden vectors on this device did not reproduce the expected scores."""


class SourceError(RuntimeDeviceError):
    """A frame source (camera, file, stream, folder) cannot be opened or read; the message names it."""


class SourceUnavailableError(SourceError):
    """A source cannot be opened: missing file or device, unreachable URL, backend not built in."""


class StatusServerError(RuntimeDeviceError):
    """The local health/metrics HTTP endpoint cannot start (address in use, bad host)."""


# --- trust, delivery and updates -----------------------------------------------


class TrustError(EdgefleetError):
    """TUF metadata, an assignment or a bundle failed verification; nothing unverified is used."""


class UnknownTargetError(TrustError):
    """An assignment names a bundle that no release key signed (or a target that does not exist)."""


class TargetMismatchError(TrustError):
    """Downloaded bytes do not match the signed length or sha256 of their target."""


class DeliveryError(RuntimeDeviceError):
    """Bundle chunks could not be received, stored or assembled."""


class ChunkIntegrityError(DeliveryError):
    """A chunk is longer than allowed, out of range, or does not match its announced hash."""


class UpdateError(RuntimeDeviceError):
    """The device update lifecycle could not proceed (the active bundle keeps serving)."""


class StoreError(UpdateError):
    """The on-device bundle store cannot write or read (disk full, permissions, corruption)."""


class SmokeTestError(UpdateError):
    """A staged bundle failed its smoke test (load, tensor specs, golden vectors, latency budget)."""


class IllegalTransitionError(UpdateError):
    """An update lifecycle input arrived in a state that does not accept it (a bug or a stale result)."""


class DiskFullError(StoreError):
    """The bundle store's filesystem is out of space; nothing half-written was left behind."""


# --- TUF metadata refused on the device (raised by edge_runtime.trust) ----------


class IncompleteMetadataError(TrustError):
    """The retained metadata is not complete or consistent yet (a message has not arrived).

    Nothing new is trusted; refresh again when the next metadata message arrives.
    """


class BadSignatureError(TrustError):
    """Metadata is not signed by a threshold of the keys trusted for its role (forged, wrong or revoked key)."""


class RollbackError(TrustError):
    """Metadata older than what the device already trusts was offered (a replay); it is refused."""


class MetadataExpiredError(TrustError):
    """Metadata the device needs has expired (a freeze attack, or a server that stopped re-signing)."""


class InconsistentMetadataError(TrustError):
    """Signed metadata from two repository states was combined (mix-and-match); it is refused."""


# --- the MQTT protocol (edge_runtime.protocol) ----------------------------------------


class MalformedMessageError(EdgefleetError):
    """A message read off the wire is not valid; the message says what is wrong.

    Not JSON, too large or nested too deeply, another protocol major version,
    about another device than its topic names, or a field of the wrong type or
    size. The reader drops the message; the sender is at fault.
    """
