"""The model bundle: one signed-ready file with everything a device needs to run a model.

See ``docs/bundle.md`` for the format. Public entry points:
:func:`build_bundle` / :func:`write_bundle` to make one,
:func:`parse_bundle` / :func:`read_bundle` to read one without trusting it.
"""

from __future__ import annotations

from edge_runtime.bundle.golden import (
    check_frame_member,
    decode_frame,
    encode_frame,
    encode_frame_png,
)
from edge_runtime.bundle.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    ClassQuality,
    Compatibility,
    DatasetRef,
    FileEntry,
    GoldenSet,
    GoldenVector,
    ManifestSpec,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    Provenance,
    QualityReport,
    Quantization,
    TensorSpec,
    dump_manifest,
    load_manifest,
)
from edge_runtime.bundle.model_bundle import (
    BUNDLE_SUFFIX,
    Bundle,
    BundleLimits,
    build_bundle,
    parse_bundle,
    read_bundle,
    write_bundle,
)

__all__ = [
    "BUNDLE_SUFFIX",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleLimits",
    "ClassQuality",
    "Compatibility",
    "DatasetRef",
    "FileEntry",
    "GoldenSet",
    "GoldenVector",
    "ManifestSpec",
    "ModelSpec",
    "Postprocessing",
    "Preprocessing",
    "Provenance",
    "QualityReport",
    "Quantization",
    "TensorSpec",
    "build_bundle",
    "check_frame_member",
    "decode_frame",
    "dump_manifest",
    "encode_frame",
    "encode_frame_png",
    "load_manifest",
    "parse_bundle",
    "read_bundle",
    "write_bundle",
]
