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

__all__ = ["publish_metadata"]

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
    infos = []
    for suffix, payload in repository.published().items():
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
