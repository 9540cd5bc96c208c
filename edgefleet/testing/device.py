"""A real device runtime in a thread of the test process, and a patient ``wait_for``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edge_runtime.config import DeviceConfig, parse_config
from edge_runtime.device import DeviceRuntime, RunSummary

if TYPE_CHECKING:
    from edge_runtime.agent import UpdateAgent

__all__ = ["RunningDevice", "json_lines", "wait_for"]


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The complete records of a JSON lines file a device is writing (none if it is not there
    yet): a last line without its newline is still being written and is left out."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def wait_for(
    condition: Callable[[], object],
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> None:
    """Poll ``condition`` until it is true; ``AssertionError`` with ``message`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g} s: {text}")
        time.sleep(interval)


class RunningDevice:
    """:class:`~edge_runtime.device.DeviceRuntime` running its loop in a thread until :meth:`close`.

    ``config`` is a parsed config, its YAML text, or the same as a mapping (dumped
    to YAML and parsed, so it is checked like a file on a camera box).
    """

    def __init__(self, config: DeviceConfig | str | Mapping[str, Any]) -> None:
        if isinstance(config, Mapping):
            config = yaml.safe_dump(_plain(config), sort_keys=False)
        if isinstance(config, str):
            config = parse_config(config, "<test device config>")
        self.config = config
        self.runtime = DeviceRuntime(config)
        self.stop_event = threading.Event()
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        """What ended the loop, if it was an exception."""
        self.thread = threading.Thread(
            target=self._run, name=f"device[{config.device_id}]", daemon=True
        )
        self.thread.start()

    @property
    def device_id(self) -> str:
        """The configured device id."""
        return self.config.device_id

    @property
    def agent(self) -> UpdateAgent:
        """The update agent (the config has an ``update`` section), else ``AssertionError``."""
        if self.runtime.agent is None:
            raise AssertionError(f"{self.device_id} runs without updates (no update section)")
        return self.runtime.agent

    def connected(self) -> bool:
        """Whether the device's MQTT link is up."""
        return self.runtime.mqtt is not None and self.runtime.mqtt.connected.is_set()

    def active_sha256(self) -> str | None:
        """The sha256 of the bundle the device classifies with now."""
        current = self.runtime.model.current
        return None if current is None else current.bundle.sha256

    def wait_for(self, condition: Callable[[], object], timeout: float = 30.0) -> None:
        """:func:`wait_for`, with the device's update phase and refusals in the failure."""
        wait_for(condition, timeout, message=self._describe)

    def finish(self, timeout: float = 30.0) -> RunSummary:
        """Wait for the loop to end by itself (a finite source ran out); what the run did."""
        self.thread.join(timeout=timeout)
        if self.error is not None:
            raise AssertionError(f"{self.device_id} stopped on an error: {self.error!r}")
        if self.thread.is_alive() or self.summary is None:
            raise AssertionError(
                f"{self.device_id} did not finish within {timeout:g} s (is its source finite?)"
            )
        return self.summary

    def close(self, timeout: float = 20.0) -> RunSummary | None:
        """Stop the loop and wait for it; what the run did (None if it did not end in time)."""
        self.stop_event.set()
        self.thread.join(timeout=timeout)
        return self.summary

    def _run(self) -> None:
        try:
            self.summary = self.runtime.run(self.stop_event)
        except BaseException as exc:
            self.error = exc
            raise

    def _describe(self) -> str:
        agent = self.runtime.agent
        if agent is None:
            return f"{self.device_id} (no update agent)"
        return (
            f"{self.device_id}: update phase {agent.state.phase.value}, refusals {agent.refusals}"
        )


def _plain(value: Any) -> Any:
    """A mapping of config values as YAML-safe plain data (paths become strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
