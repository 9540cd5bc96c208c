"""A labelled synthetic conveyor data set: the six waste classes drawn on a moving belt.

Real photos cannot be downloaded at run time, so the demo and the quick tests
train on images this module draws: a textured conveyor belt under uneven
light, and one item per image whose shape, colour and texture depend on its
class (corrugated cardboard, translucent glass bottles, shiny metal cans,
printed paper sheets, bright plastic bottles, dark irregular trash), at a
random place, angle and scale, with blur and sensor noise. Everything is
seeded, so the same arguments give the same pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from converter.errors import DatasetError

__all__ = ["CLASSES", "SyntheticSet", "draw_frame", "write_dataset"]

log = logging.getLogger(__name__)

CLASSES = ("cardboard", "glass", "metal", "paper", "plastic", "trash")

Image = npt.NDArray[np.uint8]


def _belt(rng: np.random.Generator, height: int, width: int) -> Image:
    base = rng.uniform(45, 85)
    rows = np.arange(height, dtype=np.float32)[:, None]
    stripes = 6.0 * np.sin(rows / rng.uniform(2.5, 5.0) + rng.uniform(0, 6.3))
    belt = np.broadcast_to(base + stripes, (height, width)).astype(np.float32)
    belt = belt + rng.normal(0, 4.0, (height, width)).astype(np.float32)
    tint = np.array([1.0, rng.uniform(0.95, 1.05), rng.uniform(0.9, 1.1)], np.float32)
    return np.asarray(np.clip(belt[..., None] * tint, 0, 255), dtype=np.uint8)


def _rotated_box(
    center: tuple[float, float], size: tuple[float, float], angle: float
) -> npt.NDArray[np.int32]:
    box = cv2.boxPoints((center, size, angle))
    return np.asarray(box, dtype=np.int32)


def _cardboard(img: Image, rng: np.random.Generator, c: tuple[float, float], s: float) -> None:
    angle = rng.uniform(0, 180)
    w, h = s * rng.uniform(0.9, 1.3), s * rng.uniform(0.6, 0.9)
    color = (rng.uniform(60, 90), rng.uniform(120, 150), rng.uniform(165, 200))  # BGR tan
    box = _rotated_box(c, (w, h), angle)
    cv2.fillPoly(img, [box], color)
    direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    normal = np.array([-direction[1], direction[0]])
    darker = tuple(v * 0.75 for v in color)
    for offset in np.arange(-h / 2 + 3, h / 2 - 2, 4.0):
        p = np.array(c) + normal * offset
        a, b = p - direction * w / 2 * 0.95, p + direction * w / 2 * 0.95
        cv2.line(img, tuple(map(int, a)), tuple(map(int, b)), darker, 1, cv2.LINE_AA)
    cv2.polylines(img, [box], True, tuple(v * 0.55 for v in color), 2, cv2.LINE_AA)


def _bottle(
    img: Image,
    c: tuple[float, float],
    s: float,
    angle: float,
    *,
    color: tuple[float, ...],
    alpha: float,
) -> None:
    layer = img.copy()
    body = (int(c[0]), int(c[1])), (int(s * 0.55), int(s * 0.22)), angle
    cv2.ellipse(layer, body[0], body[1], angle, 0, 360, color, -1, cv2.LINE_AA)
    rad = np.radians(angle)
    neck_center = (c[0] + np.cos(rad) * s * 0.62, c[1] + np.sin(rad) * s * 0.62)
    cv2.fillPoly(layer, [_rotated_box(neck_center, (s * 0.25, s * 0.12), angle)], color)
    cv2.addWeighted(layer, alpha, img, 1 - alpha, 0, dst=img)
    highlight = (int(c[0] - np.sin(rad) * s * 0.08), int(c[1] + np.cos(rad) * s * 0.08))
    cv2.ellipse(
        img,
        highlight,
        (int(s * 0.35), max(1, int(s * 0.03))),
        angle,
        0,
        360,
        (235, 245, 245),
        -1,
        cv2.LINE_AA,
    )


def _glass(img: Image, rng: np.random.Generator, c: tuple[float, float], s: float) -> None:
    palette = [(70, 150, 60), (160, 190, 170), (40, 90, 130)]  # green, clear, amber (BGR)
    color = palette[rng.integers(len(palette))]
    _bottle(img, c, s, rng.uniform(0, 360), color=color, alpha=rng.uniform(0.45, 0.65))


def _plastic(img: Image, rng: np.random.Generator, c: tuple[float, float], s: float) -> None:
    palette = [
        (200, 80, 30),
        (40, 40, 210),
        (30, 200, 230),
        (200, 200, 40),
    ]  # blue, red, yellow, cyan
    color = palette[rng.integers(len(palette))]
    angle = rng.uniform(0, 360)
    _bottle(img, c, s, angle, color=color, alpha=0.95)
    rad = np.radians(angle)
    cap = (int(c[0] + np.cos(rad) * s * 0.78), int(c[1] + np.sin(rad) * s * 0.78))
    cv2.circle(img, cap, max(2, int(s * 0.08)), (255, 255, 255), -1, cv2.LINE_AA)


def _metal(img: Image, rng: np.random.Generator, c: tuple[float, float], s: float) -> None:
    angle = rng.uniform(0, 180)
    w, h = s * rng.uniform(0.8, 1.0), s * rng.uniform(0.45, 0.6)
    rad = np.radians(angle)
    normal = np.array([-np.sin(rad), np.cos(rad)])
    for i, offset in enumerate(np.linspace(-h / 2, h / 2, 9)):
        shade = 120 + 110 * np.cos((i - 4) / 4 * np.pi / 2) ** 2
        center = np.array(c) + normal * offset
        cv2.fillPoly(
            img, [_rotated_box(tuple(center), (w, h / 8 + 1), angle)], (shade, shade, shade * 1.02)
        )
    cv2.polylines(img, [_rotated_box(c, (w, h), angle)], True, (90, 90, 95), 1, cv2.LINE_AA)


def _paper(img: Image, rng: np.random.Generator, c: tuple[float, float], s: float) -> None:
    angle = rng.uniform(0, 180)
    w, h = s * rng.uniform(0.7, 0.9), s * rng.uniform(0.9, 1.15)
    white = rng.uniform(215, 250)
    cv2.fillPoly(
        img, [_rotated_box(c, (w, h), angle)], (white, white, white * rng.uniform(0.97, 1.0))
    )
    rad = np.radians(angle)
    along, across = np.array([np.cos(rad), np.sin(rad)]), np.array([-np.sin(rad), np.cos(rad)])
    for offset in np.arange(-h / 2 + 6, h / 2 - 5, 5.0):
        p = np.array(c) + across * offset
        length = w * rng.uniform(0.4, 0.8) / 2
        a, b = p - along * length, p + along * length
        cv2.line(img, tuple(map(int, a)), tuple(map(int, b)), (90, 90, 90), 1, cv2.LINE_AA)


def _trash(img: Image, rng: np.random.Generator, c: tuple[float, float], s: float) -> None:
    for _ in range(rng.integers(2, 4)):
        n = int(rng.integers(6, 11))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = s * rng.uniform(0.2, 0.55, n)
        jitter = rng.normal(0, s * 0.1, 2)
        pts = np.stack(
            [c[0] + jitter[0] + radii * np.cos(angles), c[1] + jitter[1] + radii * np.sin(angles)],
            1,
        )
        color = tuple(float(v) for v in rng.uniform(20, 110, 3))
        cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)
    for _ in range(rng.integers(4, 9)):
        p = (int(c[0] + rng.normal(0, s * 0.25)), int(c[1] + rng.normal(0, s * 0.25)))
        cv2.circle(
            img, p, int(rng.integers(1, 4)), tuple(float(v) for v in rng.uniform(0, 255, 3)), -1
        )


_DRAWERS: dict[str, Callable[[Image, np.random.Generator, tuple[float, float], float], None]] = {
    "cardboard": _cardboard,
    "glass": _glass,
    "metal": _metal,
    "paper": _paper,
    "plastic": _plastic,
    "trash": _trash,
}


def draw_frame(label: str, seed: int, height: int = 128, width: int = 128) -> Image:
    """One BGR frame of ``label`` on the belt; the same seed gives the same pixels."""
    if label not in _DRAWERS:
        raise DatasetError(f"unknown synthetic class {label!r}; classes are {', '.join(CLASSES)}")
    rng = np.random.default_rng([seed, CLASSES.index(label)])
    img = _belt(rng, height, width)
    side = min(height, width)
    center = (width / 2 + rng.normal(0, side * 0.08), height / 2 + rng.normal(0, side * 0.08))
    _DRAWERS[label](img, rng, center, side * rng.uniform(0.45, 0.7))
    # light falls off across the belt; the camera adds blur and noise
    cols = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    gain = rng.uniform(0.8, 1.15) + rng.uniform(-0.15, 0.15) * cols
    out = img.astype(np.float32) * gain + rng.normal(0, 3.0, img.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = np.asarray(cv2.GaussianBlur(out, (3, 3), 0), dtype=np.uint8)
    return out


@dataclass(frozen=True)
class SyntheticSet:
    """Where a generated data set was written and how many images each split holds."""

    root: Path
    train: int
    val: int


def write_dataset(
    root: Path, per_class_train: int, per_class_val: int, size: int = 128, seed: int = 0
) -> SyntheticSet:
    """Write ``root/{train,val}/<class>/NNNN.png``; train and val never share a seed."""
    for split, count, offset in (("train", per_class_train, 0), ("val", per_class_val, 1_000_000)):
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                frame = draw_frame(label, seed * 10_000_000 + offset + index, size, size)
                if not cv2.imwrite(str(folder / f"{index:04d}.png"), frame):
                    raise DatasetError(f"cannot write {folder / f'{index:04d}.png'}")
    log.info("wrote synthetic data set to %s", root)
    return SyntheticSet(root, per_class_train * len(CLASSES), per_class_val * len(CLASSES))
