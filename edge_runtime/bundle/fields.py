"""Which runtime reads which manifest field: what a bundle's ``min_runtime_version`` must be.

A runtime parses a manifest strictly (an unknown field is an error), so a
bundle carrying a field added after some runtime cannot be read by it.
:data:`FIELDS_SINCE` names, for every field, the first runtime that reads it;
:func:`required_runtime` is the newest of those among the fields a manifest
carries, and the packer writes it into ``compatibility.min_runtime_version``
(:mod:`edge_runtime.bundle.compat` checks it). A bundle without a newer field
stays readable by older runtimes, whatever version packed it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from edge_runtime import __version__
from edge_runtime.bundle.compat import version_key
from edge_runtime.bundle.manifest import ManifestSpec, dump_manifest

__all__ = ["FIELDS_SINCE", "manifest_fields", "required_runtime", "schema_fields"]

_FIRST_RELEASE = (
    "compatibility",
    "compatibility.backends",
    "compatibility.device_profiles",
    "compatibility.latency_budget_ms",
    "compatibility.min_runtime_version",
    "description",
    "files",
    "files{}",
    "files{}.sha256",
    "files{}.size",
    "golden",
    "golden.atol",
    "golden.vectors",
    "golden.vectors[].expected",
    "golden.vectors[].input",
    "golden.vectors[].label",
    "labels",
    "model",
    "model.file",
    "model.float_fallback",
    "model.float_fallback.float_mac_fraction",
    "model.float_fallback.ops",
    "model.format",
    "model.inputs",
    "model.inputs[].dtype",
    "model.inputs[].name",
    "model.inputs[].quantization",
    "model.inputs[].quantization.axis",
    "model.inputs[].quantization.scale",
    "model.inputs[].quantization.zero_point",
    "model.inputs[].shape",
    "model.outputs",
    "model.outputs[].dtype",
    "model.outputs[].name",
    "model.outputs[].quantization",
    "model.outputs[].quantization.axis",
    "model.outputs[].quantization.scale",
    "model.outputs[].quantization.zero_point",
    "model.outputs[].shape",
    "model.precision",
    "name",
    "postprocessing",
    "postprocessing.apply_softmax",
    "postprocessing.confidence_threshold",
    "postprocessing.output",
    "postprocessing.top_k",
    "postprocessing.uncertain_label",
    "preprocessing",
    "preprocessing.color_order",
    "preprocessing.crop_fraction",
    "preprocessing.height",
    "preprocessing.interpolation",
    "preprocessing.layout",
    "preprocessing.letterbox_fill",
    "preprocessing.mean",
    "preprocessing.resize",
    "preprocessing.std",
    "preprocessing.width",
    "provenance",
    "provenance.calibration_data_sha256",
    "provenance.created_at",
    "provenance.created_by",
    "provenance.parity_data_sha256",
    "provenance.source_model_sha256",
    "provenance.tools",
    "provenance.tools{}",
    "quality",
    "quality.accuracy",
    "quality.accuracy_drop_points",
    "quality.class_distribution",
    "quality.confidence_histogram",
    "quality.confusion",
    "quality.confusion_float",
    "quality.cosine_similarity",
    "quality.dataset",
    "quality.dataset.name",
    "quality.dataset.num_images",
    "quality.dataset.sha256",
    "quality.float_accuracy",
    "quality.kl_divergence",
    "quality.mean_confidence",
    "quality.passed",
    "quality.per_class",
    "quality.per_class[].accuracy",
    "quality.per_class[].float_accuracy",
    "quality.per_class[].label",
    "quality.per_class[].support",
    "quality.thresholds",
    "quality.thresholds{}",
    "quality.top1_agreement",
    "schema_version",
    "version",
)
"""Every manifest field runtime 0.1.0 reads (``a.b`` nested, ``a[]`` a list's items, ``a{}`` a
map's values). Every runtime so far is 0.1.0, so every field is listed here."""

FIELDS_SINCE: dict[str, str] = dict.fromkeys(_FIRST_RELEASE, "0.1.0")
"""Each manifest field and the first runtime version that reads it. A new field: bump
``edge_runtime.__version__`` and add it here with that version, so that bundles carrying it say
they need that runtime while bundles without it stay readable by older ones (a test compares this
with the manifest's schema)."""


def required_runtime(manifest: ManifestSpec) -> str:
    """The oldest runtime that reads ``manifest``: the newest :data:`FIELDS_SINCE` version of the
    fields it carries (this runtime's own version for a field missing from the table)."""
    data = json.loads(dump_manifest(manifest))
    needed = [FIELDS_SINCE.get(path, __version__) for path in manifest_fields(data)]
    return max(needed, key=version_key, default="0.1.0")


def manifest_fields(data: Any, prefix: str = "") -> Iterator[str]:
    """The field paths a manifest's JSON carries, spelt as in :data:`FIELDS_SINCE`."""
    if isinstance(data, dict):
        if f"{prefix}{{}}" in FIELDS_SINCE:  # a map: its keys are data, not fields
            yield f"{prefix}{{}}"
            for value in data.values():
                yield from manifest_fields(value, f"{prefix}{{}}")
            return
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from manifest_fields(value, path)
    elif isinstance(data, list):
        for item in data:
            yield from manifest_fields(item, f"{prefix}[]")


def schema_fields() -> set[str]:
    """Every field path the manifest's schema allows (what :data:`FIELDS_SINCE` must cover)."""
    schema = ManifestSpec.model_json_schema()
    definitions = schema.get("$defs", {})
    found: set[str] = set()

    def walk(node: Mapping[str, Any], prefix: str, seen: frozenset[str]) -> None:
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name not in seen:
                walk(definitions[name], prefix, seen | {name})
            return
        for key in ("anyOf", "allOf", "oneOf"):
            for sub in node.get(key, []):
                walk(sub, prefix, seen)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{prefix}[]", seen)
        if isinstance(node.get("additionalProperties"), dict):
            found.add(f"{prefix}{{}}")
            walk(node["additionalProperties"], f"{prefix}{{}}", seen)
        for key, value in node.get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            found.add(path)
            walk(value, path, seen)

    walk(schema, "", frozenset())
    return found
