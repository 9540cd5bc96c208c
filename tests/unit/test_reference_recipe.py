"""The reference-model training recipes: augmentation is a pure function of the images and the seed."""

from __future__ import annotations

import numpy as np
import pytest

from converter.reference import Recipe, augment_batch


def _images(n: int = 6, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(-1.0, 1.0, (n, size, size, 3)).astype(np.float32)


def test_basic_recipe_only_mirrors() -> None:
    x = _images(32)
    out = augment_batch(x, np.random.default_rng(0), Recipe.named("basic"))
    mirrored = 0
    for original, augmented in zip(x, out, strict=True):
        if np.array_equal(augmented, original[:, ::-1]):
            mirrored += 1
        else:
            assert np.array_equal(augmented, original)
    assert 0 < mirrored < len(x)


def test_robust_recipe_crops_and_jitters_within_the_contract_range() -> None:
    x = _images()
    out = augment_batch(x, np.random.default_rng(0), Recipe.named("robust"))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    for original, augmented in zip(x, out, strict=True):
        assert not np.array_equal(augmented, original)
        assert not np.array_equal(augmented, original[:, ::-1])


def test_augmentation_is_reproducible_from_the_seed() -> None:
    x = _images()
    recipe = Recipe.named("robust")
    first = augment_batch(x, np.random.default_rng(3), recipe)
    again = augment_batch(x, np.random.default_rng(3), recipe)
    other = augment_batch(x, np.random.default_rng(4), recipe)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_unknown_recipe_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown training recipe 'fancy'"):
        Recipe.named("fancy")
