"""The server's side of a shadow run on the wire: retained requests set and cleared per device.

A :class:`~fleet_server.rollout_progress.StartShadow` action publishes a
:class:`~edge_runtime.protocol.shadow.ShadowRequest`, retained (QoS 1), on
each device's ``shadow/request`` topic, so a device that is offline or
restarts picks it up when it connects; a
:class:`~fleet_server.rollout_progress.StopShadow` clears it (an empty
retained payload), which ends the device's run.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edge_runtime.protocol.shadow import ShadowRequest
from fleet_server.rollout_progress import StartShadow, StopShadow

__all__ = ["publish_shadow", "request_topic"]


def request_topic(prefix: str, device_id: str) -> str:
    """``PREFIX/devices/<id>/shadow/request``."""
    return f"{prefix}/devices/{device_id}/shadow/request"


def publish_shadow(client: mqtt.Client, prefix: str, action: StartShadow | StopShadow) -> None:
    """Set (start) or clear (stop) the retained shadow request of each of the action's devices."""
    payload = b""
    if isinstance(action, StartShadow):
        payload = ShadowRequest(
            bundle_sha256=action.bundle_sha,
            every_nth=action.every_nth,
            cpu_budget=action.cpu_budget,
            window_s=action.window_s,
        ).encode()
    for device_id in action.device_ids:
        client.publish(request_topic(prefix, device_id), payload, qos=1, retain=True)
