"""Executor-level properties of the rules: jit/vmap, no recompiles, honest NFE, float32 robustness,
guidance, the one-call API, and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import GaussianMixture, nine_gaussians
from diffjax.samplers import api
from diffjax.samplers.edm_rules import edm_euler_rule, edm_heun_rule
from diffjax.samplers.guidance import classifier_free_guidance
from diffjax.samplers.ode_rules import ddim_rule, probability_flow_euler_rule, probability_flow_heun_rule
from diffjax.samplers.sde_rules import ddpm_rule, euler_maruyama_rule, predictor_corrector_rule
from diffjax.samplers.sequential import sample
from diffjax.schedules import edm_sigma_grid, uniform_grid
from diffjax.sde import VESDE, VPSDE, SubVPSDE

SHAPE = (16, 2)


def _time_rules(sde):
    """(rule, model kind) for every rule on the time axis."""
    return {
        "euler_maruyama": (euler_maruyama_rule(sde), "score"),
        "pc": (predictor_corrector_rule(sde, n_corrector=2), "score"),
        "ddpm": (ddpm_rule(sde), "eps"),
        "ddim": (ddim_rule(sde), "eps"),
        "ddim_stochastic": (ddim_rule(sde, eta=0.7), "eps"),
        "pf_euler": (probability_flow_euler_rule(sde), "score"),
        "pf_heun": (probability_flow_heun_rule(sde), "score"),
    }


def _model(gm, sde, kind):
    return gm.score_fn(sde) if kind == "score" else gm.eps_fn(sde)


# -- float32 robustness ---------------------------------------------------------------------------------


STEP_COUNTS = (3, 5, 10, 100)


def _stacked_grids(make):
    """The grids for every step count, padded with their last time to one shape (padding steps are
    zero-length no-ops), so one compile per rule covers all step counts (vmapped)."""
    grids = [make(n) for n in STEP_COUNTS]
    length = max(g.shape[0] for g in grids)
    return jnp.stack([jnp.concatenate([g, jnp.full((length - g.shape[0],), g[-1])]) for g in grids])


# every rule on VP; the SDE-specific coefficient paths of the scalar rules on sub-VP and VE as well
NAN_CASES = [(VPSDE(), name) for name in _time_rules(VPSDE())] + [
    (sde, name) for sde in (SubVPSDE(), VESDE()) for name in ("ddpm", "ddim_stochastic", "pf_heun")]


@pytest.mark.parametrize("sde,name", NAN_CASES, ids=[f"{type(s).__name__}-{n}" for s, n in NAN_CASES])
def test_time_rules_nan_free_float32_down_to_1e5(sde, name):
    gm = nine_gaussians()  # std 0.04: sharp modes, large scores near t = 0
    rule, kind = _time_rules(sde)[name]
    grids = _stacked_grids(lambda n: uniform_grid(n, 1e-5))
    keys = jax.random.split(jax.random.PRNGKey(0), len(STEP_COUNTS))
    x = jax.jit(jax.vmap(lambda key, grid: sample(rule, _model(gm, sde, kind), key, SHAPE, grid)[0]))(keys, grids)
    assert x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x))), [bool(jnp.all(jnp.isfinite(xi))) for xi in x]


def test_edm_rules_nan_free_float32_down_to_1e5():
    gm = nine_gaussians()
    # churn only below sigma = 50: the first steps are the deterministic Heun steps
    rules = {"euler": edm_euler_rule(), "heun_churn": edm_heun_rule(s_churn=30.0, s_min=0.0, s_max=50.0, n_steps=100)}
    grids = _stacked_grids(lambda n: edm_sigma_grid(n, 1e-5, 80.0, append_zero=False))
    keys = jax.random.split(jax.random.PRNGKey(0), len(STEP_COUNTS))
    for name, rule in rules.items():
        x = jax.jit(jax.vmap(lambda key, grid: sample(rule, gm.denoiser, key, SHAPE, grid)[0]))(keys, grids)
        assert bool(jnp.all(jnp.isfinite(x))), name
    # a grid that (against the convention) ends at sigma = 0 still gives finite samples
    x, _ = sample(edm_heun_rule(), lambda x, s: gm.denoiser(x, jnp.maximum(s, 1e-6)), jax.random.PRNGKey(0), SHAPE,
                  edm_sigma_grid(5))
    assert bool(jnp.all(jnp.isfinite(x)))


# -- honest NFE ------------------------------------------------------------------------------------------


def _counting(fn, counter):
    def counted(x, t):
        jax.debug.callback(lambda: counter.__setitem__(0, counter[0] + 1))
        return fn(x, t)

    return counted


def test_nfe_matches_model_calls():
    sde, gm = VPSDE(), nine_gaussians(0.1)
    grid = uniform_grid(7, 1e-3)
    rules = _time_rules(sde)
    cases = [(rules[name][0], _model(gm, sde, rules[name][1])) for name in ("ddim", "pc", "pf_heun")]
    cases += [(edm_euler_rule(), gm.denoiser), (edm_heun_rule(s_churn=3.0, n_steps=8), gm.denoiser)]
    for rule, model in cases:
        counter = [0]
        g = grid if rule.nfe_final == 0 else edm_sigma_grid(8, append_zero=False)
        x, info = jax.jit(lambda key: sample(rule, _counting(model, counter), key, SHAPE, g))(jax.random.PRNGKey(0))
        jax.block_until_ready(x)
        assert info["nfe"] == counter[0], (rule, info["nfe"], counter[0])
    # EDM Heun over N noise levels: 2N - 1 evaluations (Karras et al.)
    _, info = api.edm_heun(gm.denoiser, key=jax.random.PRNGKey(0), shape=SHAPE, n_steps=18)
    assert info["nfe"] == 35


# -- jit / vmap / recompilation --------------------------------------------------------------------------


def test_jit_does_not_recompile_for_new_params_or_key():
    sde = VPSDE()
    traces = [0]

    @jax.jit
    def run(mixture, key):
        traces[0] += 1
        return api.ddim(mixture.eps_fn(sde), sde, key=key, shape=SHAPE, n_steps=5, eta=0.3)

    a, _ = run(nine_gaussians(0.1), jax.random.PRNGKey(0))
    b, _ = run(nine_gaussians(0.2), jax.random.PRNGKey(1))
    assert traces[0] == 1
    assert not np.allclose(a, b)


def test_vmap_over_keys_equals_separate_runs():
    sde, gm = VPSDE(), nine_gaussians(0.1)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    rule = euler_maruyama_rule(sde)
    grid = uniform_grid(5, 1e-3)
    run = jax.jit(lambda k: sample(rule, gm.score_fn(sde), k, SHAPE, grid)[0])
    batched = jax.vmap(run)(keys)
    assert batched.shape == (3,) + SHAPE
    for i in range(3):
        np.testing.assert_allclose(batched[i], run(keys[i]), rtol=1e-5, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def test_trajectory_and_x_init():
    sde, gm = VPSDE(), nine_gaussians(0.1)
    x_T = jnp.ones(SHAPE)
    run = jax.jit(lambda key: sample(ddim_rule(sde), gm.eps_fn(sde), key, SHAPE, uniform_grid(4, 1e-3),
                                     x_init=x_T, return_trajectory=True))
    x, info = run(jax.random.PRNGKey(0))
    assert info["trajectory"].shape == (4,) + SHAPE
    np.testing.assert_allclose(info["trajectory"][-1], x)
    # deterministic rule + fixed x_init: the key is irrelevant
    np.testing.assert_allclose(x, run(jax.random.PRNGKey(1))[0])


# -- classifier-free guidance -------------------------------------------------------------------------------


def test_classifier_free_guidance():
    sde = VPSDE()
    cond = GaussianMixture(jnp.array([1.0]), jnp.array([[1.0, 1.0]]), jnp.array([0.2])).eps_fn(sde)
    uncond = nine_gaussians(0.1).eps_fn(sde)
    x = jax.random.normal(jax.random.PRNGKey(0), SHAPE)
    np.testing.assert_allclose(classifier_free_guidance(cond, uncond, 0.0)(x, 0.3), cond(x, 0.3), rtol=1e-6)
    np.testing.assert_allclose(classifier_free_guidance(cond, uncond, -1.0)(x, 0.3), uncond(x, 0.3), rtol=1e-6)
    w = 2.5
    np.testing.assert_allclose(classifier_free_guidance(cond, uncond, w)(x, 0.3),
                               (1 + w) * cond(x, 0.3) - w * uncond(x, 0.3), rtol=1e-5, atol=1e-6)

    traces = [0]

    @jax.jit
    def run(w, key):
        traces[0] += 1
        return api.ddim(classifier_free_guidance(cond, uncond, w), sde, key=key, shape=SHAPE, n_steps=4)[0]

    a = run(jnp.float32(0.0), jax.random.PRNGKey(0))
    b = run(jnp.float32(3.0), jax.random.PRNGKey(0))
    assert traces[0] == 1
    assert not np.allclose(a, b)
    np.testing.assert_allclose(a, api.ddim(cond, sde, key=jax.random.PRNGKey(0), shape=SHAPE, n_steps=4)[0],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="w"):
        classifier_free_guidance(cond, uncond, float("nan"))
    with pytest.raises(ValueError, match="w"):
        classifier_free_guidance(cond, uncond, jnp.ones(2))


# -- the one-call API --------------------------------------------------------------------------------------


def test_api_shapes_and_nfe():
    sde, gm = VPSDE(), nine_gaussians(0.1)
    key, score, eps = jax.random.PRNGKey(0), gm.score_fn(sde), gm.eps_fn(sde)
    cases = {
        "ddim": (api.ddim(eps, sde, key=key, shape=SHAPE, n_steps=5, grid="quadratic"), 5),
        "ddpm": (api.ddpm(eps, sde, key=key, shape=SHAPE, n_steps=5), 5),
        "em": (api.euler_maruyama(score, sde, key=key, shape=SHAPE, n_steps=5), 5),
        "pc": (api.pc(score, sde, key=key, shape=SHAPE, n_steps=5, n_corrector=2), 15),
        "pf_euler": (api.probability_flow(score, sde, key=key, shape=SHAPE, n_steps=5, method="euler"), 5),
        "pf_heun": (api.probability_flow(score, sde, key=key, shape=SHAPE, n_steps=5, method="heun"), 10),
        "edm_euler": (api.edm_euler(gm.denoiser, key=key, shape=SHAPE, n_steps=5), 5),
        "edm_heun": (api.edm_heun(gm.denoiser, key=key, shape=SHAPE, n_steps=5, s_churn=1.0), 9),
    }
    for name, ((x, info), nfe) in cases.items():
        assert x.shape == SHAPE and bool(jnp.all(jnp.isfinite(x))), name
        assert info["nfe"] == nfe, (name, info["nfe"])


# -- validation ---------------------------------------------------------------------------------------------


def test_invalid_hyper_parameters_raise():
    sde = VPSDE()
    for eta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            ddim_rule(sde, eta)
    for snr in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="snr"):
            predictor_corrector_rule(sde, snr=snr)
    for n in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n_corrector"):
            predictor_corrector_rule(sde, n_corrector=n)
    with pytest.raises(ValueError, match="s_churn"):
        edm_heun_rule(s_churn=-1.0)
    with pytest.raises(ValueError, match="n_steps"):
        edm_heun_rule(s_churn=1.0)
    with pytest.raises(ValueError, match="s_min"):
        edm_heun_rule(s_min=2.0, s_max=1.0)
    with pytest.raises(ValueError, match="s_noise"):
        edm_euler_rule(s_noise=-1.0)
    with pytest.raises(ValueError, match="sigma_max"):
        edm_heun_rule(sigma_max=0.0)
    with pytest.raises(TypeError, match="sde"):
        ddim_rule(object())
    with pytest.raises(TypeError, match="scalar SDE"):
        ddpm_rule(_NotScalar())


class _NotScalar:
    T = 1.0

    def reverse_drift(self, *a, **k): ...

    def diffusion_apply(self, *a): ...

    def prior_sample(self, *a): ...


def test_bad_grids_and_api_arguments_raise():
    sde, gm = VPSDE(), nine_gaussians(0.1)
    eps, key = gm.eps_fn(sde), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="grid"):
        sample(ddim_rule(sde), eps, key, SHAPE, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="grid"):
        sample(ddim_rule(sde), eps, key, SHAPE, jnp.ones((1,)))
    with pytest.raises(ValueError, match="grid"):
        api.ddim(eps, sde, key=key, shape=SHAPE, n_steps=5, grid="cosine")
    with pytest.raises(ValueError, match="method"):
        api.probability_flow(gm.score_fn(sde), sde, key=key, shape=SHAPE, n_steps=5, method="rk4")
    with pytest.raises(ValueError, match="n_steps"):
        api.probability_flow(gm.score_fn(sde), sde, key=key, shape=SHAPE, method="euler")
    with pytest.raises(ValueError, match="n_steps"):
        api.probability_flow(gm.score_fn(sde), sde, key=key, shape=SHAPE, n_steps=5, method="adaptive")
    with pytest.raises(ValueError, match="n_steps"):
        api.edm_heun(gm.denoiser, key=key, shape=SHAPE, n_steps=1)
    with pytest.raises(ValueError):
        api.ddim(eps, sde, key=key, shape=SHAPE, n_steps=0)
    # a model output of the wrong shape fails at trace time
    with pytest.raises((ValueError, TypeError)):
        sample(ddim_rule(sde), lambda x, t: jnp.zeros((3, 3)), key, SHAPE, uniform_grid(3))

