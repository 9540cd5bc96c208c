"""Golden frames are stored small: cropped where no input bit changes, downscaled when huge."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from converter.packaging import GOLDEN_MAX_SCALE, assemble_bundle, golden_frame_to_store
from edge_runtime.bundle import Postprocessing, Preprocessing, TensorSpec
from edge_runtime.classifier import Classifier
from edge_runtime.preprocess import Preprocessor, crop_box
from tests.conftest import golden_frame
from tests.models import LABELS, SIZE


def preprocessor(contract: Preprocessing, dtype: str = "float32") -> Preprocessor:
    shape = [1, contract.height, contract.width, 3]
    return Preprocessor(contract, TensorSpec(name="image", shape=shape, dtype=dtype))


def center_crop(height: int, width: int, fraction: float, interpolation: str) -> Preprocessing:
    return Preprocessing(
        height=height,
        width=width,
        resize="center-crop",
        crop_fraction=fraction,
        interpolation=interpolation,  # type: ignore[arg-type]
        mean=(127.5, 127.5, 127.5),
        std=(127.5, 127.5, 127.5),
    )


# (frame height, frame width): odd and even, landscape, portrait and square, all small enough
# (shorter side at most 2x the model's 224) that nothing is downscaled
FRAME_SIZES = [
    (192, 256),
    (256, 192),
    (191, 256),
    (192, 255),
    (255, 191),
    (193, 257),
    (224, 224),
    (225, 224),
    (440, 600),
    (447, 599),
    (100, 301),
    (301, 100),
    (97, 97),
]


@pytest.mark.parametrize("interpolation", ["area", "linear", "cubic", "nearest"])
@pytest.mark.parametrize("fraction", [1.0, 0.875, 0.9, 0.5])
@pytest.mark.parametrize(("frame_h", "frame_w"), FRAME_SIZES)
def test_center_crop_storage_gives_a_bit_identical_input(
    frame_h: int, frame_w: int, fraction: float, interpolation: str
) -> None:
    contract = center_crop(224, 224, fraction, interpolation)
    frame = golden_frame(frame_h * 1000 + frame_w, frame_h, frame_w)
    stored = golden_frame_to_store(frame, contract)
    run = preprocessor(contract)
    np.testing.assert_array_equal(run(stored), run(frame))
    # a square model keeps the square of the shorter side, so a frame loses its long edges
    side = min(frame_h, frame_w)
    assert stored.shape[2] == 3 and stored.flags.c_contiguous
    assert abs(stored.shape[0] - side) <= 1 and abs(stored.shape[1] - side) <= 1
    assert stored.shape[0] * stored.shape[1] <= side * side


@pytest.mark.parametrize(("model_h", "model_w"), [(96, 128), (128, 96), (48, 64), (100, 33)])
@pytest.mark.parametrize("fraction", [1.0, 0.875, 0.5, 0.33])
def test_center_crop_storage_is_lossless_for_non_square_models(
    model_h: int, model_w: int, fraction: float
) -> None:
    contract = center_crop(model_h, model_w, fraction, "area")
    run = preprocessor(contract)
    # from the model's size to just under twice it on each side, odd and even
    heights = sorted({model_h, model_h + 1, int(1.3 * model_h) + 1, int(1.95 * model_h)})
    widths = sorted({model_w, model_w + 1, int(1.7 * model_w) + 1, int(1.95 * model_w)})
    for frame_h in heights:
        for frame_w in widths:
            frame = golden_frame(frame_h + frame_w, frame_h, frame_w)
            stored = golden_frame_to_store(frame, contract)
            np.testing.assert_array_equal(run(stored), run(frame), err_msg=f"{frame_h}x{frame_w}")
            assert stored.shape[0] <= frame_h and stored.shape[1] <= frame_w


def test_a_frame_no_smaller_region_reproduces_is_kept_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A 2 x 3 frame for a 3 x 7 model: the model-aspect region (1 x 3) crops differently.
    contract = center_crop(3, 7, 1.0, "area")
    frame = golden_frame(1, 2, 3)
    stored = golden_frame_to_store(frame, contract)
    np.testing.assert_array_equal(stored, frame)
    np.testing.assert_array_equal(preprocessor(contract)(stored), preprocessor(contract)(frame))

    # Where no candidate region gives the frame's own crop box, nothing is cut.
    from converter import packaging

    real = packaging.crop_box

    def off_by_one(height: int, width: int, c: Preprocessing):  # type: ignore[no-untyped-def]
        box = real(height, width, c)
        if (height, width) == (192, 256):
            return box
        return type(box)(box.top, box.left, box.height - 1, box.width)

    monkeypatch.setattr(packaging, "crop_box", off_by_one)
    wide = golden_frame(2, 192, 256)
    np.testing.assert_array_equal(
        golden_frame_to_store(wide, center_crop(224, 224, 0.875, "area")), wide
    )


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_stretch_and_letterbox_keep_the_frame(resize: str) -> None:
    contract = Preprocessing(height=224, width=224, resize=resize)  # type: ignore[arg-type]
    frame = golden_frame(5, 192, 256)
    np.testing.assert_array_equal(golden_frame_to_store(frame, contract), frame)


@pytest.mark.parametrize(
    ("resize", "frame_h", "frame_w"),
    [
        ("center-crop", 1080, 1920),
        ("center-crop", 1920, 1080),
        ("stretch", 1080, 1920),
        ("letterbox", 1080, 1920),
        ("letterbox", 2000, 500),
    ],
)
def test_frames_far_larger_than_the_input_are_downscaled(
    resize: str, frame_h: int, frame_w: int
) -> None:
    contract = Preprocessing(
        height=224,
        width=224,
        resize=resize,  # type: ignore[arg-type]
        crop_fraction=0.875 if resize == "center-crop" else 1.0,
        interpolation="area",
    )
    frame = smooth_frame(frame_h, frame_w)
    stored = golden_frame_to_store(frame, contract)
    height, width = stored.shape[:2]
    if resize == "center-crop":
        box = crop_box(height, width, contract)
        read = (box.height, box.width)
        assert height == width  # the square, then downscaled
    else:
        read = (height, width)
        assert height / width == pytest.approx(frame_h / frame_w, rel=0.02)  # aspect kept
    limit = GOLDEN_MAX_SCALE * 224
    assert max(read) <= limit + 1
    assert max(read) >= limit - 2  # about 2x the input side, not smaller
    # the model still sees much the same picture (not a bit-identical one): pixel units here
    run = preprocessor(contract)
    assert np.abs(run(stored) - run(frame)).mean() < 1.0


def smooth_frame(height: int, width: int) -> np.ndarray:
    """A camera-like frame: smooth shapes rather than per-pixel noise."""
    coarse = golden_frame(9, 12, 16)
    return np.asarray(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC))


def test_frames_near_the_input_size_are_not_resampled() -> None:
    contract = Preprocessing(height=224, width=224, resize="stretch")
    frame = golden_frame(3, 448, 440)  # at most 2x: kept as it is
    np.testing.assert_array_equal(golden_frame_to_store(frame, contract), frame)


def test_assemble_bundle_stores_small_frames_and_expects_their_scores(
    onnx_model: bytes, tmp_path: Path
) -> None:
    """Expected scores are those of the stored frames, so the device's replay matches exactly."""
    contract = Preprocessing(
        height=SIZE,
        width=SIZE,
        resize="center-crop",
        crop_fraction=0.875,
        interpolation="area",
        mean=(0, 0, 0),
        std=(255, 255, 255),
    )
    frames = [golden_frame(0, 48, 64), golden_frame(1, 720, 1280), golden_frame(2, 33, 31)]
    bundle = assemble_bundle(
        tmp_path / "tiny.efb",
        name="tiny-classifier",
        version="1.0.0",
        model=onnx_model,
        model_format="onnx",
        precision="fp32",
        preprocessing=contract,
        labels=LABELS,
        postprocessing=Postprocessing(apply_softmax=True),
        golden_frames=[(frame, LABELS[i]) for i, frame in enumerate(frames)],
        golden_atol=1e-6,
    )
    stored = bundle.golden_frames()
    assert [f.shape for f in stored] == [
        (48, 48, 3),
        (int(GOLDEN_MAX_SCALE * SIZE / 0.875),) * 2 + (3,),
        (31, 31, 3),
    ]
    np.testing.assert_array_equal(stored[0], frames[0][:, 8:56])
    classifier = Classifier(bundle)
    assert classifier.replay_golden().vectors == 3
    assert bundle.manifest.golden is not None
    for vector, original in zip(bundle.manifest.golden.vectors[::2], frames[::2], strict=True):
        # cropped losslessly: the original frame gives the very same scores
        np.testing.assert_allclose(vector.expected, classifier.scores(original), atol=1e-6)
