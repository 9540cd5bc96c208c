"""Publishing the TUF repository to devices: retained messages on ``PREFIX/tuf/<suffix>``.

The repository gives its payloads in a safe order (root versions, then
assignments, every hashed bin on ``bins/<bin>`` and targets, then snapshot,
then timestamp); a device that connects at any moment receives the whole
current set from the broker.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt

from fleet_server.errors import FleetError
from fleet_server.trust.repository import Repository

__all__ = ["MetadataPublisher", "publish_metadata"]

log = logging.getLogger(__name__)


def publish_metadata(
    client: mqtt.Client,
    repository: Repository,
    prefix: str = "edgefleet",
    timeout: float = 10.0,
    *,
    wait: bool = True,
) -> int:
    """Publish every metadata payload retained with QoS 1.

    With ``wait`` (the default) block until the broker acknowledged each one;
    callers that hold a lock paho's network thread may need pass ``wait=False``
    (the messages are queued in order and sent by paho's thread).
    """
    return _publish(client, repository.published(), prefix, timeout, wait=wait)


class MetadataPublisher:
    """Publishes only the metadata payloads that changed since the last publish.

    A rollout wave changes a few hashed bins, the snapshot and the
    timestamp; sending the 60-odd unchanged bins again would cost every
    device their download and a look. :meth:`reset` (after a reconnect to
    the broker, which may have lost its retained messages) makes the next
    publish send everything again.
    """

    def __init__(self, client: mqtt.Client, repository: Repository, prefix: str = "edgefleet"):
        self.client = client
        self.repository = repository
        self.prefix = prefix
        self._sent: dict[str, bytes] = {}

    def reset(self) -> None:
        """Forget what was sent: the next :meth:`publish` sends every payload."""
        self._sent = {}

    def publish(self, timeout: float = 10.0) -> int:
        """Publish the changed payloads, in the repository's safe order, and wait for the broker."""
        current = self.repository.published()
        changed = {k: v for k, v in current.items() if self._sent.get(k) != v}
        count = _publish(self.client, changed, self.prefix, timeout, wait=True)
        self._sent = current
        return count


def _publish(
    client: mqtt.Client, payloads: dict[str, bytes], prefix: str, timeout: float, *, wait: bool
) -> int:
    infos = []
    for suffix, payload in payloads.items():
        infos.append(client.publish(f"{prefix}/tuf/{suffix}", payload, qos=1, retain=True))
    if not wait:
        log.info("queued %d TUF metadata messages under %s/tuf/", len(infos), prefix)
        return len(infos)
    for info in infos:
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise FleetError(f"broker did not acknowledge metadata publish within {timeout} s")
    log.info("published %d TUF metadata messages under %s/tuf/", len(infos), prefix)
    return len(infos)
