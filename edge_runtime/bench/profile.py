"""Device profiles (``devices/profiles/*.yaml``): threads, backends and latency budgets of a target.

Parsed once into frozen pydantic models with ``extra="forbid"``: a typo in a
profile is an error naming the field, never a silently ignored key. The
bench takes its default threads and backends from a profile and judges each
configuration against the profile's p95 budget; the converter writes the
budget into a bundle's manifest (``compatibility.latency_budget_ms``).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.errors import ConfigError

__all__ = ["DeviceProfile", "LatencyBudget", "load_profile", "parse_profile"]

Precision = Literal["fp32", "fp16", "dynamic-int8", "int8"]
_Ms = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyBudget(_Strict):
    """The end-to-end p95 budget (ms) for one model family at one input size, per precision."""

    family: str = Field(min_length=1, description="model family, e.g. mobilenetv2")
    match: list[str] = Field(
        min_length=1,
        description="globs on the bundle name (case-insensitive) that mean this family",
    )
    input_size: int | None = Field(
        default=None, ge=1, description="input side in pixels; any size when absent"
    )
    p95_ms: dict[Precision, _Ms] = Field(min_length=1)

    def matches(self, bundle_name: str, input_size: int | None = None) -> bool:
        """Whether a bundle of this name (and input side, when known) belongs to the family."""
        name = bundle_name.lower()
        if not any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in self.match):
            return False
        return self.input_size is None or input_size is None or self.input_size == input_size


class DeviceProfile(_Strict):
    """One target device: its CPU, the threads and backends to use, and latency budgets."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    cpu: str = Field(default="", description="CPU as the vendor names it")
    cores: int = Field(ge=1)
    threads: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        min_length=1, description="interpreter thread counts to bench (the first is the default)"
    )
    backends: list[str] = Field(
        min_length=1, description="inference backends in preference order (litert, onnxruntime...)"
    )
    budgets: list[LatencyBudget] = Field(default_factory=list)

    def budget_for(
        self, bundle_name: str, precision: str, input_size: int | None = None
    ) -> float | None:
        """The p95 budget (ms) of the first family matching the bundle, for its precision."""
        for budget in self.budgets:
            if budget.matches(bundle_name, input_size):
                value = budget.p95_ms.get(precision)  # type: ignore[call-overload]
                return float(value) if value is not None else None
        return None


def parse_profile(text: str, source: str = "<profile>") -> DeviceProfile:
    """A :class:`DeviceProfile` from YAML text; :class:`ConfigError` naming the field if invalid."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a device profile must be a mapping")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"{source}: invalid device profile: {problems}") from exc


def load_profile(path: Path) -> DeviceProfile:
    """Read and validate a device profile file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read device profile {path}: {exc}") from exc
    return parse_profile(text, str(path))
