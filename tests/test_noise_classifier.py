"""The denoiser as density estimator / noise classifier (CDL eqs. 2-8) against exact mixtures."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import GaussianMixture
from diffjax.likelihood import (
    classify_noise_level,
    eps_fn_in_log_snr,
    log_likelihood_ratio,
    log_snr_nll,
    noised_log_snr,
    noised_nll,
)
from diffjax.log_snr import logistic_log_snr_logpdf, sample_log_snr
from diffjax.sde._scalar import VESDE, SubVPSDE, VPSDE

def gm_sample(gm, seed, n):
    """Exact mixture samples drawn with numpy (keeps eager JAX dispatch out of the tests)."""
    rng = np.random.default_rng(seed)
    k = rng.choice(len(gm.weights), size=n, p=np.asarray(gm.weights))
    x = np.asarray(gm.means)[k] + np.asarray(gm.stds)[k][:, None] * rng.standard_normal((n, gm.dim))
    return jnp.asarray(x, jnp.float32)


def vp_noise(x, zeta, seed):
    """``sqrt(sigmoid(zeta)) x + sqrt(sigmoid(-zeta)) n`` with numpy noise; ``zeta`` scalar or (n,)."""
    z = np.broadcast_to(np.asarray(zeta, np.float64), (x.shape[0],))[:, None]
    n = np.random.default_rng(seed).standard_normal(x.shape)
    s = 1 / (1 + np.exp(-z))
    return jnp.asarray(np.sqrt(s) * np.asarray(x) + np.sqrt(1 - s) * n, jnp.float32)


GM = GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-1.0, 0.5], [0.8, -0.3]]), jnp.array([0.3, 0.15]))


def exact_eps_log_snr(gm):
    """Closed-form eps of the mixture under the VP channel at log-SNR a (CDL eq. 9: eps = -sqrt(sig(-a)) score)."""

    def eps(x, a):
        a = jnp.broadcast_to(jnp.asarray(a, x.dtype), (x.shape[0],))
        alpha, sigma = jnp.sqrt(jax.nn.sigmoid(a)), jnp.sqrt(jax.nn.sigmoid(-a))
        return -sigma[:, None] * gm.diffused_score(x, alpha, sigma)

    return eps


def exact_log_p_zeta(gm, x, zeta):
    """log p_zeta: the mixture through the VP channel at log-SNR zeta (CDL eq. 3 / App. A.2)."""
    return gm.diffused_log_prob(x, jnp.sqrt(jax.nn.sigmoid(zeta)), jnp.sqrt(jax.nn.sigmoid(-zeta)))


EPS = exact_eps_log_snr(GM)
_nll = jax.jit(lambda x, key: log_snr_nll(EPS, x, key, 2048, return_std_error=True))
_noised = jax.jit(lambda x, zeta, key: noised_nll(EPS, x, zeta, key, 2048, return_std_error=True))
_llr = jax.jit(lambda x, zeta, key: log_likelihood_ratio(EPS, x, zeta, key, 4096, return_std_error=True))


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_eps_fn_in_log_snr_matches_vp_channel(sde):
    # Each SDE's exact eps(x, t), converted, is the exact eps of the VP channel at log-SNR a.
    x = gm_sample(GM, 0, 16)
    a = jnp.linspace(-6.0, 9.0, 16)
    got, want = jax.jit(lambda x, a: (eps_fn_in_log_snr(sde, GM.eps_fn(sde))(x, a), EPS(x, a)))(x, a)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_noised_log_snr_formulas():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    sig = lambda v: 1 / (1 + mpmath.exp(-v))
    with jax.enable_x64(True):
        a = jnp.linspace(-12.0, 20.0, 33, dtype=jnp.float64)
        for zeta in (-3.0, 0.5, 6.0, 15.0):
            beta, b = noised_log_snr(a, zeta)
            p = [sig(mpmath.mpf(zeta)) * sig(mpmath.mpf(float(v))) for v in a]        # sigmoid(beta)
            ref_beta = np.array([float(mpmath.log(q / (1 - q))) for q in p])
            ref_b = np.array([float(mpmath.sqrt(sig(-mpmath.mpf(float(v))) / (1 - q))) for v, q in zip(a, p)])
            np.testing.assert_allclose(beta, ref_beta, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(b, ref_b, rtol=1e-12)
            assert bool(jnp.all(beta < jnp.minimum(a, zeta)))
        beta, b = noised_log_snr(a, jnp.inf)          # zeta = inf is the clean distribution
        np.testing.assert_allclose(beta, a, atol=1e-12)
        np.testing.assert_allclose(b, 1.0, atol=1e-12)


def test_truncated_proposal_density_is_normalised():
    a, log_q = jax.jit(lambda k: sample_log_snr(k, (100_000,), loc=1.0, scale=2.0, clip=3.0))(jax.random.PRNGKey(0))
    assert float(jnp.min(a)) >= 1.0 - 6.0 - 1e-4 and float(jnp.max(a)) <= 1.0 + 6.0 + 1e-4
    # The returned q integrates to one over [loc - clip scale, loc + clip scale] ...
    grid = np.linspace(-5.0, 7.0, 20001)
    q = np.exp(np.asarray(logistic_log_snr_logpdf(grid, 1.0, 2.0), np.float64)) / math.tanh(1.5)
    assert abs(np.trapezoid(q, grid) - 1.0) < 1e-4
    # ... and importance weights 1/q integrate a constant exactly: E[1/q] = length of the support.
    assert abs(float(jnp.mean(jnp.exp(-log_q))) - 12.0) < 0.15


def test_gaussian_reference_makes_the_constant_exact():
    # For p = N(0, I) the optimal denoiser is sqrt(sigmoid(-a)) z: every draw's integrand vanishes and the
    # estimate is -log N(x; 0, I) = d/2 log(2 pi) + |x|^2/2 exactly (the constant c of eq. 2, made finite).
    x = jnp.asarray(2.0 * np.random.default_rng(1).standard_normal((8, 3)), jnp.float32)
    gauss = lambda z, a: jnp.sqrt(jax.nn.sigmoid(-jnp.asarray(a)))[:, None] * z
    nll = jax.jit(lambda x, k: log_snr_nll(gauss, x, k, 64))(x, jax.random.PRNGKey(2))
    ref = 1.5 * math.log(2 * math.pi) + 0.5 * jnp.sum(x**2, axis=1)
    np.testing.assert_allclose(nll, ref, rtol=1e-6)


def test_log_snr_nll_gaussian_closed_form():
    # N(mu, s^2 I) (a one-component mixture, through the VP adapter): eq. 2 vs the closed form.
    g = GaussianMixture(jnp.ones(1), jnp.array([[0.5, -1.0]]), jnp.array([0.4]))
    x = gm_sample(g, 5, 16)
    eps = eps_fn_in_log_snr(VPSDE(), g.eps_fn(VPSDE()))
    est, se = jax.jit(lambda x, k: log_snr_nll(eps, x, k, 2048, return_std_error=True))(x, jax.random.PRNGKey(6))
    err = est + g.log_prob(x)
    assert float(jnp.max(jnp.abs(err) / se)) < 5.0
    assert abs(float(jnp.mean(err))) < 4.0 * float(jnp.sqrt(jnp.mean(se**2) / 16))


def test_log_snr_nll_matches_mixture_within_mc_error():
    x = gm_sample(GM, 3, 48)
    est, se = _nll(x, jax.random.PRNGKey(4))
    err = est + GM.log_prob(x)
    assert float(jnp.max(jnp.abs(err) / se)) < 5.0
    assert abs(float(jnp.mean(err))) < 4.0 * float(jnp.sqrt(jnp.mean(se**2) / x.shape[0]))
    assert float(jnp.mean(se)) < 0.2            # stated Monte Carlo error at 2048 draws


@pytest.mark.parametrize("zeta", [1.0, 3.0])
def test_llr_and_noised_nll_match_exact(zeta):
    x = gm_sample(GM, 7, 48)
    x = jnp.concatenate([x[:24], vp_noise(x[24:], zeta, 8)])
    exact = exact_log_p_zeta(GM, x, zeta) - GM.log_prob(x)
    llr, se = _llr(x, zeta, jax.random.PRNGKey(9))
    spread = float(jnp.std(exact))
    assert float(jnp.mean(jnp.abs(llr - exact))) < 0.15 * spread
    assert float(jnp.corrcoef(llr, exact)[0, 1]) > 0.97
    assert float(jnp.max(jnp.abs(llr - exact) / se)) < 5.0
    # Eq. 3 alone (exact constant) against the exact noised density.
    nz, nz_se = _noised(x, zeta, jax.random.PRNGKey(10))
    assert float(jnp.max(jnp.abs(nz + exact_log_p_zeta(GM, x, zeta)) / nz_se)) < 5.0


def test_common_draws_cancel_the_variance():
    # Same (a, eps) in both terms (eq. 8) vs the difference of two independent NLL estimates (Alg. 1 done
    # naively): at zeta = 6 the standard error drops by more than 10x (measured ~30x).
    x = gm_sample(GM, 7, 48)
    _, se = _llr(x, 6.0, jax.random.PRNGKey(1))
    _, se_zeta = _noised(x, 6.0, jax.random.PRNGKey(2))
    _, se_p = _nll(x, jax.random.PRNGKey(3))
    se_p, se_zeta = se_p / math.sqrt(2.0), se_zeta / math.sqrt(2.0)         # at 4096 draws, as the LLR
    assert float(jnp.mean(se)) < 0.1 * float(jnp.mean(jnp.sqrt(se_zeta**2 + se_p**2)))


def test_llr_is_one_batched_model_call():
    calls = []

    def eps(x, a):
        calls.append((x.shape, jnp.shape(a)))
        return exact_eps_log_snr(GM)(x, a)

    x = gm_sample(GM, 0, 5)
    jax.eval_shape(lambda: log_likelihood_ratio(eps, x, jnp.linspace(1.0, 2.0, 5), jax.random.PRNGKey(1), 7))
    assert calls == [((2 * 5 * 7, 2), (2 * 5 * 7,))]


def test_classifier_picks_true_level():
    # 16-D two-component mixture; levels -3, 1, 6 (noise variances 0.95, 0.27, 2.5e-3; data std 0.1).
    d, n_per = 16, 30
    gm = GaussianMixture(jnp.array([0.4, 0.6]), jnp.asarray(0.7 * np.random.default_rng(0).standard_normal((2, d)),
                                                            jnp.float32), jnp.array([0.1, 0.1]))
    zetas = jnp.array([-3.0, 1.0, 6.0])
    x = vp_noise(gm_sample(gm, 12, 3 * n_per), np.repeat(np.asarray(zetas), n_per), 13)
    post = jax.jit(lambda k: classify_noise_level(exact_eps_log_snr(gm), x, zetas, k, 128))(jax.random.PRNGKey(14))
    assert post.shape == (3 * n_per, 3)
    np.testing.assert_allclose(jnp.sum(post, axis=1), 1.0, atol=1e-5)
    truth = jnp.repeat(jnp.arange(3), n_per)
    exact_logp = jax.jit(jax.vmap(lambda zz: exact_log_p_zeta(gm, x, zz), out_axes=1))(zetas)
    bayes_acc = float(jnp.mean(jnp.argmax(exact_logp, axis=1) == truth))
    assert bayes_acc >= 0.95
    assert float(jnp.mean(jnp.argmax(post, axis=1) == truth)) >= 0.95


def test_validation_errors():
    eps = exact_eps_log_snr(GM)
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="n_samples"):
        log_snr_nll(eps, x, jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="scale"):
        log_likelihood_ratio(eps, x, 1.0, jax.random.PRNGKey(0), 4, scale=-1.0)
    with pytest.raises(ValueError, match="clip"):
        noised_nll(eps, x, 1.0, jax.random.PRNGKey(0), 4, clip=0.0)
    with pytest.raises(ValueError, match="zeta"):
        log_likelihood_ratio(eps, x, jnp.ones(3), jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match="zetas"):
        classify_noise_level(eps, x, jnp.ones((2, 2)), jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match="x must"):
        log_snr_nll(eps, jnp.zeros(3), jax.random.PRNGKey(0), 4)


def test_one_proposal_and_old_paths():
    """The logistic proposal has one home (diffjax.log_snr); the old module paths re-export it."""
    import diffjax
    from diffjax import log_snr, noise_classifier, schedules

    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(log_snr.logistic_log_snr_sample(key, (64,), 1.0, 2.0),
                                  sample_log_snr(key, (64,), loc=1.0, scale=2.0)[0])
    assert schedules.logistic_log_snr_sample is log_snr.logistic_log_snr_sample
    assert schedules.logistic_log_snr_logpdf is logistic_log_snr_logpdf
    assert noise_classifier.sample_log_snr is sample_log_snr
    for name in ("eps_fn_in_log_snr", "noised_log_snr", "log_snr_nll", "noised_nll", "log_likelihood_ratio",
                 "classify_noise_level"):
        assert getattr(noise_classifier, name) is getattr(diffjax.likelihood, name), name
