"""No silent wrong answers: grids, shapes, model kinds and traced values are checked or made loud.

Every invalid input either raises (eagerly, or at trace time for shapes) with a message that names
the argument, or, when it is a traced value that cannot be checked at trace time, makes the result
NaN. Valid traced values must give exactly the eager result (the checks never change meaning).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import param
from diffjax.analytic import cld_score_v_fn, nine_gaussians
from diffjax.analytic._mixture import GaussianMixture
from diffjax.distill._genie_head import genie_head_rule
from diffjax.samplers import (StepRule, ddim_invert, ddim_rule, ddpm_rule, dpmpp_2m_rule, edm_heun_rule,
                              euler_ancestral_rule, euler_maruyama_rule, inpaint_rule, picard_sample,
                              predictor_corrector_rule, sample, sscs_rule, unipc_rule)
from diffjax.samplers._rule import check_grid, resolve_model
from diffjax.schedules import edm_sigma_grid, uniform_grid
from diffjax.sde import CLD, VESDE, VPSDE

SDE = VPSDE()
KEY = jax.random.PRNGKey(0)
SHAPE = (8, 2)
GRID = uniform_grid(20, 1e-3)


def _gm():
    return GaussianMixture(jnp.array([0.4, 0.6]), jnp.array([[-1.0, 0.5], [1.0, -0.5]]), jnp.array([0.4, 0.3]))


EPS = _gm().eps_fn(SDE)
SCORE = _gm().score_fn(SDE)


# -- grids ------------------------------------------------------------------------------------------

_TIME_RULES = {"ddim": (ddim_rule(SDE), EPS), "ddpm": (ddpm_rule(SDE), EPS),
               "euler_maruyama": (euler_maruyama_rule(SDE), SCORE), "dpmpp_2m": (dpmpp_2m_rule(SDE), None)}
_BAD_GRIDS = {
    "reversed": (jnp.linspace(1e-3, 1.0, 11), r"non-increasing.*grid\[0\]=0\.001 then grid\[1\]=0\.1009"),
    "non-monotone": (jnp.array([1.0, 0.5, 0.7, 0.1]), r"non-increasing.*grid\[1\]=0\.5 then grid\[2\]=0\.7"),
    "above T": (jnp.array([1.2, 0.5, 0.1]), r"lie in \[0\.0, 1\.0\].*grid\[0\]=1\.2"),
    "negative": (jnp.array([1.0, 0.5, -0.1]), r"lie in \[0\.0, 1\.0\].*grid\[2\]=-0\.1"),
    "interior zero": (jnp.array([1.0, 0.0, 0.0]), r"only the last entry.*grid\[1\]=0"),
    "nan": (jnp.array([1.0, jnp.nan, 0.1]), r"finite.*grid\[1\]=nan"),
    "constant": (jnp.array([0.5, 0.5]), r"must move"),
}


def _model(name):
    rule, model = _TIME_RULES[name]
    return rule, (param.x0_from_eps(SDE, EPS) if model is None else model)


@pytest.mark.parametrize("rule_name", sorted(_TIME_RULES))
@pytest.mark.parametrize("bad", sorted(_BAD_GRIDS))
def test_concrete_bad_grid_raises_naming_grid_and_value(rule_name, bad):
    """Each rule rejects each bad grid eagerly, inside jit (grid closed over) and in the Picard executor."""
    rule, model = _model(rule_name)
    grid, msg = _BAD_GRIDS[bad]
    with pytest.raises(ValueError, match=msg):
        sample(rule, model, KEY, SHAPE, grid)
    with pytest.raises(ValueError, match=msg):
        jax.jit(lambda k: sample(rule, model, k, SHAPE, grid))(KEY)
    if rule_name == "ddim":
        with pytest.raises(ValueError, match=msg):
            picard_sample(rule, model, KEY, SHAPE, grid)


@pytest.mark.parametrize("grid", [jnp.ones((2, 3)), jnp.ones((1,)), jnp.ones(())])
def test_grid_shape_raises_even_when_traced(grid):
    with pytest.raises(ValueError, match=r"grid must be a 1-D array of at least 2 points"):
        sample(ddim_rule(SDE), EPS, KEY, SHAPE, grid)
    with pytest.raises(ValueError, match=r"grid must be a 1-D array of at least 2 points"):
        jax.jit(lambda g: sample(ddim_rule(SDE), EPS, KEY, SHAPE, g))(grid)


def test_traced_grid_bad_gives_nan_valid_gives_the_eager_result():
    """A grid passed as a jit argument (or vmapped) cannot raise: invalid grids give all-NaN samples,
    a valid one exactly the eager run (the check does not change meaning)."""
    rule = ddim_rule(SDE)
    eager = sample(rule, EPS, KEY, SHAPE, GRID)[0]
    assert float(jnp.max(jnp.abs(eager))) < 5.0
    bad = {"reversed": GRID[::-1], "above T": GRID.at[0].set(1.2), "nan": GRID.at[5].set(jnp.nan),
           "negative": GRID.at[-1].set(-0.1), "non-monotone": GRID.at[5].set(0.9)}
    grids = jnp.stack([GRID] + list(bad.values()))
    out = jax.jit(jax.vmap(lambda g: sample(rule, EPS, KEY, SHAPE, g)[0]))(grids)
    np.testing.assert_allclose(out[0], eager, rtol=1e-5, atol=1e-5)
    for name, x in zip(bad, out[1:]):
        assert bool(jnp.all(jnp.isnan(x))), name
    run = jax.jit(lambda g: sample(rule, EPS, KEY, SHAPE, g)[0])
    np.testing.assert_allclose(run(GRID), eager, rtol=1e-6, atol=1e-6)
    assert bool(jnp.all(jnp.isnan(run(GRID[::-1]))))


def test_padded_grid_with_repeated_entries_is_valid():
    """Repeated entries are zero-length steps (grids of different lengths padded to one shape)."""
    padded = jnp.concatenate([GRID, jnp.full((5,), GRID[-1])])
    a = sample(ddim_rule(SDE), EPS, KEY, SHAPE, GRID)[0]
    b = jax.jit(lambda g: sample(ddim_rule(SDE), EPS, KEY, SHAPE, g)[0])(padded)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert check_grid(ddim_rule(SDE), padded) == (25, True)


def test_sigma_grids():
    """EDM sigma rules: decreasing, sigma >= 0, only the last may be 0, no upper bound (sigma_max = 80)."""
    gm = _gm()
    rule = euler_ancestral_rule(0.0)
    ok = jnp.array([80.0, 10.0, 1.0, 0.1, 0.0])
    assert bool(jnp.all(jnp.isfinite(sample(rule, gm.denoiser, KEY, SHAPE, ok)[0])))
    for grid, msg in [(ok[::-1], r"non-increasing.*grid\[0\]=0 then grid\[1\]=0\.1"),
                      (jnp.array([80.0, 0.0, 0.0]), r"only the last entry.*grid\[1\]=0"),
                      (jnp.array([80.0, 1.0, -0.5]), r"grid\[2\]=-0\.5")]:
        with pytest.raises(ValueError, match=msg):
            sample(rule, gm.denoiser, KEY, SHAPE, grid)
        with pytest.raises(ValueError, match=msg):
            sample(edm_heun_rule(), gm.denoiser, KEY, SHAPE, grid)


def test_time_domain_follows_the_sdes_T():
    sde = VPSDE(T=2.0)
    grid = uniform_grid(10, 1e-3, 2.0)
    assert bool(jnp.all(jnp.isfinite(sample(ddim_rule(sde), _gm().eps_fn(sde), KEY, SHAPE, grid)[0])))
    with pytest.raises(ValueError, match=r"lie in \[0\.0, 1\.0\].*grid\[0\]=2"):
        sample(ddim_rule(SDE), EPS, KEY, SHAPE, grid)
    # a traced T (SDE built inside jit) checks the bound in the result
    run = jax.jit(lambda T: sample(ddim_rule(VPSDE(T=T)), _gm().eps_fn(sde), KEY, SHAPE, grid)[0])
    np.testing.assert_allclose(run(2.0), sample(ddim_rule(sde), _gm().eps_fn(sde), KEY, SHAPE, grid)[0],
                               rtol=1e-5, atol=1e-5)
    assert bool(jnp.all(jnp.isnan(run(1.5))))


def test_inversion_grid_is_the_sampling_grid():
    """ddim_invert takes the decreasing sampling grid (it integrates upwards); anything else raises."""
    x0 = _gm().sample(KEY, 8)
    code, _ = ddim_invert(EPS, SDE, x0, GRID)
    assert bool(jnp.all(jnp.isfinite(code)))
    with pytest.raises(ValueError, match=r"grid must be non-increasing"):
        ddim_invert(EPS, SDE, x0, GRID[::-1])
    with pytest.raises(ValueError, match=r"grid\[-1\] must be > 0"):
        ddim_invert(EPS, SDE, x0, jnp.array([1.0, 0.5, 0.0]))


def test_n_levels_hook():
    """``StepRule.n_levels``: grid of n_levels points, or n_levels + 1 ending in 0; else ValueError."""
    rule = ddim_rule(SDE)._replace(n_levels=5)
    g5 = uniform_grid(4, 1e-3)
    assert check_grid(rule, g5) == (4, True)
    assert check_grid(rule, jnp.append(g5, 0.0)) == (5, True)
    with pytest.raises(ValueError, match=r"grid has 6 points.*n_levels=5.*grid\[-1\]=0\.0005"):
        check_grid(rule, jnp.append(g5, 5e-4))
    with pytest.raises(ValueError, match=r"grid has 7 points.*n_levels=5"):
        check_grid(rule, uniform_grid(6, 1e-3))
    run = jax.jit(lambda g: sample(rule, EPS, KEY, SHAPE, g)[0])
    assert bool(jnp.all(jnp.isfinite(run(jnp.append(g5, 0.0)))))
    assert bool(jnp.all(jnp.isnan(run(jnp.append(g5, 5e-4)))))


def test_edm_churn_rule_is_tied_to_its_grid_length():
    """gamma = s_churn / N: a churned EDM rule built for N levels rejects a grid of another length,
    accepts N positive levels or N + 1 points ending in 0; without churn any length is fine."""
    rule = edm_heun_rule(s_churn=10.0, n_steps=8)
    assert rule.n_levels == 8 and edm_heun_rule().n_levels is None
    assert check_grid(rule, edm_sigma_grid(8)) == (8, True)                       # 9 points ending in 0
    assert check_grid(rule, edm_sigma_grid(8, append_zero=False)) == (7, True)
    with pytest.raises(ValueError, match=r"grid has 13 points.*n_levels=8"):
        sample(rule, lambda x, s: x / (1.0 + s**2), KEY, SHAPE, edm_sigma_grid(12))


# -- shapes -----------------------------------------------------------------------------------------


def test_model_output_shape_is_checked_at_trace_time():
    """A (B, 1) model for a (B, 2) state broadcasts silently; an EDM denoiser returning (1, 2) collapses
    the batch. Both raise ValueError naming model_fn, eagerly and under jit, before any evaluation."""
    def narrow(x, t):
        return EPS(x, t)[:, :1]

    with pytest.raises(ValueError, match=r"model_fn must return .* shape of its input x \(8, 2\), got \(8, 1\)"):
        sample(ddim_rule(SDE), narrow, KEY, SHAPE, GRID)
    with pytest.raises(ValueError, match=r"model_fn .*got \(8, 1\)"):
        jax.jit(lambda k: sample(ddpm_rule(SDE), narrow, k, SHAPE, GRID))(KEY)
    with pytest.raises(ValueError, match=r"model_fn .*got \(8, 1\)"):
        picard_sample(ddim_rule(SDE), narrow, KEY, SHAPE, GRID)

    def collapse(x, sigma):
        return jnp.mean(_gm().denoiser(x, sigma), axis=0, keepdims=True)

    sigmas = edm_sigma_grid(10, append_zero=False)
    with pytest.raises(ValueError, match=r"model_fn .*got \(1, 2\)"):
        sample(edm_heun_rule(), collapse, KEY, SHAPE, sigmas)
    with pytest.raises(ValueError, match=r"model_fn .*got \(1, 2\)"):
        sample(dpmpp_2m_rule(None, sigma_max=80.0), collapse, KEY, SHAPE, jnp.append(sigmas, 0.0))
    cld = CLD()
    score_v = cld_score_v_fn(_gm(), cld)
    with pytest.raises(ValueError, match=r"model_fn .*got \(8, 1\)"):
        sample(sscs_rule(cld), lambda u, t: score_v(u, t)[:, :1], KEY, SHAPE, GRID)


def test_step_changing_the_state_raises():
    """Generic check for custom rules of unstated kind: one step must keep the state's shapes and dtypes."""
    rule = StepRule(step=lambda m, x, t, s, z: jnp.concatenate([x, m(x, t)], axis=-1), prior=SDE.prior_sample)
    with pytest.raises(ValueError, match=r"one step of the rule turned the state .*\(8, 2\).*\(8, 4\).*model_fn"):
        sample(rule, EPS, KEY, SHAPE, GRID)
    rule = StepRule(step=lambda m, x, t, s, z: x.astype(jnp.int32), prior=SDE.prior_sample)
    with pytest.raises(ValueError, match=r"one step of the rule turned the state .*int32"):
        sample(rule, EPS, KEY, SHAPE, GRID)


def test_x_init_and_shape():
    rule = ddim_rule(SDE)
    with pytest.raises(ValueError, match=r"x_init must match the prior draw for shape=\(8, 2\).*\[\(8, 2\)\].*\(3, 2\)"):
        sample(rule, EPS, KEY, SHAPE, GRID, x_init=jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"x_init .*\(8, 1\)"):
        jax.jit(lambda x: sample(rule, EPS, KEY, SHAPE, GRID, x_init=x))(jnp.zeros((8, 1)))
    with pytest.raises(ValueError, match=r"x_init must be floating"):
        sample(rule, EPS, KEY, SHAPE, GRID, x_init=jnp.zeros(SHAPE, jnp.int32))
    cld = CLD()
    score_v = cld_score_v_fn(_gm(), cld)
    with pytest.raises(ValueError, match=r"x_init must match"):   # CLD's state is (x, v)
        sample(sscs_rule(cld), score_v, KEY, SHAPE, GRID, x_init=jnp.zeros(SHAPE))
    with pytest.raises(ValueError, match=r"x_init must match"):
        sample(sscs_rule(cld), score_v, KEY, SHAPE, GRID, x_init=(jnp.zeros(SHAPE), jnp.zeros((8, 3))))
    # wrappers whose prior draw is not the state: inpainting takes the base rule's x
    inp = inpaint_rule(ddim_rule(SDE), SDE, jnp.zeros(SHAPE), jnp.zeros(SHAPE, bool).at[:, 0].set(True))
    with pytest.raises(ValueError, match=r"x_init must match.*\(1, 2\)"):
        sample(inp, EPS, KEY, SHAPE, GRID, x_init=jnp.zeros((1, 2)))
    assert bool(jnp.all(jnp.isfinite(sample(inp, EPS, KEY, SHAPE, GRID, x_init=jnp.zeros(SHAPE))[0])))
    for bad in [(), (2.5, 2), "ab", 3]:
        with pytest.raises(ValueError, match=r"shape must be"):
            sample(rule, EPS, KEY, bad, GRID)


# -- model kinds ------------------------------------------------------------------------------------


def _mode_fractions(gm, x):
    """Fraction of samples nearest to each mode, and the largest distance to the nearest mode."""
    d = jnp.linalg.norm(x[:, None, :] - gm.means[None], axis=-1)
    nearest = jnp.argmin(d, axis=1)
    return np.bincount(np.asarray(nearest), minlength=gm.means.shape[0]) / x.shape[0], float(jnp.max(jnp.min(d, 1)))


@pytest.mark.parametrize("builder", [dpmpp_2m_rule, unipc_rule])
def test_readme_tour_with_dpmpp_and_unipc_on_a_declared_eps_model(builder):
    """The README quick tour (VP, nine Gaussians of std 0.04, exact eps) with the rule swapped for
    DPM-Solver++(2M) or UniPC works when the model is declared ``param.model(eps_fn, "eps")``: bit for
    bit the run with the explicit ``x0_from_eps`` conversion; every sample lies within 0.25 (6 stds) of
    a mode and each mode holds 1/9 +- 0.03 of them (1000 samples: binomial std 0.01). The bare eps
    callable is used as x0, as documented, and gives garbage (std > 100)."""
    gm, sde = nine_gaussians(), VPSDE()
    eps_fn = gm.eps_fn(sde)
    rule, grid, shape = builder(sde), uniform_grid(100, 1e-3), (1000, 2)
    run = jax.jit(lambda m: sample(rule, m, KEY, shape, grid)[0], static_argnums=0)
    declared = run(param.model(eps_fn, "eps"))
    np.testing.assert_array_equal(declared, run(param.x0_from_eps(sde, eps_fn)))
    fractions, far = _mode_fractions(gm, declared)
    assert far < 0.25 and float(np.max(np.abs(fractions - 1 / 9))) < 0.03, (far, fractions)
    if builder is dpmpp_2m_rule:
        bare = run(eps_fn)
        np.testing.assert_array_equal(bare, run(param.model(eps_fn, "x0")))
        assert float(jnp.std(bare)) > 100.0


def test_declared_kinds_convert_to_what_the_rule_needs():
    """The same analytic model declared as eps, score, x0, v or denoiser is, after the executors'
    conversion (:func:`resolve_model`), the model of the rule's own kind: float64 values agree to 1e-9
    at times across ``[0.01, 1]``; and a sampler run on a declared score equals the run on bare eps."""
    with jax.enable_x64(True):
        gm, sde = _gm(), VPSDE()
        eps = gm.eps_fn(sde)
        kinds = {"eps": eps, "score": param.score_from_eps(sde, eps), "x0": param.x0_from_eps(sde, eps),
                 "v": param.v_from_eps(sde, eps), "denoiser": param.denoiser_from_eps(sde, eps)}
        x = 1.5 * jax.random.normal(KEY, SHAPE, jnp.float64)
        cases = [(ddim_rule(sde), "eps"), (euler_maruyama_rule(sde), "score"), (dpmpp_2m_rule(sde), "x0"),
                 (predictor_corrector_rule(sde), "score"), (unipc_rule(sde), "x0")]
        for rule, own in cases:
            assert rule.model_kind == own
            for t in (0.01, 0.3, 1.0):
                ref = kinds[own](x, jnp.float64(t))
                for kind, fn in kinds.items():
                    got = resolve_model(rule, param.model(fn, kind))(x, jnp.float64(t))
                    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9, err_msg=f"{own} <- {kind} at {t}")
    ref = sample(ddim_rule(SDE), EPS, KEY, SHAPE, GRID)[0]
    np.testing.assert_allclose(sample(ddim_rule(SDE), param.model(SCORE, "score"), KEY, SHAPE, GRID)[0], ref,
                               rtol=1e-4, atol=1e-4)


def test_sigma_rules_take_a_declared_time_model_with_its_sde():
    """EDM-coordinate rules need a denoiser; a declared eps converts with the model's declared SDE
    (:func:`param.denoiser_from_eps`), and without one the error names both kinds."""
    gm, sde = _gm(), VPSDE()
    eps = gm.eps_fn(sde)
    sigmas = jnp.array([40.0, 5.0, 1.0, 0.3, 0.05])
    rule = edm_heun_rule(sigma_max=40.0)
    ref = sample(rule, param.denoiser_from_eps(sde, eps), KEY, SHAPE, sigmas)[0]
    got = sample(rule, param.model(eps, "eps", sde), KEY, SHAPE, sigmas)[0]
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError, match=r"declares kind 'eps' but the rule needs 'denoiser'.*sde="):
        sample(rule, param.model(eps, "eps"), KEY, SHAPE, sigmas)


def test_unconvertible_kinds_raise_naming_both():
    cld = CLD()
    with pytest.raises(TypeError, match=r"declares kind 'eps' but the rule needs 'cld_velocity_score'"):
        sample(sscs_rule(cld), param.model(EPS, "eps"), KEY, SHAPE, GRID)
    with pytest.raises(TypeError, match=r"declares kind 'score' but the rule needs 'cld_velocity_score'"):
        sample(euler_maruyama_rule(cld), param.model(SCORE, "score"), KEY, SHAPE, GRID)
    with pytest.raises(TypeError, match=r"declares kind 'eps' but the rule needs 'eps_and_derivative'"):
        sample(genie_head_rule(SDE), param.model(EPS, "eps"), KEY, SHAPE, GRID)
    with pytest.raises(TypeError, match=r"declares kind 'cld_velocity_score' but the rule needs 'eps'"):
        sample(ddim_rule(SDE), param.model(cld_score_v_fn(_gm(), cld), "cld_velocity_score"), KEY, SHAPE, GRID)
    # the right kind passes through unconverted
    score_v = cld_score_v_fn(_gm(), cld)
    np.testing.assert_array_equal(sample(sscs_rule(cld), param.model(score_v, "cld_velocity_score"), KEY, SHAPE,
                                         GRID)[0], sample(sscs_rule(cld), score_v, KEY, SHAPE, GRID)[0])


def test_declared_models_in_picard_and_wrappers():
    """Picard converts like the sequential executor; inpainting inherits the base rule's kind."""
    rule = dpmpp_2m_rule(SDE)
    m = param.model(EPS, "eps")
    seq = sample(rule, m, KEY, SHAPE, GRID)[0]
    par, info = picard_sample(rule, m, KEY, SHAPE, GRID, tol=0.0, atol=0.0)
    assert bool(info["converged"])
    np.testing.assert_allclose(par, seq, rtol=1e-4, atol=1e-4)
    mask = jnp.zeros(SHAPE, bool).at[:, 0].set(True)
    inp = inpaint_rule(rule, SDE, jnp.ones(SHAPE), mask)
    np.testing.assert_array_equal(sample(inp, m, KEY, SHAPE, GRID)[0],
                                  sample(inp, param.x0_from_eps(SDE, EPS), KEY, SHAPE, GRID)[0])
    assert inp.model_kind == "x0" and inp.grid_direction == -1


# -- traced hyper-parameters and times ------------------------------------------------------------


def test_traced_sde_hyper_parameters_poison_instead_of_passing():
    """VPSDE(beta_min=-1) raises eagerly; under jit/vmap it cannot, so the SDE's coefficients are NaN.
    Valid traced values give exactly the eager SDE."""
    x0 = jnp.ones((2, 2))
    with pytest.raises(ValueError, match=r"beta_min must be > 0.0, got -1"):
        VPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match=r"need beta_min < beta_max"):
        VPSDE(beta_min=5.0, beta_max=2.0)
    run = jax.jit(lambda b: VPSDE(beta_min=b).marginal(x0, 0.5))
    assert all(bool(jnp.all(jnp.isnan(a))) for a in run(-1.0))
    np.testing.assert_allclose(run(0.2)[0], VPSDE(beta_min=0.2).marginal(x0, 0.5)[0], rtol=1e-6)
    std = jax.vmap(lambda b: VPSDE(beta_min=b, beta_max=2.0).marginal(x0, 0.5)[1])(jnp.array([0.1, 5.0]))
    np.testing.assert_allclose(std[0], VPSDE(beta_min=0.1, beta_max=2.0).marginal(x0, 0.5)[1], rtol=1e-6)
    assert bool(jnp.isnan(std[1]))
    assert bool(jnp.isnan(jax.jit(lambda s: VESDE(sigma_min=s).marginal_coeffs(0.5)[1])(-0.01)))
    # and a sampler on such an SDE returns NaN, not samples
    out = jax.jit(lambda b: sample(ddim_rule(VPSDE(beta_min=b)), EPS, KEY, SHAPE, GRID)[0])(-1.0)
    assert bool(jnp.all(jnp.isnan(out)))


def test_traced_cld_hyper_parameters_poison():
    with pytest.raises(ValueError, match=r"m_inv must be > 0.0, got 0"):
        CLD(m_inv=0.0)
    run = jax.jit(lambda m: CLD(m_inv=m).marginal_cov(0.5))
    assert all(bool(jnp.isnan(a)) for a in run(0.0))
    np.testing.assert_allclose(jnp.stack(run(2.0)), jnp.stack(CLD(m_inv=2.0).marginal_cov(0.5)), rtol=1e-6)
    score = jax.jit(lambda b: CLD(beta=b).reverse_drift((jnp.ones(SHAPE), jnp.ones(SHAPE)), 0.5, jnp.ones(SHAPE)))
    assert bool(jnp.all(jnp.isnan(score(-4.0)[1])))


def test_traced_time_out_of_range_poisons():
    x0 = jnp.ones((2, 2))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T=1.0\]"):
        SDE.marginal(x0, -0.1)
    run = jax.jit(lambda t: SDE.marginal(x0, t))
    assert all(bool(jnp.all(jnp.isnan(a))) for a in run(-0.1))
    assert all(bool(jnp.all(jnp.isnan(a))) for a in run(1.5))
    np.testing.assert_allclose(run(0.3)[1], SDE.marginal(x0, 0.3)[1], rtol=1e-6)
    per_example = jax.vmap(lambda t: SDE.marginal(x0[:1], t)[1])(jnp.array([0.3, -0.1]))
    assert bool(jnp.isfinite(per_example[0]).all()) and bool(jnp.isnan(per_example[1]).all())
    # VE would silently extrapolate (sigma_t < sigma_min) without the check
    ve = VESDE()
    assert bool(jnp.all(jnp.isnan(jax.jit(lambda t: ve.marginal(x0, t)[1])(-0.1))))
    cld = CLD()
    with pytest.raises(ValueError, match=r"t must lie"):
        cld.marginal_cov(-0.1)
    for f in (lambda t: cld.marginal_cov(t), lambda t: (cld.ell(t),), lambda t: cld.cholesky(t),
              lambda t: cld.marginal_mean(x0, 0.0, t)):
        assert all(bool(jnp.all(jnp.isnan(a))) for a in jax.jit(f)(-0.1))


def test_traced_ddim_eta_outside_unit_interval_poisons():
    """eta = 5 raises eagerly (DDIM needs eta^2 (1 - r) <= 1); traced it makes the samples NaN instead of
    silently clamping the variance; a valid traced eta equals the eager rule."""
    with pytest.raises(ValueError, match=r"eta must be <= 1.0, got 5"):
        ddim_rule(SDE, 5.0)
    run = jax.jit(lambda e: sample(ddim_rule(SDE, e), EPS, KEY, SHAPE, GRID)[0])
    assert bool(jnp.all(jnp.isnan(run(5.0))))
    assert bool(jnp.all(jnp.isnan(run(-0.5))))
    np.testing.assert_allclose(run(0.5), sample(ddim_rule(SDE, 0.5), EPS, KEY, SHAPE, GRID)[0], rtol=1e-5,
                               atol=1e-5)
    pc = jax.jit(lambda s: sample(predictor_corrector_rule(SDE, s), SCORE, KEY, SHAPE, GRID)[0])
    assert bool(jnp.all(jnp.isnan(pc(-0.1))))
    with pytest.raises(ValueError, match=r"snr must be > 0.0"):
        predictor_corrector_rule(SDE, -0.1)


@pytest.mark.parametrize("build, bad", [
    (lambda v: __import__("diffjax").samplers.euler_ancestral_rule(eta=v), -1.0),
    (lambda v: __import__("diffjax").samplers.euler_ancestral_rule(s_noise=v), -1.0),
    (lambda v: __import__("diffjax").samplers.dpmpp_2m_sde_rule(eta=v), 1.5),
    (lambda v: edm_heun_rule(sigma_max=v), -80.0),
])
def test_traced_sigma_rule_hyper_parameters_poison(build, bad):
    """Traced hyper-parameters of the sigma-grid rules: invalid -> NaN samples (never a silently different
    sampler), valid -> the eager result; the eager invalid value raises."""
    den = param.model(EPS, "eps", SDE)
    grid = edm_sigma_grid(6)
    run = jax.jit(lambda v: sample(build(v), den, KEY, SHAPE, grid)[0])
    assert bool(jnp.all(jnp.isnan(run(bad))))
    good = 0.5 if bad != -80.0 else 80.0
    np.testing.assert_allclose(run(good), sample(build(good), den, KEY, SHAPE, grid)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        build(bad)
