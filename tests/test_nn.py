"""Tests for diffjax.nn: embeddings (closed form), ScoreMLP, U-Net, GENIE head, apply helpers."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.nn.apply import init_module, init_params, make_apply, make_cld_apply, param_count
from diffjax.nn.embeddings import GaussianFourierEmbedding, TimeEmbedding, as_batch_times, sinusoidal_embedding
from diffjax.nn.ghost_clipping import ghost_plan, no_ghost
from diffjax.nn.heads import GenieHead
from diffjax.nn.mlp import ScoreMLP
from diffjax.losses import drop_labels
from diffjax.nn.unet import UNet

KEY = jax.random.PRNGKey(0)


def test_sinusoidal_embedding_closed_form():
    t = np.array([0.0, 0.3, 0.7], np.float32)
    dim, scale, max_period = 8, 1000.0, 10_000.0
    emb = np.asarray(sinusoidal_embedding(t, dim, scale=scale, max_period=max_period))
    freqs = max_period ** (-np.arange(dim // 2) / (dim // 2))
    ref = np.concatenate([np.sin(scale * t[:, None] * freqs), np.cos(scale * t[:, None] * freqs)], -1)
    np.testing.assert_allclose(emb, ref, atol=2e-4)
    assert sinusoidal_embedding(t, 7).shape == (3, 7)  # odd dim is zero-padded
    # distinct noise levels get distinct embeddings (also for nearby t)
    e = sinusoidal_embedding(jnp.array([0.5, 0.501]), 32, scale=1000.0)
    assert float(jnp.linalg.norm(e[0] - e[1])) > 0.1
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(t, 1)


def test_as_batch_times():
    assert as_batch_times(0.5, 4).shape == (4,)
    assert as_batch_times(jnp.ones(4), 4).shape == (4,)
    with pytest.raises(ValueError, match="shape"):
        as_batch_times(jnp.ones(3), 4)


def test_fourier_embedding_is_fixed_and_periodic_features():
    mod = GaussianFourierEmbedding(dim=16, scale=4.0)
    t = jnp.array([0.1, 0.9])
    p = init_module(mod, KEY, t)
    out = mod.apply(p, t)
    w = p["params"]["W"]
    ref = jnp.concatenate([jnp.sin(2 * jnp.pi * t[:, None] * w), jnp.cos(2 * jnp.pi * t[:, None] * w)], -1)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    g = jax.grad(lambda p: mod.apply(p, t).sum())(p)
    assert float(jnp.abs(g["params"]["W"]).max()) == 0.0  # W is not trained
    te = TimeEmbedding(32, kind="fourier", scale=16.0)
    pe = init_module(te, KEY, t)
    e = te.apply(pe, t)
    assert e.shape == (2, 32) and float(jnp.linalg.norm(e[0] - e[1])) > 1e-3
    with pytest.raises(ValueError, match="kind"):
        jax.eval_shape(TimeEmbedding(8, kind="bogus").init, KEY, t)


def test_score_mlp_shapes_params_jit_and_time_dependence():
    d, w, depth, td = 2, 32, 3, 16
    mod = ScoreMLP(width=w, depth=depth, time_dim=td)
    params = init_params(mod, KEY, (5, d))
    expected = (d + td) * w + w + (depth - 1) * (w * w + w) + depth * (td * w + w) + w * d + d
    assert param_count(params) == expected
    apply = make_apply(mod)
    x = jax.random.normal(KEY, (5, d))
    out = apply(params, x, 0.3)
    np.testing.assert_allclose(jax.jit(apply)(params, x, 0.3), out, atol=1e-5)
    assert out.shape == (5, d)
    out2 = apply(params, x, jnp.full((5,), 0.7))
    assert float(jnp.abs(out - out2).max()) > 1e-4
    out3, feats = apply(params, x, 0.3, return_features=True)
    assert feats.shape == (5, w)
    np.testing.assert_allclose(out3, out, atol=1e-6)
    with pytest.raises(ValueError, match="batch, d"):
        apply(params, x[0], 0.3)


def test_cld_apply_concatenates_x_v():
    d = 2
    mod = ScoreMLP(width=16, depth=1, time_dim=8, out_dim=d)
    params = init_params(mod, KEY, (3, d), cld=True)
    assert params["params"]["dense_0"]["kernel"].shape == (2 * d + 8, 16)
    x, v = jnp.ones((3, d)), 2.0 * jnp.ones((3, d))
    out = make_cld_apply(mod)(params, (x, v), 0.5)
    np.testing.assert_allclose(out, mod.apply(params, jnp.concatenate([x, v], -1), 0.5), atol=1e-6)
    bad = ScoreMLP(width=16, depth=1, time_dim=8)  # out_dim defaults to 2d: wrong for CLD
    with pytest.raises(ValueError, match="shape of v"):
        make_cld_apply(bad)(init_params(bad, KEY, (3, d), cld=True), (x, v), 0.5)


def test_genie_head_vector_zero_init_then_trainable():
    mod = ScoreMLP(width=16, depth=2, time_dim=8)
    params = init_params(mod, KEY, (4, 2))
    x = jax.random.normal(KEY, (4, 2))
    eps, feats = make_apply(mod)(params, x, 0.4, return_features=True)
    head = GenieHead(hidden=16, num_outputs=3)
    hp = init_module(head, jax.random.PRNGKey(1), feats, x, 0.4, eps)
    outs = head.apply(hp, feats, x, 0.4, eps)
    assert len(outs) == 3 and all(o.shape == x.shape for o in outs)
    assert all(float(jnp.abs(o).max()) == 0.0 for o in outs)  # zero-initialised read-out
    g = jax.jit(jax.grad(lambda p: sum(jnp.sum(o * x) for o in head.apply(p, feats, x, 0.4, eps))))(hp)
    assert float(jnp.abs(g["params"]["out"]["kernel"]).max()) > 0.0


def test_unet_shapes_jit_time_and_class_conditioning():
    kw = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=())
    # unconditional, MNIST-shaped
    mnist = UNet(**kw)
    p1 = init_params(mnist, KEY, (2, 28, 28, 1))
    f1 = jax.jit(make_apply(mnist))
    x1 = jax.random.normal(KEY, (2, 28, 28, 1))
    o_a, o_b = f1(p1, x1, jnp.array([0.1, 0.1])), f1(p1, x1, jnp.array([0.9, 0.9]))
    assert o_a.shape == x1.shape and bool(jnp.all(jnp.isfinite(o_a)))
    assert float(jnp.abs(o_a - o_b).max()) > 1e-4  # the time embedding reaches the output
    # class-conditional, CIFAR-shaped, with features for a GENIE head
    cifar = UNet(**kw, num_classes=10)
    p3 = init_params(cifar, KEY, (2, 32, 32, 3))
    x3 = jax.random.normal(KEY, (2, 32, 32, 3))

    @jax.jit
    def f3(p, x, y):
        return cifar.apply(p, x, 0.5, y, return_features=True)

    out, (feats, temb) = f3(p3, x3, jnp.array([10, 10]))  # 10 = the null token
    out_lab, _ = f3(p3, x3, jnp.array([1, 2]))
    assert out.shape == x3.shape and feats.shape == (2, 32, 32, 8) and temb.shape == (2, 32)
    assert float(jnp.abs(out_lab - out).max()) > 1e-5
    # params: sane size; the only shape dependence on C is conv_in / conv_out
    n1, n3 = param_count(p1), param_count(p3)
    extra = (3 - 1) * 9 * 8 + (3 - 1) * (9 * 8 + 1) + 11 * 32  # conv_in, conv_out, label table
    assert n3 - n1 == extra and 10_000 < n1 < 200_000
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(mnist.init, KEY, jnp.zeros((1, 27, 27, 1)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match="attention_levels"):
        jax.eval_shape(UNet(channel_mult=(1, 2), attention_levels=(2,)).init, KEY,
                       jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))


def test_unet_param_count_scales_quadratically_in_channels():
    # eval_shape: no compilation. Conv weights scale as channels^2.
    def count(ch):
        shapes = jax.eval_shape(UNet(channels=ch).init, KEY, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,)))
        return param_count(shapes)

    n32, n64 = count(32), count(64)
    assert 3.8 < n64 / n32 < 4.05, (n32, n64)
    assert 0.5e6 < n32 < 2e6  # default small U-Net: about a million parameters


def test_genie_head_on_unet_features_shape():
    feats = jnp.ones((2, 8, 8, 16))
    temb = jnp.ones((2, 32))
    x = jnp.ones((2, 8, 8, 3))
    head = GenieHead(hidden=16)
    shapes = jax.eval_shape(lambda: head.init_with_output(KEY, (feats, temb), x, 0.3, x))
    assert shapes[0].shape == x.shape
    with pytest.raises(ValueError, match="does not match"):
        jax.eval_shape(lambda: head.init(KEY, jnp.ones((2, 4, 4, 16)), x, 0.3))


def test_drop_labels_rate():
    y = jnp.zeros((20_000,), jnp.int32)
    dropped = drop_labels(KEY, y, 0.1, num_classes=10)
    frac = float(jnp.mean(dropped == 10))
    # binomial std = sqrt(0.09 / 20000) = 0.0021; 5 sigma
    assert abs(frac - 0.1) < 5 * math.sqrt(0.09 / 20_000)
    assert set(np.unique(np.asarray(dropped)).tolist()) == {0, 10}
    with pytest.raises(ValueError, match="p must"):
        drop_labels(KEY, y, 1.5, 10)


class _GhostNet(nn.Module):
    """Every ghost-norm case: T = 1 (``pool``, no bias), T^2 <= d_in d_out (``pair``), T^2 > d_in d_out
    (``inp``), a layer called twice (``shared``) and a non-Dense parameter (``scale``, vmap path)."""

    @nn.compact
    def __call__(self, rows):                                      # rows (8, 3)
        shared = nn.Dense(6, name="shared")
        h = jnp.tanh(nn.Dense(6, name="inp")(rows))                # T = 8: 64 > 3 * 6
        h = jnp.tanh(shared(jnp.tanh(shared(h))))                  # T = 2 * 8: 256 > 6 * 6
        pair = nn.Dense(5, name="pair")(h[:2])                     # T = 2: 4 <= 6 * 5
        pool = nn.Dense(4, use_bias=False, name="pool")(jnp.mean(h, 0))   # T = 1
        scale = self.param("scale", nn.initializers.ones, (4,))
        return jnp.sum(jnp.tanh(pool * scale)) + jnp.sum(jnp.sin(pair))


def test_ghost_norms_and_clipped_sum_match_per_example_gradients():
    """Ghost clipping (||grad_W||^2 = sum_ts (a_t.a_s)(d_t.d_s), sum_i c_i grad_W,i = sum_i a_i^T c_i d_i)
    equals explicit per-example gradients (float32 rounding, rel 1e-5), with the non-Dense parameter
    left to the vmap path; ``no_ghost`` sends everything there."""
    net = _GhostNet()
    params = net.init(KEY, jnp.zeros((8, 3)))

    def f(p, key, x):
        return net.apply(p, x[None] + 0.5 * jax.random.normal(key, (8, 3)))

    n = 5
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    batch = jax.random.normal(jax.random.PRNGKey(2), (n, 3))
    grads = [jax.grad(f)(params, keys[i], batch[i]) for i in range(n)]
    full_sq = np.array([sum(float(jnp.sum(g ** 2)) for g in jax.tree_util.tree_leaves(gi)) for gi in grads])
    scale = jnp.linspace(0.2, 1.0, n)
    ref_sum = jax.tree_util.tree_map(lambda *g: sum(c * x for c, x in zip(scale, g)), *grads)

    plan = ghost_plan(f, params, keys[0], batch[0])
    values, dense_sq, dense_sum = plan.dense_pass(params, keys, batch)
    assert plan.has_rest and [r.shape for r in plan.select_rest(params)] == [(4,)]   # only "scale"
    rest_sq = np.array([sum(float(jnp.sum(r ** 2)) for r in plan.select_rest(gi)) for gi in grads])
    np.testing.assert_allclose(np.asarray(dense_sq) + rest_sq, full_sq, rtol=1e-5)
    assert np.all(rest_sq < 0.5 * full_sq)                         # the Dense part is most of the norm
    np.testing.assert_allclose(values, [f(params, keys[i], batch[i]) for i in range(n)], rtol=1e-6)
    rest = plan.select_rest(ref_sum)
    out = plan.combine(dense_sum(scale), rest, params)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref_sum)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    plain = no_ghost(params, f)
    v0, sq0, sum0 = plain.dense_pass(params, keys, batch)
    assert len(plain.select_rest(params)) == len(jax.tree_util.tree_leaves(params))
    assert not np.any(np.asarray(sq0)) and sum0(scale) == {}
    np.testing.assert_allclose(v0, values, rtol=1e-6)

