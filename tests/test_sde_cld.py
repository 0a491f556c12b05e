"""Tests for diffjax.sde.CLD: float32 kernel accuracy vs mpmath and the moment ODE, Monte Carlo, equilibrium.

References are independent of the implementation: (a) the thesis closed form, eqs. (2.33)-(2.36),
evaluated with mpmath at 60 digits; (b) the moment ODE, eq. (2.30), integrated in float64 with
scipy's DOP853 (rtol 1e-13).
"""

import functools

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from diffjax.sde._cld import CLD

BETA, M_INV, GAMMA = 4.0, 4.0, 0.04
M, GAM_ = 1.0 / M_INV, 2.0 / np.sqrt(M_INV)
TS_KEY = (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0)
TS_DENSE = tuple(np.unique(np.concatenate([TS_KEY, np.geomspace(1e-5, 1.0, 97)])).tolist())
# (sxx0, svv0): DSM kernel, HSM kernel, and a mixture component with std 0.04.
INITS = {"dsm": (0.0, 0.0), "hsm": (0.0, GAMMA * M), "mix": (0.04**2, GAMMA * M)}
TOL = 1e-3  # the required float32 relative accuracy; the measured errors are ~1e-6


def _derived(sxx, sxv, svv):
    det = sxx * svv - sxv**2
    return {
        "xx": sxx, "xv": sxv, "vv": svv, "det": det,
        "ell": (sxx / det) ** 0.5,
        "Lxx": sxx**0.5, "Lxv": sxv / sxx**0.5, "Lvv": (det / sxx) ** 0.5,
    }


@functools.lru_cache(maxsize=None)
def _mpmath_ref(init):
    """Thesis eqs. (2.33)-(2.36) at 60 digits, ``B(t) = beta t``."""
    mp.mp.dps = 60
    a, b = (mp.mpf(v) for v in INITS[init])
    G, beta = mp.mpf(GAM_), mp.mpf(BETA)
    out = {k: [] for k in ("xx", "xv", "vv", "det", "ell", "Lxx", "Lxv", "Lvv")}
    for t in TS_DENSE:
        B = beta * mp.mpf(t)
        D = mp.e ** (-4 * B / G)
        xx = a + mp.e ** (4 * B / G) - 1 + 4 * B / G * (a - 1) + 4 * B**2 / G**2 * (a - 2) + 16 * B**2 / G**4 * b
        xv = -B * a + 4 * B / G**2 * b - 2 * B**2 / G * (a - 2) - 8 * B**2 / G**3 * b
        vv = G**2 / 4 * (mp.e ** (4 * B / G) - 1) + B * G + b * (1 + 4 * B**2 / G**2 - 4 * B / G) + B**2 * (a - 2)
        for k, v in _derived(D * xx, D * xv, D * vv).items():
            out[k].append(float(v))
    return {k: np.array(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def _ode_ref(init):
    """Moment ODE (2.30) ``dS/dt = F S + S F^T + G G^T`` in float64."""
    a, b = INITS[init]
    F = BETA * np.array([[0.0, 1.0 / M], [-1.0, -GAM_ / M]])
    GG = np.array([[0.0, 0.0], [0.0, 2.0 * GAM_ * BETA]])

    def rhs(_, s):
        S = np.array([[s[0], s[1]], [s[1], s[2]]])
        dS = F @ S + S @ F.T + GG
        return [dS[0, 0], dS[0, 1], dS[1, 1]]

    sol = solve_ivp(rhs, (0.0, 1.0), [a, 0.0, b], method="DOP853", t_eval=TS_DENSE, rtol=1e-13, atol=1e-40)
    assert sol.success
    return _derived(*sol.y)


def _ours(init):
    cld = CLD(BETA, M_INV, GAMMA)
    t = jnp.asarray(TS_DENSE, jnp.float32)
    a, b = INITS[init]
    sxx, sxv, svv = cld.marginal_cov(t, a, b)
    out = {"xx": sxx, "xv": sxv, "vv": svv, "det": cld.marginal_det(t, a, b)}
    if init in ("hsm", "dsm"):
        out["ell"] = cld.ell(t, init)
        out["Lxx"], out["Lxv"], out["Lvv"] = cld.cholesky(t, init)
    for v in out.values():
        assert v.dtype == jnp.float32 and v.shape == t.shape
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _max_rel(ours, ref):
    return {k: float(np.max(np.abs(ours[k] / ref[k] - 1.0))) for k in ours}


@pytest.mark.parametrize("init", sorted(INITS))
def test_float32_kernel_matches_mpmath_closed_form(init):
    errs = _max_rel(_ours(init), _mpmath_ref(init))
    print(init, "max rel err vs mpmath", errs)
    assert max(errs.values()) < TOL, errs


@pytest.mark.parametrize("init", sorted(INITS))
def test_float32_kernel_matches_moment_ode(init):
    errs = _max_rel(_ours(init), _ode_ref(init))
    print(init, "max rel err vs ODE", errs)
    assert max(errs.values()) < TOL, errs


def test_references_agree_with_each_other():
    # guards the references themselves (thesis formula transcription vs ODE)
    for init in INITS:
        errs = _max_rel(_mpmath_ref(init), _ode_ref(init))
        assert max(errs.values()) < 1e-8, (init, errs)


def test_naive_float32_closed_form_fails_where_ours_does_not():
    """The thesis formulas (2.33)-(2.36) evaluated literally in float32 cancel catastrophically at small t."""
    assert set(TS_KEY) <= set(TS_DENSE)
    t = 1e-3
    B, G = np.float32(BETA * t), np.float32(GAM_)
    e = np.exp(np.float32(4) * B / G)
    naive_xx = np.exp(-np.float32(4) * B / G) * (e - 1 + 4 * B / G * (-1) + 4 * B**2 / G**2 * (-2))  # DSM
    ref = _mpmath_ref("dsm")["xx"][TS_DENSE.index(t)]
    ours = float(CLD().kernel_cov(t, "dsm")[0])
    assert abs(naive_xx / ref - 1) > 1e-2
    assert abs(ours / ref - 1) < 1e-5


def test_t_zero_and_jit_grad_finite():
    cld = CLD()
    # HSM at t = 0: Sigma = diag(0, gamma M); ell_0 = 1/sqrt(gamma M) (thesis App. 2.4.2.4)
    np.testing.assert_allclose(cld.kernel_cov(0.0, "hsm"), (0.0, 0.0, GAMMA * M), atol=0)
    np.testing.assert_allclose(cld.ell(0.0, "hsm"), 1 / np.sqrt(GAMMA * M), rtol=1e-6)
    np.testing.assert_allclose(cld.cholesky(0.0, "hsm"), (0.0, 0.0, np.sqrt(GAMMA * M)), rtol=1e-6)
    assert np.isinf(cld.ell(0.0, "dsm"))
    t = jnp.asarray(TS_DENSE + (0.0,), jnp.float32)

    @jax.jit
    def values_and_grads(s):
        out = []
        for k in ("hsm", "dsm"):
            out += [cld.ell(s[:-1], k), *cld.cholesky(s[:-1], k)]  # t > 0: all finite
            out.append(jax.vmap(jax.grad(lambda r, k=k: jnp.sum(jnp.stack(cld.cholesky(r, k)[:2]))))(s))
        out.append(jax.vmap(jax.grad(lambda r: cld.ell(r, "hsm") + cld.cholesky(r, "hsm")[2]))(s))
        return out

    for val in values_and_grads(t):
        assert np.all(np.isfinite(val))
    # continuity across the series/closed-form switch (y = 4 beta t / Gamma = 1)
    ts = jnp.float32(GAM_ / (4 * BETA)) * jnp.array([1 - 1e-6, 1 + 1e-6], jnp.float32)
    for init, (a, b) in INITS.items():
        d = cld.marginal_det(ts, a, b)
        assert abs(float(d[1] / d[0]) - 1) < 1e-5, init


def test_mean_and_drift_match_thesis_matrices():
    cld = CLD(beta=2.0, m_inv=9.0)
    G, Mm = 2.0 / 3.0, 1.0 / 9.0
    assert np.isclose(cld.Gamma, G) and np.isclose(cld.M, Mm) and np.isclose(G**2, 4 * Mm)
    F = 2.0 * np.array([[0.0, 4 / G**2], [-1.0, -4 / G]])  # thesis eq. (2.28)
    x = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])
    dx, dv = cld.drift(x, 0.3)
    np.testing.assert_allclose(np.stack([dx[0], dv[0]]), F, rtol=1e-6)
    # mean = expm(F t) u0 (eq. 2.29); scipy's expm as the reference
    from scipy.linalg import expm

    for t in (1e-4, 0.2, 1.0):
        Phi = expm(F * t)
        mx, mv = cld.marginal_mean(jnp.array([[1.0], [0.0]]), jnp.array([[0.0], [1.0]]), t)
        np.testing.assert_allclose(np.array([[mx[0, 0], mx[1, 0]], [mv[0, 0], mv[1, 0]]]), Phi, rtol=2e-5, atol=1e-7)
    z = jnp.ones((3, 2))
    zx, zv = cld.diffusion_apply(jnp.array([0.1, 0.2, 0.3]), z)
    np.testing.assert_array_equal(zx, 0.0)
    np.testing.assert_allclose(zv, np.sqrt(2 * G * 2.0), rtol=1e-6)


def test_monte_carlo_forward_sde_matches_kernel():
    """Euler-Maruyama (eq. 2.8) in float32, 10k paths x 2 independent dims, dt = 2.5e-4; 5 standard errors.

    The deterministic EM bias (computed from the EM moment recursion) is <= 0.3 standard errors here.
    """
    cld = CLD()
    n, n_steps, dt = 10000, 4000, 2.5e-4
    x0 = jnp.broadcast_to(jnp.array([0.5, -1.0], jnp.float32), (n, 2))
    kv, kw = jax.random.split(jax.random.PRNGKey(0))
    v0 = jnp.sqrt(GAMMA * M) * jax.random.normal(kv, x0.shape)
    seg = 400  # record after segments 1, 5, 10 -> t = 0.1, 0.5, 1.0

    @jax.jit
    def advance(u, i0, key):
        def step(u, ik):
            i, k = ik
            dx, dv = cld.drift(u, i * dt)
            zx, zv = cld.diffusion_apply(i * dt, jax.random.normal(k, x0.shape))
            return (u[0] + dx * dt + np.sqrt(dt) * zx, u[1] + dv * dt + np.sqrt(dt) * zv), None

        return jax.lax.scan(step, u, (i0 + jnp.arange(seg), jax.random.split(key, seg)))[0]

    u, xs, vs = (x0, v0), [], []
    for s_, k in enumerate(jax.random.split(kw, n_steps // seg)):
        u = advance(u, s_ * seg, k)
        if s_ + 1 in (1, 5, 10):
            xs.append(u[0])
            vs.append(u[1])
    record = {400: 0.1, 2000: 0.5, 4000: 1.0}
    for j, t in enumerate(record.values()):
        mx, mv = cld.marginal_mean(x0[:1], 0.0, t)
        sxx, sxv, svv = (float(c) for c in cld.kernel_cov(t, "hsm"))
        x, v = np.asarray(xs[j], np.float64), np.asarray(vs[j], np.float64)
        se_mx, se_mv = np.sqrt(sxx / n), np.sqrt(svv / n)
        assert np.all(np.abs(x.mean(0) - mx[0]) < 5 * se_mx), (t, x.mean(0), mx)
        assert np.all(np.abs(v.mean(0) - mv[0]) < 5 * se_mv), (t, v.mean(0), mv)
        dx, dv = x - x.mean(0), v - v.mean(0)
        m = 2 * n  # both dims pooled (independent)
        checks = [
            (np.mean(dx**2), sxx, np.sqrt(2 / m) * sxx),
            (np.mean(dv**2), svv, np.sqrt(2 / m) * svv),
            (np.mean(dx * dv), sxv, np.sqrt((sxx * svv + sxv**2) / m)),
        ]
        for est, ref, se in checks:
            assert abs(est - ref) < 5 * se, (t, est, ref, se)


def test_equilibrium_and_stationarity():
    cld = CLD(T=10.0)
    for kernel in ("hsm", "dsm"):
        np.testing.assert_allclose(cld.kernel_cov(10.0, kernel), (1.0, 0.0, M), atol=1e-6)
    mx, mv = cld.marginal_mean(jnp.ones((1, 3)), 1.0, 10.0)
    np.testing.assert_allclose(np.concatenate([mx, mv]), 0.0, atol=1e-6)
    t = jnp.linspace(0.0, 10.0, 101)
    sxx, sxv, svv = cld.marginal_cov(t, 1.0, M)  # started in equilibrium, stays there
    np.testing.assert_allclose(sxx, 1.0, rtol=1e-6)
    np.testing.assert_allclose(sxv, 0.0, atol=1e-6)
    np.testing.assert_allclose(svv, M, rtol=1e-6)
    np.testing.assert_allclose(cld.marginal_det(t, 1.0, M), M, rtol=1e-6)
    # prior: N(0, I) x N(0, M I)
    x, v = cld.prior_sample(jax.random.PRNGKey(1), (4, 3))
    ref = (-0.5 * np.sum(np.asarray(x) ** 2, 1) - 0.5 * np.sum(np.asarray(v) ** 2, 1) / M
           - 3 * np.log(2 * np.pi) - 1.5 * np.log(M))
    np.testing.assert_allclose(cld.prior_logp((x, v)), ref, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["hsm", "dsm"])
def test_perturb_statistics(kernel):
    """``perturb`` draws from the kernel; with DSM the v0 draw makes it match the HSM kernel (marginalised)."""
    cld = CLD()
    n, t = 40000, jnp.full((40000,), 0.05)
    x0 = jnp.full((n, 1), 0.7)
    (x, v), (ex, ev) = cld.perturb(jax.random.PRNGKey(2), x0, t, kernel)
    assert x.shape == v.shape == ex.shape == ev.shape == (n, 1) and x.dtype == jnp.float32
    mx, mv = cld.marginal_mean(x0[:1], 0.0, 0.05)
    sxx, sxv, svv = (float(c) for c in cld.kernel_cov(0.05, "hsm"))
    x, v = np.asarray(x[:, 0], np.float64), np.asarray(v[:, 0], np.float64)
    assert abs(x.mean() - float(mx[0, 0])) < 5 * np.sqrt(sxx / n)
    assert abs(v.mean() - float(mv[0, 0])) < 5 * np.sqrt(svv / n)
    assert abs(np.var(x) - sxx) < 5 * np.sqrt(2 / n) * sxx
    assert abs(np.var(v) - svv) < 5 * np.sqrt(2 / n) * svv
    assert abs(np.cov(x, v)[0, 1] - sxv) < 5 * np.sqrt((sxx * svv + sxv**2) / n)
    if kernel == "hsm":  # exact reparametrisation u = mu + L eps
        lxx, lxv, lvv = cld.cholesky(0.05, "hsm")
        np.testing.assert_allclose(x, mx[0, 0] + lxx * ex[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v, mv[0, 0] + lxv * ex[:, 0] + lvv * ev[:, 0], rtol=1e-5, atol=1e-6)


def test_cholesky_reconstructs_covariance():
    cld = CLD()
    t = jnp.asarray(TS_DENSE, jnp.float32)
    for kernel in ("hsm", "dsm"):
        lxx, lxv, lvv = (np.asarray(c, np.float64) for c in cld.cholesky(t, kernel))
        sxx, sxv, svv = (np.asarray(c, np.float64) for c in cld.kernel_cov(t, kernel))
        np.testing.assert_allclose(lxx**2, sxx, rtol=1e-5)
        np.testing.assert_allclose(lxx * lxv, sxv, rtol=1e-5)
        np.testing.assert_allclose(lxv**2 + lvv**2, svv, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(cld.ell(t, kernel)) * lvv, 1.0, rtol=1e-6)


@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_drift_transports_the_gaussian_marginal(probability_flow):
    """For Gaussian ``p_t = N(0, S_t)`` and the linear field ``A u`` of ``reverse_drift`` with the exact score,
    ``d S/dt = A S + S A^T - c' G G^T`` must equal the forward moment ODE (2.30) (``c' = 1`` SDE, ``0`` ODE)."""
    cld = CLD()
    F = BETA * np.array([[0.0, 1.0 / M], [-1.0, -GAM_ / M]])
    GG = np.diag([0.0, 2.0 * GAM_ * BETA])
    for t in (0.01, 0.3, 0.9):
        S = np.array(cld.marginal_cov(t, 0.3, GAMMA * M), np.float64)
        S = np.array([[S[0], S[1]], [S[1], S[2]]])
        P = np.linalg.inv(S)
        cols = []
        for e in (np.array([1.0, 0.0]), np.array([0.0, 1.0])):
            u = (jnp.array([[e[0]]], jnp.float32), jnp.array([[e[1]]], jnp.float32))
            score_v = jnp.array([[-(P @ e)[1]]], jnp.float32)
            dx, dv = cld.reverse_drift(u, t, score_v, probability_flow=probability_flow)
            cols.append([float(dx[0, 0]), float(dv[0, 0])])
        A = np.array(cols).T
        lhs = A @ S + S @ A.T - (0.0 if probability_flow else 1.0) * GG
        np.testing.assert_allclose(lhs, F @ S + S @ F.T + GG, rtol=1e-4, atol=1e-4)


def test_mixed_score_prior_term():
    cld = CLD()
    v = jnp.array([[0.3, -0.2], [1.0, 2.0]])
    t = jnp.array([1e-5, 0.4])
    svv = np.array([_mpmath_ref("hsm")["vv"][TS_DENSE.index(1e-5)], cld.kernel_cov(0.4)[2]])
    np.testing.assert_allclose(cld.mixed_score_prior_term(v, t), -np.asarray(v) / svv[:, None], rtol=1e-5)
    np.testing.assert_allclose(cld.mixed_score_prior_term(v, 0.0), -np.asarray(v) / (GAMMA * M), rtol=1e-6)


def test_time_shapes_and_pytree():
    cld = CLD()
    x0 = jnp.ones((3, 2, 2))
    mx, _ = cld.marginal_mean(x0, 0.0, jnp.array([0.1, 0.2, 0.3]))
    mx1, _ = cld.marginal_mean(x0[1:2], 0.0, 0.2)
    np.testing.assert_allclose(mx[1:2], mx1, rtol=1e-6)
    leaves, tree = jax.tree_util.tree_flatten(cld)
    assert len(leaves) == 4 and jax.tree_util.tree_unflatten(tree, leaves) == cld
    # traced hyper-parameters work (no validation on tracers)
    ell = jax.jit(lambda c, t: c.ell(t))(cld, 0.3)
    np.testing.assert_allclose(ell, cld.ell(0.3), rtol=1e-6)
    g = jax.grad(lambda b: CLD(beta=b).kernel_cov(0.3)[0])(4.0)
    assert np.isfinite(g)


def test_bad_inputs_raise():
    for kw in ({"beta": 0.0}, {"beta": -1.0}, {"m_inv": 0.0}, {"gamma": 0.0}, {"gamma": -0.1},
               {"gamma": float("nan")}, {"T": 0.0}, {"beta": float("inf")}, {"m_inv": jnp.ones(2)}):
        name = next(iter(kw))
        with pytest.raises(ValueError, match=name):
            CLD(**kw)
    cld = CLD()
    with pytest.raises(ValueError, match="kernel"):
        cld.ell(0.1, "vp")
    with pytest.raises(ValueError, match="kernel"):
        cld.perturb(jax.random.PRNGKey(0), jnp.ones((2, 2)), 0.1, kernel="nope")
    with pytest.raises(ValueError, match="non-finite"):
        cld.perturb(jax.random.PRNGKey(0), jnp.array([[1.0, jnp.nan]]), 0.1)
    with pytest.raises(ValueError, match="x0"):
        cld.perturb(jax.random.PRNGKey(0), jnp.float32(1.0), 0.1)
    with pytest.raises(ValueError, match="batch"):
        cld.perturb(jax.random.PRNGKey(0), jnp.ones((3, 2)), jnp.ones(4) * 0.1)
    with pytest.raises(ValueError, match="t must lie"):
        cld.marginal_cov(1.5)
    with pytest.raises(ValueError, match="t must lie"):
        cld.perturb(jax.random.PRNGKey(0), jnp.ones((3, 2)), -0.1)
    with pytest.raises(ValueError, match="sxx0"):
        cld.marginal_cov(0.1, -1.0, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        cld.drift((jnp.ones((2, 2)), jnp.ones((2, 3))), 0.1)
    with pytest.raises(ValueError, match="tuple"):
        cld.prior_logp(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="score_v"):
        cld.reverse_drift((jnp.ones((2, 2)), jnp.ones((2, 2))), 0.1, jnp.ones((2, 3)))
