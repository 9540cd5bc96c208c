"""The device's MQTT connection: paho-mqtt v2, TLS and credentials, availability via a retained Last Will.

Topics live under ``{prefix}/devices/{device_id}/``; ``docs/protocol.md``
documents them. The connection reconnects by itself with backoff; publishing
never blocks the caller. Subscriptions are kept by the link and made again
after every reconnect (the session is clean, so the broker forgets them);
their callbacks and the connect listeners run on paho's network thread.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.config import MqttConfig, TlsConfig
from edge_runtime.errors import ConfigError
from edge_runtime.protocol import Availability

__all__ = ["ConnectListener", "MessageHandler", "MqttLink", "device_topic"]

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
"""Called with a message's topic and payload, on paho's network thread."""

ConnectListener = Callable[[], None]
"""Called after every successful (re)connect, on paho's network thread."""


@dataclass(frozen=True)
class _Subscription:
    qos: int
    handler: MessageHandler
    on_subscribed: ConnectListener | None


def device_topic(prefix: str, device_id: str, leaf: str) -> str:
    """``{prefix}/devices/{device_id}/{leaf}``."""
    return f"{prefix}/devices/{device_id}/{leaf}"


class MqttLink:
    """One broker connection per device process; thread-safe ``publish`` and ``subscribe``."""

    def __init__(self, config: MqttConfig, device_id: str) -> None:
        self.config = config
        self.device_id = device_id
        self.availability_topic = device_topic(config.topic_prefix, device_id, "availability")
        self.connected = threading.Event()
        self._stopping = False
        self._lock = threading.RLock()
        self._subscriptions: dict[str, _Subscription] = {}
        self._pending_subacks: dict[int, list[str]] = {}
        self._connect_listeners: list[ConnectListener] = []
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-device-{device_id}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if config.username is not None:
            self._client.username_pw_set(config.username, config.password)
        if config.tls is not None:
            _set_tls(self._client, config.tls)
        self._client.will_set(
            self.availability_topic, Availability.OFFLINE.encode(), qos=1, retain=True
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._last_failure: str | None = None
        """Why the last connection attempt failed (logged once per new reason)."""
        self._socket_error: str | None = None
        """paho's last socket error, for the next disconnect's warning."""
        self._client.on_log = self._on_log
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning(
                "MQTT connection to %s:%s refused: %s", self.config.host, self.config.port, reason
            )
            return
        log.info("connected to MQTT broker %s:%s", self.config.host, self.config.port)
        self._last_failure = None
        client.publish(self.availability_topic, Availability.ONLINE.encode(), qos=1, retain=True)
        with self._lock:
            listeners = list(self._connect_listeners)
        for listener in listeners:
            _run_callback(listener)
        with self._lock:
            self.connected.set()
            if self._subscriptions:
                self._send_subscribe(list(self._subscriptions))

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        """A (re)connect failed before MQTT spoke: refused, unreachable, or TLS (a wrong CA).

        paho calls this inside its ``except OSError`` around the attempt, so the
        exception is the current one; a reason seen last time is logged at debug
        level only (paho retries with backoff, up to every 30 s).
        """
        exc = sys.exc_info()[1]
        reason = str(exc) if exc is not None else "no reason given"
        level = logging.DEBUG if reason == self._last_failure else logging.WARNING
        self._last_failure = reason
        log.log(
            level,
            "cannot connect to MQTT broker %s:%s: %s; retrying",
            self.config.host,
            self.config.port,
            reason,
        )

    def _on_log(self, _client: mqtt.Client, _userdata: Any, level: int, text: str) -> None:
        """Keep paho's socket error: a broker that refuses the device's certificate says so in a
        TLS alert ("certificate revoked") that paho reports only here."""
        if level == mqtt.MQTT_LOG_ERR and text.startswith("failed to receive on socket"):
            self._socket_error = text.removeprefix("failed to receive on socket: ")

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        with self._lock:
            self.connected.clear()
            self._pending_subacks.clear()
        why, self._socket_error = self._socket_error, None
        if self._stopping:
            log.info("disconnected from MQTT broker (stopping)")
        else:
            log.warning(
                "disconnected from MQTT broker (%s%s); reconnecting",
                reason,
                f": {why}" if why else "",
            )

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reasons: Any, _props: Any
    ) -> None:
        with self._lock:
            filters = self._pending_subacks.pop(mid, [])
            granted = []
            for topic_filter, reason in zip(filters, reasons, strict=False):
                if reason.is_failure:
                    log.warning("broker refused subscription to %s: %s", topic_filter, reason)
                    continue
                subscription = self._subscriptions.get(topic_filter)
                if subscription is not None and subscription.on_subscribed is not None:
                    granted.append(subscription.on_subscribed)
        for on_subscribed in granted:
            _run_callback(on_subscribed)

    def _send_subscribe(self, filters: list[str]) -> None:
        """Ask for ``filters``; called with ``self._lock`` held so the SUBACK finds its mid."""
        rc, mid = self._client.subscribe(
            [(topic_filter, self._subscriptions[topic_filter].qos) for topic_filter in filters]
        )
        if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._pending_subacks[mid] = filters
        else:
            log.debug("subscription to %s deferred to the next connect (%s)", filters, rc)

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

    def subscribe(
        self,
        topic_filter: str,
        handler: MessageHandler,
        qos: int = 1,
        *,
        on_subscribed: ConnectListener | None = None,
    ) -> None:
        """Receive messages matching ``topic_filter``, now and after every reconnect.

        ``handler(topic, payload)`` runs on paho's network thread; an exception
        in it is logged and the message dropped. ``on_subscribed`` runs each
        time the broker acknowledges the subscription (first time and after
        each reconnect): from then on, nothing published on it is missed.
        Subscribing again to the same filter replaces the handler.
        """
        with self._lock:
            self._subscriptions[topic_filter] = _Subscription(qos, handler, on_subscribed)
            self._client.message_callback_add(topic_filter, _dispatcher(handler))
            if self.connected.is_set():
                self._send_subscribe([topic_filter])

    def unsubscribe(self, topic_filter: str) -> None:
        """Stop receiving ``topic_filter`` (no-op if not subscribed)."""
        with self._lock:
            if self._subscriptions.pop(topic_filter, None) is None:
                return
            self._client.message_callback_remove(topic_filter)
            if self.connected.is_set():
                self._client.unsubscribe(topic_filter)

    def add_connect_listener(self, listener: ConnectListener) -> None:
        """Call ``listener()`` after every successful (re)connect, before subscriptions are renewed."""
        with self._lock:
            self._connect_listeners.append(listener)

    def remove_connect_listener(self, listener: ConnectListener) -> None:
        """Stop calling ``listener`` (no-op if it was not added)."""
        with self._lock:
            if listener in self._connect_listeners:
                self._connect_listeners.remove(listener)

    def stop(self) -> None:
        """Say ``offline`` (retained), disconnect and stop the network thread."""
        self._stopping = True
        if self.connected.is_set():
            info = self._client.publish(
                self.availability_topic, Availability.OFFLINE.encode(), qos=1, retain=True
            )
            info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()


def _set_tls(client: mqtt.Client, tls: TlsConfig) -> None:
    """TLS on ``client`` as ``tls`` says; :class:`ConfigError` naming the file that cannot be used."""
    try:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        files = ", ".join(
            f"{name} {path}"
            for name, path in (
                ("ca_file", tls.ca_file),
                ("cert_file", tls.cert_file),
                ("key_file", tls.key_file),
            )
            if path is not None
        )
        raise ConfigError(f"mqtt.tls: cannot use {files or 'the system CAs'}: {exc}") from exc
    client.tls_insecure_set(tls.insecure_skip_verify)


def _dispatcher(handler: MessageHandler) -> Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None]:
    """Adapt ``handler(topic, payload)`` to paho's per-filter callback."""

    def dispatch(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        _run_callback(handler, message.topic, message.payload)

    return dispatch


def _run_callback(callback: Callable[..., None], *args: Any) -> None:
    """Run a user callback on the network thread; paho's loop dies if one raises, so log instead."""
    try:
        callback(*args)
    except Exception:
        log.exception("MQTT callback %r failed", callback)
