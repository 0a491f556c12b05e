"""Contrastive diffusion loss (CDL eq. 7, Alg. 1): signs, DSM combination, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import GaussianMixture
from diffjax.losses import cdl_loss, cdl_objective, dsm_cdl_loss, dsm_loss, itd_loss, with_cdl
from diffjax.sde._scalar import VPSDE

GM = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0, 0.0], [1.0, 0.5]]), jnp.array([0.1, 0.2]))


def exact_eps_log_snr(gm):
    def eps(x, a):
        a = jnp.broadcast_to(jnp.asarray(a, x.dtype), (x.shape[0],))
        alpha, sigma = jnp.sqrt(jax.nn.sigmoid(a)), jnp.sqrt(jax.nn.sigmoid(-a))
        return -sigma[:, None] * gm.diffused_score(x, alpha, sigma)

    return eps


def gm_sample(gm, seed, n):
    """Exact mixture samples drawn with numpy (no eager JAX ops in the tests)."""
    rng = np.random.default_rng(seed)
    k = rng.choice(len(gm.weights), size=n, p=np.asarray(gm.weights))
    x = np.asarray(gm.means)[k] + np.asarray(gm.stds)[k][:, None] * rng.standard_normal((n, gm.dim))
    return jnp.asarray(x, jnp.float32)


def tiny_mlp(seed, dtype=jnp.float32, width=8):
    rng = np.random.default_rng(seed)
    params = {"w1": rng.standard_normal((4, width)) / 2, "b1": np.zeros(width),
              "w2": rng.standard_normal((width, width)) / math.sqrt(width), "b2": np.zeros(width),
              "w3": rng.standard_normal((width, 2)) / math.sqrt(width), "b3": np.zeros(2)}
    params = {k: jnp.asarray(v, dtype) for k, v in params.items()}

    def apply(p, x, t):
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        h = jnp.concatenate([x, jnp.sin(3 * t)[:, None], jnp.cos(3 * t)[:, None]], axis=1)
        h = jnp.tanh(h @ p["w1"] + p["b1"])
        h = jnp.tanh(h @ p["w2"] + p["b2"])
        return h @ p["w3"] + p["b3"]

    return params, apply


def test_cdl_sign_convention_matches_exact_bayes_classifier():
    # With the exact denoiser, softplus(y * LLR_hat) must be the cross-entropy of the Bayes classifier
    # p(x) vs p_zeta(x) (eqs. 6-7): y=+1 clean, y=-1 noised. A flipped sign puts the loss above log 2.
    x0 = gm_sample(GM, 0, 64)
    per, aux = jax.jit(lambda k: cdl_objective(exact_eps_log_snr(GM), x0, k, n_samples=2048,
                                               zeta_range=(1.0, 4.0)))(jax.random.PRNGKey(1))
    x, zeta, y = aux["x"], aux["zeta"], aux["y"]
    assert 10 < int(jnp.sum(y > 0)) < 54
    np.testing.assert_allclose(x[y > 0], x0[y > 0])                         # y=+1: clean data
    exact_llr = GM.diffused_log_prob(x, jnp.sqrt(jax.nn.sigmoid(zeta)), jnp.sqrt(jax.nn.sigmoid(-zeta))) \
        - GM.log_prob(x)
    exact_ce = jax.nn.softplus(y * exact_llr)
    assert float(jnp.mean(jnp.abs(per - exact_ce))) < 0.1
    assert abs(float(jnp.mean(per)) - float(jnp.mean(exact_ce))) < 0.05
    # Informative classifier: well below chance (log 2); the flipped sign would be well above it.
    assert float(jnp.mean(per)) < math.log(2.0) - 0.15
    assert float(jnp.mean(jax.nn.softplus(-y * exact_llr))) > math.log(2.0) + 0.3


def test_zero_weight_is_plain_dsm_and_weight_adds_cdl():
    sde = VPSDE()
    params, apply = tiny_mlp(0)
    x0 = gm_sample(GM, 1, 16)
    key = jax.random.PRNGKey(2)
    w = 0.7
    dsm = dsm_loss(sde, parameterization="eps")
    zero = dsm_cdl_loss(sde, cdl_weight=0.0, n_samples=4)
    weighted = dsm_cdl_loss(sde, cdl_weight=w, n_samples=4, n_examples=8)

    @jax.jit
    def run(p):
        vg = lambda loss: jax.value_and_grad(lambda q: loss(apply, q, key, x0), has_aux=True)(p)
        return vg(dsm), vg(zero), vg(weighted), weighted(apply, p, key, x0, reduce=False)

    ((ld, _), gd), ((l0, _), g0), ((lw, aux), gw), (per, per_aux) = run(params)
    np.testing.assert_allclose(l0, ld, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g0, gd)
    np.testing.assert_allclose(aux["dsm_loss"], ld, rtol=1e-6)                # DSM part uses the same key
    np.testing.assert_allclose(lw, ld + w * aux["cdl_loss"], rtol=1e-6)
    assert 0.0 < float(aux["cdl_loss"]) < 5.0
    diff = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree_util.tree_leaves(gw), jax.tree_util.tree_leaves(gd)))
    assert diff > 1e-10                                                         # CDL contributes gradient
    # reduce=False: (batch,) losses whose mean is the reduced loss; CDL ran on the first 8 examples.
    assert per.shape == (16,) and per_aux["cdl"].shape == (8,)
    np.testing.assert_allclose(jnp.mean(per), lw, rtol=1e-5)


def test_gradient_matches_finite_differences_float64():
    with jax.enable_x64(True):
        sde = VPSDE()
        params, apply = tiny_mlp(0, jnp.float64)
        x0 = gm_sample(GM, 1, 6).astype(jnp.float64)
        loss = dsm_cdl_loss(sde, cdl_weight=2.0, n_samples=8, zeta_range=(2.0, 8.0))
        key = jax.random.PRNGKey(4)
        rng = np.random.default_rng(5)
        direction = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()}
        h = 1e-5

        @jax.jit
        def check(p):
            f = lambda q: loss(apply, q, key, x0)[0]
            shifted = jax.tree_util.tree_map(lambda a, d: jnp.stack([a + h * d, a - h * d]), p, direction)
            fp, fm = jax.vmap(f)(shifted)
            g = jax.grad(f)(p)
            return (fp - fm) / (2 * h), sum(jnp.vdot(g[k], direction[k]) for k in g)

        fd, gd = check(params)
        np.testing.assert_allclose(gd, fd, rtol=1e-6)


def test_validation():
    sde = VPSDE()
    with pytest.raises(ValueError, match="cdl_weight"):
        dsm_cdl_loss(sde, cdl_weight=-1.0)
    with pytest.raises(ValueError, match="parameterization"):
        dsm_cdl_loss(sde, cdl_weight=1.0, parameterization="x0")
    with pytest.raises(ValueError, match="zeta_range"):
        dsm_cdl_loss(sde, cdl_weight=1.0, zeta_range=(15.0, 6.0))
    with pytest.raises(ValueError, match="n_examples"):
        cdl_loss(sde, n_examples=0)
    params, apply = tiny_mlp(0)
    with pytest.raises(ValueError, match="n_examples"):
        cdl_loss(sde, n_examples=8)(apply, params, jax.random.PRNGKey(0), jnp.zeros((4, 2)))


def test_old_module_path():
    from diffjax import cdl, losses

    assert (cdl.cdl_objective, cdl.cdl_loss, cdl.dsm_cdl_loss) == (cdl_objective, cdl_loss, dsm_cdl_loss)
    assert not hasattr(cdl, "dsm_plus_cdl_loss") and losses.dsm_cdl_loss is dsm_cdl_loss


def test_per_example_scale_is_the_authors_weighting():
    # The authors add CDL on 2 examples of a batch of B, each divided by B: per_example_scale = 1/B with
    # n_examples = 2 is weight = 2/B on the subset mean -- same loss, same gradient -- on any base.
    params, apply = tiny_mlp(3)
    x0 = gm_sample(GM, 6, 32)
    key = jax.random.PRNGKey(7)
    base = itd_loss(VPSDE())
    opts = dict(n_examples=2, n_samples=8, loc=0.0, scale=3.0, clip=3.0)
    authors = with_cdl(base, VPSDE(), per_example_scale=1 / 32, **opts)
    plain = with_cdl(base, VPSDE(), weight=2 / 32, **opts)
    zero = with_cdl(base, VPSDE(), weight=0.0, **opts)

    @jax.jit
    def run(p):
        vg = lambda loss: jax.value_and_grad(lambda q: loss(apply, q, key, x0), has_aux=True)(p)
        return vg(authors), vg(plain), vg(zero), vg(base)

    ((la, aux_a), ga), ((lp, _), gp), ((l0, _), g0), ((lb, _), gb) = run(params)
    np.testing.assert_allclose(la, lp, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), ga, gp)
    # authors' form spelled out: base + sum over the 2 CDL examples of softplus / B
    assert aux_a["cdl"].shape == (2,)
    np.testing.assert_allclose(la, aux_a["base_loss"] + jnp.sum(aux_a["cdl"]) / 32, rtol=1e-6)
    np.testing.assert_allclose(aux_a["cdl_weight"], 2 / 32, rtol=1e-6)
    # weight 0: exactly the base loss (same key) and its gradient
    np.testing.assert_allclose(l0, lb, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g0, gb)


def test_traced_weight_sweeps_under_vmap():
    # A traced weight (vmapped over a sweep) gives the same losses as concrete weights.
    params, apply = tiny_mlp(4)
    x0 = gm_sample(GM, 8, 16)
    key = jax.random.PRNGKey(9)
    weights = [0.0, 0.1, 1.0]
    build = lambda w: dsm_cdl_loss(VPSDE(), cdl_weight=w, n_samples=4, n_examples=4)
    swept = jax.jit(jax.vmap(lambda w: build(w)(apply, params, key, x0)[0]))(jnp.array(weights))
    single = jax.jit(lambda: [build(w)(apply, params, key, x0)[0] for w in weights])()
    np.testing.assert_allclose(swept, jnp.stack(single), rtol=1e-6)
    assert float(swept[-1]) > float(swept[0])


def test_log_snr_network_matches_time_indexed_network():
    # cdl_loss(sde=None) on a log-SNR model equals cdl_loss(VPSDE) on the same density's time-indexed eps.
    sde = VPSDE()
    x0 = gm_sample(GM, 10, 16)
    key = jax.random.PRNGKey(11)
    eps_a, eps_t = exact_eps_log_snr(GM), GM.eps_fn(sde)

    @jax.jit
    def both():
        a = cdl_loss(None, n_samples=64)(lambda p, x, a: eps_a(x, a), None, key, x0, reduce=False)[0]
        b = cdl_loss(sde, n_samples=64)(lambda p, x, t: eps_t(x, t), None, key, x0, reduce=False)[0]
        return a, b

    a, b = both()
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_weighting_validation():
    base = itd_loss()
    with pytest.raises(ValueError, match="exactly one"):
        with_cdl(base)
    with pytest.raises(ValueError, match="exactly one"):
        with_cdl(base, weight=0.1, per_example_scale=0.01)
    with pytest.raises(ValueError, match="per_example_scale"):
        with_cdl(base, per_example_scale=-1.0)
    with pytest.raises(ValueError, match="weight"):
        with_cdl(base, weight=float("nan"))
    with pytest.raises(TypeError, match="scalar SDE"):
        cdl_loss(object())
