"""A strict reader of the Prometheus text exposition format 0.0.4, for tests.

Written from the format's specification rather than with our own renderer's
helpers, so a test that parses ``/metrics`` checks the renderer against the
format, not against itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import pairwise

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class ExpositionError(AssertionError):
    """The text breaks the exposition format."""


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Family:
    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)


def _unescape_help(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "\\n":
            out.append("\n" if text[i + 1] == "n" else "\\")
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _read_quoted(text: str, pos: int, line: str) -> tuple[str, int]:
    """Read an escaped label value whose opening quote is just before ``pos``."""
    value = []
    while text[pos] != '"':
        char = text[pos]
        if char == "\\":
            escaped = text[pos + 1]
            if escaped not in _ESCAPES:
                raise ExpositionError(f"bad escape \\{escaped} in {line!r}")
            value.append(_ESCAPES[escaped])
            pos += 2
        else:
            value.append(char)
            pos += 1
    return "".join(value), pos + 1


def _parse_labels(text: str, pos: int, line: str) -> tuple[dict[str, str], int]:
    """Parse ``{a="x",b="y"}`` starting at ``text[pos] == "{"``; return labels and the end."""
    labels: dict[str, str] = {}
    pos += 1
    while text[pos] != "}":
        match = _LABEL_NAME.match(text, pos)
        if not match:
            raise ExpositionError(f"bad label name at {pos} in {line!r}")
        key = match.group()
        pos = match.end()
        if text[pos : pos + 2] != '="':
            raise ExpositionError(f'expected =" after {key} in {line!r}')
        if key in labels:
            raise ExpositionError(f"label {key} repeats in {line!r}")
        labels[key], pos = _read_quoted(text, pos + 2, line)
        if text[pos] == ",":
            pos += 1
        elif text[pos] != "}":
            raise ExpositionError(f"expected , or }} in {line!r}")
    return labels, pos + 1


def _parse_sample(line: str) -> Sample:
    match = _NAME.match(line)
    if not match:
        raise ExpositionError(f"bad metric name in {line!r}")
    name, pos = match.group(), match.end()
    labels: dict[str, str] = {}
    try:
        if line[pos : pos + 1] == "{":
            labels, pos = _parse_labels(line, pos, line)
    except IndexError:
        raise ExpositionError(f"unterminated labels in {line!r}") from None
    if line[pos : pos + 1] != " ":
        raise ExpositionError(f"expected one space before the value in {line!r}")
    value_text = line[pos + 1 :]
    if " " in value_text:
        raise ExpositionError(f"timestamps are not expected in {line!r}")
    try:
        return Sample(name, labels, float(value_text))
    except ValueError:
        raise ExpositionError(f"bad value in {line!r}") from None


def _family_of(sample_name: str, families: dict[str, Family]) -> Family:
    if sample_name in families and families[sample_name].type != "histogram":
        return families[sample_name]
    for suffix in _HISTOGRAM_SUFFIXES:
        base = sample_name.removesuffix(suffix)
        if base != sample_name and base in families and families[base].type == "histogram":
            return families[base]
    raise ExpositionError(f"sample {sample_name} has no preceding TYPE line")


def _add_type(line: str, families: dict[str, Family], helps: dict[str, str]) -> None:
    name, _, kind = line[len("# TYPE ") :].partition(" ")
    if kind not in {"counter", "gauge", "histogram", "summary", "untyped"}:
        raise ExpositionError(f"unknown type {kind!r} for {name}")
    if name in families:
        raise ExpositionError(f"second TYPE for {name}")
    if name not in helps:
        raise ExpositionError(f"TYPE for {name} without HELP before it")
    families[name] = Family(name, kind, helps[name])


def parse(text: str) -> dict[str, Family]:
    """Every family in ``text``, checked: HELP/TYPE first, valid samples, sound histograms."""
    if not text.endswith("\n"):
        raise ExpositionError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, doc = line[len("# HELP ") :].partition(" ")
            if name in helps:
                raise ExpositionError(f"second HELP for {name}")
            helps[name] = _unescape_help(doc)
        elif line.startswith("# TYPE "):
            _add_type(line, families, helps)
        elif line.startswith("#") or not line.strip():
            raise ExpositionError(f"unexpected line {line!r}")
        else:
            sample = _parse_sample(line)
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key in seen:
                raise ExpositionError(f"duplicate series in {line!r}")
            seen.add(key)
            _family_of(sample.name, families).samples.append(sample)
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
        elif family.type == "counter" and any(not s.value >= 0 for s in family.samples):
            raise ExpositionError(f"negative counter in {family.name}")
    return families


def _check_histogram(family: Family) -> None:
    groups: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
    for sample in family.samples:
        rest = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        groups.setdefault(rest, []).append(sample)
    for rest, samples in groups.items():
        buckets = [s for s in samples if s.name == f"{family.name}_bucket"]
        sums = [s for s in samples if s.name == f"{family.name}_sum"]
        counts = [s for s in samples if s.name == f"{family.name}_count"]
        if len(sums) != 1 or len(counts) != 1 or not buckets:
            raise ExpositionError(f"{family.name}{dict(rest)} needs buckets, one _sum, one _count")
        bounds = [float(s.labels["le"]) for s in buckets]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ExpositionError(f"{family.name}{dict(rest)} buckets not in increasing le order")
        if buckets[-1].labels["le"] != "+Inf" or not math.isinf(bounds[-1]):
            raise ExpositionError(f'{family.name}{dict(rest)} does not end with le="+Inf"')
        values = [s.value for s in buckets]
        if any(a > b for a, b in pairwise(values)):
            raise ExpositionError(f"{family.name}{dict(rest)} buckets are not cumulative: {values}")
        if values[-1] != counts[0].value:
            raise ExpositionError(f"{family.name}{dict(rest)} +Inf bucket != _count")


def value_of(families: dict[str, Family], name: str, /, **labels: str) -> float:
    """The value of the sample ``name`` with exactly these labels."""
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise KeyError(f"{name}{labels}")
