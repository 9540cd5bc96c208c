"""The reference-model training recipes: augmentation is a pure function of the images and the seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_quant_noise_recipe_adds_at_most_that_many_input_steps() -> None:
    x = _images()
    recipe = Recipe(quant_noise=2.0)
    rng = np.random.default_rng(5)
    out = augment_batch(x, rng, recipe)
    # each image is the original or its mirror, plus the noise
    nearest = np.array(
        [
            min((o, o[:, ::-1]), key=lambda c: np.abs(a - c).max())
            for a, o in zip(out, x, strict=True)
        ]
    )
    difference = np.abs(out - nearest)
    step = 2 / 255
    assert difference.max() <= 2.0 * step / 2 + 1e-6
    assert difference.mean() > 0.3 * step  # uniform over ±1 step: mean |noise| is half a step


def _residual_model(k: Any) -> Any:
    """conv-BN-ReLU6, a linear conv-BN bottleneck, a residual add: one of each quantised kind."""
    inputs = k.Input((8, 8, 4))
    x = k.layers.Conv2D(4, 3, padding="same")(inputs)
    x = k.layers.BatchNormalization(name="folded_bn")(x)
    x = k.layers.ReLU(6.0, name="relu")(x)
    x = k.layers.Conv2D(4, 1)(x)
    x = k.layers.BatchNormalization(name="linear_bn")(x)
    x = k.layers.Add(name="add")([x, inputs])
    return k.Model(inputs, x)


@pytest.mark.slow
def test_noise_goes_on_the_tensors_an_int8_model_quantises_in_training_only() -> None:
    keras = pytest.importorskip("keras")
    from converter.reference import inject_quantisation_noise

    inner = _residual_model(keras)
    outer = keras.Sequential([keras.Input((8, 8, 4)), inner])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 4)).astype(np.float32)
    before = np.asarray(outer(x, training=False))
    # ReLU, the bottleneck's BatchNorm and the add; the BatchNorm feeding the ReLU folds away
    assert inject_quantisation_noise(outer, 1.0) == 3
    assert np.array_equal(np.asarray(outer(x, training=False)), before)
    first, second = (np.asarray(outer(x, training=True)) for _ in range(2))
    assert not np.array_equal(first, second)


@pytest.mark.slow
def test_noise_is_uniform_within_half_a_step_of_the_tensor_range(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from converter.reference import inject_quantisation_noise

    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.ReLU(6.0)(keras.layers.Conv2D(8, 3, padding="same")(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    clean = np.asarray(model(x, training=True))
    assert inject_quantisation_noise(model, 3.0) == 1
    noisy = np.asarray(model(x, training=True))
    step = (clean.max() - clean.min()) / 255
    difference = np.abs(noisy - clean)
    assert difference.max() <= 3.0 * step / 2 + 1e-5
    assert difference.mean() == pytest.approx(3.0 * step / 4, rel=0.1)
    # what is saved is the plain model: it loads without our noise layer and answers the same
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert np.allclose(np.asarray(loaded(x, training=True)), clean, atol=1e-6)


@pytest.mark.slow
def test_simulated_int8_agreement_falls_with_the_noise(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from converter.reference import simulated_int8_agreement

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(6, activation="softmax")(x)
    keras.Model(inputs, outputs).save(tmp_path / "m.keras")
    images = np.random.default_rng(2).uniform(-1, 1, (64, 16, 16, 3)).astype(np.float32)
    mean, draws = simulated_int8_agreement(tmp_path / "m.keras", images, strength=0.0, draws=2)
    assert mean == 1.0 and draws == [1.0, 1.0]
    mean, draws = simulated_int8_agreement(tmp_path / "m.keras", images, strength=400.0, draws=3)
    assert len(draws) == 3 and mean < 0.9
