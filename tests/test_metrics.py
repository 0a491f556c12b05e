"""Metrics: unbiased Gaussian-kernel MMD vs closed forms, the CDL bandwidth rule, sliced W2 vs the
Gaussian closed form, NLL under a known density, and the plot helper."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import metrics as M
from diffjax.analytic._mixture import GaussianMixture, nine_gaussians


def _gauss_kernel_mean(diff_mean, var, h, d):
    """E exp(-|Z|^2 / (2 h^2)) for Z ~ N(m, var I_d): (h^2/(h^2+var))^{d/2} exp(-|m|^2 / (2 (h^2+var)))."""
    return (h**2 / (h**2 + var)) ** (d / 2) * math.exp(-float(np.sum(np.square(diff_mean))) / (2 * (h**2 + var)))


def _mmd2_gaussians(m1, s1, m2, s2, h, d):
    return (
        _gauss_kernel_mean(np.zeros(d), 2 * s1**2, h, d)
        + _gauss_kernel_mean(np.zeros(d), 2 * s2**2, h, d)
        - 2 * _gauss_kernel_mean(np.asarray(m1) - np.asarray(m2), s1**2 + s2**2, h, d)
    )


def _np_mmd2_unbiased(x, y, h):
    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * h**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()


def test_mmd2_equals_direct_numpy_formula_with_chunking():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(53, 3)), rng.normal(size=(41, 3)) + 0.3
    ref = _np_mmd2_unbiased(x, y, 0.7)
    for chunk in (7, 256):  # 53 rows: a padded last chunk for 7, one block for 256
        got = M.mmd2(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), 0.7, chunk_size=chunk)
        np.testing.assert_allclose(float(got), ref, rtol=1e-4, atol=1e-6)
    multi = M.mmd2_multi(jnp.asarray(x), jnp.asarray(y), jnp.array([0.2, 0.7, 3.0]), chunk_size=10)
    np.testing.assert_allclose(multi, [_np_mmd2_unbiased(x, y, h) for h in (0.2, 0.7, 3.0)], rtol=1e-4, atol=1e-6)
    # image-shaped samples are flattened
    got_img = M.mmd2(jnp.asarray(x.reshape(53, 3, 1)), jnp.asarray(y.reshape(41, 3, 1)), 0.7)
    np.testing.assert_allclose(float(got_img), ref, rtol=1e-4, atol=1e-6)


def test_mmd2_unbiased_same_distribution():
    """E[MMD_u^2] = 0 when x, y ~ p: the mean over 64 independent replicates is within 4 SE of 0,
    and that test is sharp enough to reject the biased V-statistic (bias (1/m+1/n)(1 - E k))."""
    n, h, d, reps = 200, 1.0, 2, 64
    keys = jax.random.split(jax.random.PRNGKey(0), reps)

    @jax.jit
    def one(key):
        kx, ky = jax.random.split(key)
        return M.mmd2(jax.random.normal(kx, (n, d)), jax.random.normal(ky, (n, d)), h)

    vals = np.asarray(jax.lax.map(one, keys), np.float64)
    se = vals.std(ddof=1) / math.sqrt(reps)
    assert abs(vals.mean()) < 4 * se, (vals.mean(), se)
    biased_bias = (2 / n) * (1 - _gauss_kernel_mean(np.zeros(d), 2.0, h, d))
    assert 4 * se < biased_bias


@pytest.mark.parametrize("h", [0.5, 2.0])
def test_mmd2_two_gaussians_closed_form(h):
    d, n, reps = 2, 1000, 6
    m1, s1, m2, s2 = np.zeros(d), 1.0, np.array([0.5, -0.25]), 0.7
    expect = _mmd2_gaussians(m1, s1, m2, s2, h, d)

    @jax.jit
    def one(key):
        kx, ky = jax.random.split(key)
        return M.mmd2(s1 * jax.random.normal(kx, (n, d)), m2 + s2 * jax.random.normal(ky, (n, d)), h)

    vals = np.asarray(jax.lax.map(one, jax.random.split(jax.random.PRNGKey(1), reps)), np.float64)
    se = vals.std(ddof=1) / math.sqrt(reps)
    assert abs(vals.mean() - expect) < 4 * se + 1e-4, (vals.mean(), expect, se)
    assert expect > 10 * se  # the test distinguishes this from zero


def test_mmd2_2000_by_2000_runs_and_matches_closed_form():
    n, h = 2000, 1.0
    kx, ky = jax.random.split(jax.random.PRNGKey(2))
    x = jax.random.normal(kx, (n, 2))
    y = 0.5 + jax.random.normal(ky, (n, 2))
    got = float(jax.jit(M.mmd2)(x, y, h))
    expect = _mmd2_gaussians(np.zeros(2), 1.0, np.full(2, 0.5), 1.0, h, 2)
    # the SD of MMD_u^2 at n=2000 under this alternative is ~5e-3 (20 replicates, measured offline): 4 SD
    assert abs(got - expect) < 0.02, (got, expect)


def test_cdl_bandwidth_rule_and_mmd_convenience():
    """The rule returns argmax_h MMD_u^2(x, z; h) for z ~ N(0, I) drawn from ``key`` (default PRNGKey(0))."""
    x = jax.jit(nine_gaussians().sample, static_argnums=1)(jax.random.PRNGKey(3), 500)
    grid = np.asarray(M.DEFAULT_BANDWIDTHS)
    rule = jax.jit(M.mmd_bandwidth_cdl)  # jit-able as a whole, key=None -> PRNGKey(0)
    h = rule(x)
    z = jax.random.normal(jax.random.PRNGKey(0), x.shape)
    scores = np.asarray(M.mmd2_multi(x, z, grid))
    assert float(h) == pytest.approx(float(grid[int(np.argmax(scores))]))
    # the maximiser is interior to the grid for this data and shrinks with the data's scale
    assert grid[0] < float(h) < grid[-1]
    assert float(rule(0.1 * x)) < float(h)
    # mmd(x, y) = sqrt(MMD_u^2) at the rule's bandwidth for x; explicit bandwidths pass through
    y = x + 0.1
    np.testing.assert_allclose(M.mmd(x, y), math.sqrt(float(M.mmd2(x, y, h))), rtol=1e-5)
    np.testing.assert_allclose(M.mmd(x, y, 0.8), math.sqrt(float(M.mmd2(x, y, 0.8))), rtol=1e-5)
    assert float(M.mmd(x, x[::-1], 1.0)) == 0.0  # MMD_u^2 < 0 here (same sample): clamped at zero


def test_mmd_shape_errors():
    x = jnp.zeros((10, 2))
    with pytest.raises(ValueError, match="same data shape"):
        M.mmd2(x, jnp.zeros((10, 3)), 1.0)
    with pytest.raises(ValueError, match="shape"):
        M.mmd2(jnp.zeros(10), x, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        M.mmd2(jnp.zeros((1, 2)), x, 1.0)
    with pytest.raises(ValueError, match="scalar"):
        M.mmd2(x, x, jnp.array([1.0, 2.0]))


@pytest.mark.parametrize("d, shift, s2", [(2, 1.0, 1.0), (5, 2.0, 0.5), (1, -0.7, 2.0)])
def test_sliced_wasserstein_gaussians_closed_form(d, shift, s2):
    """x ~ N(0, I_d), y ~ N(m, s2^2 I_d): SW_2^2 = |m|^2/d + (1 - s2)^2."""
    n = 4000
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(d), 3)
    m = jnp.full((d,), shift)  # |m|^2 = d shift^2
    x = jax.random.normal(kx, (n, d))
    y = m + s2 * jax.random.normal(ky, (n, d))
    got = float(jax.jit(M.sliced_wasserstein, static_argnums=3)(kp, x, y, 256))
    expect = math.sqrt(float(jnp.sum(m**2)) / d + (1 - s2) ** 2)
    assert abs(got - expect) < 0.05 * expect + 0.02, (got, expect)


def test_sliced_wasserstein_basic_properties_and_errors():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (100, 3))
    assert float(M.sliced_wasserstein(key, x, x[::-1], 16)) == pytest.approx(0.0, abs=1e-6)
    # a pure shift along a direction: every projection moves by theta . m; in 1-D SW_2 = |m| exactly
    x1 = jax.random.normal(key, (100, 1))
    assert float(M.sliced_wasserstein(key, x1, x1 + 0.3, 4)) == pytest.approx(0.3, rel=1e-5)
    with pytest.raises(ValueError, match="number of samples"):
        M.sliced_wasserstein(key, x, x[:50], 8)
    with pytest.raises(ValueError, match="same data shape"):
        M.sliced_wasserstein(key, x, jnp.zeros((100, 2)), 8)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="n_projections"):
            M.sliced_wasserstein(key, x, x, bad)


def test_nll_under_known_density():
    """-E log N(x; 0, I_d) over its own samples = entropy d/2 log(2 pi e); SE from the sample std."""
    d, n = 2, 20000
    gm = GaussianMixture(jnp.ones(1), jnp.zeros((1, d)), jnp.ones(1))
    s = jax.random.normal(jax.random.PRNGKey(0), (n, d))
    lp = jax.jit(gm.log_prob)(s)
    got = float(jax.jit(M.nll_under, static_argnums=0)(gm.log_prob, s))
    np.testing.assert_allclose(got, -float(jnp.mean(lp)), rtol=1e-5)
    se = float(jnp.std(lp)) / math.sqrt(n)
    assert abs(got - d / 2 * math.log(2 * math.pi * math.e)) < 4 * se
    with pytest.raises(ValueError, match="shape"):
        M.nll_under(lambda x: jnp.sum(x), s)


def test_plot_samples_writes_png(tmp_path):
    key = jax.random.PRNGKey(0)
    data = jax.random.normal(key, (200, 2)) * 0.5
    path = tmp_path / "samples.png"
    out = M.plot_samples(data, {"model": data + 0.05, "prior": 2 * data}, path, title="t")
    assert out == path
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 1000
    with pytest.raises(ValueError, match="shape"):
        M.plot_samples(data, {"bad": jnp.zeros((5, 1))}, tmp_path / "bad.png")


# ---- the CDL Table 1 statistic and bandwidth validation ----

def _np_cdl_stat_double_loop(x, y, v):
    """Unbiased MMD^2 with k(a, b) = exp(-|a - b|^2 / (2 v)) / sqrt(2 pi v), by explicit loops (float64)."""
    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * v)) / math.sqrt(2 * math.pi * v)

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)


@pytest.mark.parametrize("d, v", [(2, 0.03), (2, 0.5), (3, 0.2)])
def test_cdl_statistic_equals_double_loop(d, v):
    """statistic="cdl" is the unbiased MMD^2 (no root, no clamp) with the normalised kernel of variance
    v; the normaliser is sqrt(2 pi v) in every dimension (checked in 3-D too)."""
    rng = np.random.default_rng(d)
    x = 0.3 * rng.normal(size=(31, d))
    y = 0.3 * rng.normal(size=(23, d)) + 0.1
    ref = _np_cdl_stat_double_loop(x, y, v)
    got = float(M.mmd(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), v, statistic="cdl", chunk_size=8))
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6)
    if v == 0.03:  # the default variance is CDL's 3e-2
        assert M.CDL_MMD_VARIANCE == 0.03
        assert float(M.mmd(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), statistic="cdl",
                           chunk_size=8)) == got


def test_cdl_statistic_is_unbiased_not_clamped():
    x = jax.random.normal(jax.random.PRNGKey(4), (60, 2))
    got = float(M.mmd(x, x[::-1], 0.5, statistic="cdl"))  # same sample: MMD_u^2 = -2 E k / (m - 1) < 0
    xn = np.asarray(x, np.float64)
    np.testing.assert_allclose(got, _np_cdl_stat_double_loop(xn, xn[::-1], 0.5), rtol=1e-4)
    assert got < 0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_mmd_rejects_bad_bandwidth(bad):
    x, y = jnp.zeros((5, 2)), jnp.ones((6, 2))
    for statistic in ("mmd", "cdl"):
        with pytest.raises(ValueError, match="bandwidth"):
            M.mmd(x, y, bad, statistic=statistic)
    with pytest.raises(ValueError, match="bandwidth"):
        M.mmd2(x, y, jnp.asarray(bad))
    with pytest.raises(ValueError, match="bandwidths"):
        M.mmd2_multi(x, y, [0.5, bad])


def test_mmd_traced_bandwidth_and_statistic_option():
    x, y = jax.random.normal(jax.random.PRNGKey(0), (40, 2)), jax.random.normal(jax.random.PRNGKey(1), (30, 2))
    # a traced bandwidth is not value-checked and gives the eager result
    np.testing.assert_allclose(jax.jit(lambda h: M.mmd2(x, y, h))(0.7), M.mmd2(x, y, 0.7), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(lambda v: M.mmd(x, y, v, statistic="cdl"))(0.2),
                               M.mmd(x, y, 0.2, statistic="cdl"), rtol=1e-5)
    with pytest.raises(ValueError, match="statistic"):
        M.mmd(x, y, 1.0, statistic="mmd2")


# ---- Frechet distance, FID-style and KID-style feature metrics ----

def _random_spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T + (0.0 if rank else 0.1) * np.eye(d)


def _scipy_frechet(mu1, c1, mu2, c2):
    from scipy.linalg import sqrtm

    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2))))


def test_frechet_distance_matches_scipy_sqrtm_form():
    rng = np.random.default_rng(0)
    for d in (1, 3, 8):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        c1, c2 = _random_spd(rng, d), _random_spd(rng, d)
        got = M.frechet_distance(mu1, c1, mu2, c2)
        assert isinstance(got, float)
        np.testing.assert_allclose(got, _scipy_frechet(mu1, c1, mu2, c2), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(M.frechet_distance(mu2, c2, mu1, c1), got, rtol=1e-9)  # symmetric
        assert M.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("singular", [False, True])
def test_frechet_distance_commuting_closed_form(singular):
    """C1 = Q diag(a) Q^T, C2 = Q diag(b) Q^T: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2, also for
    rank-deficient covariances (zeros in a and b), where sqrtm(C1 C2) is ill-conditioned."""
    rng = np.random.default_rng(1)
    d = 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    if singular:
        a[:2] = 0.0
        b[1:4] = 0.0
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expect = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    got = M.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    np.testing.assert_allclose(got, expect, rtol=1e-7, atol=1e-7)
    # diagonal covariances (Q = I)
    got_diag = M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    np.testing.assert_allclose(got_diag, expect, rtol=1e-9, atol=1e-9)


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="shape"):
        M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shape"):
        M.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        M.frechet_distance(np.zeros(2), np.diag([1.0, np.nan]), np.zeros(2), np.eye(2))


def test_frechet_feature_distance_equals_direct_numpy():
    """Batched features (last batch padded) give the FD of the one-shot features with ddof=1 covariances."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(37, 4, 4, 1)).astype(np.float32)
    y = (0.8 * rng.normal(size=(29, 4, 4, 1)) + 0.2).astype(np.float32)
    w = rng.normal(size=(16, 5))
    seen = []

    def feature_fn(batch):
        seen.append(batch.shape[0])
        return np.tanh(np.asarray(batch, np.float64).reshape(batch.shape[0], -1) @ w)

    got = M.frechet_feature_distance(feature_fn, x, y, batch_size=8)
    assert set(seen) == {8}  # every call sees exactly batch_size rows
    fx = np.tanh(x.astype(np.float64).reshape(37, -1) @ w)
    fy = np.tanh(y.astype(np.float64).reshape(29, -1) @ w)
    ref = _scipy_frechet(fx.mean(0), np.cov(fx, rowvar=False), fy.mean(0), np.cov(fy, rowvar=False))
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    # a jitted JAX feature function works too (float32 features)
    jfn = jax.jit(lambda b: jnp.tanh(b.reshape(b.shape[0], -1) @ jnp.asarray(w, jnp.float32)))
    np.testing.assert_allclose(M.frechet_feature_distance(jfn, x, y, batch_size=16), ref, rtol=1e-4)
    with pytest.raises(ValueError, match="feature_fn"):
        M.frechet_feature_distance(lambda b: np.zeros(len(b)), x, y)
    with pytest.raises(ValueError, match="batch_size"):
        M.frechet_feature_distance(feature_fn, x, y, batch_size=0)


def _np_kid(x, y):
    def k(a, b):
        return (a @ b.T / a.shape[1] + 1.0) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()


def test_kid_equals_direct_numpy_with_chunking():
    rng = np.random.default_rng(3)
    fx, fy = rng.normal(size=(45, 7)), 0.5 + rng.normal(size=(38, 7))
    ref = _np_kid(fx, fy)
    for chunk in (4, 45, 1024):  # 45 rows: a short last chunk for 4
        np.testing.assert_allclose(M.kid(fx, fy, chunk_size=chunk), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="feature dimension"):
        M.kid(fx, fy[:, :3])
    with pytest.raises(ValueError, match="features_x"):
        M.kid(fx[:1], fy)


def test_kid_unbiased_gaussian_closed_form():
    """1-D features, k(a, b) = (a b + 1)^3 = phi(a).phi(b) with phi(a) = (a^3, sqrt3 a^2, sqrt3 a, 1):
    MMD^2 = (E x^3 - E y^3)^2 + 3 (E x^2 - E y^2)^2 + 3 (E x - E y)^2. For x ~ N(0, 1), y ~ N(m, 1)
    that is (m^3 + 3m)^2 + 3 m^4 + 3 m^2; the mean of 20 replicates is within 4 SE of it."""
    rng = np.random.default_rng(4)
    m, n, reps = 0.5, 1000, 20
    expect = (m**3 + 3 * m) ** 2 + 3 * m**4 + 3 * m**2
    vals = np.array([M.kid(rng.normal(size=(n, 1)), m + rng.normal(size=(n, 1))) for _ in range(reps)])
    se = vals.std(ddof=1) / math.sqrt(reps)
    assert abs(vals.mean() - expect) < 4 * se, (vals.mean(), expect, se)
    assert expect > 10 * se
