"""Frame -> input tensor, strictly from the bundle's preprocessing contract.

The one implementation that both the device and the converter (calibration,
parity, golden vectors) run, so the accuracy measured at conversion is the
accuracy the device gets. A frame is what OpenCV delivers: ``uint8``,
``H x W x 3``, BGR.

Per frame the work is one ``cv2.resize`` (after an optional crop view), an
optional channel swap, and one ``cv2.LUT`` pass that fuses normalisation and
input quantisation: because pixels are uint8, ``(p - mean) / std`` followed
by ``round(x / scale) + zero_point`` (:func:`quantize_half_way`) is a 256-entry
table per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_runtime.bundle.manifest import Preprocessing, TensorSpec
from edge_runtime.errors import PreprocessingError

__all__ = ["Preprocessor", "crop_box", "half_way_down", "quantize_half_way", "resize_frame"]

_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
}
_NUMPY_DTYPES: dict[str, npt.DTypeLike] = {
    "float32": np.float32,
    "float16": np.float16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
}


@dataclass(frozen=True)
class _Box:
    top: int
    left: int
    height: int
    width: int


def crop_box(frame_height: int, frame_width: int, contract: Preprocessing) -> _Box:
    """The centred region a centre-crop keeps.

    It has the model's aspect ratio and covers ``crop_fraction`` of the largest such region.
    """
    aspect = contract.width / contract.height
    if frame_width / frame_height > aspect:
        height, width = float(frame_height), frame_height * aspect
    else:
        height, width = frame_width / aspect, float(frame_width)
    crop_h = max(1, round(height * contract.crop_fraction))
    crop_w = max(1, round(width * contract.crop_fraction))
    return _Box((frame_height - crop_h) // 2, (frame_width - crop_w) // 2, crop_h, crop_w)


_TIE = 1e-3
"""How close to half a step a value must be to count as a tie (in steps). Normalised
pixels often land exactly half-way between two int8 levels (mean 127.5 with a scale of
1/127.5: every pixel does), where float rounding noise in ``x / scale`` would otherwise
decide: some pixels went up and others down, two neighbouring pixel values fell on one
level and the image lost contrast. A model's float32 scale is off by up to ~1e-7
relatively, which moves a value by up to ~3e-5 steps."""


def quantize_half_way(
    values: npt.NDArray[np.floating[Any]], scale: float, zero_point: int, *, down: bool = False
) -> npt.NDArray[np.float64]:
    """``round(values / scale) + zero_point`` with every half-way case rounded the same
    way (up, or ``down``), whatever float rounding noise says (see ``_TIE``): every
    distinct pixel keeps a level of its own."""
    steps = np.asarray(values, dtype=np.float64) / float(scale)
    below = np.floor(steps)
    tie = np.abs(steps - below - 0.5) < _TIE
    return np.where(tie, below + (0.0 if down else 1.0), np.floor(steps + 0.5)) + zero_point


def half_way_down(
    levels: npt.NDArray[np.floating[Any]], scale: float, zero_point: int, low: int, high: int
) -> bool:
    """Whether half-way cases must round down for every level in ``levels`` to fit
    ``low..high``: up would push the top level past ``high`` (zero point 0 with the
    range [-1, 1]: pixel 255 would land on 128) and down fits."""
    up = quantize_half_way(levels, scale, zero_point)
    down = quantize_half_way(levels, scale, zero_point, down=True)
    return bool(up.max() > high and down.min() >= low and down.max() <= high)


def resize_frame(frame: npt.NDArray[np.uint8], contract: Preprocessing) -> npt.NDArray[np.uint8]:
    """Resize a ``uint8`` frame to the contract's size by its resize mode (channels unchanged)."""
    size = (contract.width, contract.height)
    interpolation = _INTERPOLATION[contract.interpolation]
    if contract.resize == "stretch":
        return np.asarray(cv2.resize(frame, size, interpolation=interpolation), dtype=np.uint8)
    frame_h, frame_w = frame.shape[:2]
    if contract.resize == "center-crop":
        box = crop_box(frame_h, frame_w, contract)
        view = frame[box.top : box.top + box.height, box.left : box.left + box.width]
        return np.asarray(cv2.resize(view, size, interpolation=interpolation), dtype=np.uint8)
    scale = min(contract.width / frame_w, contract.height / frame_h)
    inner_w = max(1, min(contract.width, round(frame_w * scale)))
    inner_h = max(1, min(contract.height, round(frame_h * scale)))
    inner = cv2.resize(frame, (inner_w, inner_h), interpolation=interpolation)
    canvas = np.full((contract.height, contract.width, 3), contract.letterbox_fill, np.uint8)
    top = (contract.height - inner_h) // 2
    left = (contract.width - inner_w) // 2
    canvas[top : top + inner_h, left : left + inner_w] = inner
    return canvas


class Preprocessor:
    """Turns BGR ``uint8`` frames into the model's input tensor (batch of 1).

    Built once per bundle from its contract and input tensor spec; checks that
    the two agree (size, layout, dtype) and raises :class:`PreprocessingError`
    naming the mismatch when they do not.
    """

    def __init__(self, contract: Preprocessing, input_spec: TensorSpec) -> None:
        self.contract = contract
        self.input_spec = input_spec
        self._check_shape()
        if input_spec.dtype not in _NUMPY_DTYPES:
            raise PreprocessingError(
                f"input {input_spec.name!r} has dtype {input_spec.dtype}; "
                "image inputs must be float32, float16, int8, uint8 or int16"
            )
        self.dtype = np.dtype(_NUMPY_DTYPES[input_spec.dtype])
        self._swap_channels = contract.color_order == "rgb"
        self._lut = self._build_lut()
        self._cv_lut = self._lut.astype(np.float32) if self.dtype == np.float16 else self._lut
        # Fast paths, exact: one table for all channels (a 1-channel LUT is ~1.7x faster),
        # identity (uint8 in, uint8 out) and "pixel - 128" (uint8 -> int8 is a bit flip).
        self._shared = bool(np.all(self._lut[0, :, :1] == self._lut[0]))
        self._cv_lut_1 = np.ascontiguousarray(self._cv_lut[0, :, 0])
        pixels = np.arange(256)
        table = self._lut[0, :, 0].astype(np.int64)
        self._identity = self.dtype == np.uint8 and self._shared and np.array_equal(table, pixels)
        self._flip = self.dtype == np.int8 and self._shared and np.array_equal(table, pixels - 128)
        # "saturating pixel + c, then - 128": a common int8 input quantisation, two cheap passes
        self._shift: int | None = None
        if self.dtype == np.int8 and self._shared and not self._flip:
            shift = int(table[128])
            if np.array_equal(table, np.clip(pixels + shift, 0, 255) - 128):
                self._shift = shift

    def _check_shape(self) -> None:
        shape = self.input_spec.shape
        c = self.contract
        expected = [1, c.height, c.width, 3] if c.layout == "nhwc" else [1, 3, c.height, c.width]
        if len(shape) != 4 or any(d not in (-1, e) for d, e in zip(shape, expected, strict=True)):
            raise PreprocessingError(
                f"input {self.input_spec.name!r} has shape {shape}, but the preprocessing contract "
                f"({c.height}x{c.width}, {c.layout}) needs {expected}"
            )

    def _build_lut(self) -> npt.NDArray[Any]:
        """256 x 3 table: pixel value -> normalised (and quantised) input value, per channel.

        Applied after the channel swap, so channel ``c`` uses ``mean[c]``/``std[c]`` in the
        model's colour order, as the contract states them.
        """
        pixels = np.arange(256, dtype=np.float64)[:, None]
        mean = np.asarray(self.contract.mean, dtype=np.float64)
        std = np.asarray(self.contract.std, dtype=np.float64)
        values = (pixels - mean) / std
        quant = self.input_spec.quantization
        if np.issubdtype(self.dtype, np.integer):
            if quant is None:
                if not np.allclose(values, pixels):
                    raise PreprocessingError(
                        f"input {self.input_spec.name!r} is {self.input_spec.dtype} without "
                        "quantisation parameters, so mean must be 0 and std 1"
                    )
            else:
                if len(quant.scale) != 1:
                    raise PreprocessingError(
                        f"input {self.input_spec.name!r} is quantised per channel; "
                        "image inputs must be quantised per tensor"
                    )
                info = np.iinfo(self.dtype)
                scale, zero = quant.scale[0], quant.zero_point[0]
                down = half_way_down(values, scale, zero, int(info.min), int(info.max))
                values = quantize_half_way(values, scale, zero, down=down)
            info = np.iinfo(self.dtype)
            values = np.clip(values, info.min, info.max)
        return np.ascontiguousarray(values.astype(self.dtype).reshape(1, 256, 3))

    def __call__(self, frame: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        """The input tensor for one frame: shape ``[1, ...]`` in the input dtype."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise PreprocessingError(
                f"a frame must be uint8 H x W x 3 (BGR), got {frame.dtype} {frame.shape}"
            )
        resized = resize_frame(frame, self.contract)
        if self._swap_channels:
            resized = np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        tensor = self._apply_lut(resized)
        if self.contract.layout == "nchw":
            tensor = np.ascontiguousarray(tensor.transpose(2, 0, 1))
        return tensor[np.newaxis]

    def _apply_lut(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        if self.dtype == np.int16:  # OpenCV's LUT has no 16-bit signed table
            return np.take_along_axis(
                self._lut[0][None], image.reshape(1, -1, 3).astype(np.intp), axis=1
            ).reshape(image.shape)
        if self._identity:
            return image
        if self._flip:
            flipped: npt.NDArray[Any] = np.bitwise_xor(image, np.uint8(0x80)).view(np.int8)
            return flipped
        if self._shift is not None:
            flat = image.reshape(image.shape[0], -1)
            # saturating uint8 arithmetic with a scalar (OpenCV's stubs do not type scalars)
            if self._shift > 0:
                moved = cv2.add(flat, self._shift)  # type: ignore[call-overload,unused-ignore]
            else:
                moved = cv2.subtract(flat, -self._shift)  # type: ignore[call-overload,unused-ignore]
            shifted: npt.NDArray[Any] = np.bitwise_xor(moved, np.uint8(0x80)).view(np.int8)
            return shifted.reshape(image.shape)
        if self._shared:
            flat = image.reshape(image.shape[0], -1)
            out = np.asarray(cv2.LUT(flat, self._cv_lut_1)).reshape(image.shape)
        else:
            out = np.asarray(cv2.LUT(image, self._cv_lut))
        # OpenCV's LUT has no float16 table either: look up in float32, then cast.
        return out.astype(np.float16) if self.dtype == np.float16 else out
