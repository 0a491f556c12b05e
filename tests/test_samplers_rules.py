"""Math of the step rules: convergence orders, exact identities, and sampling the right law.

Ground truth comes from Gaussian mixtures with exact scores/eps/denoisers (diffjax.analytic).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import GaussianMixture, nine_gaussians
from diffjax.samplers.edm_rules import edm_euler_rule, edm_heun_rule
from diffjax.samplers.ode_rules import (
    ddim_rule,
    probability_flow_euler_rule,
    probability_flow_heun_rule,
)
from diffjax.samplers.sde_rules import ddpm_rule, euler_maruyama_rule, predictor_corrector_rule
from diffjax.samplers.sequential import sample
from diffjax.schedules import edm_sigma_grid, uniform_grid
from diffjax.sde import CLD, VESDE, VPSDE

from diffjax.metrics import mmd2


def _wide_mixture():
    """Two wide components: a smooth PF-ODE, so the asymptotic regime starts at few steps."""
    return GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-1.0, 0.5], [1.0, -0.5]]), jnp.array([0.4, 0.3]))


def _padded(grid, length):
    """Repeat the last time: zero-length steps are exact no-ops of every ODE rule, so grids of
    different step counts share one shape (one compile) and can be vmapped."""
    return jnp.concatenate([grid, jnp.full((length - grid.shape[0],), grid[-1], grid.dtype)])


def _slope(ns, errs):
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


NS = (16, 32, 64, 128)
N_REF = 1024


# -- convergence orders (ODE setting, float64) -----------------------------------------------------


def test_probability_flow_and_ddim_convergence_orders():
    """Error at t1 = 0.05 vs a 1024-step Heun reference: PF Euler ~1, PF Heun ~2, DDIM ~1."""
    with jax.enable_x64(True):
        gm, sde, t1 = _wide_mixture(), VPSDE(), 0.05
        x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 2), jnp.float64)
        grids = jnp.stack([_padded(uniform_grid(n, t1), N_REF + 1) for n in NS + (N_REF,)])
        key = jax.random.PRNGKey(1)

        def run(rule, model):
            f = jax.jit(jax.vmap(lambda g: sample(rule, model, key, x_T.shape, g, x_init=x_T)[0]))
            return f(grids)

        heun = run(probability_flow_heun_rule(sde), gm.score_fn(sde))
        ref = heun[-1]
        results = {
            "euler": (run(probability_flow_euler_rule(sde), gm.score_fn(sde))[:-1], 1.0),
            "heun": (heun[:-1], 2.0),
            "ddim": (run(ddim_rule(sde), gm.eps_fn(sde))[:-1], 1.0),
        }
        for name, (xs, order) in results.items():
            errs = [float(jnp.max(jnp.abs(x - ref))) for x in xs]
            assert abs(_slope(NS, errs) - order) < 0.3, (name, errs, _slope(NS, errs))
        # the reference itself is converged far below the errors being fitted
        assert float(jnp.max(jnp.abs(run(probability_flow_euler_rule(sde), gm.score_fn(sde))[-1] - ref))) < 2e-3


def test_edm_convergence_orders():
    """EDM Euler ~1 and EDM Heun ~2 on the rho = 7 sigma grid (eq. 4.26), sigma 10 -> 0.05."""
    with jax.enable_x64(True):
        gm, smin, smax = _wide_mixture(), 0.05, 10.0
        x_T = smax * jax.random.normal(jax.random.PRNGKey(0), (8, 2), jnp.float64)
        grids = jnp.stack([_padded(edm_sigma_grid(n + 1, smin, smax, append_zero=False), N_REF + 1)
                           for n in NS + (N_REF,)])
        key = jax.random.PRNGKey(1)

        def run(rule):
            f = jax.jit(jax.vmap(lambda g: sample(rule, gm.denoiser, key, x_T.shape, g, x_init=x_T)[0]))
            return f(grids)

        heun = run(edm_heun_rule(sigma_max=smax))
        ref = heun[-1]
        for name, xs, order in [("edm_euler", run(edm_euler_rule(sigma_max=smax))[:-1], 1.0),
                                ("edm_heun", heun[:-1], 2.0)]:
            errs = [float(jnp.max(jnp.abs(x - ref))) for x in xs]
            assert abs(_slope(NS, errs) - order) < 0.3, (name, errs, _slope(NS, errs))


# -- exact identities --------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_ddim_eta_one_is_ddpm(sde):
    """Stochastic DDIM with eta = 1 is ancestral sampling with the DDPM posterior (same noise)."""
    gm = nine_gaussians(0.1)
    grid = uniform_grid(6, 1e-3)
    key = jax.random.PRNGKey(3)
    a, _ = sample(ddim_rule(sde, eta=1.0), gm.eps_fn(sde), key, (64, 2), grid)
    b, _ = sample(ddpm_rule(sde), gm.eps_fn(sde), key, (64, 2), grid)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_ddpm_step_matches_textbook_posterior():
    """The expm1 form equals mean = a_{t|s} s_s^2/s_t^2 x_t + a_s s_{t|s}^2/s_t^2 x0, var = s_{t|s}^2 s_s^2/s_t^2."""
    with jax.enable_x64(True):
        sde, gm = VPSDE(), nine_gaussians(0.1)
        eps_fn = gm.eps_fn(sde)
        x = jax.random.normal(jax.random.PRNGKey(0), (5, 2), jnp.float64)
        z = jax.random.normal(jax.random.PRNGKey(1), (5, 2), jnp.float64)
        t, s = 0.6, 0.45
        (at, st), (as_, ss) = sde.marginal_coeffs(t), sde.marginal_coeffs(s)
        ats = at / as_
        sts2 = st**2 - ats**2 * ss**2
        x0 = (x - st * eps_fn(x, t)) / at
        expected = ats * ss**2 / st**2 * x + as_ * sts2 / st**2 * x0 + jnp.sqrt(sts2 * ss**2 / st**2) * z
        got = ddpm_rule(sde).step(eps_fn, x, jnp.float64(t), jnp.float64(s), z)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
        # at s = 0 (sigma_0 = 0) the step returns the posterior mean x0_hat: no noise, no NaN
        last = ddpm_rule(sde).step(eps_fn, x, jnp.float64(0.01), jnp.float64(0.0), z)
        a1, s1 = sde.marginal_coeffs(0.01)
        np.testing.assert_allclose(last, (x - s1 * eps_fn(x, 0.01)) / a1, rtol=1e-10)


def test_ddim_step_is_exact_in_alpha_sigma_form():
    """Deterministic DDIM: x_s = alpha_s x0_hat + sigma_s eps_hat (thesis eq. 3.5-3.6 in (alpha, sigma))."""
    sde, gm = VPSDE(), nine_gaussians(0.1)
    eps_fn = gm.eps_fn(sde)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
    t, s = 0.7, 0.2
    (at, st), (as_, ss) = sde.marginal_coeffs(t), sde.marginal_coeffs(s)
    eps = eps_fn(x, t)
    expected = as_ * (x - st * eps) / at + ss * eps
    np.testing.assert_allclose(ddim_rule(sde).step(eps_fn, x, t, s, None), expected, rtol=1e-5, atol=1e-6)
    assert ddim_rule(sde).noise(jax.random.PRNGKey(0), (5, 2)) is None


def test_edm_euler_is_ddim_on_ve():
    """EDM Euler on sigma(t) of a VE SDE is deterministic DDIM on that SDE (x - D)/sigma = eps (Alg. 6)."""
    sde, gm = VESDE(sigma_min=0.01, sigma_max=20.0), nine_gaussians(0.1)
    grid = uniform_grid(10, 1e-3)
    x_T = sde.prior_sample(jax.random.PRNGKey(0), (32, 2))
    key = jax.random.PRNGKey(1)
    _, info_a = sample(ddim_rule(sde), gm.eps_fn(sde), key, x_T.shape, grid, x_init=x_T, return_trajectory=True)
    _, info_b = sample(edm_euler_rule(sigma_max=20.0), gm.denoiser, key, x_T.shape, sde.sigma(grid), x_init=x_T,
                       return_trajectory=True)
    np.testing.assert_allclose(info_a["trajectory"], info_b["trajectory"], rtol=1e-4, atol=1e-4)


def test_pc_without_corrector_is_euler_maruyama_step():
    sde, gm = VPSDE(), nine_gaussians(0.1)
    x = jax.random.normal(jax.random.PRNGKey(0), (7, 2))
    z = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
    score = gm.score_fn(sde)
    pc = predictor_corrector_rule(sde, n_corrector=0).step(score, x, 0.5, 0.45, (z, jnp.zeros((0, 7, 2))))
    em = euler_maruyama_rule(sde).step(score, x, 0.5, 0.45, z)
    h = -0.05
    drift = sde.drift(x, 0.5) - sde.diffusion_sq(0.5) * score(x, 0.5)
    expected = x + h * drift + jnp.sqrt(-h) * sde.diffusion(0.5) * z
    np.testing.assert_allclose(pc, em, rtol=1e-6)
    np.testing.assert_allclose(em, expected, rtol=1e-5, atol=1e-6)


def test_edm_churn_step_matches_algorithm_7():
    """One churned Heun step written out from thesis Alg. 7 (gamma = min(S_churn / N, sqrt 2 - 1))."""
    gm = nine_gaussians(0.1)
    D = gm.denoiser
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (6, 2))
    z = jax.random.normal(jax.random.PRNGKey(1), (6, 2))
    s_churn, n, s_noise, sig, sig_next = 5.0, 10, 1.007, 3.0, 2.0
    rule = edm_heun_rule(s_churn, s_min=0.5, s_max=4.0, s_noise=s_noise, n_steps=n)
    gamma = min(s_churn / n, math.sqrt(2) - 1)
    sh = (1 + gamma) * sig
    xh = x + math.sqrt(sh**2 - sig**2) * s_noise * z
    d = (xh - D(xh, sh)) / sh
    xe = xh + (sig_next - sh) * d
    expected = xh + 0.5 * (sig_next - sh) * (d + (xe - D(xe, sig_next)) / sig_next)
    np.testing.assert_allclose(rule.step(D, x, sig, sig_next, z), expected, rtol=1e-5, atol=1e-5)
    # outside [s_min, s_max] there is no churn: the deterministic Heun step
    np.testing.assert_allclose(rule.step(D, x, 5.0, 4.5, z), edm_heun_rule().step(D, x, 5.0, 4.5, None), rtol=1e-6)


# -- stochastic samplers reach the target law (exact scores, MMD) -------------------------------------

MMD_N = 1000
MMD_BANDWIDTH = 0.1
# Null spread of MMD_u^2 for two independent exact 1000-sample sets of nine_gaussians(0.1) at h = 0.1:
# sd ~ 3.5e-4; a model whose means are 15% off gives ~8e-3.
MMD_BOUND = 2e-3


def _samplers():
    vp, ve = VPSDE(), VESDE(sigma_min=0.01, sigma_max=20.0)
    t_grid = uniform_grid(200, 1e-3)
    return {
        "euler_maruyama": (euler_maruyama_rule(vp), lambda m: m.score_fn(vp), t_grid),
        "pc": (predictor_corrector_rule(vp, snr=0.16, n_corrector=1), lambda m: m.score_fn(vp),
               uniform_grid(100, 1e-3)),
        "ddpm": (ddpm_rule(vp), lambda m: m.eps_fn(vp), uniform_grid(200, 0.0)),
        "ddim_eta_half_ve": (ddim_rule(ve, eta=0.5), lambda m: m.eps_fn(ve), t_grid),
        "edm_churn": (edm_heun_rule(s_churn=20.0, s_min=0.01, s_max=10.0, n_steps=64, sigma_max=20.0),
                      lambda m: m.denoiser, edm_sigma_grid(64, 0.002, 20.0, append_zero=False)),
    }


@pytest.mark.parametrize("name", list(_samplers()))
def test_stochastic_sampler_reaches_target(name):
    rule, model_of, grid = _samplers()[name]
    target = nine_gaussians(0.1)
    wrong = GaussianMixture(target.weights, 1.15 * target.means, target.stds)
    exact = target.sample(jax.random.PRNGKey(7), MMD_N)

    @jax.jit
    def mmd_of(mixture, key):
        x, _ = sample(rule, model_of(mixture), key, (MMD_N, 2), grid)
        return mmd2(x, exact, MMD_BANDWIDTH), jnp.all(jnp.isfinite(x))

    good, finite = mmd_of(target, jax.random.PRNGKey(0))
    bad, _ = mmd_of(wrong, jax.random.PRNGKey(0))
    assert bool(finite)
    assert float(good) < MMD_BOUND, (name, float(good))
    assert float(bad) > 2 * MMD_BOUND, (name, float(bad))


# -- CLD through the generic interface ----------------------------------------------------------------


def _cld_gaussian_score(cld, mean, var):
    """Exact velocity score of CLD started from x0 ~ N(mean, var I), v0 ~ N(0, gamma M I)."""

    def score_v(u, t):
        x, v = u
        mx, mv = cld.marginal_mean(jnp.broadcast_to(mean, x.shape), 0.0, t)
        sxx, sxv, svv = cld.marginal_cov(t, var, cld.gamma * cld.M)
        det = sxx * svv - sxv**2
        return -(-sxv * (x - mx) + sxx * (v - mv)) / det

    return score_v


@pytest.mark.parametrize("make_rule", [euler_maruyama_rule, probability_flow_heun_rule], ids=["em", "pf_heun"])
def test_cld_generic_rules_sample_gaussian_data(make_rule):
    """EM / PF-Heun on CLD's (x, v) with the exact velocity score recover N(mean, var I) data."""
    cld = CLD()
    mean, var = jnp.array([0.5, -1.0]), 0.25
    (x, v), info = jax.jit(lambda k: sample(make_rule(cld), _cld_gaussian_score(cld, mean, var), k, (4000, 2),
                                            uniform_grid(200, 1e-3)))(jax.random.PRNGKey(0))
    assert x.shape == v.shape == (4000, 2)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(x.var(0), var, rtol=0.1)
