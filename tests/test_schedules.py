"""Time grids, log-SNR/sigma/t conversions and the logistic log-SNR proposal."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from diffjax import schedules as S
from diffjax.sde._scalar import VESDE, SubVPSDE, VPSDE


@pytest.mark.parametrize("n, t_min, T", [(1, 1e-3, 1.0), (10, 1e-3, 1.0), (37, 1e-5, 2.0), (5, 0.0, 1.0)])
def test_uniform_grid(n, t_min, T):
    g = np.asarray(S.uniform_grid(n, t_min, T), np.float64)
    assert g.shape == (n + 1,)
    np.testing.assert_allclose([g[0], g[-1]], [T, t_min], rtol=1e-6, atol=1e-7)
    d = np.diff(g)
    assert np.all(d < 0)
    np.testing.assert_allclose(d, -(T - t_min) / n, rtol=1e-4)


@pytest.mark.parametrize("n, t_min, T", [(1, 1e-3, 1.0), (10, 1e-3, 1.0), (50, 1e-4, 2.0)])
def test_quadratic_grid_formula_and_order(n, t_min, T):
    g = np.asarray(S.quadratic_grid(n, t_min, T), np.float64)
    k = np.arange(n + 1)
    ref = T * (1 - (1 - math.sqrt(t_min / T)) * k / n) ** 2  # thesis §3.4.3.2.4 (scaled to [t_min, T])
    assert g.shape == (n + 1,)
    np.testing.assert_allclose(g, ref, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose([g[0], g[-1]], [T, t_min], rtol=1e-5)
    d = np.diff(g)
    assert np.all(d < 0)
    assert np.all(np.diff(np.abs(d)) < 0)  # steps shrink towards the data
    # the square roots are equally spaced
    np.testing.assert_allclose(np.diff(np.sqrt(g)), np.diff(np.sqrt(g))[0], rtol=1e-4)


@pytest.mark.parametrize("n, smin, smax, rho", [(18, 0.002, 80.0, 7.0), (2, 0.01, 10.0, 3.0), (64, 0.002, 80.0, 1.0)])
def test_edm_sigma_grid_matches_eq_4_26(n, smin, smax, rho):
    i = np.arange(n)
    ref = (smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    g = np.asarray(S.edm_sigma_grid(n, smin, smax, rho), np.float64)
    assert g.shape == (n + 1,) and g[-1] == 0.0
    np.testing.assert_allclose(g[:-1], ref, rtol=1e-5)
    assert np.all(np.diff(g) < 0)
    g2 = np.asarray(S.edm_sigma_grid(n, smin, smax, rho, append_zero=False))
    assert g2.shape == (n,)
    np.testing.assert_allclose(g2, g[:-1])


def test_edm_sigma_grid_single_level():
    g = np.asarray(S.edm_sigma_grid(1, 0.002, 80.0))
    np.testing.assert_allclose(g, [80.0, 0.0], rtol=1e-6)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), VESDE(0.002, 80.0)], ids=["vp", "subvp", "ve", "ve_edm"])
def test_conversions_round_trip(sde):
    t = jnp.array([1e-3, 0.01, 0.1, 0.3, 0.7, 1.0])
    sig = S.sigma_from_t(sde, t)
    a, s = sde.marginal_coeffs(t)
    np.testing.assert_allclose(sig, s / a, rtol=1e-5)  # EDM sigma = sigma_t / alpha_t
    np.testing.assert_allclose(S.t_from_sigma(sde, sig), t, rtol=1e-4)
    lam = sde.log_snr(t)
    np.testing.assert_allclose(S.sigma_from_log_snr(lam), np.exp(-0.5 * np.asarray(lam, np.float64)), rtol=1e-6)
    np.testing.assert_allclose(S.log_snr_from_sigma(S.sigma_from_log_snr(lam)), lam, rtol=1e-5, atol=1e-5)


def test_sigma_conversions_float64():
    with jax.enable_x64(True):
        sigma = jnp.logspace(-3, 2, 11)
        np.testing.assert_allclose(S.sigma_from_log_snr(S.log_snr_from_sigma(sigma)), sigma, rtol=1e-13)
        np.testing.assert_allclose(S.log_snr_from_sigma(sigma), -2 * np.log(np.asarray(sigma)), rtol=1e-13)


@pytest.mark.parametrize("loc, scale", [(0.0, 2.0), (-3.0, 0.5), (4.0, 5.0)])
def test_logistic_logpdf_normalised_and_matches_scipy(loc, scale):
    a = np.linspace(loc - 30 * scale, loc + 30 * scale, 401)
    with jax.enable_x64(True):
        lp = np.asarray(S.logistic_log_snr_logpdf(jnp.asarray(a), loc, scale))
        np.testing.assert_allclose(lp, scipy.stats.logistic.logpdf(a, loc, scale), rtol=1e-10, atol=1e-12)
        pdf = jax.jit(lambda x: jnp.exp(S.logistic_log_snr_logpdf(x, loc, scale)))
        total, _ = scipy.integrate.quad(lambda x: float(pdf(jnp.float64(x))), -np.inf, np.inf, limit=200)
    assert abs(total - 1.0) < 1e-8
    # float32 stays finite far in the tails (no exp overflow)
    far = S.logistic_log_snr_logpdf(jnp.array([-1e3, 1e3], jnp.float32), loc, scale)
    assert np.all(np.isfinite(far))


def test_logistic_samples_match_density_histogram():
    loc, scale, n = 1.0, 2.0, 40000
    x = np.asarray(S.logistic_log_snr_sample(jax.random.PRNGKey(0), (n,), loc, scale), np.float64)
    edges = np.linspace(loc - 8 * scale, loc + 8 * scale, 33)
    counts, _ = np.histogram(x, edges)
    # expected counts: integral of exp(logpdf) over each bin (trapezoid on a fine grid)
    fine = np.linspace(edges[0], edges[-1], 32 * 64 + 1)
    pdf = np.exp(np.asarray(S.logistic_log_snr_logpdf(jnp.asarray(fine), loc, scale), np.float64))
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(fine))])
    expected = n * np.diff(cum[::64])
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 3)
    assert abs(np.median(x) - loc) < 4 * 2 * scale / math.sqrt(n)  # SE(median) = 1 / (2 f(loc) sqrt(n))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None])
def test_bad_n_raises(bad):
    for fn in (S.uniform_grid, S.quadratic_grid, S.edm_sigma_grid):
        with pytest.raises(ValueError, match="number of steps"):
            fn(bad)


def test_bad_intervals_raise():
    with pytest.raises(ValueError, match="t_min"):
        S.uniform_grid(10, t_min=1.0, T=1.0)
    with pytest.raises(ValueError, match="t_min"):
        S.quadratic_grid(10, t_min=-0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        S.edm_sigma_grid(10, sigma_min=80.0, sigma_max=0.002)
    with pytest.raises(ValueError, match="sigma_min"):
        S.edm_sigma_grid(10, sigma_min=0.0)
    with pytest.raises(ValueError, match="rho"):
        S.edm_sigma_grid(10, rho=0.0)


# -- time_grid: the one entry point from (n_steps, grid name) to times -------------------------------------


def test_time_grid_kinds_closed_forms():
    """``uniform``: constant steps; ``quadratic``: equally spaced square roots (thesis §3.4.3.2.4);
    ``log_snr``: equally spaced log-SNR (Lu et al. 2022 §3.3), checked in float64; exact endpoints."""
    n, t_min, T = 8, 1e-3, 2.0
    with jax.enable_x64(True):
        u = np.asarray(S.time_grid(n, "uniform", t_min, T))
        np.testing.assert_allclose(np.diff(u), -(T - t_min) / n, rtol=1e-12)
        q = np.asarray(S.time_grid(n, "quadratic", t_min, T))
        np.testing.assert_allclose(np.diff(np.sqrt(q)), -(np.sqrt(T) - np.sqrt(t_min)) / n, rtol=1e-12)
        sde = VPSDE(T=T)
        g = S.time_grid(n, "log_snr", t_min, sde=sde)  # T defaults to sde.T
        lam = np.asarray(sde.log_snr(g))
        np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / n, rtol=1e-9)
        for grid in (u, q, np.asarray(g)):
            assert grid.shape == (n + 1,) and grid[0] == T and abs(grid[-1] - t_min) < 1e-15
    assert float(S.time_grid(4)[0]) == 1.0  # default T = 1 without an SDE


def test_time_grid_traced_T_and_sampler_wrapper():
    """``T`` may be traced (an SDE passed through ``jit``); ``samplers.time_grid(sde, ...)`` is
    ``schedules.time_grid`` with ``T = sde.T``."""
    from diffjax import samplers

    sde = VESDE(T=2.0)
    traced = jax.jit(lambda s: S.time_grid(6, "quadratic", 1e-3, s.T))(sde)
    np.testing.assert_allclose(traced, S.quadratic_grid(6, 1e-3, 2.0), rtol=1e-5)
    for kind in S.TIME_GRIDS:
        np.testing.assert_array_equal(samplers.time_grid(sde, 5, 1e-2, kind), S.time_grid(5, kind, 1e-2, sde=sde))


def test_time_grid_errors_name_the_argument():
    from diffjax.sde import CLD

    with pytest.raises(ValueError, match="grid kind 'cosine'"):
        S.time_grid(4, "cosine")
    with pytest.raises(ValueError, match="log_snr"):
        S.time_grid(4, "log_snr")  # no SDE
    with pytest.raises(ValueError, match="log_snr"):
        S.time_grid(4, "log_snr", sde=CLD())  # CLD has no scalar log-SNR
    with pytest.raises(ValueError, match="t_min"):
        S.time_grid(4, "log_snr", 0.0, sde=VPSDE())  # lambda is infinite at t = 0
    with pytest.raises(ValueError, match="t_min"):
        S.time_grid(4, "quadratic", 2.0, 1.0)
    with pytest.raises(ValueError, match="T"):
        S.time_grid(4, "uniform", 0.0, -1.0)
    with pytest.raises(ValueError, match="number of steps"):
        S.time_grid(0)
