"""MSE-optimal int8 activation ranges from calibration histograms.

For each activation, the range ``(low, high)`` (``low <= 0 <= high``) that
minimises the expected squared error of asymmetric int8 quantisation over
the histogram of its calibrated values: the clipping error of the values
outside the range the quantiser will really represent, plus the rounding
error (``scale**2 / 12`` a value) of the values inside it. The representable
range is computed as both quantisers do (LiteRT Quantizer and ONNX Runtime:
``scale = (high - low) / 255``, ``zero_point = rint(-128 - low / scale)``),
so the half-step shift of the zero point's rounding is part of the error.
Exact zeros (most of a ReLU's outputs) are counted apart: zero is always
represented exactly, so they add no error, and counting them as rounding
error would pull every ReLU output's range too narrow. Likewise the values
exactly at the histogram's top (a ReLU6's saturated outputs, all exactly
6.0) are exact when the range ends on them (``tops``), clipped otherwise.

A tensor whose values are all ``>= 0`` keeps ``low = 0`` (ReLU / ReLU6
outputs); ``high`` is searched among the histogram's bin edges, ``low``
among the edges below zero: a coarse grid (``max_candidates`` a side), then
every edge near its optimum.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["mse_cuts", "mse_range", "quantization_mse"]

_QMIN = -128
_QMAX = 127


def _candidates(edges: npt.NDArray[np.float64], limit: int) -> npt.NDArray[np.float64]:
    if edges.size <= limit:
        return edges
    pick = np.unique(np.round(np.linspace(0, edges.size - 1, limit)).astype(np.int64))
    return edges[pick]


def _errors(
    centres: npt.NDArray[np.float64],
    counts: npt.NDArray[np.float64],
    lows: npt.NDArray[np.float64],
    highs: npt.NDArray[np.float64],
    cap: tuple[float, float] = (0.0, 0.0),
) -> npt.NDArray[np.float64]:
    """Expected squared error (summed over the values) of every ``(low, high)`` pair of the
    broadcast ``lows`` and ``highs``, values at ``centres`` with weights ``counts``, and
    ``cap[1]`` more values exactly at ``cap[0]``."""
    prefix0 = np.concatenate([[0.0], np.cumsum(counts)])
    prefix1 = np.concatenate([[0.0], np.cumsum(counts * centres)])
    prefix2 = np.concatenate([[0.0], np.cumsum(counts * centres * centres)])
    total0, total1, total2 = prefix0[-1], prefix1[-1], prefix2[-1]
    low, high = np.broadcast_arrays(lows, highs)
    span = high - low
    scale = np.where(span > 0, span, 1.0) / (_QMAX - _QMIN)
    zero_point = np.clip(np.rint(_QMIN - low / scale), _QMIN, _QMAX)
    bottom = (_QMIN - zero_point) * scale  # what the quantiser really represents
    top = (_QMAX - zero_point) * scale
    below = np.searchsorted(centres, bottom, side="left")  # centres < bottom
    above = np.searchsorted(centres, top, side="right")  # centres <= top
    n_below, s1_below, s2_below = prefix0[below], prefix1[below], prefix2[below]
    n_above = total0 - prefix0[above]
    s1_above = total1 - prefix1[above]
    s2_above = total2 - prefix2[above]
    clip_low = bottom * bottom * n_below - 2.0 * bottom * s1_below + s2_below
    clip_high = top * top * n_above - 2.0 * top * s1_above + s2_above
    inside = total0 - n_below - n_above
    error = clip_low + clip_high + inside * scale * scale / 12.0
    value, many = cap
    if many:
        exact = np.abs(top - value) <= 1e-6 * np.abs(value)
        error = error + many * np.where(
            top < value, (value - top) ** 2, np.where(exact, 0.0, scale * scale / 12.0)
        )
    return np.where(span > 0, error, np.inf)


def _prepare(
    counts: npt.NDArray[np.integer], low: float, high: float, zeros: int, tops: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    weights = np.asarray(counts, dtype=np.float64).copy()
    bins = weights.size
    width = (high - low) / bins
    centres = low + (np.arange(bins, dtype=np.float64) + 0.5) * width
    if zeros and low <= 0.0 <= high:
        holder = min(int((0.0 - low) / width), bins - 1) if width > 0 else 0
        weights[holder] = max(0.0, weights[holder] - zeros)
    if tops and high > 0.0:
        weights[-1] = max(0.0, weights[-1] - tops)
    return centres, weights, width


def quantization_mse(
    counts: npt.NDArray[np.integer],
    low: float,
    high: float,
    chosen: tuple[float, float],
    *,
    zeros: int = 0,
    tops: int = 0,
) -> float:
    """The expected squared error (summed over the values) of quantising the histogram
    ``counts`` over ``[low, high]`` to int8 with the range ``chosen``."""
    range_low, range_high = chosen
    centres, weights, _ = _prepare(counts, low, high, zeros, tops)
    lo = np.asarray([min(range_low, 0.0)], dtype=np.float64)
    hi = np.asarray([max(range_high, 0.0)], dtype=np.float64)
    cap = (high, float(tops) if high > 0.0 else 0.0)
    return float(_errors(centres, weights, lo, hi, cap)[0])


def mse_range(
    counts: npt.NDArray[np.integer],
    low: float,
    high: float,
    *,
    zeros: int = 0,
    tops: int = 0,
    max_candidates: int = 192,
) -> tuple[float, float]:
    """The int8 range with the least expected squared error for the histogram ``counts``
    (equal bins over ``[low, high]``, of which ``zeros`` values are exactly 0 and ``tops``
    exactly ``high``)."""
    low, high = float(low), float(high)
    if counts.sum() <= zeros or not high > low:
        return min(0.0, low), max(0.0, high)
    centres, weights, width = _prepare(counts, low, high, zeros, tops)
    cap = (high, float(tops) if high > 0.0 else 0.0)
    edges = low + np.arange(counts.size + 1, dtype=np.float64) * width
    edges[-1] = high
    highs = np.unique(np.concatenate([[0.0, max(0.0, high)], edges[edges > 0.0]]))
    lows = np.unique(np.concatenate([[0.0, min(0.0, low)], edges[edges < 0.0]]))
    best_low, best_high = _search(
        centres,
        weights,
        _candidates(lows, max_candidates),
        _candidates(highs, max_candidates),
        cap,
    )
    # then every edge near the coarse optimum
    reach = 2.0 * (high - low) / max_candidates
    near_lows = lows[np.abs(lows - best_low) <= reach]
    near_highs = highs[np.abs(highs - best_high) <= reach]
    return _search(centres, weights, near_lows, near_highs, cap)


def _search(
    centres: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    lows: npt.NDArray[np.float64],
    highs: npt.NDArray[np.float64],
    cap: tuple[float, float],
) -> tuple[float, float]:
    errors = _errors(centres, weights, lows[:, None], highs[None, :], cap)
    best = np.unravel_index(int(np.argmin(errors)), errors.shape)
    return float(lows[best[0]]), float(highs[best[1]])


def mse_cuts(
    histograms: dict[str, npt.NDArray[np.int64]],
    spans: dict[str, tuple[float, float]],
    zeros: dict[str, int],
    tops: dict[str, int] | None = None,
) -> dict[str, tuple[float, float]]:
    """:func:`mse_range` of every tensor (``spans``: each histogram's ``(low, high)``;
    ``zeros`` and ``tops``: how many of its values are exactly 0 and exactly ``high``)."""
    cuts = {}
    for name, counts in histograms.items():
        low, high = spans[name]
        cuts[name] = mse_range(
            counts, low, high, zeros=zeros.get(name, 0), tops=(tops or {}).get(name, 0)
        )
    return cuts
