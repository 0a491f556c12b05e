"""GENIE / TTM-3 on the DDIM ODE: exact derivatives vs finite differences, measured orders, float32 safety."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import GaussianMixture, sixty_four_gaussians
from diffjax.samplers.genie import (ddim_gamma_coords, genie, genie_derivative, genie_rule,
                                    genie_second_derivative, ttm3, ttm3_rule)
from diffjax.sde._scalar import VESDE, VPSDE


def _f64(mix):
    return GaussianMixture(*(jnp.asarray(a, jnp.float64) for a in (mix.weights, mix.means, mix.stds)))


def _wide():
    return GaussianMixture(jnp.array([0.2, 0.3, 0.5]), jnp.array([[-1.0, 0.5], [1.0, -0.5], [0.2, 1.0]]),
                           jnp.array([0.3, 0.4, 0.5]))


def _along_ode(sde, eps_fn, xbar, g):
    """eps at the point of the DDIM ODE with coordinates (xbar, gamma)."""
    t = sde.t_from_log_snr(-2.0 * jnp.log(g))
    a, _ = sde.marginal_coeffs(t)
    return eps_fn(a * xbar, t)


@pytest.mark.parametrize("which,sde_name", [("sixty_four", "vp"), ("wide", "ve")])
def test_derivatives_match_central_differences_along_the_ode(which, sde_name):
    """d_gamma eps (one JVP) and d^2_gamma eps (nested JVP) vs central differences along the ODE, float64.

    Central differences in gamma with xbar(gamma +- d) = xbar +- d eps (+ d^2/2 d_gamma eps, which
    cancels in the difference to O(d^2)); t(gamma) by the SDE's inverse log-SNR. Independent of the
    JVP code path."""
    with jax.enable_x64(True):
        sde = VPSDE() if sde_name == "vp" else VESDE()
        mix = _f64(sixty_four_gaussians() if which == "sixty_four" else _wide())
        eps_fn = mix.eps_fn(sde)

        @jax.jit
        def check(t, key):
            x = mix.marginal(sde, t).sample(key, 8)
            d1 = genie_derivative(eps_fn, sde, x, t)
            d2 = genie_second_derivative(eps_fn, sde, x, t)
            alpha, g = ddim_gamma_coords(sde, t)
            xbar, e = x / alpha, eps_fn(x, t)
            h = 1e-5 * g
            fd1 = (_along_ode(sde, eps_fn, xbar + h * e, g + h)
                   - _along_ode(sde, eps_fn, xbar - h * e, g - h)) / (2 * h)

            def d1_at(xb, gg):
                tt = sde.t_from_log_snr(-2.0 * jnp.log(gg))
                return genie_derivative(eps_fn, sde, sde.marginal_coeffs(tt)[0] * xb, tt)

            shift = 0.5 * h**2 * d1
            fd2 = (d1_at(xbar + h * e + shift, g + h) - d1_at(xbar - h * e + shift, g - h)) / (2 * h)
            rel = lambda a, b: jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))
            return rel(d1, fd1), rel(d2, fd2)

        for i, t in enumerate([0.05, 0.2, 0.5, 0.8]):
            r1, r2 = check(jnp.float64(t), jax.random.PRNGKey(i))
            assert r1 < 1e-4, (t, float(r1))
            assert r2 < 1e-4, (t, float(r2))


def test_batched_time_equals_scalar_time():
    sde, mix = VPSDE(), sixty_four_gaussians()
    x = mix.marginal(sde, 0.3).sample(jax.random.PRNGKey(0), 6)
    deriv = jax.jit(lambda x, t: genie_derivative(mix.eps_fn(sde), sde, x, t))
    d_scalar = deriv(x, jnp.float32(0.3))
    d_batch = deriv(x, jnp.full((6,), 0.3))
    np.testing.assert_allclose(d_batch, d_scalar, rtol=1e-5, atol=1e-5)


def _ddim_ode_reference(sde, eps_fn, x0, t0, t1):
    """Independent reference: the DDIM ODE in (xbar, gamma) by diffrax Dopri8 at rtol = atol = 1e-12."""
    import diffrax

    a0, g0 = ddim_gamma_coords(sde, t0)
    a1, g1 = ddim_gamma_coords(sde, t1)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda g, xb, args: _along_ode(sde, eps_fn, xb, g)), diffrax.Dopri8(), g0, g1, None,
        x0 / a0, stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12), max_steps=100_000)
    return sol.ys[0] * a1


def test_measured_convergence_orders():
    """log-log slope of the final error vs steps: GENIE ~ 2, TTM-3 ~ 3 (float64, wide mixture, t in [0.2, 1])."""
    with jax.enable_x64(True):
        sde, mix = VPSDE(), _f64(_wide())
        eps_fn = mix.eps_fn(sde)
        t0, t1 = 1.0, 0.2
        x0 = mix.marginal(sde, t0).sample(jax.random.PRNGKey(0), 64)
        ref = jax.jit(lambda x: _ddim_ode_reference(sde, eps_fn, x, t0, t1))(x0)
        ns = [8, 16, 32, 64]
        for rule, order in [(genie_rule(sde), 2.0), (ttm3_rule(sde), 3.0)]:
            step = jax.jit(lambda x, t, s: rule.step(eps_fn, x, t, s, None))
            errs = []
            for n in ns:
                grid = np.linspace(t0, t1, n + 1)
                x = x0
                for t, s in zip(grid[:-1], grid[1:]):
                    x = step(x, t, s)
                errs.append(float(jnp.max(jnp.abs(x - ref))))
            slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
            assert abs(slope - order) < 0.3, (order, slope, errs)


@pytest.mark.parametrize("method", [genie, ttm3])
def test_float32_nan_free_down_to_tiny_times(method):
    sde, mix = VPSDE(), sixty_four_gaussians()
    for grid in ["uniform", "quadratic"]:
        x, info = method(mix.eps_fn(sde), sde, key=jax.random.PRNGKey(0), shape=(128, 2), n_steps=12,
                         t_min=1e-5, grid=grid)
        assert x.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(x)))
        assert info["nfe"] == 12 * (2 if method is genie else 4)
    # with quadratic striding the samples land on the data (components have std 0.01; prior draws
    # would sit ~0.3 away from the nearest mean)
    dist = jnp.min(jnp.linalg.norm(x[:, None, :] - mix.means[None], axis=-1), axis=1)
    assert float(jnp.median(dist)) < 0.03, float(jnp.median(dist))


def test_genie_beats_ddim_on_few_steps():
    """With exact derivatives GENIE is closer than DDIM (= Euler on the same ODE) to the ODE solution."""
    with jax.enable_x64(True):
        sde, mix = VPSDE(), _f64(_wide())
        eps_fn = mix.eps_fn(sde)
        x0 = mix.marginal(sde, 1.0).sample(jax.random.PRNGKey(2), 32)
        ref = jax.jit(lambda x: _ddim_ode_reference(sde, eps_fn, x, 1.0, 0.2))(x0)

        @jax.jit
        def both(xd, xg, t, s):
            a, g = ddim_gamma_coords(sde, t)
            an, gn = ddim_gamma_coords(sde, s)
            return an * (xd / a + (gn - g) * eps_fn(xd, t)), genie_rule(sde).step(eps_fn, xg, t, s, None)

        grid = np.linspace(1.0, 0.2, 9)
        xd, xg = x0, x0
        for t, s in zip(grid[:-1], grid[1:]):
            xd, xg = both(xd, xg, t, s)
        assert float(jnp.max(jnp.abs(xg - ref))) < 0.5 * float(jnp.max(jnp.abs(xd - ref)))


def test_bad_grid_and_sde_raise():
    sde, mix = VPSDE(), sixty_four_gaussians()
    with pytest.raises(ValueError, match="grid"):
        genie(mix.eps_fn(sde), sde, key=jax.random.PRNGKey(0), shape=(4, 2), n_steps=3, grid="cosine")
    with pytest.raises(TypeError):
        genie_rule(object())
