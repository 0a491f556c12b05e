"""Adaptive probability-flow solve (diffrax): accuracy vs a fine fixed-step solve, exact NFE, tolerances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from diffjax.analytic._mixture import GaussianMixture
from diffjax.samplers.adaptive import solve_probability_flow
from diffjax.samplers.api import probability_flow
from diffjax.samplers.ode_rules import probability_flow_heun_rule
from diffjax.samplers.sequential import sample
from diffjax.schedules import uniform_grid
from diffjax.sde import VPSDE

T1 = 0.05


def _setup():
    gm = GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-1.0, 0.5], [1.0, -0.5]]), jnp.array([0.4, 0.3]))
    sde = VPSDE()
    return gm, sde, sde.prior_sample(jax.random.PRNGKey(0), (32, 2))


def test_adaptive_matches_fine_heun_and_nfe_falls_with_looser_rtol():
    gm, sde, x_T = _setup()
    solve = jax.jit(lambda x, rtol: solve_probability_flow(sde, gm.score_fn(sde), x, t1=T1, rtol=rtol, atol=rtol))
    fine, _ = jax.jit(lambda x: sample(probability_flow_heun_rule(sde), gm.score_fn(sde), jax.random.PRNGKey(0),
                                       x.shape, uniform_grid(1000, T1), x_init=x))(x_T)
    tight, info_tight = solve(x_T, 1e-6)
    loose, info_loose = solve(x_T, 1e-3)
    assert bool(info_tight["success"]) and bool(info_loose["success"])
    # Heun with 1000 steps is accurate to ~1e-5 here (error ~ 2e-4 (128/1000)^2)
    np.testing.assert_allclose(tight, fine, atol=2e-4)
    assert float(jnp.max(jnp.abs(loose - fine))) < 2e-2
    assert 0 < int(info_loose["nfe"]) < int(info_tight["nfe"])
    assert int(info_tight["num_steps"]) == int(info_tight["num_accepted_steps"]) + int(info_tight["num_rejected_steps"])


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_adaptive_nfe_counts_every_evaluation(solver):
    gm, sde, x_T = _setup()
    count = [0]

    def tick(t):
        count[0] += 1
        return np.float32(0.0)

    def score(x, t):
        return gm.score_fn(sde)(x, t) + io_callback(tick, jax.ShapeDtypeStruct((), jnp.float32), t, ordered=True)

    x, info = solve_probability_flow(sde, score, x_T, t1=T1, rtol=1e-4, atol=1e-4, solver=solver)
    jax.block_until_ready(x)
    assert int(info["nfe"]) == count[0]


def test_api_adaptive_and_budget_exhaustion():
    gm, sde, _ = _setup()
    x, info = probability_flow(gm.score_fn(sde), sde, key=jax.random.PRNGKey(0), shape=(8, 2), method="adaptive",
                               t_min=T1, rtol=1e-3, atol=1e-3)
    assert x.shape == (8, 2) and int(info["nfe"]) > 0 and bool(info["success"])
    x, info = solve_probability_flow(sde, gm.score_fn(sde), jnp.ones((8, 2)), t1=T1, rtol=1e-8, atol=1e-8, max_steps=3)
    assert not bool(info["success"])


def test_adaptive_bad_inputs():
    gm, sde, x_T = _setup()
    score = gm.score_fn(sde)
    with pytest.raises(ValueError, match="solver"):
        solve_probability_flow(sde, score, x_T, solver="euler")
    with pytest.raises(ValueError, match="t1"):
        solve_probability_flow(sde, score, x_T, t1=1.5)
    with pytest.raises(ValueError, match="rtol"):
        solve_probability_flow(sde, score, x_T, rtol=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        solve_probability_flow(sde, score, x_T, max_steps=0)
