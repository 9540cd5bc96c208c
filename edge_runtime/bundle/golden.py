"""Golden-vector frames as ``.npy`` members, encoded and decoded safely.

A golden frame is what a camera would deliver: ``uint8``, ``H x W x 3``, BGR.
Decoding never unpickles and checks dtype and shape before the frame is used.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import MemberContentError

__all__ = ["MAX_FRAME_SIDE", "decode_frame", "encode_frame"]

MAX_FRAME_SIDE = 8192


def encode_frame(frame: npt.NDArray[np.uint8]) -> bytes:
    """``.npy`` bytes (format 1.0, C order) for a uint8 ``H x W x 3`` frame."""
    _check_frame(frame, "frame")
    buffer = io.BytesIO()
    np.lib.format.write_array(
        buffer, np.ascontiguousarray(frame), version=(1, 0), allow_pickle=False
    )
    return buffer.getvalue()


def decode_frame(data: bytes, member: str) -> npt.NDArray[np.uint8]:
    """Parse a golden frame member; any defect is a :class:`MemberContentError` naming it."""
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buffer)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buffer)
        else:
            raise MemberContentError(f"{member}: .npy format version {version} is not supported")
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise MemberContentError(f"{member}: not a valid .npy array ({exc})") from exc
    if dtype != np.dtype(np.uint8):
        raise MemberContentError(f"{member}: golden frame dtype is {dtype}, expected uint8")
    if fortran:
        raise MemberContentError(f"{member}: golden frame must be stored in C order")
    header_end = buffer.tell()
    well_shaped = len(shape) == 3 and shape[2] == 3 and all(dim > 0 for dim in shape)
    if not well_shaped or len(data) != header_end + shape[0] * shape[1] * shape[2]:
        raise MemberContentError(
            f"{member}: golden frame must be H x W x 3 with exactly its data, "
            f"got shape {shape} in {len(data)} bytes"
        )
    frame = np.frombuffer(data, dtype=np.uint8, offset=header_end).reshape(shape)
    _check_frame(frame, member)
    return frame


def _check_frame(frame: npt.NDArray[np.uint8], what: str) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise MemberContentError(
            f"{what}: a frame must be uint8 H x W x 3, got {frame.dtype} {frame.shape}"
        )
    if not (1 <= frame.shape[0] <= MAX_FRAME_SIDE and 1 <= frame.shape[1] <= MAX_FRAME_SIDE):
        raise MemberContentError(f"{what}: frame size {frame.shape[:2]} is out of range")
