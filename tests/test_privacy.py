"""DP-SGD with noise multiplicity (thesis eqs. 4.7, 4.10-4.11), Poisson batches (Alg. 5), DP training."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from diffjax import train
from diffjax.losses import edm_loss
from diffjax.nn import ScoreMLP, init_params, make_apply
from diffjax.param import edm_config
from diffjax.privacy import (PrivacyBudget, clipped_grad_sum, make_dp_train_step, per_example_loss_fn,
                             poisson_batch, poisson_capacity, poisson_indices, private_grad, train_dp)

CAP = 16
MODULE = ScoreMLP(width=16, depth=2, time_dim=8)
APPLY = make_apply(MODULE)
PARAMS = init_params(MODULE, jax.random.PRNGKey(0), (CAP, 2))
LOSS = edm_loss(edm_config())
DATA = jax.random.normal(jax.random.PRNGKey(1), (CAP, 2)) * 1.5
KEY = jax.random.PRNGKey(2)


def _leaves(t):
    return jax.tree_util.tree_leaves(t)


def _norm(t):
    return float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in _leaves(t))))


def _diff(a, b):
    return jax.tree_util.tree_map(lambda x, y: x - y, a, b)


_SUMS = {}


def _clipped(method, clip, K=1):
    k = (method, clip, K)
    if k not in _SUMS:
        _SUMS[k] = jax.jit(lambda p, key, x, m: clipped_grad_sum(LOSS, APPLY, p, key, x, m, clip=clip,
                                                                   multiplicity=K, method=method))
    return _SUMS[k]


@pytest.mark.parametrize("K", [1, 3])
def test_matches_explicit_per_example_loop(K):
    """Both methods equal sum_i clip_C(grad l~_i) computed one example at a time (eqs. 4.7, 4.10)."""
    clip = 0.7
    mask = jnp.arange(CAP) < 11
    f = per_example_loss_fn(LOSS, APPLY, K)
    ref = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
    grad_f = jax.jit(jax.grad(f))
    for i in range(11):
        g = grad_f(PARAMS, jax.random.fold_in(KEY, i), DATA[i])
        c = min(1.0, clip / _norm(g))
        ref = jax.tree_util.tree_map(lambda r, x: r + c * x, ref, g)
    for method in ("vmap", "ghost"):
        s, aux = _clipped(method, clip, K)(PARAMS, KEY, DATA, mask)
        assert _norm(_diff(s, ref)) <= 1e-5 * _norm(ref), method
        assert np.all(np.asarray(aux["loss"])[11:] == 0) and np.all(np.asarray(aux["scale"])[11:] == 0)


@settings(max_examples=20, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=CAP, max_size=CAP), j=st.integers(0, CAP - 1),
       clip=st.sampled_from([0.05, 1.0]))
def test_neighbouring_batches_sensitivity(bits, j, clip):
    """Adding/removing one example moves the pre-noise clipped sum by <= C (thesis Theorem 4)."""
    m = np.array(bits)
    m_with, m_without = m.copy(), m.copy()
    m_with[j], m_without[j] = True, False
    f = _clipped("auto", clip)
    s1, aux = f(PARAMS, KEY, DATA, jnp.asarray(m_with))
    s0, _ = f(PARAMS, KEY, DATA, jnp.asarray(m_without))
    d = _norm(_diff(s1, s0))
    assert d <= clip * (1 + 1e-5)
    # and it is exactly the removed example's clipped gradient
    expected = min(float(aux["grad_norm"][j]), clip)
    assert d == pytest.approx(expected, rel=1e-4)


@settings(max_examples=15, deadline=None)
@given(n_real=st.integers(0, CAP), seed=st.integers(0, 2**16))
def test_padded_rows_change_nothing(n_real, seed):
    mask = jnp.arange(CAP) < n_real
    junk = jax.random.normal(jax.random.PRNGKey(seed), DATA.shape) * 100.0
    x_junk = jnp.where(mask[:, None], DATA, junk)
    f = _clipped("auto", 1.0)
    a, _ = f(PARAMS, KEY, DATA, mask)
    b, _ = f(PARAMS, KEY, x_junk, mask)
    for u, v in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))  # bitwise
    # a larger capacity (more padded rows) gives the same sum
    x_big = jnp.concatenate([x_junk, junk[:5]])
    c, _ = f(PARAMS, KEY, x_big, jnp.concatenate([mask, jnp.zeros(5, bool)]))
    for u, v in zip(_leaves(a), _leaves(c)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-7)


def test_noise_multiplicity_variance_is_one_over_k():
    """Theorem 1: Var[l~_i] of the K-draw objective (eq. 4.7) is Var/K.

    2048 draws on each of 8 examples: the variance estimate of a (heavy-ish tailed) loss has a
    relative standard error of ~5-7 % per example, ~3 % after averaging over examples, ~4 % for
    the ratio; tolerance 20 % (about 5 standard errors).
    """
    keys = jax.random.split(jax.random.PRNGKey(7), 2048)
    var = {}
    for K in (1, 4, 16):
        f = per_example_loss_fn(LOSS, APPLY, K)
        vals = jax.jit(jax.vmap(jax.vmap(f, (None, None, 0)), (None, 0, None)))(PARAMS, keys, DATA[:8])
        var[K] = float(jnp.mean(jnp.var(vals, axis=0, ddof=1)))
    for K in (4, 16):
        assert abs(var[K] / var[1] * K - 1) < 0.2, (K, var)


def test_noise_scale():
    """A model with zero gradient: G~ = C z / B with z ~ N(0, sigma^2 I) (eq. 4.11)."""
    params = {"w": jnp.zeros((20_000,))}

    def apply_fn(p, x, t):  # output independent of p -> every per-example gradient is zero
        return 0.0 * x

    sigma, clip, B = 3.0, 0.5, 64.0
    g, aux = jax.jit(lambda k: private_grad(LOSS, apply_fn, params, k, DATA, jnp.ones(CAP, bool), clip=clip,
                                            noise_multiplier=sigma, expected_batch_size=B))(KEY)
    assert _norm(aux["grad_sum"]) == 0.0
    w = np.asarray(g["w"])
    # std estimate of 20000 normals: relative standard error 1/sqrt(2 n) = 0.5 %; tolerance 3 %
    assert np.std(w) == pytest.approx(sigma * clip / B, rel=0.03)
    assert abs(np.mean(w)) < 4 * sigma * clip / B / np.sqrt(w.size)


def test_no_recompile_for_different_batch_counts():
    traces = []

    def apply_fn(p, x, t):
        traces.append(1)
        return APPLY(p, x, t)

    opt = train.make_optimizer(1e-3)
    state = train.create_train_state(PARAMS, opt, jax.random.PRNGKey(3))
    step = make_dp_train_step(LOSS, apply_fn, opt, clip=1.0, noise_multiplier=1.0, expected_batch_size=8.0)
    counts = []
    for n in (3, 8, 16, 0, 11):
        state, m = step(state, DATA, jnp.arange(CAP) < n)
        counts.append(len(traces))
        assert int(m["batch_size"]) == n and bool(m["finite"])
    assert counts[0] > 0 and len(set(counts)) == 1, counts
    assert int(state.step) == 5


def test_poisson_sampling():
    assert poisson_capacity(4096) == 4519
    N, q, cap = 500, 0.1, poisson_capacity(50)
    idx, mask, count = poisson_indices(jax.random.PRNGKey(0), q, dataset_size=N, capacity=cap)
    n = int(count)
    assert int(jnp.sum(mask)) == n and n <= cap
    real = np.asarray(idx)[:n]
    assert np.all(np.diff(real) > 0) and real.max() < N
    counts = jax.vmap(lambda k: poisson_indices(k, q, dataset_size=N, capacity=cap)[2])(
        jax.random.split(jax.random.PRNGKey(1), 2000))
    # Binomial(500, 0.1): mean 50, sd 6.7; mean of 2000 draws has sd 0.15 -> 5 sigma tolerance 0.75
    assert abs(float(jnp.mean(counts)) - 50) < 0.75
    assert float(jnp.var(counts)) == pytest.approx(45.0, rel=0.15)
    data = jnp.arange(N * 2, dtype=jnp.float32).reshape(N, 2)
    batch, mask, count = poisson_batch(jax.random.PRNGKey(0), data, q, capacity=cap)
    np.testing.assert_array_equal(np.asarray(batch)[:n], np.asarray(data)[real])
    assert np.all(np.asarray(batch)[n:] == 0)


def test_validation():
    with pytest.raises(ValueError, match="clip"):
        clipped_grad_sum(LOSS, APPLY, PARAMS, KEY, DATA, jnp.ones(CAP, bool), clip=0.0)
    with pytest.raises(ValueError, match="multiplicity"):
        per_example_loss_fn(LOSS, APPLY, 0)
    with pytest.raises(ValueError, match="method"):
        clipped_grad_sum(LOSS, APPLY, PARAMS, KEY, DATA, jnp.ones(CAP, bool), clip=1.0, method="opacus")
    with pytest.raises(ValueError, match="mask"):
        clipped_grad_sum(LOSS, APPLY, PARAMS, KEY, DATA, jnp.ones(CAP - 1, bool), clip=1.0)


def test_train_dp_budget_and_resume(tmp_path):
    N = 64
    module = ScoreMLP(width=8, depth=1, time_dim=4)
    apply_fn, params = make_apply(module), init_params(module, jax.random.PRNGKey(0), (1, 2))
    data = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (N, 2)))
    budget = PrivacyBudget.create(epsilon=20.0, delta=1e-3, dataset_size=N, batch_size=8, epochs=0.5,
                                  noise_multiplier=1.0)
    assert budget.steps == 4
    kw = dict(budget=budget, clip=1.0, multiplicity=2, config={"model": "tiny"}, lr=1e-3, seed=0,
              log=lambda s: None, log_every=2)
    # a run longer than the budget is refused before anything is written
    with pytest.raises(ValueError, match="budget exceeded"):
        train_dp(LOSS, apply_fn, params, data, out_dir=tmp_path / "x", steps=5, **kw)
    assert not (tmp_path / "x").exists()
    full = train_dp(LOSS, apply_fn, params, data, out_dir=tmp_path / "a", ckpt_every=4, **kw)
    train_dp(LOSS, apply_fn, params, data, out_dir=tmp_path / "b", steps=2, ckpt_every=2, **kw)
    resumed = train_dp(LOSS, apply_fn, params, data, out_dir=tmp_path / "b", ckpt_every=2, resume=True, **kw)
    for u, v in zip(_leaves(full.params), _leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    rec = json.loads((tmp_path / "b" / "privacy.json").read_text())
    assert rec["steps_taken"] == 4 and rec["epsilon_spent"] == pytest.approx(budget.spent(4))
    assert rec["noise_multiplier"] == budget.noise_multiplier
    stored = train.load_config(tmp_path / "b")
    assert stored["privacy_spent"]["steps_taken"] == 4 and stored["privacy"]["epsilon"] == 20.0
    # a different plan cannot resume this run
    other = PrivacyBudget.create(epsilon=20.0, delta=1e-3, dataset_size=N, batch_size=8, epochs=0.5,
                                 noise_multiplier=1.5)
    with pytest.raises(ValueError, match="privacy"):
        train_dp(LOSS, apply_fn, params, data, out_dir=tmp_path / "b", resume=True, **dict(kw, budget=other))


def _tiny_dp_setup(N=64):
    module = ScoreMLP(width=8, depth=1, time_dim=4)
    apply_fn, params = make_apply(module), init_params(module, jax.random.PRNGKey(0), (1, 2))
    data = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (N, 2)))
    budget = PrivacyBudget.create(epsilon=20.0, delta=1e-3, dataset_size=N, batch_size=8, epochs=0.5,
                                  noise_multiplier=1.0)
    return apply_fn, params, data, budget


def test_train_dp_is_the_dp_step_on_poisson_batches_with_any_optimizer(tmp_path):
    """train_dp = make_dp_train_step with the given optax chain, fed the Poisson batch of
    fold_in(sampling_key(seed), s) and keyed by train_key(seed) (the convention of train.train)."""
    from diffjax.privacy import sampling_key

    apply_fn, params, data, budget = _tiny_dp_setup()
    opt = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.05, momentum=0.9))
    state = train_dp(LOSS, apply_fn, params, data, budget=budget, clip=1.0, out_dir=tmp_path, config={"model": "tiny"},
                     seed=3, optimizer=opt, ema_decay=0.9, log=lambda s: None, log_every=2)
    step = make_dp_train_step(LOSS, apply_fn, opt, clip=1.0, noise_multiplier=budget.noise_multiplier,
                              expected_batch_size=budget.batch_size, ema_decay=0.9, ema_warmup=True)
    ref = train.create_train_state(params, opt, train.train_key(3))
    cap = poisson_capacity(budget.batch_size)
    for s in range(budget.steps):
        batch, mask, _ = poisson_batch(jax.random.fold_in(sampling_key(3), s), jnp.asarray(data),
                                       budget.sample_rate, capacity=cap)
        ref, _ = step(ref, batch, mask)
    for u, v in zip(_leaves(state), _leaves(ref)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-7)
    stored = train.load_config(tmp_path)
    assert stored["optimizer"] == "custom" and "lr" not in stored and stored["ema_warmup"] is True


def test_train_dp_overflow_accounting_survives_prefetch_and_resume(tmp_path):
    """Capacity 7 for B = 8: with seed 52 the draws are [8, 9, 7, 7], steps 0 and 1 overflow. Each
    checkpoint counts exactly the overflowing steps < steps_taken, although the prefetcher has
    already drawn later batches, and a resumed run counts on from its checkpoint's count."""
    from diffjax.privacy import poisson_indices, sampling_key

    apply_fn, params, data, budget = _tiny_dp_setup()
    counts = [int(poisson_indices(jax.random.fold_in(sampling_key(52), s), budget.sample_rate,
                                  dataset_size=budget.dataset_size, capacity=budget.dataset_size)[2])
              for s in range(budget.steps)]
    assert counts == [8, 9, 7, 7]
    kw = dict(budget=budget, clip=1.0, config={"model": "tiny"}, seed=52, capacity=7, log=lambda s: None,
              log_every=1, ckpt_every=1, max_to_keep=5)
    full = train_dp(LOSS, apply_fn, params, data, out_dir=tmp_path / "a", **kw)
    spent = [train.load_config(tmp_path / "a", step=s)["privacy_spent"] for s in (1, 2, 3, 4)]
    assert [r["overflows"] for r in spent] == [1, 2, 2, 2] and [r["steps_taken"] for r in spent] == [1, 2, 3, 4]
    # a run interrupted after checkpoint 2 (its checkpoint copied), then resumed
    shutil.copytree(tmp_path / "a" / "checkpoints" / "2", tmp_path / "b" / "checkpoints" / "2")
    resumed = train_dp(LOSS, apply_fn, params, data, out_dir=tmp_path / "b", resume=True, **kw)
    for u, v in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    for run in ("a", "b"):
        rec = json.loads((tmp_path / run / "privacy.json").read_text())
        assert rec["steps_taken"] == 4 and rec["overflows"] == 2
        assert rec["epsilon_spent"] == pytest.approx(budget.spent(4))
        assert train.load_config(tmp_path / run)["privacy_spent"] == {
            k: rec[k] for k in ("steps_taken", "epsilon_spent", "overflows")}
    recs = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4] and [r["batch_size"] for r in recs] == counts
