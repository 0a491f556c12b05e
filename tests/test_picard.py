"""Picard executor: its fixed point is the sequential trajectory for the same key.

Every test compares against :func:`diffjax.samplers.sequential.sample` (one ``lax.scan``) run with
the same rule, model, key and grid; the models are the exact Gaussian-mixture eps / score /
denoiser (and an exact CLD velocity score), so the dynamics are the real, nonlinear ones.
"""

from __future__ import annotations

import functools
import gc
import math
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic import nine_gaussians
from diffjax.samplers._rule import StepRule, gaussian_noise
from diffjax.samplers.edm_rules import edm_heun_rule
from diffjax.samplers.ode_rules import ddim_rule
from diffjax.samplers.picard import picard_sample
from diffjax.samplers.sde_rules import ddpm_rule, euler_maruyama_rule
from diffjax.samplers.sequential import sample
from diffjax.samplers.tuning import WindowCache, auto_window, knee_window
from diffjax.schedules import edm_sigma_grid, uniform_grid
from diffjax.sde._cld import CLD
from diffjax.sde._scalar import VPSDE

SDE = VPSDE()
GM = nine_gaussians()
EPS = GM.eps_fn(SDE)
SCORE = GM.score_fn(SDE)
CLD_SDE = CLD()
N = 96
SHAPE = (16, 2)


def cld_mixture_score(cld, gm):
    """Exact velocity score ``grad_v log p_t(x, v)`` of ``gm`` x ``N(0, gamma M)`` under the CLD.

    Each component stays Gaussian: mean ``Phi_t (mu_k, 0)`` (thesis eq. 2.31), per-dimension
    covariance of eqs. (2.33)-(2.36) with ``Sigma_0 = diag(s_k^2, gamma M)``.
    """
    def score_v(state, t):
        x, v = state
        mx, mv = cld.marginal_mean(gm.means, 0.0, t)                       # (K, d)
        a0 = gm.stds**2
        sxx, sxv, svv = cld.marginal_cov(t, a0, cld.gamma * cld.M)          # (K,)
        det = cld.marginal_det(t, a0, cld.gamma * cld.M)
        dx = x[:, None, :] - mx[None]                                        # (n, K, d)
        dv = v[:, None, :] - mv[None]
        quad = (svv[:, None] * dx**2 - 2 * sxv[:, None] * dx * dv + sxx[:, None] * dv**2) / det[:, None]
        logits = jnp.log(gm.weights) - 0.5 * jnp.sum(quad, -1) - 0.5 * gm.dim * jnp.log(det)
        resp = jax.nn.softmax(logits, axis=-1)                              # (n, K)
        comp = -(sxx[:, None] * dv - sxv[:, None] * dx) / det[:, None]
        return jnp.sum(resp[..., None] * comp, axis=1)

    return score_v


def ab2_ddim_rule(sde):
    """A multistep rule (history in the state): 2-step Adams-Bashforth on the DDIM ODE."""

    def init(model_fn, x, t0):
        return x, model_fn(x, t0)

    def step(model_fn, state, t, s, z):
        x, e_prev = state
        e = model_fn(x, t)
        e_use = 1.5 * e - 0.5 * e_prev
        alpha_t, sigma_t = sde.marginal_coeffs(t)
        alpha_s, sigma_s = sde.marginal_coeffs(s)
        return alpha_s * (x - sigma_t * e_use) / alpha_t + sigma_s * e_use, e

    return StepRule(step=step, prior=sde.prior_sample, init=init, finalize=lambda m, st, t: st[0])


def toy_rule():
    """Cheap nonlinear ancestral rule ``x' = x + h tanh(x) + sqrt(h) z`` for executor mechanics."""

    def step(model_fn, x, t, t_next, z):
        h = t - t_next
        return x + h * model_fn(x, t) + jnp.sqrt(h) * 0.3 * z

    return StepRule(step=step, prior=lambda key, shape: jax.random.normal(key, shape), noise=gaussian_noise)


def _sscs_case():
    from diffjax.samplers.sscs import sscs_rule

    return sscs_rule(CLD_SDE), cld_mixture_score(CLD_SDE, GM), uniform_grid(N)


_BUILDERS = {
    "ddpm": lambda: (ddpm_rule(SDE), EPS, uniform_grid(N)),
    "ddim": lambda: (ddim_rule(SDE), EPS, uniform_grid(N)),
    # t_min = 0.02: below it Euler-Maruyama on the exact score is unstable with 96 steps
    # (h g^2 / sigma_t^2 > 1) and amplifies any perturbation, Picard's tolerance included.
    "euler_maruyama": lambda: (euler_maruyama_rule(SDE), SCORE, uniform_grid(N, t_min=0.02)),
    "edm_heun_churn": lambda: (edm_heun_rule(s_churn=10.0, n_steps=N + 1), GM.denoiser,
                               edm_sigma_grid(N + 1, append_zero=False)),
    "sscs": _sscs_case,                                   # CLD: state (x, v), noise (2, 2, *shape)
    "ab2_multistep": lambda: (ab2_ddim_rule(SDE), EPS, uniform_grid(N)),   # history in the state
}


@functools.cache
def case(name):
    """Rule, model and grid, built once so that tests share compilations."""
    return _BUILDERS[name]()


def _rel(a, b):
    a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return max(float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(v))) for u, v in zip(a, b))


@pytest.mark.parametrize("name", list(_BUILDERS))
def test_fixed_point_equals_sequential(name):
    rule, model, grid = case(name)
    n = grid.shape[0] - 1
    key = jax.random.PRNGKey(3)
    ref, ref_info = jax.jit(lambda k: sample(rule, model, k, SHAPE, grid))(key)
    assert np.all(np.isfinite(np.asarray(ref)))

    # tol = atol = 0: iterate to the exact (float) fixed point.
    x, info = picard_sample(rule, model, key, SHAPE, grid, window=None, tol=0.0, atol=0.0)
    assert bool(info["converged"]) and int(info["iterations"]) <= n
    assert _rel(x, ref) < 1e-4
    k = int(info["iterations"])
    assert int(info["nfe"]) == k * n * rule.nfe_per_step + rule.nfe_final
    assert "rounds" not in info and info["residuals"].shape == (n,) and not bool(info["tol_clamped"])
    assert np.isfinite(float(info["residuals"][k - 1])) and np.all(np.isnan(info["residuals"][k:]))

    # Default ParaDiGMS tolerance: far fewer rounds than steps, still close to sequential (the
    # accepted changes, <= tol * noise std per point, are amplified by the dynamics: ~1e-3 measured).
    x, info = picard_sample(rule, model, key, SHAPE, grid)          # default window: the whole trajectory
    assert bool(info["converged"]) and info["window"] == n
    assert int(info["iterations"]) <= n // 2, int(info["iterations"])
    assert _rel(x, ref) < 5e-3


def test_float64_fixed_point_equals_sequential():
    """With float64 enabled (argmax and friends return int64) the loop carry keeps its int32 counters,
    and the exact fixed point equals the sequential samples to float64 rounding."""
    with jax.enable_x64(True):
        rule, n = toy_rule(), 16
        grid = jnp.linspace(1.0, 0.0, n + 1, dtype=jnp.float64)
        model = lambda x, t: jnp.tanh(2.0 * x) - 0.1 * x**3          # noqa: E731
        key = jax.random.PRNGKey(5)
        ref, _ = sample(rule, model, key, SHAPE, grid)
        x, info = picard_sample(rule, model, key, SHAPE, grid, window=4, tol=0.0, atol=0.0)
        assert x.dtype == jnp.float64 and bool(info["converged"])
        assert float(jnp.max(jnp.abs(x - ref))) < 1e-12


def test_window_exactness_and_nonconvergence():
    """With tol = 0 the m-th point of the window is exact after m iterations, the window after p."""
    traces = []

    def model(x, t):
        traces.append(1)
        return jnp.tanh(2.0 * x) - x**3 * 0.1

    rule, n, p = toy_rule(), 32, 8
    grid = jnp.linspace(1.0, 0.0, n + 1)
    key = jax.random.PRNGKey(0)
    _, seq_info = jax.jit(lambda k: sample(rule, model, k, SHAPE, grid, return_trajectory=True))(key)
    traj = seq_info["trajectory"]

    for m in (3, p):
        x, info = picard_sample(rule, model, key, SHAPE, grid, window=p, tol=0.0, atol=0.0, max_iters=m,
                                return_trajectory=True)
        assert int(info["iterations"]) == m and not bool(info["converged"])   # reported, not silent
        assert int(info["nfe"]) == m * p
        np.testing.assert_allclose(info["trajectory"][:m], traj[:m], rtol=1e-6, atol=1e-6)
        assert float(jnp.max(jnp.abs(info["trajectory"][p - 1] - traj[p - 1]))) > 1e-5 or m == p
        assert info["residuals"].shape == (m,)
        assert float(jnp.max(jnp.abs(x - traj[-1]))) > 1e-5                  # not the answer yet

    # Second call, new key and tolerance: no retrace, no recompile.
    n_traces = len(traces)
    picard_sample(rule, model, jax.random.PRNGKey(1), SHAPE, grid, window=p, tol=0.1, atol=1e-3, max_iters=p,
                  return_trajectory=True)
    assert len(traces) == n_traces


def test_sharded_equals_unsharded():
    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py forces 8 host devices"
    rule, model, grid = case("ddpm")
    key = jax.random.PRNGKey(5)
    ref, _ = jax.jit(lambda k: sample(rule, model, k, SHAPE, grid))(key)
    x1, i1 = picard_sample(rule, model, key, SHAPE, grid, window=48)                     # sliding window
    x8, i8 = picard_sample(rule, model, key, SHAPE, grid, window=48, devices=devices)
    assert bool(i1["converged"]) and bool(i8["converged"])
    assert int(i1["iterations"]) == int(i8["iterations"])
    np.testing.assert_allclose(x8, x1, rtol=1e-6, atol=1e-6)
    assert _rel(x8, ref) < 1e-3


def test_invalid_arguments():
    rule, model, grid = case("ddpm")
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        picard_sample(rule, model, key, SHAPE, grid, window=12, devices=jax.devices())
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        picard_sample(rule, model, key, SHAPE, grid, window=None, devices=jax.devices()[:5])  # window = n = 96
    for bad in (0, N + 1, 2.5, "fast"):
        with pytest.raises(ValueError, match="window"):
            picard_sample(rule, model, key, SHAPE, grid, window=bad)
    for name, bad in (("tol", -1.0), ("tol", math.nan), ("tol", math.inf), ("atol", -1e-3), ("atol", math.nan),
                      ("tol", jnp.asarray(-1.0)), ("tol", jnp.ones(2))):
        with pytest.raises(ValueError, match=f"^{name} "):
            picard_sample(rule, model, key, SHAPE, grid, **{name: bad})
    with pytest.raises(ValueError, match="max_iters"):
        picard_sample(rule, model, key, SHAPE, grid, max_iters=0)
    with pytest.raises(ValueError, match="precision"):
        picard_sample(rule, model, key, SHAPE, grid, precision="fp7")
    with pytest.raises(ValueError, match="mesh and devices"):
        picard_sample(rule, model, key, SHAPE, grid, devices=jax.devices(),
                      mesh=jax.sharding.Mesh(np.array(jax.devices()), ("w",)))
    with pytest.raises(ValueError, match="grid"):
        picard_sample(rule, model, key, SHAPE, grid[:1])


def test_traced_negative_tol_is_clamped_and_flagged():
    """Eagerly a bad tol raises (test_invalid_arguments); under jit a traced tol = -1 (or NaN, inf)
    cannot be checked, so it runs as tol = 0, the exact fixed point (it used to act as |tol| = 1,
    which stops far earlier), and info says so; a valid traced tol is used as given."""
    rule, model, grid = case("ddpm")
    key = jax.random.PRNGKey(4)
    run = jax.jit(lambda tol, atol: picard_sample(rule, model, key, SHAPE, grid, window=48, tol=tol, atol=atol))
    x0, i0 = run(0.0, 0.0)
    x1, i1 = run(1.0, 0.0)
    assert not bool(i0["tol_clamped"]) and not bool(i1["tol_clamped"])
    assert int(i1["iterations"]) < int(i0["iterations"])
    for tol, atol in ((-1.0, 0.0), (math.nan, 0.0), (math.inf, 0.0), (0.0, -1.0)):
        x, info = run(tol, atol)
        assert bool(info["tol_clamped"]) and bool(info["converged"]), (tol, atol)
        assert int(info["iterations"]) == int(i0["iterations"]), (tol, atol)
        np.testing.assert_array_equal(x, x0)
    # the jitted run is the eager one
    xe, ie = picard_sample(rule, model, key, SHAPE, grid, window=48, tol=1.0, atol=0.0)
    assert int(ie["iterations"]) == int(i1["iterations"]) and not bool(ie["tol_clamped"])
    np.testing.assert_allclose(xe, x1, rtol=1e-5, atol=1e-6)


def test_knee_window_rule():
    """The knee rule on synthetic cost models: a device saturating at 64 rows, no batching gain, a gain
    below min_gain, several devices (the whole trajectory as last candidate), and measurement
    stopping at the knee."""
    asked = []

    def saturating(p):                           # flat cost up to 64 rows, linear beyond
        asked.append(p)
        return 1e-3 * max(1.0, p / 64)

    assert knee_window(1000, 1, saturating) == 64
    assert asked == [1, 2, 4, 8, 16, 32, 64, 128]      # not past the knee
    assert knee_window(1000, 1, lambda p: 1e-3 * p) == 1                       # no gain: sequential
    modest = lambda p: 1e-3 * (1 + 0.5 * (p - 1))     # rate 1, 1.33, 1.6, 1.78 for p = 1, 2, 4, 8
    assert knee_window(1000, 1, modest) == 1                                   # gain 1.6 < 3
    assert knee_window(1000, 1, modest, min_gain=1.5) == 4
    assert knee_window(96, 8, lambda p: 1e-3) == 96                            # 8, 16, 32, 64, then 96
    assert knee_window(100, 8, lambda p: 1e-3) == 64                           # 100 is no multiple of 8
    assert knee_window(96, 8, lambda p: 1e-3 * p) == 1      # 8 devices, no gain over one step
    assert knee_window(4, 8, lambda p: 1e-3) == 1           # fewer steps than devices
    for bad in ({"growth": 0.5}, {"min_gain": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            knee_window(96, 1, lambda p: 1.0, **bad)


def test_auto_window_cache_and_auto_sampling():
    """An explicit WindowCache: a hit does not measure, another model object or another dtype is a
    miss; window="auto" reuses the cache and reproduces the sequential samples."""
    traces = []

    def model(x, t):
        traces.append(1)
        return jnp.tanh(x)

    rule, n = toy_rule(), 4                           # candidates 1, 2, 4: three compilations per probe
    grid = jnp.linspace(1.0, 0.0, n + 1)
    cache = WindowCache()
    p = auto_window(rule, model, SHAPE, grid, cache=cache)
    assert p == 1 or 2 <= p <= n
    n_traces = len(traces)
    assert auto_window(rule, model, SHAPE, grid, cache=cache) == p and len(traces) == n_traces   # hit
    assert len(cache) == 1
    other = lambda x, t: jnp.tanh(x)                  # noqa: E731
    other_ref = weakref.ref(other)
    auto_window(rule, other, SHAPE, grid, cache=cache)
    assert len(cache) == 2                            # another model object: a miss
    del other
    gc.collect()
    assert other_ref() is not None                    # held by its entry, so its id cannot be reused
    with jax.enable_x64(True):
        auto_window(rule, model, SHAPE, jnp.linspace(1.0, 0.0, n + 1), cache=cache)
    assert len(cache) == 3                            # float64 draws: another entry
    key = jax.random.PRNGKey(2)
    ref, _ = jax.jit(lambda k: sample(rule, model, k, SHAPE, grid))(key)
    x, info = picard_sample(rule, model, key, SHAPE, grid, window="auto", tol=0.0, atol=0.0, window_cache=cache)
    assert info["window"] == p and bool(info["converged"]) and len(cache) == 3
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cache"):
        auto_window(rule, model, SHAPE, grid, cache={})
    cache.clear()
    gc.collect()
    assert len(cache) == 0 and other_ref() is None   # released with the cache entries
