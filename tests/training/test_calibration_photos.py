"""The studio photos the unknown-input detector is calibrated on: their textures keep the spatial
correlation of blurred noise however they are drawn, and the photos depend on the seed alone."""

from __future__ import annotations

import numpy as np
import pytest

from deepautodnn.training.calibrate import _texture, photo_inputs


def _correlation_at(texture: np.ndarray, lag: int) -> float:
    """Correlation of the texture with itself shifted `lag` pixels, along rows and columns."""
    pairs = [(texture[:, :-lag], texture[:, lag:]), (texture[:-lag], texture[lag:])]
    return float(np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in pairs]))


@pytest.mark.parametrize("blur", [1.5, 6.0, 20.0])  # full-size grid, and coarser grids resized up
def test_texture_has_the_correlation_of_blurred_noise(blur):
    texture = _texture(np.random.default_rng(0), 700, 500, blur)
    assert texture.shape == (700, 500) and texture.dtype == np.float32
    assert texture.std() == pytest.approx(1, abs=1e-3)
    # Gaussian-blurred white noise correlates as exp(-d^2 / (4 blur^2)) at a distance d.
    lag = max(1, round(blur))
    assert _correlation_at(texture, lag) == pytest.approx(np.exp(-(lag**2) / (4 * blur**2)), abs=0.08)


def test_photos_depend_on_the_seed_not_on_the_threads():
    images = (np.random.default_rng(1).random((6, 28, 28)) * 255).astype(np.uint8)
    one, evidence = photo_inputs(images, seed=3, threads=1)
    two, _ = photo_inputs(images, seed=3, threads=2)
    other, _ = photo_inputs(images, seed=4, threads=2)
    assert one.shape == (6, 28, 28) and one.dtype == np.uint8 and len(evidence) == 6
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, other)


def test_no_photos_is_an_empty_batch_of_the_model_size():
    images, evidence = photo_inputs(np.zeros((0, 28, 28), np.uint8))
    assert images.shape == (0, 28, 28) and images.dtype == np.uint8 and evidence == []
