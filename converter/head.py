"""The classifier head: the last fully connected layer and what follows it to the output.

An int8 model's last steps are its coarsest: the logits are rounded to one
int8 grid, and a TFLite int8 softmax rounds the scores to 1/256 steps, so two
close answers come out tied or swapped (measured on MobileNetV2 0.5/128
trained on TrashNet: 2 of the 10 held-out photos the int8 model disagreed on
were exact ties in its int8 output). The head is a fraction of a percent of
the MACs (1,280 x 6 of 31 million there: 0.02%) and costs no measurable time in
float (invoke p50 0.478 against 0.476 ms, LiteRT, 1 thread), so the converter
keeps it in float32 by default (``--no-float-head`` for a model that must be
integer end to end; the output is then float32 whatever ``--io-type`` says).

Pure: it reads the op list :mod:`converter.sensitivity` builds from either format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from converter.sensitivity import QuantOp

__all__ = ["MAX_HEAD_MAC_SHARE", "ClassifierHead", "classifier_head"]

MAX_HEAD_MAC_SHARE = 0.01
"""A head over this share of the model's MACs is not a head (it stays int8)."""

_DENSE = {"FULLY_CONNECTED", "MatMul", "Gemm"}
"""The layer that makes the logits (TFLite, ONNX)."""
_AFTER_DENSE = {
    # TFLite
    "SOFTMAX",
    "LOGISTIC",
    "ADD",
    "RESHAPE",
    "DEQUANTIZE",
    # ONNX
    "Softmax",
    "Sigmoid",
    "Add",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Identity",
}
"""What may stand between the logits layer and the model's output (the bias, the softmax)."""


@dataclass(frozen=True)
class ClassifierHead:
    """The ops kept in float as the classifier head, and their cost."""

    ops: tuple[QuantOp, ...]
    """From the logits layer to the output, in graph order."""
    macs: int
    mac_fraction: float
    """Share of the model's MACs."""

    @property
    def excluded(self) -> tuple[str, ...]:
        """The ids to hand the quantiser (every member of every op)."""
        return tuple(name for op in self.ops for name in op.excluded)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (summary and report)."""
        return {
            "ops": [op.kind for op in self.ops],
            "excluded": list(self.excluded),
            "macs": self.macs,
            "mac_fraction": round(self.mac_fraction, 6),
        }


def classifier_head(
    ops: Sequence[QuantOp],
    outputs: Sequence[str],
    *,
    max_mac_share: float = MAX_HEAD_MAC_SHARE,
) -> ClassifierHead | None:
    """The classifier head of a one-output model: walking back from the output through the
    softmax, bias and reshapes to the fully connected layer that makes the logits.

    None when the model has several outputs, when the walk meets anything else
    first (e.g. a convolution makes the scores), when an op on the way has more
    than one activation input or its output is read elsewhere too, or when the
    layer holds more than ``max_mac_share`` of the model's MACs.
    """
    if len(outputs) != 1 or not ops:
        return None
    producer = {name: op for op in ops for name in op.outputs}
    readers: dict[str, int] = {}
    for op in ops:
        for name in op.inputs:
            readers[name] = readers.get(name, 0) + 1
    chain: list[QuantOp] = []
    tensor = outputs[0]
    while tensor in producer:
        op = producer[tensor]
        if op.kind in _DENSE:
            chain.append(op)
            break
        if op.kind not in _AFTER_DENSE or len(op.inputs) != 1:
            return None
        chain.append(op)
        tensor = op.inputs[0]
        if readers.get(tensor, 0) != 1:
            return None  # a tensor another op reads too: not a plain head
    else:
        return None
    total = sum(op.macs for op in ops)
    macs = sum(op.macs for op in chain)
    if total <= 0 or macs <= 0 or macs > max_mac_share * total:
        return None
    return ClassifierHead(tuple(reversed(chain)), macs, macs / total)
