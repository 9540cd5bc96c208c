"""Canonical names for an ONNX graph, so that the same model always gives the same bytes.

tf2onnx names the constants it folds and deduplicates in an order that varies
from run to run, so two conversions of one model differ only in names. This
renames every initializer after its content and every intermediate value after
its producing node's position; graph inputs and outputs keep their names.
"""

from __future__ import annotations

import hashlib

import onnx

__all__ = ["canonicalize"]


def canonicalize(model_bytes: bytes) -> bytes:
    """The same model with deterministic value and node names (inputs/outputs unchanged)."""
    model = onnx.load_model_from_string(model_bytes)
    graph = model.graph
    keep = {value.name for value in graph.input} | {value.name for value in graph.output}
    renames: dict[str, str] = {}
    used: set[str] = set(keep)

    def claim(old: str, new: str) -> None:
        if old in keep or old in renames or not old:
            return
        candidate, suffix = new, 1
        while candidate in used:
            suffix += 1
            candidate = f"{new}_{suffix}"
        used.add(candidate)
        renames[old] = candidate

    for init in sorted(
        graph.initializer,
        key=lambda i: hashlib.sha256(
            i.SerializeToString().replace(i.name.encode(), b"")
        ).hexdigest(),
    ):
        digest = hashlib.sha256(
            init.raw_data or init.SerializeToString().replace(init.name.encode(), b"")
        ).hexdigest()
        claim(init.name, f"const_{digest[:12]}")
    for index, node in enumerate(graph.node):
        for k, output in enumerate(node.output):
            claim(output, f"{node.op_type.lower()}_{index}_{k}")
        node.name = f"{node.op_type}_{index}"
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    ordered = sorted(graph.initializer, key=lambda i: i.name)
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    for value in graph.value_info:
        value.name = renames.get(value.name, value.name)
    ordered_info = sorted(graph.value_info, key=lambda v: v.name)
    del graph.value_info[:]
    graph.value_info.extend(ordered_info)
    graph.doc_string = ""  # tf2onnx writes the temporary folder it converted from
    dim_names: dict[str, str] = {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = dim_names.setdefault(dim.dim_param, f"dim_{len(dim_names)}")
    data: bytes = model.SerializeToString(deterministic=True)
    return data
