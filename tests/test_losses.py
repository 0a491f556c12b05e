"""Tests for diffjax.losses: Vincent's identity for DSM/HSM, exact-minimiser checks, EDM posterior variance.

Monte Carlo checks use common random numbers (the same key for every model compared), so the
difference of two losses is computed per example; tolerances are ``K_SE`` standard errors of the
per-example differences.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import losses as L
from diffjax import param as P
from diffjax.analytic._mixture import GaussianMixture
from diffjax.sde._cld import CLD
from diffjax.sde._scalar import VESDE, VPSDE

K_SE = 4.0
N = 16384
MIX = GaussianMixture(jnp.array([0.5, 0.3, 0.2]), jnp.array([[-1.0, 0.5], [1.0, 0.0], [0.0, -1.5]]),
                      jnp.array([0.3, 0.5, 0.2]))


def _h(x, t):
    """Fixed smooth perturbation direction h(x, t); t scalar or (batch,)."""
    t = jnp.asarray(t)
    tb = t[:, None] if t.ndim else t
    return jnp.sin(1.7 * x[:, ::-1] + 0.5 * x + 2.0 * tb) + 0.5


def _mean_se(values):
    v = np.asarray(values, np.float64)
    return v.mean(), v.std(ddof=1) / math.sqrt(v.size)


def _parabola_minimiser(per):
    """Fit mean loss over deltas (common random numbers) to a parabola; return (delta*, SE, residual).

    ``per`` maps delta -> per-example losses. Per example the loss is exactly
    ``a_i + 2 b_i delta + c_i delta^2`` (model affine in delta), so ``delta* = -mean(b)/mean(c)``;
    its standard error is ``SE(b) / mean(c)`` (delta method).
    """
    deltas = np.array(sorted(per))
    means = np.array([per[d].mean() for d in deltas])
    p2, p1, p0 = np.polyfit(deltas, means, 2)
    d1 = deltas.max()
    b = (per[d1] - per[-d1]) / (4 * d1)
    c = (per[d1] + per[-d1] - 2 * per[0.0]) / (2 * d1**2)
    resid = np.max(np.abs(np.polyval([p2, p1, p0], deltas) - means)) / np.ptp(means)
    return -p1 / (2 * p2), b.std(ddof=1) / math.sqrt(b.size) / c.mean(), resid


DELTAS = jnp.array([1.0, -0.2, -0.1, 0.0, 0.1, 0.2])  # first: the Vincent check; rest: the parabola


def _check_identity_and_minimiser(per, esm, label):
    """per: (len(DELTAS), N) per-example losses of s* + delta h; esm: (N,) explicit error at delta = 1."""
    per = np.asarray(per, np.float64)
    i1, i0 = 0, 3
    m_diff, se_diff = _mean_se(per[i1] - per[i0] - np.asarray(esm, np.float64))
    m_esm = float(np.mean(esm))
    print(f"\n{label}: loss(s*+h) - loss(s*) - ESM = {m_diff:.4g} +- {se_diff:.3g} (ESM = {m_esm:.4g})")
    assert abs(m_diff) < K_SE * se_diff  # Vincent's identity
    assert m_esm > 10 * K_SE * se_diff  # ... resolved well below the size of the effect
    d_star, se, resid = _parabola_minimiser(dict(zip(np.asarray(DELTAS[1:]).tolist(), per[1:])))
    print(f"  minimiser delta* = {d_star:.4g} +- {se:.3g} (parabola residual {resid:.1e})")
    assert resid < 1e-3
    assert abs(d_star) < K_SE * se and se < 0.05


# --------------------------------------------------------------------------------------------
# DSM on scalar SDEs
# --------------------------------------------------------------------------------------------


def _exact_in(sde, parameterization):
    """The exact mixture model expressed in a parameterisation: (x, t) -> network output."""
    eps = MIX.eps_fn(sde)
    if parameterization == "eps":
        return eps
    if parameterization == "score":
        return MIX.score_fn(sde)
    if parameterization == "x0":
        return P.x0_from_eps(sde, eps)
    return P.v_from_eps(sde, eps)


def _to_score(sde, parameterization, fn):
    if parameterization == "eps":
        return P.score_from_eps(sde, fn)
    if parameterization == "score":
        return fn
    if parameterization == "x0":
        return P.score_from_eps(sde, P.eps_from_x0(sde, fn))
    return P.score_from_eps(sde, P.eps_from_v(sde, fn))


CASES = [  # (sde, parameterization, weighting, t_min)
    (VPSDE(), "score", "likelihood", 1e-2),
    (VPSDE(), "eps", "simple", 1e-3),
    (VPSDE(), "x0", "simple", 1e-2),
    (VPSDE(), "v", "simple", 1e-3),
    (VESDE(sigma_min=0.01, sigma_max=5.0), "eps", "likelihood", 1e-2),
    (VESDE(sigma_min=0.01, sigma_max=5.0), "score", "simple", 1e-3),
]
CASE_IDS = [f"{type(s).__name__}-{p}-{w}" for s, p, w, _ in CASES]


@pytest.mark.parametrize("sde,parameterization,weighting,t_min", CASES, ids=CASE_IDS)
def test_dsm_vincent_identity_and_exact_minimiser(sde, parameterization, weighting, t_min):
    """DSM(s* + delta h) - DSM(s*) = E[lambda ||delta h'||^2] (explicit score matching), thesis eq. 1.18.

    ``lambda(t)`` in score space: ``sigma_t^2`` for "simple" (eps-MSE) and ``g(t)^2`` for "likelihood".
    """
    loss = L.dsm_loss(sde, parameterization=parameterization, weighting=weighting, t_min=t_min)
    exact = _exact_in(sde, parameterization)
    apply_fn = lambda delta, x, t: exact(x, t) + delta * _h(x, t)  # noqa: E731
    key_data, key = jax.random.split(jax.random.PRNGKey(10))
    x0 = MIX.sample(key_data, N)

    @jax.jit
    def run():
        per, aux = jax.vmap(lambda d: loss(apply_fn, d, key, x0, reduce=False))(DELTAS)
        x_t, t = aux["x_t"][0], aux["t"][0]
        s_delta = _to_score(sde, parameterization, lambda x, tt: apply_fn(1.0, x, tt))(x_t, t)
        _, sigma = sde.marginal_coeffs(t)
        lam = sigma**2 if weighting == "simple" else sde.diffusion_sq(t)
        esm = lam * jnp.sum((s_delta - MIX.score_fn(sde)(x_t, t)) ** 2, axis=1)  # explicit SM error
        return per, esm, jnp.ptp(aux["t"], axis=0).max()

    per, esm, t_spread = run()
    assert float(t_spread) == 0.0  # common random numbers across deltas
    _check_identity_and_minimiser(per, esm, CASE_IDS[CASES.index((sde, parameterization, weighting, t_min))])


def test_dsm_reduce_jit_and_aux():
    sde = VPSDE()
    x0 = MIX.sample(jax.random.PRNGKey(0), 8)
    apply_fn = lambda params, x, t: params * x  # noqa: E731
    key = jax.random.PRNGKey(1)
    combos = [(p, w) for p in ("eps", "score", "x0", "v") for w in ("simple", "likelihood")]

    @jax.jit
    def run(params, key, x0):  # every combination traced once, reduced and unreduced
        out = {}
        for p, w in combos:
            loss = L.dsm_loss(sde, parameterization=p, weighting=w)
            reduced = loss(apply_fn, params, key, x0)[0] if p in ("eps", "v") else jnp.nan
            out[p, w] = (loss(apply_fn, params, key, x0, reduce=False), reduced)
        loss = L.dsm_loss(sde)
        grads = jax.vmap(lambda x, k: jax.grad(lambda q: loss(apply_fn, q, k, x[None])[0])(params))(
            x0, jax.random.split(key, x0.shape[0]))  # per-example gradients (DP-SGD style)
        return out, grads

    out, grads = run(0.5, key, x0)
    for (p, w), ((per, aux), tot) in out.items():
        assert per.shape == (8,) and tot.shape == ()
        if p in ("eps", "v"):
            np.testing.assert_allclose(tot, per.mean(), rtol=1e-5)
        np.testing.assert_allclose(per, aux["weight"] * aux["mse"], rtol=1e-6)
        assert aux["t"].shape == (8,) and aux["x_t"].shape == x0.shape
        assert np.all(aux["t"] >= 1e-5) and np.all(aux["t"] <= 1.0)
    # "simple" with eps parameterisation is exactly ||eps - eps_hat||^2.
    (per, aux), _ = out["eps", "simple"]
    np.testing.assert_allclose(per, jnp.sum((aux["eps"] - 0.5 * aux["x_t"]) ** 2, axis=1), rtol=1e-6)
    assert grads.shape == (8,) and np.all(np.isfinite(grads))


def test_bad_arguments_raise():
    sde = VPSDE()
    with pytest.raises(ValueError, match="parameterization.*'eps', 'score', 'x0', 'v'"):
        L.dsm_loss(sde, parameterization="noise")
    with pytest.raises(ValueError, match="weighting.*'simple', 'likelihood'"):
        L.dsm_loss(sde, weighting="quality")
    for bad in (0.0, -1e-3, 1.0, 2.0):
        with pytest.raises(ValueError, match="t_min"):
            L.dsm_loss(sde, t_min=bad)
    with pytest.raises(ValueError, match="t_min"):
        L.dsm_loss(VESDE(T=0.5), t_min=0.6)
    loss = L.dsm_loss(sde)
    apply_fn = lambda p, x, t: x  # noqa: E731
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, \*data\)"):
        loss(apply_fn, None, jax.random.PRNGKey(0), jnp.ones(4))
    with pytest.raises(ValueError, match="non-finite"):
        loss(apply_fn, None, jax.random.PRNGKey(0), jnp.array([[0.0, jnp.nan]]))
    with pytest.raises(ValueError, match="weighting.*'quality', 'likelihood'"):
        L.hsm_loss(CLD(), weighting="simple")
    with pytest.raises(ValueError, match="t_min"):
        L.hsm_loss(CLD(), t_min=0.0)
    with pytest.raises(ValueError, match="weighting"):
        L.cld_dsm_loss(CLD(), weighting="simple")
    with pytest.raises(ValueError, match="DenoiserConfig"):
        L.edm_loss("edm")
    with pytest.raises(ValueError, match="non-finite"):
        L.edm_loss(P.edm_config())(lambda p, x, c: x, None, jax.random.PRNGKey(0), jnp.array([[jnp.inf]]))


# --------------------------------------------------------------------------------------------
# HSM / DSM on CLD
# --------------------------------------------------------------------------------------------


def _hu(u, t):
    x, v = u
    return _h(x, t) * jnp.cos(v)


def _cld_lambda(cld, weighting, t):
    """lambda(t) of thesis §2.3.3.2: ell_t^-2 (quality) or Gamma beta (likelihood)."""
    return cld.ell(t, kernel="hsm") ** -2 if weighting == "quality" else cld.Gamma * cld.beta * jnp.ones_like(t)


CLD_CASES = [("hsm", "quality", 1e-3), ("hsm", "likelihood", 1e-2), ("dsm", "quality", 1e-3)]


@pytest.mark.parametrize("kind,weighting,t_min", CLD_CASES, ids=[f"{k}-{w}" for k, w, _ in CLD_CASES])
def test_cld_vincent_identity_and_exact_minimiser(kind, weighting, t_min):
    """HSM/DSM(s* + delta) - HSM/DSM(s*) = E[lambda ||s - s*||^2] (thesis eqs. 2.47-2.49, 2.67-2.69)."""
    from diffjax.analytic._cld import cld_score_v_fn

    cld = CLD()
    build = L.hsm_loss if kind == "hsm" else L.cld_dsm_loss
    loss = build(cld, weighting=weighting, t_min=t_min)
    score_star = cld_score_v_fn(MIX, cld)
    alpha_star = P.cld_alpha_prime_from_score(cld, score_star)
    apply_fn = lambda delta, u, t: alpha_star(u, t) + delta * _hu(u, t)  # noqa: E731
    key_data, key = jax.random.split(jax.random.PRNGKey(20))
    x0 = MIX.sample(key_data, N)

    @jax.jit
    def run():
        per, aux = jax.vmap(lambda d: loss(apply_fn, d, key, x0, reduce=False))(DELTAS)
        u, t = (aux["u_t"][0][0], aux["u_t"][1][0]), aux["t"][0]
        s = P.cld_mixed_score(cld, lambda uu, tt: apply_fn(1.0, uu, tt))(u, t)
        esm = _cld_lambda(cld, weighting, t) * jnp.sum((s - score_star(u, t)) ** 2, axis=1)
        return per, esm

    per, esm = run()
    _check_identity_and_minimiser(per, esm, f"CLD {kind}-{weighting}")


@pytest.mark.parametrize("weighting", ["quality", "likelihood"])
def test_hsm_minus_dsm_is_the_kernel_constant(weighting):
    """E[HSM] - E[DSM] = d E_t[lambda (ell_HSM^2 - ell_DSM^2)] for any model (thesis eqs. 2.69-2.70).

    (Eq. 2.71 prints the bracket as ``ell_DSM^2 - ell_HSM^2``; the derivation C4 - C3 gives this sign.)
    The same key gives the same t for both losses; the u_t differ, so the SE is of the per-t difference.
    """
    cld = CLD()
    apply_fn = lambda p, u, t: p * _hu(u, t)  # noqa: E731 — an arbitrary (non-optimal) model
    key_data, key = jax.random.split(jax.random.PRNGKey(21))
    x0 = MIX.sample(key_data, N)

    @jax.jit
    def run():
        lh, ah = L.hsm_loss(cld, weighting=weighting, t_min=1e-2)(apply_fn, 0.3, key, x0, reduce=False)
        ld, ad = L.cld_dsm_loss(cld, weighting=weighting, t_min=1e-2)(apply_fn, 0.3, key, x0, reduce=False)
        t = ah["t"]
        const = 2 * _cld_lambda(cld, weighting, t) * (cld.ell(t, "hsm") ** 2 - cld.ell(t, "dsm") ** 2)
        return lh, ld, const, ah["t"], ad["t"]

    lh, ld, const, th, td = run()
    np.testing.assert_array_equal(th, td)
    diff = np.asarray(lh, np.float64) - np.asarray(ld, np.float64) - np.asarray(const, np.float64)
    m, se = _mean_se(diff)
    mc, _ = _mean_se(const)
    print(f"\nHSM - DSM - d E[lambda (ell_H^2 - ell_D^2)] = {m:.4g} +- {se:.3g} (constant {mc:.4g}); "
          f"per-example loss var HSM {np.var(lh):.4g}, DSM {np.var(ld):.4g}")
    assert abs(m) < K_SE * se
    assert mc < -2 * K_SE * se  # the constant is resolved, with the derived (negative) sign


def test_cld_losses_reduce_and_jit():
    cld = CLD()
    x0 = MIX.sample(jax.random.PRNGKey(0), 8)
    apply_fn = lambda p, u, t: p * u[0]  # noqa: E731
    key = jax.random.PRNGKey(2)
    combos = [(build, w) for build in (L.hsm_loss, L.cld_dsm_loss) for w in ("quality", "likelihood")]

    @jax.jit
    def run(params, key, x0):
        return [(build(cld, weighting=w)(apply_fn, params, key, x0, reduce=False),
                 build(cld, weighting=w)(apply_fn, params, key, x0)[0] if w == "quality" else jnp.nan)
                for build, w in combos]

    out = run(0.5, key, x0)
    for ((per, aux), tot), (_, w) in zip(out, combos):
        assert per.shape == (8,) and tot.shape == ()
        if w == "quality":
            np.testing.assert_allclose(tot, per.mean(), rtol=1e-5)
        np.testing.assert_allclose(per, aux["weight"] * aux["mse"], rtol=1e-5)
        assert aux["u_t"][1].shape == x0.shape
    # quality-weighted HSM is exactly ||eps_v - alpha_theta||^2 (thesis eq. 2.59).
    per, aux = out[0][0]
    (x_t, v_t), t = aux["u_t"], aux["t"]
    alpha = v_t / (cld.ell(t)[:, None] * cld.kernel_cov(t)[2][:, None]) + 0.5 * x_t
    np.testing.assert_allclose(per, jnp.sum((aux["eps_v"] - alpha) ** 2, axis=1), rtol=1e-4)


# --------------------------------------------------------------------------------------------
# EDM-style configs (thesis Table 4.7)
# --------------------------------------------------------------------------------------------

CONFIGS = {"vp": P.vp_config(), "ve": P.ve_config(), "v_prediction": P.v_prediction_config(),
           "edm": P.edm_config()}


def _c_noise_inverse(name, c):
    return {"vp": lambda: jnp.sqrt(jnp.expm1(0.5 * 19.9 * (c / 999) ** 2 + 0.1 * (c / 999))),
            "ve": lambda: 2 * jnp.exp(c), "v_prediction": lambda: jnp.tan(0.5 * math.pi * c),
            "edm": lambda: jnp.exp(4 * c)}[name]()


def _posterior_variance(x, sigma):
    """tr Cov[x0 | x0 + sigma n = x] for MIX, in float64 numpy (independent of diffjax)."""
    x, sigma = np.asarray(x, np.float64), np.asarray(sigma, np.float64)[:, None]
    w, mu, s = (np.asarray(a, np.float64) for a in (MIX.weights, MIX.means, MIX.stds))
    d = x.shape[1]
    var = s[None] ** 2 + sigma**2                                            # (n, K)
    logr = np.log(w)[None] - 0.5 * np.sum((x[:, None] - mu[None]) ** 2, -1) / var - 0.5 * d * np.log(var)
    r = np.exp(logr - logr.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    gain = (s[None] ** 2 / var)[:, :, None]
    m = mu[None] + gain * (x[:, None] - mu[None])                            # (n, K, d)
    v = s[None] ** 2 * sigma**2 / var                                         # (n, K)
    mean = np.sum(r[:, :, None] * m, 1)
    return np.sum(r * (d * v + np.sum(m**2, -1)), 1) - np.sum(mean**2, 1)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_edm_loss_of_exact_denoiser_is_posterior_variance(name):
    """E[lambda ||D* - x0||^2 | x, sigma] = lambda tr Cov[x0 | x] (thesis eq. 1.27); D* is the minimiser."""
    cfg = CONFIGS[name]

    def F_exact(y, c):
        sigma = _c_noise_inverse(name, c)
        x = y / cfg.c_in(sigma)[:, None]
        return (MIX.denoiser(x, sigma) - cfg.c_skip(sigma)[:, None] * x) / cfg.c_out(sigma)[:, None]

    apply_fn = lambda delta, y, c: F_exact(y, c) + delta * _h(y, c)  # noqa: E731
    key_data, key = jax.random.split(jax.random.PRNGKey(30))
    x0 = MIX.sample(key_data, N)
    per, aux = jax.jit(jax.vmap(lambda d: L.edm_loss(cfg)(apply_fn, d, key, x0, reduce=False)))(DELTAS)
    per = np.asarray(per, np.float64)
    sigma, x, weight = aux["sigma"][3], aux["x"][3], np.asarray(aux["weight"][3], np.float64)
    pv = weight * _posterior_variance(x, sigma)
    m, se = _mean_se(per[3] - pv)
    print(f"\n{name}: E[loss(D*)] - E[lambda tr Cov(x0|x)] = {m:.4g} +- {se:.3g} (irreducible {pv.mean():.4g})")
    assert abs(m) < K_SE * se
    d_star, se_d, resid = _parabola_minimiser(dict(zip(np.asarray(DELTAS[1:]).tolist(), per[1:])))
    print(f"  minimiser delta* = {d_star:.4g} +- {se_d:.3g} (parabola residual {resid:.1e})")
    assert resid < 1e-3 and abs(d_star) < K_SE * se_d and se_d < 0.05
    assert per[4].mean() > per[3].mean()  # a perturbed F is worse


def test_edm_loss_reduce_jit_and_point_mass():
    cfg = P.edm_config()
    key = jax.random.PRNGKey(3)

    def F_zero(p, y, c):  # point mass at 0: D* = 0, i.e. F* = -c_skip x / c_out with x = y / c_in
        sigma = jnp.exp(4 * c)[:, None]
        return -cfg.c_skip(sigma) * y / (cfg.c_in(sigma) * cfg.c_out(sigma))

    G = lambda p, y, c: p * jnp.tanh(y)  # noqa: E731

    @jax.jit
    def run(key, x0):
        loss = L.edm_loss(cfg)
        return (loss(F_zero, None, key, jnp.zeros_like(x0), reduce=False),
                loss(G, 0.7, key, x0, reduce=False), loss(G, 0.7, key, x0)[0])

    (per0, aux0), (per, aux), tot = run(key, MIX.sample(jax.random.PRNGKey(4), 16))
    assert per0.shape == (16,) and aux0["sigma"].shape == (16,) and tot.shape == ()
    np.testing.assert_allclose(per0, 0.0, atol=1e-6)  # the exact denoiser of a point mass has zero loss
    np.testing.assert_allclose(tot, per.mean(), rtol=1e-5)
    np.testing.assert_allclose(per, aux["weight"] * aux["mse"], rtol=1e-5)
