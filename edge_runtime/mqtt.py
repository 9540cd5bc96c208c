"""The device's MQTT connection: paho-mqtt v2, TLS and credentials, availability via a retained Last Will.

Topics live under ``{prefix}/devices/{device_id}/``; ``docs/protocol.md``
documents them. The connection reconnects by itself with backoff; publishing
never blocks the caller.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.config import MqttConfig

__all__ = ["MqttLink", "device_topic"]

log = logging.getLogger(__name__)


def device_topic(prefix: str, device_id: str, leaf: str) -> str:
    """``{prefix}/devices/{device_id}/{leaf}``."""
    return f"{prefix}/devices/{device_id}/{leaf}"


class MqttLink:
    """One broker connection per device process; thread-safe ``publish``."""

    def __init__(self, config: MqttConfig, device_id: str) -> None:
        self.config = config
        self.device_id = device_id
        self.availability_topic = device_topic(config.topic_prefix, device_id, "availability")
        self.connected = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-device-{device_id}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if config.username is not None:
            self._client.username_pw_set(config.username, config.password)
        if config.tls is not None:
            tls = config.tls
            self._client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
            self._client.tls_insecure_set(tls.insecure_skip_verify)
        self._client.will_set(self.availability_topic, b"offline", qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning(
                "MQTT connection to %s:%s refused: %s", self.config.host, self.config.port, reason
            )
            return
        log.info("connected to MQTT broker %s:%s", self.config.host, self.config.port)
        client.publish(self.availability_topic, b"online", qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self.connected.clear()
        log.warning("disconnected from MQTT broker (%s); reconnecting", reason)

    def start(self) -> None:
        """Connect in the background and keep reconnecting."""
        self._client.connect_async(
            self.config.host, self.config.port, keepalive=self.config.keepalive_s
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (True) or ``timeout`` seconds pass (False)."""
        return self.connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a message; QoS 0 messages published while disconnected are dropped."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self) -> None:
        """Say ``offline`` (retained), disconnect and stop the network thread."""
        if self.connected.is_set():
            info = self._client.publish(self.availability_topic, b"offline", qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()
