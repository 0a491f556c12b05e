"""DPM-Solver++ rules: measured convergence orders, exact identities with DDIM/DDPM, the right law
for the SDE variant, EDM-coordinate equivalence, Picard == sequential and no retrace for guidance.

Ground truth: Gaussian mixtures with exact eps (diffjax.analytic) and a float64 diffrax Dopri8 solve.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import GaussianMixture, nine_gaussians
from diffjax.grids import log_snr_uniform_grid
from diffjax.metrics import mmd2
from diffjax.param import x0_from_eps
from diffjax.samplers.dpm_solver import (
    DPMState,
    dpmpp_2m_rule,
    dpmpp_2m_sde_rule,
    dpmpp_2s_rule,
    dpmpp_3m_rule,
    dpmpp_3m_sde_rule,
)
from diffjax.samplers.guidance import classifier_free_guidance
from diffjax.samplers.ode_rules import ddim_rule
from diffjax.samplers.picard import picard_sample
from diffjax.samplers.sde_rules import ddpm_rule
from diffjax.samplers.sequential import sample
from diffjax.samplers.unipc import unipc_rule
from diffjax.schedules import sigma_from_t
from diffjax.sde import VPSDE


def _wide_mixture():
    """Wide components: a smooth PF-ODE, so the asymptotic regime starts at moderate step counts."""
    return GaussianMixture(jnp.array([0.3, 0.3, 0.4]), jnp.array([[1.0, 0.5], [-1.0, 0.0], [0.2, -1.0]]),
                           jnp.array([0.5, 0.4, 0.6]))


def _padded(grid, length):
    """Repeat the last time: a zero-length step is a no-op of every DPM-Solver++ rule (history kept),
    so grids of different step counts share one shape (one compile) and can be vmapped."""
    return jnp.concatenate([grid, jnp.full((length - grid.shape[0],), grid[-1], grid.dtype)])


def _slope(ns, errs):
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


def test_convergence_orders_float64():
    """PF-ODE from t = 1 to 0.05 on a log-SNR-uniform grid vs Dopri8 (rtol = atol = 1e-12), float64.

    Fitted log-log slopes of the max error: 2M ~ 2, 2S ~ 2 (n = 16..64), 3M ~ 3 (n = 64..256, where
    its first-order warm-up no longer dominates), each within 0.3.
    """
    with jax.enable_x64(True):
        gm, sde, t1 = _wide_mixture(), VPSDE(), 0.05
        eps, score = gm.eps_fn(sde), gm.score_fn(sde)
        x0_fn = x0_from_eps(sde, eps)
        x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 2), jnp.float64)
        term = diffrax.ODETerm(lambda t, x, _: sde.reverse_drift(x, t, score(x, t), probability_flow=True))
        ref = diffrax.diffeqsolve(term, diffrax.Dopri8(), t0=1.0, t1=t1, dt0=-0.02, y0=x_T, max_steps=10000,
                                  stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12)).ys[-1]

        def errors(rule, ns):
            grids = jnp.stack([_padded(log_snr_uniform_grid(sde, n, t1), max(ns) + 1) for n in ns])
            run = jax.vmap(lambda g: sample(rule, x0_fn, jax.random.PRNGKey(1), x_T.shape, g, x_init=x_T)[0])
            xs = jax.jit(run)(grids)
            return [float(jnp.max(jnp.abs(x - ref))) for x in xs]

        for rule, ns, order in [(dpmpp_2m_rule(sde), (16, 32, 64), 2.0), (dpmpp_2s_rule(sde), (16, 32, 64), 2.0),
                                (dpmpp_3m_rule(sde), (64, 128, 256), 3.0)]:
            errs = errors(rule, ns)
            assert abs(_slope(ns, errs) - order) < 0.3, (order, errs, _slope(ns, errs))
            assert errs[-1] < 1e-3


def test_first_steps_equal_ddim_and_ddpm():
    """One step of 2M is DDIM (eq. 3.6); one step of 2M-SDE (eta = 1) is the DDPM posterior step."""
    sde, gm = VPSDE(), nine_gaussians()
    eps = gm.eps_fn(sde)
    grid = jnp.array([0.7, 0.4])

    @jax.jit
    def run(key):
        return [sample(rule, model, key, (64, 2), grid)[0] for rule, model in
                [(dpmpp_2m_rule(sde), x0_from_eps(sde, eps)), (ddim_rule(sde), eps),
                 (dpmpp_2m_sde_rule(sde), x0_from_eps(sde, eps)), (ddpm_rule(sde), eps)]]

    a, b, c, d = run(jax.random.PRNGKey(2))
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(c, d, rtol=2e-5, atol=2e-6)


def test_lower_order_final_and_state():
    """On a 3-step grid lower_order_final (the default; the step count is read from the grid) gives the
    orders (1, 2, 1) for 3M and 2M alike, so the two coincide; without it 3M takes (1, 2, 3) and
    differs. The state is a DPMState with a step counter and the grid's step counts."""
    sde, gm = VPSDE(), _wide_mixture()
    x0_fn = x0_from_eps(sde, gm.eps_fn(sde))
    grid = log_snr_uniform_grid(sde, 3, 0.05)
    shape = (32, 2)

    @jax.jit
    def run(key):
        outs = [sample(rule, x0_fn, key, shape, grid) for rule in
                (dpmpp_3m_rule(sde), dpmpp_2m_rule(sde), dpmpp_3m_rule(sde, lower_order_final=False))]
        traj = sample(dpmpp_3m_rule(sde), x0_fn, key, shape, grid, return_trajectory=True)[1]["trajectory"]
        return [o[0] for o in outs], traj

    (a, b, c), traj = run(jax.random.PRNGKey(3))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(a - c))) > 1e-3
    assert sample(dpmpp_3m_rule(sde), x0_fn, jax.random.PRNGKey(3), shape, grid)[1]["nfe"] == 3
    assert isinstance(traj, DPMState) and list(traj.step) == [1, 2, 3]
    assert list(traj.n_steps) == [3, 3, 3] and list(traj.n_positive) == [3, 3, 3]
    assert len(traj.x0_hist) == 2


def test_edm_coordinates_match_vp():
    """The solver is invariant to (alpha, sigma) at fixed lambda: sde=None on sigma = sigma_t/alpha_t with
    the exact denoiser and x_hat = x / alpha reproduces the VP run (x_VP = alpha x_hat); also through t = 0."""
    sde, gm = VPSDE(), _wide_mixture()
    x0_fn = x0_from_eps(sde, gm.eps_fn(sde))
    t_grid = jnp.concatenate([log_snr_uniform_grid(sde, 6, 0.02), jnp.zeros(1)])
    sigmas = sigma_from_t(sde, t_grid)
    x_T = jax.random.normal(jax.random.PRNGKey(4), (32, 2))
    alpha_T, _ = sde.marginal_coeffs(t_grid[0])
    pairs = [(dpmpp_2m_rule(sde), dpmpp_2m_rule(None)), (dpmpp_2s_rule(sde), dpmpp_2s_rule(None)),
             (dpmpp_3m_sde_rule(sde), dpmpp_3m_sde_rule(None))]     # same key: same normals

    @jax.jit
    def run(key):
        return [(sample(vp, x0_fn, key, x_T.shape, t_grid, x_init=x_T)[0],
                 sample(edm, gm.denoiser, key, x_T.shape, sigmas, x_init=x_T / alpha_T)[0]) for vp, edm in pairs]

    for a, b in run(jax.random.PRNGKey(0)):
        assert bool(jnp.all(jnp.isfinite(a)))
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("build", [dpmpp_2m_sde_rule, dpmpp_3m_sde_rule])
def test_sde_variant_samples_the_target(build):
    """2M-SDE / 3M-SDE (eta = 1) on the VP SDE, 30 steps to t = 0, 1000 samples: MMD^2 (h = 0.1) to 1000
    fresh data below 2.5e-3.

    Two independent data samples give MMD^2 in about +-1e-3 (measured spread over keys: sd ~6e-4); the
    same sampler with a wrong model (all means scaled by 1.1) gives ~2e-2 and must exceed 1e-2."""
    sde, gm = VPSDE(), nine_gaussians()
    wrong = GaussianMixture(gm.weights, 1.1 * gm.means, gm.stds)
    grid = log_snr_uniform_grid(sde, 30, 1e-3, append_zero=True)
    rule, n = build(sde), 1000

    @jax.jit
    def draw(key):
        ok = sample(rule, x0_from_eps(sde, gm.eps_fn(sde)), key, (n, 2), grid)[0]
        bad = sample(rule, x0_from_eps(sde, wrong.eps_fn(sde)), key, (n, 2), grid)[0]
        return ok, bad, gm.sample(jax.random.fold_in(key, 1), n)

    ok, bad, data = draw(jax.random.PRNGKey(5))
    assert float(mmd2(ok, data, 0.1)) < 2.5e-3
    assert float(mmd2(bad, data, 0.1)) > 1e-2


@pytest.mark.parametrize("build", [dpmpp_2m_rule, unipc_rule])
def test_picard_equals_sequential_multistep(build):
    """Picard (tol = atol = 0) with a multistep rule (2M; UniPC with predicted and corrected points in
    the state) reaches the sequential trajectory (rel 1e-4)."""
    sde, gm = VPSDE(), nine_gaussians()
    x0_fn = x0_from_eps(sde, gm.eps_fn(sde))
    rule, grid, shape, key = build(sde), log_snr_uniform_grid(sde, 12, 1e-3), (16, 2), jax.random.PRNGKey(7)
    ref, _ = sample(rule, x0_fn, key, shape, grid)
    x, info = picard_sample(rule, x0_fn, key, shape, grid, tol=0.0, atol=0.0)
    assert bool(info["converged"])
    assert float(jnp.max(jnp.abs(x - ref)) / jnp.max(jnp.abs(ref))) < 1e-4


def test_guidance_scale_does_not_recompile():
    """A jitted DPM-Solver++ sampler with classifier-free guidance traces once for several scales w,
    and the scale acts: w = 0 gives the conditional model's samples, w > 0 pushes further."""
    sde = VPSDE()
    uncond = nine_gaussians()
    cond = GaussianMixture(jnp.ones(3) / 3, uncond.means[:3], uncond.stds[:3])
    grid, traces = log_snr_uniform_grid(sde, 8, 1e-3), []

    @jax.jit
    def draw(w, key):
        traces.append(1)
        eps = classifier_free_guidance(cond.eps_fn(sde), uncond.eps_fn(sde), w)
        return sample(dpmpp_2m_rule(sde), x0_from_eps(sde, eps), key, (64, 2), grid)[0]

    key = jax.random.PRNGKey(8)
    outs = [draw(jnp.asarray(w, jnp.float32), key) for w in (0.0, 1.5, 3.0)]
    assert len(traces) == 1
    plain, _ = sample(dpmpp_2m_rule(sde), x0_from_eps(sde, cond.eps_fn(sde)), key, (64, 2), grid)
    np.testing.assert_allclose(outs[0], plain, rtol=1e-4, atol=1e-4)
    assert float(jnp.max(jnp.abs(outs[2] - outs[0]))) > 1e-2
    assert all(bool(jnp.all(jnp.isfinite(o))) for o in outs)


def test_sde_rules_reject_bad_arguments():
    for build in (dpmpp_2m_sde_rule, dpmpp_3m_sde_rule):
        for bad in (dict(eta=1.5), dict(eta=-0.1), dict(s_noise=-1.0), dict(s_noise=float("nan")), dict(sigma_max=0.0)):
            with pytest.raises(ValueError):
                build(None, **bad)
        with pytest.raises(TypeError):
            build(0.5)                          # eta passed where the SDE goes
