"""2-D toy data: shapes, determinism, scale, step-indexed batches, geometry of each set, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import nine_gaussians, sixty_four_gaussians
from diffjax.data import toy

N = 4000


@pytest.fixture(scope="module")
def samples():
    key = jax.random.PRNGKey(0)
    return {name: np.asarray(toy.toy_sampler(name)(key, N)) for name in toy.TOY_NAMES}


def test_names():
    assert set(toy.TOY_NAMES) == {"swiss_roll", "checkerboard", "rings", "moons", "mixture_9", "mixture_64", "dino"}


@pytest.mark.parametrize("name", ["swiss_roll", "checkerboard", "rings", "moons", "mixture_9", "mixture_64", "dino"])
def test_shape_dtype_scale(samples, name):
    x = samples[name]
    assert x.shape == (N, 2) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    std = x.std(0)
    lo = 0.35 if name.startswith("mixture") else 0.6
    assert np.all((lo < std) & (std < 1.3)), std
    assert np.all(np.abs(x.mean(0)) < 0.35)
    assert np.max(np.linalg.norm(x, axis=1)) < 3.5


@pytest.mark.parametrize("name", ["swiss_roll", "checkerboard", "rings", "moons", "mixture_9", "mixture_64"])
def test_deterministic_and_key_dependent(samples, name):
    f = toy.toy_sampler(name)  # same n as the fixture: no new compile
    a = f(jax.random.PRNGKey(1), N)
    np.testing.assert_array_equal(a, f(jax.random.PRNGKey(1), N))
    assert not np.allclose(a, f(jax.random.PRNGKey(2), N))
    assert not np.allclose(a, samples[name])


def test_toy_batch_step_indexed():
    b = toy.toy_batch("moons", seed=3, step=10, batch_size=32)
    assert b.shape == (32, 2)
    np.testing.assert_array_equal(b, toy.toy_batch("moons", 3, 10, 32))
    # the batch of a step is independent of what was drawn before (resume exactly)
    ref = toy.moons(jax.random.fold_in(jax.random.PRNGKey(3), 10), 32)
    np.testing.assert_array_equal(b, ref)
    assert not np.allclose(b, toy.toy_batch("moons", 3, 11, 32))
    assert not np.allclose(b, toy.toy_batch("moons", 4, 10, 32))
    # traced step inside jit gives the same batch
    jb = jax.jit(lambda s: toy.toy_batch("moons", 3, s, 32))(jnp.int32(10))
    np.testing.assert_allclose(jb, b, rtol=1e-6, atol=1e-6)


def test_unknown_name_and_bad_sizes():
    with pytest.raises(ValueError, match="swiss_roll") as info:
        toy.toy_sampler("spiral")
    assert all(n in str(info.value) for n in toy.TOY_NAMES)
    with pytest.raises(ValueError, match="unknown"):
        toy.toy_batch("nope", 0, 0, 8)
    with pytest.raises(ValueError, match="unknown"):
        toy.toy_sampler(["moons"])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="positive"):
            toy.checkerboard(jax.random.PRNGKey(0), bad)
        with pytest.raises(ValueError, match="positive"):
            toy.toy_batch("rings", 0, 0, bad)


def test_checkerboard_geometry(samples):
    x = samples["checkerboard"]
    assert np.all(np.abs(x) <= 2.0)
    cells = np.floor(x + 2.0).astype(int)
    assert np.all((cells.sum(1) % 2) == 0)  # only the dark cells
    counts = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    dark = counts[[i * 4 + j for i in range(4) for j in range(4) if (i + j) % 2 == 0]]
    np.testing.assert_allclose(dark / N, 1 / 8, atol=0.025)


def test_rings_radii(samples):
    r = np.linalg.norm(samples["rings"], axis=1)
    nearest = np.array([0.5, 1.0, 1.5, 2.0])[np.argmin(np.abs(r[:, None] - np.array([0.5, 1.0, 1.5, 2.0])), 1)]
    assert np.all(np.abs(r - nearest) < 0.25)
    np.testing.assert_allclose(np.bincount(np.round(nearest * 2).astype(int), minlength=5)[1:] / N, 0.25, atol=0.03)


def test_moons_and_swiss_roll_geometry(samples):
    # moons: undo the affine map; each point lies near one of the two unit half circles
    p = samples["moons"] / 1.4 + np.array([0.5, 0.25])
    d_up = np.abs(np.linalg.norm(p, axis=1) - 1)
    d_lo = np.abs(np.linalg.norm(p - np.array([1.0, 0.5]), axis=1) - 1)
    assert np.quantile(np.minimum(d_up, d_lo), 0.99) < 0.15
    # swiss roll: radius grows linearly with the angle, |x| * 7 = u in [1.5 pi, 4.5 pi] up to noise
    r = np.linalg.norm(samples["swiss_roll"], axis=1) * 7
    assert np.quantile(r, 0.005) > 1.5 * np.pi - 1.5 and np.quantile(r, 0.995) < 4.5 * np.pi + 1.5


@pytest.mark.parametrize("name, mix", [("mixture_9", nine_gaussians), ("mixture_64", sixty_four_gaussians)])
def test_mixtures_sample_the_analytic_targets(samples, name, mix):
    x = samples[name]
    m = mix()
    means = np.asarray(m.means)
    near = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), 1)
    dist = np.linalg.norm(x - means[near], axis=1)
    assert np.quantile(dist, 0.999) < 5 * float(m.stds[0])
    k = means.shape[0]
    freq = np.bincount(near, minlength=k) / N
    assert np.all(np.abs(freq - 1 / k) < 5 * np.sqrt((1 / k) / N))
