"""What every JSON message shares: the protocol version, the bounded decoder and the base model.

A reader never hands a payload to a model before it is known to be a JSON
object of bounded size and depth, free of NaN and infinity, of this
protocol's major version and (for device reports) about the device its
topic names. Every refusal is a :class:`MalformedMessageError` whose text
says what was wrong, never quoting more than a few dozen characters of the
payload.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.errors import MalformedMessageError

__all__ = [
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "DeviceId",
    "Sha256",
    "Timestamp",
    "WireMessage",
    "clip",
    "decode_object",
]

PROTOCOL_VERSION: Final = 1
"""The major version of the protocol (the ``"protocol"`` field of every JSON message)."""

MAX_MESSAGE_BYTES: Final = 64 * 1024
"""The largest device report a reader decodes at all (telemetry has its own, smaller cap)."""

MAX_DEPTH: Final = 16
"""The deepest nesting of objects and arrays a reader accepts (telemetry needs 5)."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_time(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite, non-negative Unix time")
    return value


Sha256 = Annotated[str, Field(pattern=_SHA256.pattern)]
"""A bundle's identity: 64 lowercase hex digits."""
Timestamp = Annotated[float, AfterValidator(_check_time)]
"""Unix seconds on the sender's clock."""
DeviceId = Annotated[str, Field(max_length=64)]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (with ``...``): reasons quote errors of any length."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: object) -> str:
    return clip(repr(value), 80)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {clip(text, 40)} is out of range")
    return value


def _within_depth(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _unsafe(value: object, error: Exception) -> str:
    """Where in ``value`` JSON fails (the first NaN, infinity or odd type), for the error message."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), v) for key, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{clip(path, 80) or '(top level)'} is {item}"
        elif item is not None and not isinstance(item, str | int | float):
            return f"{clip(path, 80) or '(top level)'} is a {type(item).__name__}"
    return clip(str(error), 120)


def decode_object(payload: object, what: str, max_bytes: int) -> dict[str, Any]:
    """``payload`` (bytes off the wire, or an already decoded value) as a bounded JSON object.

    Bytes must be UTF-8 JSON of at most ``max_bytes``; a decoded value is
    measured by its compact JSON encoding. NaN, infinity, numbers out of the
    float range, nesting past :data:`MAX_DEPTH` and anything but an object are
    refused. ``what`` names the message in the error ("state from cam-1").
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        raw = bytes(payload)
        if len(raw) > max_bytes:
            raise MalformedMessageError(
                f"{what} is {len(raw)} bytes, over the {max_bytes}-byte cap"
            )
        try:
            data = json.loads(
                raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
            )
        except RecursionError as exc:
            raise MalformedMessageError(f"{what} is JSON nested too deeply") from exc
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise MalformedMessageError(f"{what} is not UTF-8 JSON: {clip(str(exc), 120)}") from exc
    else:
        try:
            encoded = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except RecursionError as exc:
            raise MalformedMessageError(f"{what} is JSON nested too deeply") from exc
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(
                f"{what} is not JSON-safe (NaN, infinity or odd types): {_unsafe(payload, exc)}"
            ) from exc
        if len(encoded) > max_bytes:
            raise MalformedMessageError(
                f"{what} is {len(encoded)} bytes, over the {max_bytes}-byte cap"
            )
        data = json.loads(encoded)  # plain JSON types from here on (tuples become lists)
    if not isinstance(data, dict):
        raise MalformedMessageError(f"{what} is not a JSON object")
    if not _within_depth(data, MAX_DEPTH):
        raise MalformedMessageError(f"{what} is nested deeper than {MAX_DEPTH} levels")
    return data


def check_header(data: Mapping[str, Any], what: str, device_id: str | None) -> None:
    """Refuse another protocol major version, and a report naming another device than its topic."""
    protocol = data.get("protocol", PROTOCOL_VERSION)
    if type(protocol) is not int or protocol != PROTOCOL_VERSION:
        raise MalformedMessageError(
            f"{what} uses protocol {_short(protocol)}; this reader speaks protocol "
            f"{PROTOCOL_VERSION}"
        )
    if device_id is not None:
        claimed = data.get("device_id", device_id)
        if claimed != device_id:
            raise MalformedMessageError(
                f"{what} published for device {device_id} names device {_short(claimed)}"
            )


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
        for error in exc.errors()[:5]
    )


_M = TypeVar("_M", bound="WireMessage")


class WireMessage(BaseModel):
    """A JSON message of the protocol: built by its sender, parsed once by its reader.

    Readers ignore fields they do not know (a newer minor version may add
    some) and refuse wrong types outright: no string is read as a number, no
    boolean as an integer, no float as a count.
    """

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    kind_name: ClassVar[str] = "message"
    """How errors name the message ("state", "event", ...)."""
    max_bytes: ClassVar[int] = MAX_MESSAGE_BYTES
    """The largest payload a reader decodes."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object sent on the wire."""
        return self.model_dump(mode="json", by_alias=True)

    def encode(self) -> bytes:
        """The payload bytes: compact UTF-8 JSON."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def _read(
        cls: type[_M],
        payload: object,
        what: str,
        *,
        device_id: str | None = None,
        max_bytes: int | None = None,
    ) -> _M:
        data = decode_object(payload, what, cls.max_bytes if max_bytes is None else max_bytes)
        check_header(data, what, device_id)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MalformedMessageError(f"{what} is invalid: {_problems(exc)}") from exc


class DeviceReport(WireMessage):
    """A message a device publishes under ``PREFIX/devices/<its id>/``."""

    @classmethod
    def parse(
        cls: type[_M], payload: object, device_id: str, *, max_bytes: int | None = None
    ) -> _M:
        """Read a payload published under ``devices/<device_id>/``; :class:`MalformedMessageError` if bad.

        ``payload`` is the message's bytes, or a value already decoded from
        them; ``max_bytes`` replaces the message's own size cap.
        """
        return cls._read(
            payload, f"{cls.kind_name} from {device_id}", device_id=device_id, max_bytes=max_bytes
        )
