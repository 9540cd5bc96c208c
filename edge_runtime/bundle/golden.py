"""Golden-vector frames as bundle members: lossless PNG (what the converter writes) or ``.npy``.

A golden frame is what a camera would deliver: ``uint8``, ``H x W x 3``, BGR.
Checking a member (:func:`check_frame_member`) is pure and cheap: the PNG
header or the ``.npy`` header is parsed and bounded, nothing is decoded, and
nothing is ever unpickled. Decoding (:func:`decode_frame`) happens when the
device replays the vectors; PNG needs OpenCV, which every device install has.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import MemberContentError

__all__ = [
    "MAX_FRAME_SIDE",
    "check_frame_member",
    "decode_frame",
    "encode_frame",
    "encode_frame_png",
]

MAX_FRAME_SIDE = 8192
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_RGB = 2


def encode_frame(frame: npt.NDArray[np.uint8]) -> bytes:
    """``.npy`` bytes (format 1.0, C order) for a uint8 ``H x W x 3`` frame."""
    _check_frame(frame, "frame")
    buffer = io.BytesIO()
    np.lib.format.write_array(
        buffer, np.ascontiguousarray(frame), version=(1, 0), allow_pickle=False
    )
    return buffer.getvalue()


def encode_frame_png(frame: npt.NDArray[np.uint8]) -> bytes:
    """Lossless PNG bytes for a uint8 ``H x W x 3`` BGR frame (about half the size of ``.npy``)."""
    import cv2

    _check_frame(frame, "frame")
    ok, encoded = cv2.imencode(".png", frame, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise MemberContentError("OpenCV could not encode the frame as PNG")
    return bytes(encoded.tobytes())


def _png_shape(data: bytes, member: str) -> tuple[int, int]:
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 33:
        raise MemberContentError(f"{member}: not a PNG file")
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise MemberContentError(f"{member}: PNG does not start with its IHDR header")
    if zlib.crc32(data[12:29]) != struct.unpack(">I", data[29:33])[0]:
        raise MemberContentError(f"{member}: PNG header checksum does not match (corrupt)")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if depth != 8 or colour != _PNG_RGB:
        raise MemberContentError(f"{member}: golden PNG must be 8-bit colour without alpha")
    return height, width


def _npy_shape(data: bytes, member: str) -> tuple[int, int]:
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
    return int(shape[0]), int(shape[1])


def check_frame_member(data: bytes, member: str) -> tuple[int, int]:
    """Validate a golden member's header without decoding it; return (height, width)."""
    if member.endswith(".png"):
        height, width = _png_shape(data, member)
    elif member.endswith(".npy"):
        height, width = _npy_shape(data, member)
    else:
        raise MemberContentError(f"{member}: golden frames must be .png or .npy members")
    if not (1 <= height <= MAX_FRAME_SIDE and 1 <= width <= MAX_FRAME_SIDE):
        raise MemberContentError(f"{member}: frame size {height}x{width} is out of range")
    return height, width


def decode_frame(data: bytes, member: str) -> npt.NDArray[np.uint8]:
    """Decode a golden frame member; any defect is a :class:`MemberContentError` naming it."""
    height, width = check_frame_member(data, member)
    if member.endswith(".npy"):
        frame: npt.NDArray[Any] = np.frombuffer(
            data, dtype=np.uint8, offset=len(data) - height * width * 3
        )
        return frame.reshape(height, width, 3)
    try:
        import cv2
    except ImportError as exc:
        raise MemberContentError(
            f"{member}: decoding PNG golden frames needs opencv-python-headless"
        ) from exc
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None or decoded.shape != (height, width, 3):
        raise MemberContentError(f"{member}: PNG data is corrupt")
    return np.asarray(decoded, dtype=np.uint8)


def _check_frame(frame: npt.NDArray[np.uint8], what: str) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise MemberContentError(
            f"{what}: a frame must be uint8 H x W x 3, got {frame.dtype} {frame.shape}"
        )
    if not (1 <= frame.shape[0] <= MAX_FRAME_SIDE and 1 <= frame.shape[1] <= MAX_FRAME_SIDE):
        raise MemberContentError(f"{what}: frame size {frame.shape[:2]} is out of range")
