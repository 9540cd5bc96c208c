"""Where predictions go: JSON lines, an MQTT topic, and plug-ins for the sorter.

Each output implements :class:`PredictionSink`. A plug-in is a Python entry
point in the ``edgefleet.outputs`` group that names either a callable taking
the prediction's dict or a class with ``emit(prediction_dict)`` (and
optionally ``close()``); it is loaded by name from the config. An output that
fails is logged and counted, and never stops classification.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from edge_runtime.errors import OutputError
from edge_runtime.plugins import (
    OUTPUTS_GROUP,
    describe_installed,
    find_entry_point,
    load_entry_point,
)
from edge_runtime.prediction import Prediction

__all__ = [
    "PLUGIN_GROUP",
    "CallbackSink",
    "JsonLinesSink",
    "MqttPredictionSink",
    "PredictionSink",
    "Publisher",
    "load_plugin",
]

log = logging.getLogger(__name__)

PLUGIN_GROUP = OUTPUTS_GROUP


class PredictionSink(ABC):
    """Receives every prediction, on the inference thread: keep ``emit`` quick."""

    name: str = "sink"
    blocking: bool = True
    """Whether ``emit`` may wait on something outside the process (a disk, a network peer,
    plug-in code): the device runs such an output on its own queue thread."""

    @abstractmethod
    def emit(self, prediction: Prediction) -> None:
        """Deliver one prediction."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""


class JsonLinesSink(PredictionSink):
    """One JSON object per line, to stdout (``-``) or appended to a file, flushed per line."""

    name = "jsonl"

    def __init__(self, path: str = "-") -> None:
        self._owned = path != "-"
        try:
            self._stream: IO[str] = (
                Path(path).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115 - held until close()
                if self._owned
                else sys.stdout
            )
        except OSError as exc:
            raise OutputError(f"cannot open JSON-lines output {path}: {exc.strerror}") from exc

    def emit(self, prediction: Prediction) -> None:
        self._stream.write(prediction.to_json() + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()


class Publisher(Protocol):
    """What :class:`MqttPredictionSink` needs from an MQTT connection."""

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue one message (never blocks on the network)."""


class MqttPredictionSink(PredictionSink):
    """Publishes each ``every_n``-th prediction as JSON to the device's predictions topic."""

    name = "mqtt"
    blocking = False  # paho queues the message for its network thread and returns

    def __init__(self, publisher: Publisher, topic: str, qos: int = 0, every_n: int = 1) -> None:
        self._publisher = publisher
        self.topic = topic
        self._qos = qos
        self._every_n = every_n
        self._seen = 0

    def emit(self, prediction: Prediction) -> None:
        self._seen += 1
        if (self._seen - 1) % self._every_n == 0:
            self._publisher.publish(self.topic, prediction.to_json().encode(), qos=self._qos)


class CallbackSink(PredictionSink):
    """Wraps a plug-in: a callable, or an object with ``emit`` (and maybe ``close``)."""

    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self._emit: Callable[[dict[str, Any]], object] = (
            target.emit if hasattr(target, "emit") else target
        )
        self._close: Callable[[], object] | None = getattr(target, "close", None)
        self.blocking = bool(getattr(target, "blocking", True))

    def emit(self, prediction: Prediction) -> None:
        self._emit(prediction.to_dict())

    def close(self) -> None:
        if self._close is not None:
            self._close()


def load_plugin(name: str) -> CallbackSink:
    """Load the entry point ``name`` from the ``edgefleet.outputs`` group."""
    ep = find_entry_point(PLUGIN_GROUP, name)
    if ep is None:
        raise OutputError(
            f"no output plug-in named {name!r} in entry-point group {PLUGIN_GROUP!r}"
            f" ({describe_installed(PLUGIN_GROUP)})"
        )
    target = load_entry_point(ep, "output plug-in", OutputError)
    if isinstance(target, type):
        target = target()
    if not callable(target) and not hasattr(target, "emit"):
        raise OutputError(f"output plug-in {name!r} is neither callable nor has emit()")
    return CallbackSink(name, target)
