"""Scalar SDEs (VP, sub-VP, VE): closed forms, consistency of f/g with the kernel, Monte Carlo of the
forward SDE, the probability-flow map with exact scores, validation, vmap and jit behaviour."""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.stats

from diffjax.analytic._mixture import GaussianMixture
from diffjax.sde._scalar import VESDE, SubVPSDE, VPSDE

mp.mp.dps = 40

TIMES = (1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0)
SDES = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "vp_edm": VPSDE(beta_min=0.1, beta_max=20.0),
    "ve_T2": VESDE(sigma_min=0.02, sigma_max=80.0, T=2.0),
}


def _ref_coeffs(kind, sde, t):
    """(alpha, sigma, log-SNR) at the float32 time ``t`` from the definitions, in 40-digit mpmath."""
    t = mp.mpf(float(np.float32(t)))
    if kind == "ve":
        sigma = mp.mpf(sde.sigma_min) * (mp.mpf(sde.sigma_max) / mp.mpf(sde.sigma_min)) ** (t / mp.mpf(sde.T))
        alpha = mp.mpf(1)
    else:
        bmin, bmax = mp.mpf(sde.beta_min), mp.mpf(sde.beta_max)
        alpha = mp.exp(-t**2 * (bmax - bmin) / 4 - t * bmin / 2)
        sigma = mp.sqrt(1 - alpha**2) if kind == "vp" else 1 - alpha**2
    return alpha, sigma, mp.log(alpha**2 / sigma**2)


def _kind(name):
    return name.split("_")[0]


@pytest.mark.parametrize("name", list(SDES))
def test_coefficients_match_closed_forms_float32(name):
    sde = SDES[name]
    ts = np.array(TIMES, np.float32) * np.float32(sde.T)
    alpha, sigma = sde.marginal_coeffs(jnp.asarray(ts))
    lam = sde.log_snr(jnp.asarray(ts))
    assert alpha.dtype == sigma.dtype == lam.dtype == jnp.float32
    for i, t in enumerate(ts):
        ra, rs, rl = _ref_coeffs(_kind(name), sde, t)
        for got, ref, what in ((alpha[i], ra, "alpha"), (sigma[i], rs, "sigma"), (lam[i], rl, "log-SNR")):
            rel = abs((mp.mpf(float(got)) - ref) / ref)
            assert rel <= 1e-4, f"{name} {what}(t={t}): got {float(got)!r}, ref {mp.nstr(ref, 12)}, rel {float(rel):.2e}"


@pytest.mark.parametrize("name", list(SDES))
def test_t_from_log_snr_round_trip(name):
    """float32: |t' - t| <= 8 eps32 (|lambda| + 1) / |d lambda/dt| (the inverse's conditioning: VE's
    log-SNR is nearly flat in relative terms near t=0); float64: relative 1e-11."""
    sde = SDES[name]
    ts = jnp.asarray(np.array(TIMES, np.float32) * np.float32(sde.T))
    back = np.asarray(sde.t_from_log_snr(sde.log_snr(ts)), np.float64)
    with jax.enable_x64(True):
        t64 = jnp.asarray(ts, jnp.float64)
        lam = np.asarray(sde.log_snr(t64))
        dlam = np.asarray(jax.vmap(jax.grad(sde.log_snr))(t64))
    tol = 8 * np.finfo(np.float32).eps * (np.abs(lam) + 1) / np.abs(dlam)
    err = np.abs(back - np.asarray(t64))
    assert np.all(err <= np.maximum(tol, 2e-6 * np.asarray(t64))), (err, tol)
    with jax.enable_x64(True):
        ts64 = jnp.asarray(np.array(TIMES) * sde.T)
        back64 = sde.t_from_log_snr(sde.log_snr(ts64))
        assert back64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(back64), np.asarray(ts64), rtol=1e-11)


@pytest.mark.parametrize("name", list(SDES))
def test_drift_and_diffusion_consistent_with_kernel(name):
    """For dx = f x dt + g dw: f = d log(alpha)/dt and g^2 = d sigma^2/dt - 2 f sigma^2 (float64 autodiff)."""
    sde = SDES[name]
    with jax.enable_x64(True):
        dlog_alpha = jax.grad(lambda t: jnp.log(sde.marginal_coeffs(t)[0]))
        dsigma2 = jax.grad(lambda t: sde.marginal_coeffs(t)[1] ** 2)
        for t in (0.01, 0.1, 0.5, 0.9):
            t = jnp.float64(t * sde.T)
            f, g2 = sde.drift_coeff(t), sde.diffusion_sq(t)
            assert g2.dtype == jnp.float64
            sigma2 = sde.marginal_coeffs(t)[1] ** 2
            np.testing.assert_allclose(float(f), float(dlog_alpha(t)), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(float(g2), float(dsigma2(t) - 2 * f * sigma2), rtol=1e-9)
            np.testing.assert_allclose(float(sde.diffusion(t)) ** 2, float(g2), rtol=1e-12)
        x = jnp.array([[1.0, -2.0], [0.5, 3.0]])
        tb = jnp.array([0.2, 0.7]) * sde.T
        np.testing.assert_allclose(sde.drift(x, tb), sde.drift_coeff(tb)[:, None] * x, rtol=1e-12)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_forward_sde_monte_carlo_matches_marginal(name):
    """Euler-Maruyama (float32, 2000 steps, 4000 paths) from the t=0 kernel sample reproduces the kernel.

    The paths start at ``alpha_0 x0 + sigma_0 eps`` (for VE ``sigma_0 = sigma_min``: the kernel
    N(x0, sigma(t)^2) is the SDE's law started from N(x0, sigma_min^2)). Tolerance: 4 standard errors
    (mean: s/sqrt(n); std: s/sqrt(2n)) plus 0.5 % for the O(dt) discretisation bias.
    """
    sde = SDES[name]
    n_paths, n_steps, x0 = 4000, 2000, 1.5
    ts = jnp.linspace(0.0, sde.T, n_steps + 1)
    k0, kz = jax.random.split(jax.random.PRNGKey(7))
    a0, s0 = sde.marginal_coeffs(0.0)
    x = a0 * x0 + s0 * jax.random.normal(k0, (n_paths, 1))
    zs = jax.random.normal(kz, (n_steps, n_paths, 1))

    @jax.jit
    def simulate(x, zs):
        def step(x, inp):
            t, dt, z = inp
            x = x + sde.drift(x, t) * dt + jnp.sqrt(dt) * sde.diffusion_apply(t, z)
            return x, x

        _, path = jax.lax.scan(step, x, (ts[:-1], jnp.diff(ts), zs))
        return path

    path = simulate(x, zs)
    for frac in (0.3, 1.0):
        i = int(round(frac * n_steps)) - 1
        xt = np.asarray(path[i, :, 0], np.float64)
        mean, std = sde.marginal(jnp.full((1, 1), x0), jnp.float32(ts[i + 1]))
        mean, std = float(mean[0, 0]), float(std)
        tol_m = 4 * std / math.sqrt(n_paths) + 0.005 * (abs(mean) + std)
        tol_s = 4 * std / math.sqrt(2 * n_paths) + 0.005 * std
        assert abs(xt.mean() - mean) < tol_m, (name, frac, xt.mean(), mean)
        assert abs(xt.std() - std) < tol_s, (name, frac, xt.std(), std)


def _mixture_cdf(mix, alpha, sigma, x):
    w, m, s = (np.asarray(a, np.float64) for a in (mix.weights, mix.means[:, 0], mix.stds))
    sd = np.sqrt(alpha**2 * s**2 + sigma**2)
    return np.sum(w * scipy.stats.norm.cdf((np.asarray(x)[:, None] - alpha * m) / sd), axis=1)


def _mixture_quantile(mix, alpha, sigma, u):
    lo, hi = np.full_like(u, -50.0), np.full_like(u, 50.0)
    for _ in range(200):  # bisection: the cdf is monotone
        mid = 0.5 * (lo + hi)
        below = _mixture_cdf(mix, alpha, sigma, mid) < u
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_probability_flow_maps_prior_to_data_quantiles(name):
    """In 1-D the PF-ODE flow is the monotone transport x_T -> F_{t_min}^{-1}(F_T(x_T)).

    RK4 (800 steps, float64) on ``reverse_drift(..., probability_flow=True)`` with the exact
    ``score_fn`` of a two-component mixture must hit the quantile map computed from the closed-form
    mixture CDFs (scipy) to 1e-5.
    """
    sde = SDES[name]
    with jax.enable_x64(True):
        mix = GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-1.0], [1.5]]), jnp.array([0.3, 0.5]))
        score = mix.score_fn(sde)
        t_min, n_steps = 1e-3, 800
        _, sT = sde.marginal_coeffs(sde.T)
        xT = jnp.linspace(-2.0, 2.0, 9)[:, None] * float(sT)

        def f(x, t):
            return sde.reverse_drift(x, t, score(x, t), probability_flow=True)

        def rk4(x, ts):
            t, h = ts
            k1 = f(x, t)
            k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(x + h * k3, t + h)
            return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        grid = jnp.linspace(sde.T, t_min, n_steps + 1)
        x0, _ = jax.jit(lambda x: jax.lax.scan(rk4, x, (grid[:-1], jnp.diff(grid))))(xT)

        aT, sT = (float(c) for c in sde.marginal_coeffs(sde.T))
        am, sm = (float(c) for c in sde.marginal_coeffs(t_min))
        expect = _mixture_quantile(mix, am, sm, _mixture_cdf(mix, aT, sT, np.asarray(xT[:, 0])))
        np.testing.assert_allclose(np.asarray(x0[:, 0]), expect, atol=1e-5)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_reverse_sde_monte_carlo_recovers_data_moments(name):
    """Reverse-time Euler-Maruyama with the exact score, started from the exact marginal at T."""
    sde = SDES[name]
    mix = GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-1.0], [1.5]]), jnp.array([0.3, 0.5]))
    score = mix.score_fn(sde)
    n, n_steps, t_min = 3000, 1000, 1e-3
    k0, kz = jax.random.split(jax.random.PRNGKey(3))
    aT, sT = sde.marginal_coeffs(sde.T)
    xT = mix.marginal(sde, sde.T).sample(k0, n)
    zs = jax.random.normal(kz, (n_steps, n, 1))
    grid = jnp.linspace(sde.T, t_min, n_steps + 1)

    @jax.jit
    def run(x):
        def step(x, inp):
            t, dt, z = inp
            x = x + sde.reverse_drift(x, t, score(x, t)) * dt + jnp.sqrt(-dt) * sde.diffusion_apply(t, z)
            return x, None

        return jax.lax.scan(step, x, (grid[:-1], jnp.diff(grid), zs))[0]

    x = np.asarray(run(xT)[:, 0], np.float64)
    target = mix.marginal(sde, t_min)
    w, m, s = (np.asarray(a, np.float64) for a in (target.weights, target.means[:, 0], target.stds))
    mean = np.sum(w * m)
    std = math.sqrt(np.sum(w * (s**2 + m**2)) - mean**2)
    assert abs(x.mean() - mean) < 4 * std / math.sqrt(n) + 0.01, (x.mean(), mean)
    assert abs(x.std() - std) < 4 * std / math.sqrt(2 * n) + 0.01, (x.std(), std)
    # the left mode keeps its weight 0.3 (binomial SE 0.007)
    assert abs(np.mean(x < 0.25) - 0.3) < 0.03


@pytest.mark.parametrize("name", list(SDES))
def test_prior_logp_matches_scipy_and_prior_sample_std(name):
    sde = SDES[name]
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (5, 3, 2))) * 1.7
    ref = scipy.stats.norm.logpdf(z, scale=sde.prior_std).reshape(5, -1).sum(1)
    got = sde.prior_logp(jnp.asarray(z))
    assert got.shape == (5,)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5)
    s = sde.prior_sample(jax.random.PRNGKey(1), (20000, 2))
    assert s.shape == (20000, 2)
    assert abs(float(jnp.std(s)) / sde.prior_std - 1) < 4 / math.sqrt(2 * 40000)


def test_prior_std_matches_marginal_at_T():
    for name in ("vp", "subvp"):
        sde = SDES[name]
        _, s = sde.marginal_coeffs(sde.T)
        assert abs(float(s) - sde.prior_std) < 1e-3
    ve = SDES["ve"]
    np.testing.assert_allclose(float(ve.marginal_coeffs(ve.T)[1]), ve.prior_std, rtol=1e-5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: VPSDE(beta_min=20.0, beta_max=0.1), "beta_max"),
        (lambda: VPSDE(beta_min=1.0, beta_max=1.0), "beta_max"),
        (lambda: SubVPSDE(beta_min=-0.1), "beta_min"),
        (lambda: VPSDE(beta_min=0.0), "beta_min"),
        (lambda: VPSDE(T=0.0), "T"),
        (lambda: SubVPSDE(T=-1.0), "T"),
        (lambda: VPSDE(beta_max=float("nan")), "beta_max"),
        (lambda: VPSDE(beta_max=float("inf")), "beta_max"),
        (lambda: VESDE(sigma_min=-0.01), "sigma_min"),
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: VESDE(sigma_max=-50.0), "sigma_max"),
        (lambda: VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        (lambda: VESDE(T=0.0), "T"),
        (lambda: VESDE(sigma_max=float("inf")), "sigma_max"),
        (lambda: VPSDE(beta_min=jnp.array([0.1, 0.2])), "beta_min"),
    ],
)
def test_invalid_hyper_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_time_outside_interval_raises_when_concrete(name):
    sde = SDES[name]
    x0 = jnp.ones((2, 3))
    key = jax.random.PRNGKey(0)
    for bad in (-0.1, 1.5 * sde.T, jnp.array([0.5, 1.5 * sde.T]), float("nan")):
        with pytest.raises(ValueError, match="t"):
            sde.marginal(x0, bad)
        with pytest.raises(ValueError, match="t"):
            sde.perturb(key, x0, bad)
    mean, std = sde.marginal(x0, jnp.array([0.0, sde.T]))  # the closed interval is fine
    assert mean.shape == (2, 3) and std.shape == (2, 1)
    # traced times are not checked (no host sync inside jit)
    out = jax.jit(lambda t: sde.marginal(x0, t)[1])(jnp.float32(0.5 * sde.T))
    assert out.shape == ()


def test_perturb_and_marginal_shapes_and_values():
    sde = SDES["vp"]
    x0 = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 2))
    t = jnp.array([0.1, 0.2, 0.5, 1.0])
    xt, eps = sde.perturb(jax.random.PRNGKey(1), x0, t)
    a, s = sde.marginal_coeffs(t)
    assert xt.shape == eps.shape == x0.shape
    np.testing.assert_allclose(xt, a[:, None, None] * x0 + s[:, None, None] * eps, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        sde.marginal(x0, jnp.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="non-finite"):
        sde.perturb(jax.random.PRNGKey(1), x0.at[0, 0, 0].set(jnp.nan), 0.5)


def _stack(*sdes):
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(v, jnp.float32) for v in leaves]), *sdes)


@pytest.mark.parametrize(
    "sdes",
    [
        (VPSDE(0.1, 20.0), VPSDE(0.2, 15.0), VPSDE(0.05, 10.0, T=2.0)),
        (SubVPSDE(0.1, 20.0), SubVPSDE(0.3, 12.0)),
        (VESDE(0.01, 50.0), VESDE(0.002, 80.0, T=2.0)),
    ],
)
def test_vmap_over_hyper_parameters(sdes):
    stacked = _stack(*sdes)
    t = jnp.float32(0.37)
    x = jnp.array([[0.3, -1.2]])

    def coeffs(sde):
        a, s = sde.marginal_coeffs(t)
        return a, s, sde.log_snr(t), sde.diffusion_sq(t), sde.reverse_drift(x, t, -x)

    batched = jax.vmap(coeffs)(stacked)
    for i, sde in enumerate(sdes):
        for b, r in zip(batched, coeffs(sde)):
            np.testing.assert_allclose(b[i], r, rtol=1e-6)


def test_vmap_constructing_inside_skips_validation_and_works():
    bmax = jnp.array([10.0, 20.0])
    got = jax.vmap(lambda b: VPSDE(0.1, b).log_snr(0.3))(bmax)
    ref = [VPSDE(0.1, float(b)).log_snr(0.3) for b in bmax]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize(
    "pair",
    [
        (VPSDE(0.1, 20), VPSDE(0.2, 15.0)),  # int vs float hyper-parameters: same compiled function
        (SubVPSDE(), SubVPSDE(beta_min=jnp.float32(0.3), beta_max=np.float64(12.0))),
        (VESDE(), VESDE(sigma_min=0.002, sigma_max=80, T=2)),
    ],
)
def test_jit_with_sde_argument_compiles_once(pair):
    n_traces = [0]

    @jax.jit
    def f(sde, x, t):
        n_traces[0] += 1  # Python side effect: runs once per trace
        mean, std = sde.marginal(x, t)
        return mean, std, sde.reverse_drift(x, t, -x, probability_flow=True)

    x = jnp.ones((3, 2))
    outs = [f(sde, x, jnp.float32(0.4)) for sde in pair]
    assert n_traces[0] == 1
    for sde, out in zip(pair, outs):
        ref = (*sde.marginal(x, 0.4), sde.reverse_drift(x, 0.4, -x, probability_flow=True))
        for o, r in zip(out, ref):
            np.testing.assert_allclose(o, r, rtol=1e-6)
    assert not np.allclose(outs[0][0], outs[1][0]) or not np.allclose(outs[0][1], outs[1][1])
