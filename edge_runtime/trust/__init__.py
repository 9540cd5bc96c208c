"""Trust on the device: TUF metadata received over MQTT, verified with python-tuf's ngclient.

A device is provisioned once with a trusted root (:meth:`TrustClient.provision`);
after that every retained ``PREFIX/tuf/...`` message is handed to
:meth:`TrustClient.offer`, :meth:`TrustClient.refresh` verifies what the
broker holds, and :meth:`TrustClient.assignment` says which release-signed
bundle this device should run (loading only the hashed bins that hold this
device's and its groups' assignments). :func:`verify_file` checks downloaded bytes
against the signed length and sha256 before anything reads them.
"""

from __future__ import annotations

from edge_runtime.trust.client import (
    BIN_NAME_PREFIX,
    BUNDLE_PREFIX,
    Assignment,
    BundleTarget,
    MetadataFetcher,
    TrustClient,
    suffix_for_role,
    suffix_for_url_name,
    verify_file,
)

__all__ = [
    "BIN_NAME_PREFIX",
    "BUNDLE_PREFIX",
    "Assignment",
    "BundleTarget",
    "MetadataFetcher",
    "TrustClient",
    "suffix_for_role",
    "suffix_for_url_name",
    "verify_file",
]
