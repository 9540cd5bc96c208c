"""MSE-optimal int8 activation ranges (converter.mse_ranges) on plain arrays."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from converter.mse_ranges import mse_cuts, mse_range, quantization_mse

BINS = 2048


def _histogram(values: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int64], float, float]:
    low, high = float(values.min()), float(values.max())
    counts, _ = np.histogram(values, bins=BINS, range=(low, high))
    return counts.astype(np.int64), low, high


def _measured_mse(values: npt.NDArray[np.float64], low: float, high: float) -> float:
    """Quantise ``values`` to int8 as the LiteRT Quantizer and ONNX Runtime do."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255
    zero_point = np.rint(-128 - low / scale)
    q = np.clip(np.rint(values / scale) + zero_point, -128, 127)
    return float(np.mean(((q - zero_point) * scale - values) ** 2))


def test_heavy_tailed_distribution_gets_a_narrower_range_and_less_error() -> None:
    values = np.random.default_rng(0).standard_t(3, 200_000)
    counts, low, high = _histogram(values)
    chosen = mse_range(counts, low, high)
    assert low < chosen[0] < 0.0 < chosen[1] < high
    assert chosen[1] - chosen[0] < 0.7 * (high - low)
    # less error than min/max, on the values themselves (not only the histogram)
    assert _measured_mse(values, *chosen) < 0.8 * _measured_mse(values, low, high)


def test_uniform_distribution_keeps_its_range() -> None:
    values = np.random.default_rng(1).uniform(-1.0, 3.0, 200_000)
    counts, low, high = _histogram(values)
    chosen = mse_range(counts, low, high)
    assert chosen[0] == pytest.approx(low, abs=0.01)
    assert chosen[1] == pytest.approx(high, abs=0.02)


def test_relu_output_starts_at_zero_and_exact_zeros_add_no_error() -> None:
    values = np.maximum(np.random.default_rng(2).laplace(0.0, 1.0, 200_000), 0.0)
    zeros = int(np.count_nonzero(values == 0.0))
    assert zeros > 90_000
    counts, low, high = _histogram(values)
    assert low == 0.0
    with_zeros = mse_range(counts, low, high, zeros=zeros)
    assert with_zeros[0] == 0.0
    assert 0.0 < with_zeros[1] < high
    # counting the zeros as rounding error would pull the range narrower than the best one
    blind = mse_range(counts, low, high, zeros=0)
    assert blind[1] < with_zeros[1]
    assert _measured_mse(values, *with_zeros) < _measured_mse(values, *blind)


def test_predicted_error_matches_the_quantised_values() -> None:
    values = np.random.default_rng(3).laplace(0.5, 1.0, 200_000)
    counts, low, high = _histogram(values)
    for candidate in [(low, high), mse_range(counts, low, high), (-2.0, 4.0)]:
        predicted = quantization_mse(counts, low, high, candidate) / values.size
        assert predicted == pytest.approx(_measured_mse(values, *candidate), rel=0.03)


def test_search_finds_the_least_error_of_a_dense_grid() -> None:
    values = np.random.default_rng(4).standard_t(4, 100_000) * 0.3 + 0.2
    counts, low, high = _histogram(values)
    chosen = mse_range(counts, low, high)
    best = quantization_mse(counts, low, high, chosen)
    for lo in np.linspace(low, 0.0, 40):
        for hi in np.linspace(0.05, high, 40):
            assert best <= quantization_mse(counts, low, high, (lo, hi)) * 1.0001


def test_degenerate_histograms() -> None:
    empty = np.zeros(BINS, dtype=np.int64)
    assert mse_range(empty, -1.0, 2.0) == (-1.0, 2.0)
    only_zeros = np.zeros(BINS, dtype=np.int64)
    only_zeros[0] = 10
    assert mse_range(only_zeros, 0.0, 1.0, zeros=10) == (0.0, 1.0)
    negative = np.random.default_rng(5).uniform(-3.0, -1.0, 10_000)
    counts, low, high = _histogram(negative)
    chosen = mse_range(counts, low, high)
    assert chosen[1] == 0.0 and chosen[0] == pytest.approx(low, abs=0.02)
    cuts = mse_cuts({"a": counts}, {"a": (low, high)}, {})
    assert cuts["a"] == chosen


def test_relu6_saturated_values_keep_the_cap_when_it_pays() -> None:
    """Values exactly at ReLU6's 6.0 are exact with the range [0, 6]: counted as rounding
    error they would pull the top below 6 and clip every one of them."""
    rng = np.random.default_rng(6)
    values = np.clip(rng.laplace(1.0, 1.5, 200_000), 0.0, 6.0)
    tops = int(np.count_nonzero(values == 6.0))
    zeros = int(np.count_nonzero(values == 0.0))
    assert tops > 1_000
    counts, low, high = _histogram(values)
    assert high == 6.0
    chosen = mse_range(counts, low, high, zeros=zeros, tops=tops)
    assert chosen == (0.0, 6.0)
    blind = mse_range(counts, low, high, zeros=zeros)
    assert blind[1] < 6.0
    assert _measured_mse(values, *chosen) < _measured_mse(values, *blind)
    predicted = quantization_mse(counts, low, high, chosen, zeros=zeros, tops=tops)
    assert predicted / values.size == pytest.approx(_measured_mse(values, *chosen), rel=0.05)


def test_bin_counts_match_numpys_histogram_but_for_edge_values() -> None:
    import numpy as np

    from converter.quantize import _HISTOGRAM_BINS, bin_counts

    rng = np.random.default_rng(0)
    values = np.maximum(rng.normal(size=(1, 40, 56, 56)), 0).astype(np.float32)
    low, high = float(values.min()), float(values.max())
    expected = np.histogram(values, bins=_HISTOGRAM_BINS, range=(low, high))[0]
    counts = bin_counts(values, low, high)
    assert counts.sum() == expected.sum() == values.size
    assert np.abs(counts - expected).sum() <= 1e-5 * values.size  # a few edge values move
    # values outside the range are left out, as numpy leaves them out
    narrow = bin_counts(values, 0.5, 1.5)
    assert narrow.sum() == np.histogram(values, bins=_HISTOGRAM_BINS, range=(0.5, 1.5))[0].sum()
