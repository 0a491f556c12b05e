"""Sigma/time grids (diffjax.schedules; diffjax.grids re-exports them): closed-form spacing, endpoints,
conversions, validation, and a float32 NaN/inf sweep of every new rule on every grid (3, 5, 10 steps;
grids ending at 0 included)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import grids, schedules
from diffjax.analytic._mixture import sixty_four_gaussians
from diffjax.param import x0_from_eps
from diffjax.samplers.ancestral import dpm2_ancestral_rule, euler_ancestral_rule
from diffjax.samplers.dpm_solver import dpmpp_2m_rule, dpmpp_2m_sde_rule, dpmpp_2s_rule, dpmpp_3m_rule
from diffjax.samplers.unipc import unipc_rule
from diffjax.samplers.sequential import sample
from diffjax.schedules import (
    append_zero,
    edm_sigma_grid,
    exponential_sigmas,
    karras_sigmas,
    log_snr_uniform_grid,
    polyexponential_sigmas,
    quadratic_grid,
    sigma_from_t,
    sigmas_to_times,
    uniform_grid,
)
from diffjax.sde import VESDE, VPSDE


def test_grids_module_re_exports_schedules():
    """``diffjax.grids`` stays importable; its names are the very functions of ``diffjax.schedules``."""
    assert grids.__all__ and all(getattr(grids, n) is getattr(schedules, n) for n in grids.__all__)
    assert karras_sigmas is edm_sigma_grid


def test_karras_wraps_edm_grid():
    np.testing.assert_array_equal(karras_sigmas(7, 0.01, 50.0, 5.0), edm_sigma_grid(7, 0.01, 50.0, 5.0))
    g = karras_sigmas(6, append_zero=False)
    assert g.shape == (6,) and float(g[0]) == pytest.approx(80.0) and float(g[-1]) == pytest.approx(0.002)


def test_exponential_and_polyexponential_spacing():
    with jax.enable_x64(True):
        g = exponential_sigmas(9, 0.01, 10.0, append_zero=False)
        d = np.diff(np.log(np.asarray(g)))
        np.testing.assert_allclose(d, np.full(8, np.log(1e-3) / 8), rtol=1e-12)
        np.testing.assert_allclose([g[0], g[-1]], [10.0, 0.01], rtol=1e-14)
        np.testing.assert_allclose(polyexponential_sigmas(9, 0.01, 10.0, 1.0), exponential_sigmas(9, 0.01, 10.0),
                                   rtol=1e-14)
        # rho = 2: log sigma_i - log sigma_min = (1 - i/(n-1))^2 log(sigma_max/sigma_min).
        p = np.log(np.asarray(polyexponential_sigmas(5, 0.01, 10.0, 2.0, append_zero=False)) / 0.01)
        np.testing.assert_allclose(p, (1 - np.arange(5) / 4) ** 2 * np.log(1e3), rtol=1e-12, atol=1e-12)
    z = exponential_sigmas(4)
    assert z.shape == (5,) and float(z[-1]) == 0.0 and float(z[-2]) == pytest.approx(0.002)


def test_log_snr_uniform_grid():
    with jax.enable_x64(True):
        for sde in (VPSDE(), VESDE()):
            g = log_snr_uniform_grid(sde, 10, 1e-3)
            assert g.shape == (11,) and float(g[0]) == sde.T and float(g[-1]) == 1e-3
            d = np.diff(np.asarray(sde.log_snr(g)))
            np.testing.assert_allclose(d, np.full(10, d.mean()), rtol=1e-9)
        z = log_snr_uniform_grid(VPSDE(), 4, 0.01, append_zero=True)
        assert z.shape == (6,) and float(z[-1]) == 0.0 and float(z[-2]) == pytest.approx(0.01)
        assert np.all(np.diff(np.asarray(z)) < 0)


def test_sigmas_to_times_round_trip():
    with jax.enable_x64(True):
        sde, s = VPSDE(), karras_sigmas(8, 0.002, 80.0)
        t = sigmas_to_times(sde, s)
        assert float(t[-1]) == 0.0 and np.all(np.diff(np.asarray(t)) < 0) and float(t[0]) < sde.T
        np.testing.assert_allclose(sigma_from_t(sde, t[:-1]), s[:-1], rtol=1e-10)
    np.testing.assert_array_equal(append_zero(jnp.array([2.0, 1.0])), [2.0, 1.0, 0.0])


@pytest.mark.parametrize("call", [
    lambda: karras_sigmas(0), lambda: karras_sigmas(3, 1.0, 0.5), lambda: karras_sigmas(3, rho=0.0),
    lambda: exponential_sigmas(3, 0.0, 1.0), lambda: polyexponential_sigmas(3, rho=-1.0),
    lambda: polyexponential_sigmas(2.5), lambda: log_snr_uniform_grid(VPSDE(), 3, 0.0),
    lambda: log_snr_uniform_grid(VPSDE(), 3, 1.5), lambda: exponential_sigmas(3, 0.1, float("inf")),
])
def test_invalid_arguments(call):
    with pytest.raises(ValueError):
        call()


# -- no NaN / inf in float32, every new rule x every grid -----------------------------------------------

_SDE = VPSDE()
_GM = sixty_four_gaussians()            # sharp components (std 1e-2): the hardest case near sigma = 0
_X0 = x0_from_eps(_SDE, _GM.eps_fn(_SDE))


def _sigma_grids(n):
    """Sigma grids of n steps (n + 1 points), ending at 0 or at sigma_min."""
    return jnp.stack([karras_sigmas(n), karras_sigmas(n + 1, append_zero=False), exponential_sigmas(n),
                      exponential_sigmas(n + 1, append_zero=False), polyexponential_sigmas(n, rho=2.0)])


def _time_grids(n):
    """VP time grids of n steps, ending at t = 0 (huge last log-SNR step), at 0 after t_min, or at t_min."""
    return jnp.stack([log_snr_uniform_grid(_SDE, n, 1e-3), log_snr_uniform_grid(_SDE, n - 1, 1e-3, append_zero=True),
                      sigmas_to_times(_SDE, karras_sigmas(n)), uniform_grid(n, 0.0), quadratic_grid(n, 1e-3)])


_RULES = {
    "2m_vp": (dpmpp_2m_rule(_SDE), _X0, "time"),
    "3m_vp": (dpmpp_3m_rule(_SDE), _X0, "time"),
    "2m_sde_vp": (dpmpp_2m_sde_rule(_SDE), _X0, "time"),
    "2s_vp": (dpmpp_2s_rule(_SDE), _X0, "time"),
    "2m_edm": (dpmpp_2m_rule(None), _GM.denoiser, "sigma"),
    "3m_edm": (dpmpp_3m_rule(None), _GM.denoiser, "sigma"),
    "2m_sde_edm": (dpmpp_2m_sde_rule(None), _GM.denoiser, "sigma"),
    "2s_edm": (dpmpp_2s_rule(None), _GM.denoiser, "sigma"),
    "unipc_vp": (unipc_rule(_SDE), _X0, "time"),
    "unipc_edm": (unipc_rule(None), _GM.denoiser, "sigma"),
    "euler_ancestral": (euler_ancestral_rule(), _GM.denoiser, "sigma"),
    "dpm2_ancestral": (dpm2_ancestral_rule(), _GM.denoiser, "sigma"),
}
_NS = (3, 5, 10)


def _front_padded(grid, length):
    """Repeat the FIRST time: a zero-length step at the prior is a no-op of every rule here (the
    multistep rules keep their history and counter), so 3-, 5- and 10-step grids share one compile."""
    return jnp.concatenate([jnp.full((length - grid.shape[0],), grid[0], grid.dtype), grid])


@functools.cache
def _padded_grids(kind):
    grids = _sigma_grids if kind == "sigma" else _time_grids
    return jnp.concatenate([jax.vmap(_front_padded, (0, None))(grids(n), max(_NS) + 1) for n in _NS])


@pytest.mark.parametrize("kind", ["time", "sigma"])
def test_no_nan_float32(kind):
    """Every rule on every grid of its kind, 3/5/10 steps, float32, batch 32: all finite, and the
    samples stay bounded (radius < 5; the modes lie within radius 1.1, the EDM prior has std 80).

    The 3M rules run without ``n_steps`` (no lower-order final steps, the default): the worst case.
    Exception to the bound, not to finiteness: DPM-2 ancestral below 10 steps. It is DPM-Solver-2 in
    noise prediction (k-diffusion's form): its midpoint derivative ``(x_mid - D(x_mid, s)) / s`` at a tiny
    ``s`` is taken off the data manifold and extrapolated over the whole step (|x| up to ~1e3 measured
    at 3 steps on this sharp mixture); that is the method, documented in its docstring.
    """
    names = [k for k, v in _RULES.items() if v[2] == kind]
    g = _padded_grids(kind)
    assert g.dtype == jnp.float32

    @jax.jit
    def run(grids):
        return [jax.vmap(lambda grid: sample(_RULES[k][0], _RULES[k][1], jax.random.PRNGKey(0), (32, 2), grid)[0])(
            grids) for k in names]

    for name, x in zip(names, run(g)):
        x = x.reshape(len(_NS), -1, 32, 2)
        assert x.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(x))), name
        for n, xn in zip(_NS, x):
            if name != "dpm2_ancestral" or n >= 10:
                assert float(jnp.max(jnp.linalg.norm(xn, axis=-1))) < 5.0, (name, n)
