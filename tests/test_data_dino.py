"""Datasaurus dino (CDL Table 1 setting): the 142 shipped points, the jitter recipe, the standardised
fixed 100k set, the sampler drawing from it, determinism and errors."""

from importlib import resources

import jax
import numpy as np
import pytest

from diffjax.data import dino as D


def test_raw_points_are_the_datasaurus_dino():
    """142 points with the summary statistics Matejka & Fitzmaurice (CHI 2017) print for every
    Datasaurus Dozen set: mean (54.26, 47.83), SD (16.76, 26.93), correlation -0.06."""
    pts = D.dino_raw_points()
    assert D.DINO_NUM_POINTS == 142 and pts.shape == (142, 2) and pts.dtype == np.float64
    np.testing.assert_allclose(pts[0], [55.3846, 97.1795])
    np.testing.assert_allclose(pts.mean(0), [54.26, 47.83], atol=0.01)  # printed to 2 decimals
    np.testing.assert_allclose(pts.std(0, ddof=1), [16.76, 26.93], atol=0.01)
    assert np.corrcoef(pts.T)[0, 1] == pytest.approx(-0.06, abs=0.01)
    pts[0] = 0.0  # a copy: the module's points are untouched
    assert D.dino_raw_points()[0, 0] == pytest.approx(55.3846)
    # the data file ships inside the package (package_data), found without the source tree
    assert resources.files("diffjax.data").joinpath("datasaurus_dino.tsv").is_file()


@pytest.fixture(scope="module")
def fixed_set():
    return np.asarray(D.dino_set(jax.random.PRNGKey(D.DINO_SET_SEED)))


def test_fixed_set_size_and_standardisation(fixed_set):
    """Standardised with its own moments: mean 0 and std 1 up to float32 round-off (1e-5 measured)."""
    assert D.DINO_SET_SIZE == 100_000
    assert fixed_set.shape == (100_000, 2) and fixed_set.dtype == np.float32
    np.testing.assert_allclose(fixed_set.mean(0, dtype=np.float64), 0.0, atol=1e-5)
    np.testing.assert_allclose(fixed_set.std(0, dtype=np.float64), 1.0, atol=1e-4)
    assert np.linalg.norm(fixed_set, axis=1).max() < 3.0  # raw points reach radius ~2.7, plus jitter
    # the affine step (x/54 - 1) * 4, (y/48 - 1) * 4 cancels under standardisation
    raw, _ = D.dino_recipe(jax.random.PRNGKey(D.DINO_SET_SEED), D.DINO_SET_SIZE)
    raw = np.asarray(raw, np.float64)
    np.testing.assert_allclose(fixed_set, (raw - raw.mean(0)) / raw.std(0), atol=2e-5)


def test_jitter_is_gaussian_0_15_in_raw_units():
    """jitter = point - raw[idx]: 2 x 100,000 draws of N(0, 0.15^2); 4 SE tolerances, SE(mean) =
    0.15/sqrt(1e5) = 4.7e-4 per axis, SE(std) ~ 0.15/sqrt(2 * 2e5) = 2.4e-4 pooled. Source indices
    are uniform on the 142 points (chi-square, 141 dof: mean 141, sd 16.8; bound mean + 5 sd)."""
    n = D.DINO_SET_SIZE
    pts, idx = D.dino_recipe(jax.random.PRNGKey(1), n)
    assert pts.shape == (n, 2) and pts.dtype == np.float32 and idx.shape == (n,) and idx.dtype == np.int32
    jitter = np.asarray(pts, np.float64) - D.dino_raw_points()[np.asarray(idx)]
    assert np.all(np.abs(jitter.mean(0)) < 4 * 0.15 / np.sqrt(n))
    assert abs(jitter.std() - D.DINO_JITTER) < 4 * 0.15 / np.sqrt(4 * n)
    assert abs(np.corrcoef(jitter.T)[0, 1]) < 4 / np.sqrt(n)
    counts = np.bincount(np.asarray(idx), minlength=142)
    expected = n / 142
    assert counts.size == 142 and np.sum((counts - expected) ** 2 / expected) < 141 + 5 * np.sqrt(2 * 141)


def test_sampler_draws_from_the_fixed_set(fixed_set):
    n = 20_000
    x = np.asarray(D.dino(jax.random.PRNGKey(7), n))
    assert x.shape == (n, 2) and x.dtype == np.float32
    members = {tuple(r) for r in fixed_set.tolist()}
    assert all(tuple(r) in members for r in x[:2000].tolist())
    # i.i.d. draws from a standardised set: mean within 4 SE (SE = 1/sqrt(n) = 0.007), std within 0.03
    assert np.all(np.abs(x.mean(0)) < 4 / np.sqrt(n))
    assert np.all(np.abs(x.std(0) - 1.0) < 0.03)


def test_deterministic_and_key_dependent():
    """Same key, same points; another key, other points (sizes reuse the other tests' compiles)."""
    k1, k2 = jax.random.PRNGKey(11), jax.random.PRNGKey(12)
    n = 20_000
    np.testing.assert_array_equal(D.dino(k1, n), D.dino(k1, n))
    assert not np.array_equal(D.dino(k1, n), D.dino(k2, n))
    np.testing.assert_array_equal(D.dino_set(k1), D.dino_set(k1))
    assert not np.array_equal(D.dino_set(k1), D.dino_set(k2))
    a, ia = D.dino_recipe(k1, D.DINO_SET_SIZE)
    b, ib = D.dino_recipe(k1, D.DINO_SET_SIZE)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia, ib)


def test_errors():
    key = jax.random.PRNGKey(0)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n must"):
            D.dino(key, bad)
    with pytest.raises(ValueError, match="n must"):
        D.dino_set(key, 1)
    with pytest.raises(ValueError, match="n must"):
        D.dino_recipe(key, 0)
