"""Ancestral rules on EDM denoisers: the split identity, deterministic limits against the EDM rules,
the DDPM posterior for eta = 1, measured ODE orders, and sampling the target law."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import GaussianMixture, nine_gaussians
from diffjax.grids import karras_sigmas
from diffjax.metrics import mmd2
from diffjax.samplers.ancestral import (ancestral_split, dpm2_ancestral_rule, dpmpp_2s_ancestral_rule,
                                        euler_ancestral_rule)
from diffjax.samplers.edm_rules import edm_euler_rule
from diffjax.samplers.sequential import sample


def test_split_identity_and_ddpm_posterior():
    """sigma_down^2 + sigma_up^2 = sigma_next^2; eta = 1 gives the DDPM posterior variance
    sigma_next^2 (1 - sigma_next^2 / sigma^2); eta = 0 gives (sigma_next, 0); sigma_next = 0 gives (0, 0)."""
    s, sn = jnp.array([80.0, 3.0, 0.5, 0.1]), jnp.array([20.0, 1.0, 0.5, 0.0])
    for eta in (0.0, 0.5, 1.0):
        down, up = ancestral_split(s, sn, eta)
        np.testing.assert_allclose(down**2 + up**2, sn**2, rtol=1e-6)
    down, up = ancestral_split(s, sn, 1.0)
    np.testing.assert_allclose(up**2, sn**2 * (1 - sn**2 / s**2), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(down, sn**2 / s, rtol=1e-5)          # DDPM posterior mean weight on x
    down, up = ancestral_split(s, sn, 0.0)
    np.testing.assert_array_equal(up, 0.0)
    assert np.all(np.isfinite(np.asarray(ancestral_split(s, sn, 1.0)))) and float(up[-1]) == 0.0


def test_eta_zero_is_edm_euler():
    """Euler ancestral with eta = 0 on karras(n) + [0] equals edm_euler_rule on the n positive levels
    (whose finalize is the step to 0, D(x, sigma_min)); both cost n NFE."""
    gm, n = nine_gaussians(), 8

    @jax.jit
    def run(key):
        a = sample(euler_ancestral_rule(0.0), gm.denoiser, key, (64, 2), karras_sigmas(n))
        b = sample(edm_euler_rule(), gm.denoiser, key, (64, 2), karras_sigmas(n, append_zero=False))
        return a, b

    (a, ia), (b, ib) = run(jax.random.PRNGKey(0))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert int(ia["nfe"]) == int(ib["nfe"]) == n


def test_ode_orders_float64():
    """eta = 0 on a geometric sigma grid 80 -> 0.05 vs Dopri8 in log sigma: Euler ~1, DPM-2 ~2 (+-0.3)."""
    with jax.enable_x64(True):
        gm = GaussianMixture(jnp.array([0.4, 0.6]), jnp.array([[-1.0, 0.5], [1.0, -0.5]]), jnp.array([0.5, 0.4]))
        s0, s1, ns = 80.0, 0.05, (16, 32, 64)
        x_T = s0 * jax.random.normal(jax.random.PRNGKey(1), (8, 2), jnp.float64)
        # dx/d log(sigma) = x - D(x, sigma)
        term = diffrax.ODETerm(lambda u, x, _: x - gm.denoiser(x, jnp.exp(u)))
        ref = diffrax.diffeqsolve(term, diffrax.Dopri8(), t0=np.log(s0), t1=np.log(s1), dt0=-0.05, y0=x_T,
                                  max_steps=10000,
                                  stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12)).ys[-1]
        # Front-padded with sigma_0 (a zero-length step is a no-op): one compile per rule.
        grids = jnp.stack([jnp.concatenate([jnp.full((max(ns) - n,), s0), jnp.exp(jnp.linspace(np.log(s0),
                                                                                               np.log(s1), n + 1))])
                           for n in ns])
        for rule, order in [(euler_ancestral_rule(0.0, sigma_max=s0), 1.0),
                            (dpm2_ancestral_rule(0.0, sigma_max=s0), 2.0)]:
            run = jax.jit(jax.vmap(lambda g: sample(rule, gm.denoiser, jax.random.PRNGKey(0), x_T.shape, g,
                                                    x_init=x_T)[0]))
            errs = [float(jnp.max(jnp.abs(x - ref))) for x in run(grids)]
            slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
            assert abs(slope - order) < 0.3, (order, errs, slope)


def test_ancestral_samples_the_target():
    """eta = 1, 40 Karras levels + [0], 1000 samples, Euler, DPM-2 and DPM++(2S) ancestral: MMD^2 (h = 0.1) to fresh
    data below 2.5e-3 (two data samples: about +-1e-3); a wrong denoiser (means scaled by 1.1) gives
    ~2e-2 and must exceed 1e-2."""
    gm, n = nine_gaussians(), 1000
    wrong = GaussianMixture(gm.weights, 1.1 * gm.means, gm.stds)
    grid = karras_sigmas(40)

    @jax.jit
    def draw(key):
        out = [sample(rule, model, key, (n, 2), grid)[0]
               for rule in (euler_ancestral_rule(), dpm2_ancestral_rule(), dpmpp_2s_ancestral_rule())
               for model in (gm.denoiser, wrong.denoiser)]
        return out, gm.sample(jax.random.fold_in(key, 1), n)

    (ok_e, bad_e, ok_d, bad_d, ok_s, bad_s), data = draw(jax.random.PRNGKey(2))
    for ok, bad in ((ok_e, bad_e), (ok_d, bad_d), (ok_s, bad_s)):
        assert float(mmd2(ok, data, 0.1)) < 2.5e-3
        assert float(mmd2(bad, data, 0.1)) > 1e-2


def test_invalid_arguments():
    for bad in (dict(eta=-0.1), dict(s_noise=float("nan")), dict(sigma_max=0.0)):
        with pytest.raises(ValueError):
            euler_ancestral_rule(**bad)
        with pytest.raises(ValueError):
            dpm2_ancestral_rule(**bad)
        with pytest.raises(ValueError):
            dpmpp_2s_ancestral_rule(**bad)
