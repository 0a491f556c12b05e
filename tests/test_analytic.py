"""Gaussian mixtures: densities vs scipy, scores vs finite differences and autodiff, eps/denoiser vs
the posterior mean computed independently by Bayes' rule, sampling moments, validation, toy targets."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from diffjax.analytic._mixture import GaussianMixture, nine_gaussians, sixty_four_gaussians
from diffjax.sde._scalar import VESDE, SubVPSDE, VPSDE

W = np.array([0.2, 0.5, 0.3])
MU = np.array([[-1.0, 0.5], [0.8, 0.3], [0.1, -1.2]])
STD = np.array([0.3, 0.15, 0.5])


def _mix(dtype=np.float64):
    return GaussianMixture(jnp.asarray(W, dtype), jnp.asarray(MU, dtype), jnp.asarray(STD, dtype))


def _np_log_prob(x, alpha, sigma):
    """log p_t(x) of the diffused mixture via scipy, one row at a time; x (n, d)."""
    out = []
    for xi, a, s in zip(x, np.broadcast_to(alpha, len(x)), np.broadcast_to(sigma, len(x))):
        comps = [
            math.log(w) + scipy.stats.multivariate_normal.logpdf(xi, a * m, (a**2 * sd**2 + s**2) * np.eye(2))
            for w, m, sd in zip(W, MU, STD)
        ]
        out.append(scipy.special.logsumexp(comps))
    return np.array(out)


def _np_posterior_mean(x, alpha, sigma):
    """E[x_0 | alpha x_0 + sigma eps = x] by Bayes: component responsibilities times Gaussian posteriors."""
    out = []
    for xi in x:
        var = alpha**2 * STD**2 + sigma**2
        logr = np.log(W) - 0.5 * np.sum((xi - alpha * MU) ** 2, 1) / var - np.log(2 * np.pi * var)
        r = np.exp(logr - scipy.special.logsumexp(logr))
        post = MU + (alpha * STD**2 / var)[:, None] * (xi - alpha * MU)
        out.append(r @ post)
    return np.array(out)


_log_prob = jax.jit(lambda m, x: m.log_prob(x))
_score = jax.jit(lambda m, x: m.score(x))
_grad_log_prob = jax.jit(lambda m, x: jax.vmap(jax.grad(lambda xi: m.log_prob(xi[None])[0]))(x))

X = np.array([[0.0, 0.0], [-0.9, 0.4], [0.7, 0.35], [0.2, -1.0], [1.5, -0.5]])


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("t", [0.01, 0.2, 0.7])
def test_marginal_log_prob_and_score(sde, t):
    with jax.enable_x64(True):
        m = _mix().marginal(sde, t)
        alpha, sigma = (float(c) for c in sde.marginal_coeffs(t))
        x = jnp.asarray(X * max(alpha, 0.3))
        lp = _log_prob(m, x)
        np.testing.assert_allclose(lp, _np_log_prob(np.asarray(x), alpha, sigma), rtol=1e-10)
        np.testing.assert_allclose(lp, _mix().diffused_log_prob(x, alpha, sigma), rtol=1e-12)
        score = np.asarray(_score(m, x))
        # central finite differences of the log-density (float64)
        h = 1e-5
        fd = np.stack([(_log_prob(m, x + h * e) - _log_prob(m, x - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
        np.testing.assert_allclose(score, fd, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(score, _grad_log_prob(m, x), rtol=1e-9, atol=1e-9)
        # the sde-level score_fn agrees with the marginal mixture
        np.testing.assert_allclose(_mix().score_fn(sde)(x, t), score, rtol=1e-10)


def test_diffused_score_with_batched_coefficients_equals_per_row_marginal():
    with jax.enable_x64(True):
        sde = VPSDE()
        t = jnp.array([0.01, 0.1, 0.3, 0.6, 1.0])
        alpha, sigma = sde.marginal_coeffs(t)
        mix = _mix()
        x = jnp.asarray(X)
        got = mix.diffused_score(x, alpha, sigma)
        got_lp = mix.diffused_log_prob(x, alpha, sigma)
        for i in range(len(t)):
            mi = mix.marginal(sde, float(t[i]))
            np.testing.assert_allclose(got[i], mi.score(x[i : i + 1])[0], rtol=1e-10)
            np.testing.assert_allclose(got_lp[i], mi.log_prob(x[i : i + 1])[0], rtol=1e-12)
        np.testing.assert_allclose(mix.score_fn(sde)(x, t), got, rtol=1e-12)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_eps_fn_is_posterior_noise_and_minus_sigma_score(sde):
    """eps(x, t) = E[eps | x_t = x] = (x - alpha E[x0 | x]) / sigma = -sigma_t score (thesis eq. 1.24)."""
    with jax.enable_x64(True):
        mix = _mix()
        t = jnp.array([0.05, 0.2, 0.4, 0.7, 0.95])
        x = jnp.asarray(X)
        eps = np.asarray(mix.eps_fn(sde)(x, t))
        alpha, sigma = (np.asarray(c) for c in sde.marginal_coeffs(t))
        np.testing.assert_allclose(eps, -sigma[:, None] * np.asarray(mix.score_fn(sde)(x, t)), rtol=1e-12)
        for i in range(len(t)):
            ref = (X[i] - alpha[i] * _np_posterior_mean(X[i : i + 1], alpha[i], sigma[i])[0]) / sigma[i]
            np.testing.assert_allclose(eps[i], ref, rtol=1e-8, atol=1e-10)
        # scalar t works too
        np.testing.assert_allclose(mix.eps_fn(sde)(x, 0.3), -float(sde.marginal_coeffs(0.3)[1]) * mix.score_fn(sde)(x, 0.3))


@pytest.mark.parametrize("sigma", [0.01, 0.2, 1.0, 30.0])
def test_denoiser_is_posterior_mean(sigma):
    with jax.enable_x64(True):
        mix = _mix()
        x = jnp.asarray(X)
        got = np.asarray(mix.denoiser(x, sigma))
        np.testing.assert_allclose(got, _np_posterior_mean(X, 1.0, sigma), rtol=1e-8, atol=1e-10)
        sig = jnp.array([0.01, 0.1, 0.5, 2.0, 10.0])
        got_b = np.asarray(mix.denoiser(x, sig))
        for i, s in enumerate(np.asarray(sig)):
            np.testing.assert_allclose(got_b[i], _np_posterior_mean(X[i : i + 1], 1.0, s)[0], rtol=1e-8, atol=1e-10)


def test_denoiser_matches_monte_carlo_importance_weights():
    """Independent check of E[x0 | x]: self-normalised importance weights over prior samples x0 ~ p."""
    mix = _mix(np.float32)
    sigma, x = 0.4, np.array([[0.3, 0.1], [-0.5, 0.2]])
    x0 = np.asarray(mix.sample(jax.random.PRNGKey(0), 200_000), np.float64)
    for xi, d in zip(x, np.asarray(mix.denoiser(jnp.asarray(x, jnp.float32), sigma))):
        logw = -0.5 * np.sum((xi - x0) ** 2, 1) / sigma**2
        w = np.exp(logw - logw.max())
        w /= w.sum()
        est = w @ x0
        ess = 1 / np.sum(w**2)
        se = np.sqrt(w @ (x0 - est) ** 2 / ess)
        assert np.all(np.abs(est - d) < 5 * se + 1e-4), (est, d, se)


def test_sample_moments():
    mix = _mix(np.float32)
    n = 40000
    s = np.asarray(mix.sample(jax.random.PRNGKey(1), n), np.float64)
    assert s.shape == (n, 2)
    mean = W @ MU
    cov = sum(w * (sd**2 * np.eye(2) + np.outer(m, m)) for w, m, sd in zip(W, MU, STD)) - np.outer(mean, mean)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(s.mean(0) - mean) < 4 * se_mean)
    # variance SE <= sqrt((m4 - var^2)/n); use the empirical fourth moment
    c = s - s.mean(0)
    se_var = np.sqrt(((c**2) ** 2).mean(0) - (c**2).mean(0) ** 2) / np.sqrt(n)
    assert np.all(np.abs(np.diag(np.cov(s.T)) - np.diag(cov)) < 4 * se_var)
    # the component that owns the point: nearest-mean assignment is unambiguous for these means/stds
    near = np.argmin(((s[:, None] - MU[None]) ** 2).sum(-1), 1)
    freq = np.bincount(near, minlength=3) / n
    assert np.all(np.abs(freq - W) < 0.02)


@pytest.mark.parametrize(
    "args, match",
    [
        ((W, MU[:, 0], STD), "means"),
        ((W[:2], MU, STD), "weights"),
        ((W, MU, STD[:2]), "stds"),
        ((np.array([0.5, 0.6, -0.1]), MU, STD), "weights"),
        ((np.array([0.5, 0.5, 0.0]), MU, STD), "weights"),
        ((np.array([0.2, 0.2, 0.2]), MU, STD), "sum"),
        ((W, MU, np.array([0.3, 0.0, 0.1])), "stds"),
        ((W, MU, np.array([0.3, -1.0, 0.1])), "stds"),
        ((W, np.where(MU > 0.5, np.nan, MU), STD), "finite"),
        ((W, MU, np.array([0.3, np.inf, 0.1])), "finite"),
    ],
)
def test_mixture_validation(args, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(*(jnp.asarray(a) for a in args))


def test_x_shape_checked():
    mix = _mix(np.float32)
    for bad in (jnp.zeros(2), jnp.zeros((4, 3)), jnp.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match="shape"):
            mix.log_prob(bad)
        with pytest.raises(ValueError, match="shape"):
            mix.score(bad)


def test_mixture_is_a_pytree_under_jit():
    mix = _mix(np.float32)
    f = jax.jit(lambda m, x: m.score(x))
    np.testing.assert_allclose(f(mix, jnp.asarray(X, jnp.float32)), mix.score(jnp.asarray(X, jnp.float32)), rtol=1e-6)


def _as_set(means, decimals=6):
    return sorted(tuple(np.round(m, decimals)) for m in np.asarray(means, np.float64))


def test_nine_gaussians_eq_2_100():
    a = 2**-0.5
    mus = [(-a, 0), (-a / 2, a / 2), (0, a), (-a / 2, -a / 2), (0, 0), (a / 2, a / 2), (0, -a), (a / 2, -a / 2), (a, 0)]
    g = nine_gaussians()
    assert g.means.shape == (9, 2)
    assert _as_set(g.means) == _as_set(mus)
    np.testing.assert_allclose(g.weights, 1 / 9, rtol=1e-6)
    np.testing.assert_allclose(g.stds, 0.04, rtol=1e-6)
    x = g.sample(jax.random.PRNGKey(0), 9000)
    near = np.argmin(((np.asarray(x)[:, None] - np.asarray(mus)[None]) ** 2).sum(-1), 1)
    assert np.all(np.abs(np.bincount(near, minlength=9) / 9000 - 1 / 9) < 0.02)


def test_sixty_four_gaussians_eqs_3_80_3_81():
    r = 2**-0.5
    mu = [(1, 0), (-1, 0), (0, 1), (0, -1), (r, r), (r, -r), (-r, r), (-r, -r)]
    s1, s2 = 0.9, 0.2
    mus = [(s1 * mi[0] + s1 * s2 * mj[0], s1 * mi[1] + s1 * s2 * mj[1]) for mi, mj in itertools.product(mu, mu)]
    g = sixty_four_gaussians()
    assert g.means.shape == (64, 2)
    assert len(set(_as_set(g.means, 5))) == 64
    assert _as_set(g.means) == _as_set(mus)
    np.testing.assert_allclose(g.weights, 1 / 64, rtol=1e-6)  # (1/8)(1/8) in eqs. (3.80)-(3.81)
    np.testing.assert_allclose(g.stds, 1e-2, rtol=1e-6)
    g2 = sixty_four_gaussians(std=0.05, s1=1.0, s2=0.5)
    assert _as_set(g2.means) == _as_set([(a[0] + 0.5 * b[0], a[1] + 0.5 * b[1]) for a, b in itertools.product(mu, mu)])
