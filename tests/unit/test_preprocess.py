"""Preprocessing follows the contract exactly; the fused LUT equals the plain formula."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.bundle import Preprocessing, Quantization, TensorSpec
from edge_runtime.errors import PreprocessingError
from edge_runtime.preprocess import Preprocessor, crop_box, resize_frame

FRAME = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)


def reference(frame: np.ndarray, contract: Preprocessing, spec: TensorSpec) -> np.ndarray:
    """The contract written out step by step in float64."""
    image = resize_frame(frame, contract).astype(np.float64)
    if contract.color_order == "rgb":
        image = image[..., ::-1]
    x = (image - np.array(contract.mean)) / np.array(contract.std)
    if spec.quantization is not None:
        q = spec.quantization
        x = np.floor(x / q.scale[0] + 0.5) + q.zero_point[0]
        info = np.iinfo(spec.dtype)
        x = np.clip(x, info.min, info.max)
    if contract.layout == "nchw":
        x = x.transpose(2, 0, 1)
    return x[None].astype(spec.dtype)


CASES = [
    ("stretch", "rgb", "nhwc", "float32", None),
    ("center-crop", "rgb", "nhwc", "int8", Quantization(scale=[0.0078125], zero_point=[-1])),
    ("letterbox", "bgr", "nchw", "float32", None),
    ("stretch", "bgr", "nhwc", "uint8", Quantization(scale=[1 / 255], zero_point=[0])),
    ("center-crop", "rgb", "nchw", "int16", Quantization(scale=[0.01], zero_point=[3])),
]


@pytest.mark.parametrize(("resize", "order", "layout", "dtype", "quant"), CASES)
def test_matches_the_formula(resize, order, layout, dtype, quant) -> None:
    contract = Preprocessing(
        height=32,
        width=48,
        resize=resize,
        crop_fraction=0.8,
        color_order=order,
        layout=layout,
        mean=(10.0, 120.0, 200.0),
        std=(50.0, 60.0, 70.0) if quant is None or dtype != "uint8" else (1, 1, 1),
    )
    if dtype == "uint8":
        contract = contract.model_copy(
            update={"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}
        )
        contract = Preprocessing.model_validate(contract.model_dump())
    shape = [1, 32, 48, 3] if layout == "nhwc" else [1, 3, 32, 48]
    spec = TensorSpec(name="x", shape=shape, dtype=dtype, quantization=quant)
    out = Preprocessor(contract, spec)(FRAME)
    expected = reference(FRAME, contract, spec)
    assert out.shape == tuple(shape) and out.dtype == np.dtype(dtype)
    if dtype == "float32":
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(out, expected)


def test_channel_order_is_applied() -> None:
    blue = np.zeros((10, 10, 3), np.uint8)
    blue[..., 0] = 255  # BGR: pure blue
    contract = Preprocessing(height=4, width=4, color_order="rgb")
    out = Preprocessor(contract, TensorSpec(name="x", shape=[1, 4, 4, 3], dtype="float32"))(blue)
    assert (out[0, ..., 2] == 255).all() and (out[0, ..., 0] == 0).all()


def test_center_crop_geometry() -> None:
    contract = Preprocessing(height=100, width=100, resize="center-crop", crop_fraction=0.5)
    box = crop_box(200, 400, contract)  # wide frame: square of side 200, half of it kept
    assert (box.top, box.left, box.height, box.width) == (50, 150, 100, 100)
    marked = np.zeros((200, 400, 3), np.uint8)
    marked[50:150, 150:250] = 255
    assert resize_frame(marked, contract).min() == 255


def test_letterbox_pads_with_fill() -> None:
    contract = Preprocessing(
        height=100, width=100, resize="letterbox", letterbox_fill=7, interpolation="nearest"
    )
    frame = np.full((50, 100, 3), 200, np.uint8)
    out = resize_frame(frame, contract)
    assert out.shape == (100, 100, 3)
    assert (out[:25] == 7).all() and (out[75:] == 7).all() and (out[25:75] == 200).all()


def test_contract_and_tensor_must_agree() -> None:
    contract = Preprocessing(height=32, width=32)
    with pytest.raises(PreprocessingError, match=r"needs \[1, 32, 32, 3\]"):
        Preprocessor(contract, TensorSpec(name="x", shape=[1, 3, 32, 32], dtype="float32"))
    with pytest.raises(PreprocessingError, match="per channel"):
        Preprocessor(
            contract,
            TensorSpec(
                name="x",
                shape=[1, 32, 32, 3],
                dtype="int8",
                quantization=Quantization(scale=[0.1, 0.2], zero_point=[0, 0], axis=3),
            ),
        )
    with pytest.raises(PreprocessingError, match="mean must be 0"):
        Preprocessor(
            Preprocessing(height=32, width=32, mean=(1, 1, 1)),
            TensorSpec(name="x", shape=[1, 32, 32, 3], dtype="uint8"),
        )
    assert Preprocessor(contract, TensorSpec(name="x", shape=[-1, 32, 32, 3], dtype="float32"))


def test_bad_frames_are_refused() -> None:
    pre = Preprocessor(
        Preprocessing(height=8, width=8), TensorSpec(name="x", shape=[1, 8, 8, 3], dtype="float32")
    )
    with pytest.raises(PreprocessingError, match="uint8"):
        pre(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(PreprocessingError, match="H x W x 3"):
        pre(cv2.cvtColor(np.zeros((8, 8, 3), np.uint8), cv2.COLOR_BGR2GRAY))


@pytest.mark.parametrize(
    ("dtype", "quant", "mean", "path"),
    [
        ("uint8", None, (0.0, 0.0, 0.0), "_identity"),
        ("int8", Quantization(scale=[1.0], zero_point=[-128]), (0.0, 0.0, 0.0), "_flip"),
        ("int8", Quantization(scale=[1.0], zero_point=[-100]), (0.0, 0.0, 0.0), "_shift"),
        (
            "int8",
            Quantization(scale=[0.0078125], zero_point=[-1]),
            (127.5, 127.5, 127.5),
            "_shared",
        ),
        ("float32", None, (10.0, 120.0, 200.0), None),
    ],
)
def test_fast_paths_equal_the_formula(
    dtype: str, quant: Quantization | None, mean: tuple[float, float, float], path: str | None
) -> None:
    contract = Preprocessing(
        height=32,
        width=48,
        mean=mean,
        std=(1.0, 1.0, 1.0) if quant is None or quant.scale[0] == 1.0 else (127.5,) * 3,
    )
    spec = TensorSpec(name="x", shape=[1, 32, 48, 3], dtype=dtype, quantization=quant)
    pre = Preprocessor(contract, spec)
    taken = [
        name
        for name in ("_identity", "_flip", "_shift", "_shared")
        if getattr(pre, name) not in (None, False)
    ]
    assert (taken[0] if taken else None) == path
    expected = reference(FRAME, contract, spec)
    np.testing.assert_allclose(
        pre(FRAME).astype(np.float64), expected.astype(np.float64), rtol=1e-6, atol=1e-6
    )
