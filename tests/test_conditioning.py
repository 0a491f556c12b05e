"""Tests for class conditioning: label dropout and the class-conditional loss (diffjax.losses.conditional),
the label-guided model (diffjax.samplers.guidance.class_guided_model) and the class-conditional ScoreMLP: binomial drop rates, exact equalities with the plain loss, analytic
guided eps of a two-Gaussian mixture, and an end-to-end train-then-sample run with known answers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic import GaussianMixture
from diffjax.losses import class_conditional_loss, dsm_loss, drop_labels
from diffjax.nn.apply import init_params, make_apply
from diffjax.nn.mlp import ScoreMLP
from diffjax.samplers.api import ddim
from diffjax.samplers.guidance import class_guided_model as guided_model
from diffjax.sde import VPSDE
from diffjax.train import create_train_state, make_optimizer, make_train_step

KEY = jax.random.PRNGKey(0)
SDE = VPSDE()
MEANS = np.array([[-2.0, 0.0], [2.0, 0.0]], np.float32)
STD = 0.3


# --------------------------------------------------------------------------------------------
# drop_labels
# --------------------------------------------------------------------------------------------


def test_drop_labels_rate_and_kept_labels():
    n, p, k = 20_000, 0.3, 10
    y = jax.random.randint(jax.random.PRNGKey(1), (n,), 0, k)
    out = drop_labels(KEY, y, p, num_classes=k)
    assert out.shape == (n,) and out.dtype == jnp.int32
    dropped = np.asarray(out == k)
    # binomial standard error sqrt(p (1 - p) / n) = 0.0032; 5 sigma
    assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    # labels that are not dropped are unchanged
    np.testing.assert_array_equal(np.asarray(out)[~dropped], np.asarray(y)[~dropped])


def test_drop_labels_p0_p1_exact():
    y = jnp.arange(1000) % 7
    np.testing.assert_array_equal(np.asarray(drop_labels(KEY, y, 0.0, 7)), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(drop_labels(KEY, y, 1.0, 7)), np.full(1000, 7))
    # the null token itself is a valid input label and stays the null token
    np.testing.assert_array_equal(np.asarray(drop_labels(KEY, jnp.full(5, 7), 0.5, 7)), np.full(5, 7))


def test_drop_labels_rejects_bad_arguments():
    y = jnp.zeros((8,), jnp.int32)
    for p in (-0.1, 1.5, float("nan"), [0.1, 0.2], True):
        with pytest.raises(ValueError, match="p must"):
            drop_labels(KEY, y, p, 10)
    for k in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match="num_classes"):
            drop_labels(KEY, y, 0.1, k)
    with pytest.raises(ValueError, match="integer"):
        drop_labels(KEY, jnp.zeros((8,)), 0.1, 10)
    with pytest.raises(ValueError, match=r"\[0, num_classes=10\]"):
        drop_labels(KEY, jnp.array([0, 11]), 0.1, 10)
    with pytest.raises(ValueError, match=r"\[0, num_classes=10\]"):
        drop_labels(KEY, jnp.array([-1, 3]), 0.1, 10)


def test_old_paths_resolve_and_nn_imports_no_library_module():
    import ast
    import pathlib

    import diffjax
    from diffjax import conditioning

    assert conditioning.drop_labels is drop_labels and conditioning.guided_model is guided_model
    assert diffjax.losses.class_conditional_loss is class_conditional_loss
    # layering: diffjax.nn imports flax/jax (and diffjax.nn itself, plus the leaf validators) only
    allowed = ("diffjax.nn", "diffjax._validate")
    for path in pathlib.Path(diffjax.nn.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.split(".")[0] == "diffjax" and not n.startswith(allowed)]
            assert not bad, f"{path.name} imports {bad}"


# --------------------------------------------------------------------------------------------
# ScoreMLP(num_classes=...)
# --------------------------------------------------------------------------------------------


def _shapes(net, x):
    """Parameter shapes of ``net`` for input ``x`` (``eval_shape``: traced, not compiled)."""
    params = jax.eval_shape(lambda: net.init(KEY, x, jnp.zeros((x.shape[0],))))
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), params)


def _expected_mlp_shapes(d, width, depth, time_dim):
    p = {"dense_0": {"kernel": (d + time_dim, width), "bias": (width,)}}
    for i in range(1, depth):
        p[f"dense_{i}"] = {"kernel": (width, width), "bias": (width,)}
    for i in range(depth):
        p[f"time_{i}"] = {"kernel": (time_dim, width), "bias": (width,)}
    p["out"] = {"kernel": (width, d), "bias": (d,)}
    return {"params": p}


def test_score_mlp_param_tree_unchanged_without_classes():
    d, width, depth, time_dim = 3, 16, 2, 8
    x = jnp.zeros((4, d))
    assert _shapes(ScoreMLP(width, depth, time_dim), x) == _expected_mlp_shapes(d, width, depth, time_dim)
    expected = _expected_mlp_shapes(d, width, depth, time_dim)
    expected["params"]["label"] = {"embedding": (6, time_dim)}  # K + 1 rows: null token last
    assert _shapes(ScoreMLP(width, depth, time_dim, num_classes=5), x) == expected


def test_score_mlp_rejects_labels_without_classes():
    net, x = ScoreMLP(width=8, depth=1, time_dim=4), jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="num_classes is None"):
        jax.eval_shape(lambda: net.init(KEY, x, 0.5, y=jnp.zeros((2,), jnp.int32)))
    with pytest.raises(ValueError, match="num_classes"):
        jax.eval_shape(lambda: ScoreMLP(width=8, depth=1, time_dim=4, num_classes=0).init(KEY, x, 0.5))


@pytest.fixture(scope="module")
def small_net():
    k = 3
    net = ScoreMLP(width=16, depth=2, time_dim=8, num_classes=k)
    params = init_params(net, KEY, (8, 2))
    x0 = jax.random.normal(jax.random.PRNGKey(5), (8, 2))
    y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
    return k, make_apply(net), params, x0, y


def test_score_mlp_labels(small_net):
    k, apply, params, x, _ = small_net
    b = x.shape[0]
    t = jnp.linspace(0.1, 0.9, b)
    ys = jnp.array([0, 1, 2, 3, 0, 1, 3, 2])

    @jax.jit
    def outputs(params):
        per_class = jnp.stack([apply(params, x, t, y=jnp.full((b,), c)) for c in range(k + 1)])
        return apply(params, x, t), per_class, apply(params, x, t, y=jnp.int32(0)), apply(params, x, t, y=ys)

    none, per_class, scalar0, mixed = outputs(params)
    null, y0 = per_class[k], per_class[0]
    np.testing.assert_allclose(np.asarray(none), np.asarray(null), rtol=1e-6)  # y=None is the null token
    assert float(jnp.max(jnp.abs(y0 - null))) > 1e-4  # the label reaches the output
    np.testing.assert_allclose(np.asarray(scalar0), np.asarray(y0), rtol=1e-6)  # a scalar label broadcasts
    # per-example labels act per example
    for c in range(k + 1):
        rows = np.asarray(ys == c)
        np.testing.assert_allclose(np.asarray(mixed)[rows], np.asarray(per_class[c])[rows], rtol=1e-5, atol=1e-6)
    # bad labels (dtype/shape at trace time, range when concrete)
    with pytest.raises(ValueError, match="integer"):
        jax.eval_shape(lambda: apply(params, x, t, y=jnp.zeros((b,))))
    with pytest.raises(ValueError, match="shape"):
        jax.eval_shape(lambda: apply(params, x, t, y=jnp.zeros((b + 1,), jnp.int32)))
    with pytest.raises(ValueError, match=r"\[0, num_classes=3\]"):
        apply(params, x, t, y=jnp.full((b,), k + 1))


# --------------------------------------------------------------------------------------------
# class_conditional_loss
# --------------------------------------------------------------------------------------------


def test_class_conditional_loss_p0_is_conditional_loss(small_net):
    k, apply, params, x0, y = small_net
    base = dsm_loss(SDE)
    key = jax.random.PRNGKey(7)
    k_loss = jax.random.split(key)[1]  # documented: key -> (k_drop, k_loss)
    value, aux = class_conditional_loss(base, num_classes=k, p_uncond=0.0)(apply, params, key, (x0, y))
    ref, ref_aux = base(lambda p, x, t: apply(p, x, t, y=y), params, k_loss, x0)
    assert float(value) == float(ref)
    np.testing.assert_array_equal(np.asarray(aux["mse"]), np.asarray(ref_aux["mse"]))
    np.testing.assert_array_equal(np.asarray(aux["y"]), np.asarray(y))
    assert float(aux["label_drop_frac"]) == 0.0
    # the labels matter: the null-token model gives a different loss for the same key
    null, _ = base(lambda p, x, t: apply(p, x, t), params, k_loss, x0)
    assert abs(float(null) - float(ref)) > 1e-6
    # reduce=False is forwarded: per-example values whose mean is the reduced loss
    per, _ = class_conditional_loss(base, num_classes=k, p_uncond=0.0)(apply, params, key, (x0, y), reduce=False)
    assert per.shape == (8,)
    np.testing.assert_allclose(float(jnp.mean(per)), float(value), rtol=1e-6)


def test_class_conditional_loss_p1_is_null_model(small_net):
    k, apply, params, x0, y = small_net
    base = dsm_loss(SDE)
    key = jax.random.PRNGKey(8)
    value, aux = class_conditional_loss(base, num_classes=k, p_uncond=1.0)(apply, params, key, (x0, y))
    ref, _ = base(lambda p, x, t: apply(p, x, t, y=None), params, jax.random.split(key)[1], x0)
    assert float(value) == float(ref)
    np.testing.assert_array_equal(np.asarray(aux["y"]), np.full(8, k))
    assert float(aux["label_drop_frac"]) == 1.0


def test_class_conditional_loss_uses_drop_labels_mask():
    k, n, key = 3, 4000, jax.random.PRNGKey(9)
    y_big = jnp.arange(n) % k
    x_big = jnp.zeros((n, 2))
    loss = class_conditional_loss(dsm_loss(SDE), num_classes=k, p_uncond=0.4)
    # a stand-in network: this test is about which labels reach apply_fn
    _, aux = jax.jit(lambda kk, b: loss(lambda p, x, t, y: x, None, kk, b))(key, (x_big, y_big))
    k_drop = jax.random.split(key)[0]
    np.testing.assert_array_equal(np.asarray(aux["y"]), np.asarray(drop_labels(k_drop, y_big, 0.4, k)))
    frac = float(aux["label_drop_frac"])
    assert frac == float(jnp.mean(aux["y"] == k))
    assert abs(frac - 0.4) < 5 * math.sqrt(0.4 * 0.6 / n)


def test_class_conditional_loss_errors(small_net):
    k, apply, params, x0, y = small_net
    base = dsm_loss(SDE)
    for bad in (0, 1.5, True, None):
        with pytest.raises(ValueError, match="num_classes"):
            class_conditional_loss(base, num_classes=bad)
    for bad in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="p_uncond"):
            class_conditional_loss(base, num_classes=k, p_uncond=bad)
    loss = class_conditional_loss(base, num_classes=k, p_uncond=0.1)
    with pytest.raises(ValueError, match=r"\(x0, y\)"):
        loss(apply, params, KEY, x0)
    with pytest.raises(ValueError, match=r"\(x0, y\)"):
        loss(apply, params, KEY, (x0, y, y))
    with pytest.raises(ValueError, match="shape"):
        loss(apply, params, KEY, (x0, y[:5]))
    with pytest.raises(ValueError, match="shape"):
        loss(apply, params, KEY, (x0, y[:, None]))
    with pytest.raises(ValueError, match="integer"):
        loss(apply, params, KEY, (x0, y.astype(jnp.float32)))
    with pytest.raises(ValueError, match=r"\[0, num_classes=3\]"):
        loss(apply, params, KEY, (x0, y.at[0].set(4)))
    with pytest.raises(ValueError, match=r"\[0, num_classes=3\]"):
        loss(apply, params, KEY, (x0, y.at[0].set(-1)))


# --------------------------------------------------------------------------------------------
# guided_model against the analytic eps of the two-Gaussian mixture
# --------------------------------------------------------------------------------------------


def _analytic_eps_fns():
    """eps_k(x, t) of class k ~ N(MEANS[k], STD^2 I) and of the 50/50 mixture (the null token)."""
    comps = [GaussianMixture(jnp.ones(1), jnp.asarray(MEANS[i:i + 1]), jnp.array([STD])) for i in range(2)]
    mix = GaussianMixture(jnp.array([0.5, 0.5]), jnp.asarray(MEANS), jnp.array([STD, STD]))
    return [c.eps_fn(SDE) for c in comps] + [mix.eps_fn(SDE)]


def test_guided_model_matches_analytic_guided_eps():
    fns = _analytic_eps_fns()

    def apply(params, x, t, y):
        outs = jnp.stack([f(x, t) for f in fns])  # (3, batch, 2), index 2 = null token
        return jnp.take_along_axis(outs, y[None, :, None], axis=0)[0]

    x = jax.random.normal(KEY, (6, 2)) * 2.0
    t = jnp.linspace(0.2, 0.8, 6)
    y = jnp.array([0, 1, 0, 1, 2, 0])
    each = jax.jit(lambda x, t: jnp.stack([f(x, t) for f in fns]))(x, t)  # (3, batch, 2)
    cond = jnp.stack([each[int(c), i] for i, c in enumerate(y)])
    uncond = each[2]
    guided = jax.jit(lambda y, w: guided_model(apply, None, y, w, num_classes=2)(x, t))
    for w in (0.0, 2.0, -1.0):
        got = guided(y, w)
        np.testing.assert_allclose(np.asarray(got), np.asarray((1 + w) * cond - w * uncond), rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(cond - uncond))) > 0.1  # w has something to act on
    # a scalar label is broadcast to the batch
    got = guided(jnp.int32(1), 2.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(3 * each[1] - 2 * uncond), rtol=1e-5, atol=1e-5)

    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="num_classes"):
            guided_model(apply, None, 0, 1.0, num_classes=bad)
    with pytest.raises(ValueError, match="integer"):
        guided_model(apply, None, 0.0, 1.0, num_classes=2)
    with pytest.raises(ValueError, match=r"\[0, num_classes=2\]"):
        guided_model(apply, None, 3, 1.0, num_classes=2)
    with pytest.raises(ValueError, match=r"\(batch,\)"):
        guided_model(apply, None, jnp.zeros((2, 3), jnp.int32), 1.0, num_classes=2)
    with pytest.raises(ValueError, match="batch size"):
        guided_model(apply, None, jnp.zeros((5,), jnp.int32), 1.0, num_classes=2)(x, t)
    with pytest.raises(ValueError, match="w"):
        guided_model(apply, None, 0, float("nan"), num_classes=2)


# --------------------------------------------------------------------------------------------
# end to end: train a conditional ScoreMLP on two Gaussians, sample with DDIM
# --------------------------------------------------------------------------------------------

N_SAMPLES = 2000
TRAIN_STEPS, TRAIN_BATCH = 2000, 512


@pytest.fixture(scope="module")
def trained():
    """Conditional eps-ScoreMLP trained with label dropout p = 0.2 (one jitted lax.scan), plus a
    jitted guided DDIM sampler ``draw(params, y, w, key)`` with a Python trace counter."""
    net = ScoreMLP(width=64, depth=2, time_dim=16, num_classes=2)
    apply = make_apply(net)
    params = init_params(net, jax.random.PRNGKey(11), (TRAIN_BATCH, 2))
    opt = make_optimizer(3e-3)
    step = make_train_step(class_conditional_loss(dsm_loss(SDE), num_classes=2, p_uncond=0.2), apply, opt,
                           ema_decay=0.99)
    means = jnp.asarray(MEANS)

    def batch(i):
        k_y, k_x = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(13), i))
        y = jax.random.bernoulli(k_y, 0.5, (TRAIN_BATCH,)).astype(jnp.int32)
        return means[y] + STD * jax.random.normal(k_x, (TRAIN_BATCH, 2)), y

    @jax.jit
    def fit(state):
        def body(s, i):
            s, m = step(s, batch(i))
            return s, (m["loss"], m["label_drop_frac"])

        return jax.lax.scan(body, state, jnp.arange(TRAIN_STEPS))

    state, (losses, drop_frac) = fit(create_train_state(params, opt, jax.random.PRNGKey(12)))
    traces = []

    @jax.jit
    def draw(p, y, w, key):
        traces.append(1)
        model = guided_model(apply, p, y, w, num_classes=2)
        return ddim(model, SDE, key=key, shape=(N_SAMPLES, 2), n_steps=40)[0]

    p = state.ema_params
    key = jax.random.PRNGKey(14)
    samples = {(c, w): np.asarray(draw(p, jnp.int32(c), jnp.float32(w), key)) for c in (0, 1, 2) for w in (0.0, 2.0)}
    return dict(samples=samples, draw=draw, traces=traces, params=p, key=key, losses=np.asarray(losses),
                drop_frac=np.asarray(drop_frac))


def test_e2e_training_converged_and_dropped_labels(trained):
    losses = trained["losses"]
    assert np.all(np.isfinite(losses))
    assert losses[-200:].mean() < 0.5 * losses[:20].mean()
    # label_drop_frac reached the train metrics; its mean over 2000 * 512 labels is 0.2 +- 5 s.e.
    assert abs(trained["drop_frac"].mean() - 0.2) < 5 * math.sqrt(0.16 / (TRAIN_STEPS * TRAIN_BATCH))


def test_e2e_conditional_samples_hit_their_class(trained):
    # Tolerance on the mean: 0.15 per coordinate (Monte Carlo s.e. 0.3 / sqrt(2000) = 0.007; the
    # rest is the learned model's error and 40-step DDIM discretisation).
    for c, side in ((0, -1.0), (1, 1.0)):
        x = trained["samples"][(c, 0.0)]
        assert np.all(np.isfinite(x))
        np.testing.assert_allclose(x.mean(0), MEANS[c], atol=0.15)
        assert np.mean(side * x[:, 0] > 0) > 0.95
        # spread is that of one class (0.3), not of the mixture (std of x_1 is 2.02)
        assert 0.15 < x[:, 0].std() < 0.5


def test_e2e_unconditional_samples_are_balanced(trained):
    x = trained["samples"][(2, 0.0)]
    frac = np.mean(x[:, 0] > 0)
    # 0.5 +- 5 binomial standard errors sqrt(0.25 / 2000) = 0.011
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / N_SAMPLES)
    # both modes are near +-2 (bimodal, not collapsed to the centre)
    assert np.abs(x[:, 0]).mean() > 1.7
    # with the null token guidance cancels: (1 + w) m - w m = m
    np.testing.assert_allclose(trained["samples"][(2, 2.0)], x, atol=1e-4)


def test_e2e_guidance_pushes_to_class_side(trained):
    # analytic reference (exact mixture eps, same sampler): mean |x_1| = 2.00 at w = 0, 2.29 at w = 2
    for c in (0, 1):
        m0 = np.abs(trained["samples"][(c, 0.0)][:, 0]).mean()
        m2 = np.abs(trained["samples"][(c, 2.0)][:, 0]).mean()
        assert m2 > m0 + 0.1, (c, m0, m2)


def test_guidance_weight_is_traced_no_recompile(trained):
    draw, traces = trained["draw"], trained["traces"]
    assert len(traces) == 1  # six (label, w) combinations, one trace
    x = np.asarray(draw(trained["params"], jnp.int32(0), jnp.float32(0.5), trained["key"]))
    assert len(traces) == 1
    # the new w was used: strictly between w = 0 and w = 2 in mean |x_1|
    m = [np.abs(a[:, 0]).mean() for a in (trained["samples"][(0, 0.0)], x, trained["samples"][(0, 2.0)])]
    assert m[0] < m[1] < m[2]
