"""Tests for diffjax.nn.ddpmpp / presets / flops: the papers' DDPM++ sizes, forward pass, bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.losses import dsm_loss
from diffjax.nn import PRESETS, make_apply, matmul_flops, param_count, unet_preset
from diffjax.samplers import sample
from diffjax.samplers.ode_rules import ddim_rule
from diffjax.schedules import uniform_grid
from diffjax.sde import VPSDE

KEY = jax.random.PRNGKey(0)
TINY = dict(channels=8, num_res_blocks=1)  # a preset's layout at 1/4 width and 1 block: fast to compile
U_BF16 = 2.0**-8  # bfloat16 unit roundoff: 8-bit significand (7 stored + 1 implicit)


def _abstract(module, image_shape, batch=1):
    """Parameter shapes (no memory, no compile) and input structs for ``module``."""
    x = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    t = jax.ShapeDtypeStruct((batch,), jnp.float32)
    params = jax.eval_shape(module.init, KEY, x, t)
    return params, x, t


def _random_params(module, image_shape, seed=1):
    """Parameters of ``module`` without running its init: kernels ``N(0, 1 / fan_in)`` (a random
    output layer, unlike the zero-initialised one, lets precision errors show), norm scales 1,
    biases 0. numpy draws: no per-shape XLA compile of a random kernel."""
    rng = np.random.default_rng(seed)

    def draw(path, p):
        if len(p.shape) >= 2:
            return jnp.asarray(rng.standard_normal(p.shape, np.float32) / np.sqrt(np.prod(p.shape[:-1])))
        return jnp.ones(p.shape) if path[-1].key == "scale" else jnp.zeros(p.shape)

    return jax.tree_util.tree_map_with_path(draw, _abstract(module, image_shape)[0])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_count_matches_paper_table(name):
    preset = PRESETS[name]
    params, _, _ = _abstract(unet_preset(name), preset.image_shape)
    n = param_count(params)
    assert abs(n / preset.paper_params - 1.0) < 0.02, (name, n, preset.paper_params)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    if name == "ddpmpp_cifar10":  # EDM's unconditional CIFAR-10 DDPM++ has 55.73M parameters
        assert abs(n - 55.73e6) < 0.01e6, n


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if PRESETS[n].paper_gflops))
def test_preset_flops_match_table_5_1(name):
    # Table 5.1 counts 2 x MACs of convolutions and matmuls (every kernel tap): within 1%
    preset = PRESETS[name]
    module = unet_preset(name)
    params, x, t = _abstract(module, preset.image_shape)
    gflops = matmul_flops(lambda p, x, t: module.apply(p, x, t), params, x, t) / 1e9
    assert abs(gflops / preset.paper_gflops - 1.0) < 0.01, (name, gflops, preset.paper_gflops)


def test_matmul_flops_closed_forms():
    import flax.linen as nn

    x = jnp.zeros((2, 8, 8, 4))
    conv = nn.Conv(5, (3, 3), strides=(2, 2))
    pc = jax.eval_shape(conv.init, KEY, x)
    assert matmul_flops(lambda p, x: conv.apply(p, x), pc, x) == 2 * (2 * 4 * 4 * 5) * (3 * 3 * 4)
    a, b = jnp.zeros((3, 7)), jnp.zeros((7, 6))
    assert matmul_flops(jnp.matmul, a, b) == 2 * 3 * 6 * 7
    scanned = lambda a, b: jax.lax.scan(lambda c, _: (c, c @ b), a, None, length=4)[1]  # noqa: E731
    assert matmul_flops(scanned, a, b) == 4 * 2 * 3 * 6 * 7
    branches = lambda i, a, b: jax.lax.switch(i, [lambda: a @ b @ b.T, lambda: a @ b @ b.T @ b @ b.T])  # noqa: E731
    assert matmul_flops(branches, 0, a, b) == 4 * (2 * 3 * 6 * 7)
    with pytest.raises(ValueError, match="while"):
        matmul_flops(lambda a: jax.lax.while_loop(lambda c: c.sum() < 1, lambda c: c @ c.T @ c, a), a)


def test_forward_shape_finite_and_class_conditioning():
    module = unet_preset("dpdm_mnist", **TINY)
    params = _random_params(module, (28, 28, 1))
    x = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(2), (1, 28, 28, 1)), (4, 28, 28, 1))
    t = jnp.array([0.5, 0.5, 0.5, 0.9])
    apply = jax.jit(module.apply)
    out, out_none = apply(params, x, t, jnp.array([0, 1, 10, 10])), apply(params, x, t)  # 10 = null token
    assert out.shape == (4, 28, 28, 1) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.std(out)) > 0.1
    rms = lambda a: float(jnp.sqrt(jnp.mean(a**2)))  # noqa: E731
    assert rms(out[0] - out[1]) > 1e-3 * rms(out)      # the label changes the output
    assert rms(out[2] - out[3]) > 1e-3 * rms(out)      # so does the noise level
    np.testing.assert_allclose(out_none, jnp.stack([out[2], out[2], out[2], out[3]]), rtol=1e-5, atol=1e-5)


def test_unconditional_preset_ignores_labels_and_dropout_only_in_training():
    module = unet_preset("dpdm_celeba", dropout=0.5, **TINY)
    params = _random_params(module, (32, 32, 3))
    x, t = jax.random.normal(KEY, (2, 32, 32, 3)), jnp.array([0.2, 0.7])
    graph = lambda f: str(jax.make_jaxpr(f)(params, x, t))  # noqa: E731
    reference = graph(lambda p, x, t: unet_preset("dpdm_celeba", **TINY).apply(p, x, t))  # no dropout
    # the same computation with labels (no label embedding) and with dropout outside training
    assert "label" not in params["params"]
    assert graph(lambda p, x, t: module.apply(p, x, t, jnp.array([3, 4]))) == reference
    assert graph(lambda p, x, t: module.apply(p, x, t, train=False)) == reference

    # train=True: the output depends on the dropout key (an "unsafe_rbg" key: same Flax dropout,
    # but XLA:CPU compiles rng_bit_generator much faster than threefry)
    dropped = jax.jit(lambda p, key: module.apply(p, x, t, train=True, rngs={"dropout": key}))
    a, b = (dropped(params, jax.random.key(s, impl="unsafe_rbg")) for s in (3, 4))
    assert a.shape == (2, 32, 32, 3) and a.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(a))) and bool(jnp.all(jnp.isfinite(b)))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2 * float(jnp.max(jnp.abs(a)))


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="name"):
        unet_preset("ddpmpp_imagenet")
    with pytest.raises(ValueError, match="widht"):
        unet_preset("dpdm_mnist", widht=3)
    with pytest.raises(ValueError, match="attn_resolutions"):  # 32x32 input has no 7x7 level
        _abstract(unet_preset("dpdm_mnist"), (32, 32, 1))
    with pytest.raises(ValueError, match="divisible"):
        _abstract(unet_preset("dpdm_mnist"), (30, 30, 1))
    with pytest.raises(ValueError, match="dtype"):
        _abstract(unet_preset("dpdm_mnist", dtype=jnp.int32), (28, 28, 1))
    with pytest.raises(ValueError, match="dropout"):
        _abstract(unet_preset("dpdm_mnist", dropout=1.0), (28, 28, 1))
    with pytest.raises(ValueError, match="H, W, C"):
        _abstract(unet_preset("dpdm_mnist"), (28, 28))


def test_bf16_module_keeps_float32_params_and_computes_convs_in_bf16():
    module = unet_preset("dpdm_mnist", dtype=jnp.bfloat16)
    params, x, t = _abstract(module, (28, 28, 1))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    jaxpr = jax.make_jaxpr(module.apply)(params, x, t).jaxpr
    convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert len(convs) > 30 and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)
    assert jax.eval_shape(module.apply, params, x, t).dtype == jnp.float32   # cast back for samplers


def test_bf16_dsm_loss_within_roundoff_tolerance_of_float32():
    """bf16 vs float32 on the same params, batch and key.

    Tolerance: each bf16 rounding has relative error <= u = 2^-8. Through the ~20 layers of the
    tiny U-Net (GroupNorm re-normalises, so errors add rather than multiply) independent roundings
    accumulate like a random walk, ~ u sqrt(20) ~ 4.5u; we allow ||f_bf16 - f_32|| <= 16u ||f_32||
    and, to show bf16 is really used, >= u/16 ||f_32|| (float32 would give ~1e-6). For the loss
    ``L = ||f - eps||^2 / B``, Cauchy-Schwarz gives ``|L_bf16 - L_32| <= (2 ||f_32 - eps|| d + d^2) / B``
    with ``d = 16u ||f_32||``.
    """
    kw = dict(TINY, channel_mult=(1, 2), attn_resolutions=(14,))
    m32, m16 = unet_preset("dpdm_mnist", **kw), unet_preset("dpdm_mnist", dtype=jnp.bfloat16, **kw)
    params = _random_params(m32, (28, 28, 1))
    x0 = jax.random.uniform(jax.random.PRNGKey(2), (8, 28, 28, 1), minval=-1.0, maxval=1.0)
    loss, key = dsm_loss(VPSDE()), jax.random.PRNGKey(3)

    @jax.jit
    def run(p):
        l16, _ = loss(make_apply(m16), p, key, x0)
        l32, aux = loss(make_apply(m32), p, key, x0)
        f32, f16 = m32.apply(p, aux["x_t"], aux["t"]), m16.apply(p, aux["x_t"], aux["t"])
        return l16, l32, aux["eps"], f32, f16

    l16, l32, eps, f32, f16 = run(params)
    norm = lambda a: float(jnp.linalg.norm(a))  # noqa: E731
    rel = norm(f16 - f32) / norm(f32)
    assert U_BF16 / 16 < rel < 16 * U_BF16, rel
    d = 16 * U_BF16 * norm(f32)
    assert abs(float(l16) - float(l32)) <= (2 * norm(f32 - eps) * d + d**2) / 8, (l16, l32)
    np.testing.assert_allclose(float(l32), np.sum((np.asarray(f32) - np.asarray(eps)) ** 2) / 8, rtol=1e-4)
    grads = jax.eval_shape(jax.grad(lambda p: loss(make_apply(m16), p, key, x0)[0]), params)
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))  # so is optimiser state


def test_bf16_model_in_ddim_sampler_keeps_float32_state():
    module = unet_preset("dpdm_mnist", dtype=jnp.bfloat16, **TINY)
    params = _random_params(module, (28, 28, 1))
    seen = []

    def eps_fn(x, t):
        out = module.apply(params, x, t)
        seen.append((x.dtype, out.dtype))
        return out

    run = jax.jit(lambda key: sample(ddim_rule(VPSDE()), eps_fn, key, (2, 28, 28, 1), uniform_grid(3),
                                     return_trajectory=True))
    x, info = run(jax.random.PRNGKey(4))
    assert seen and all(dx == jnp.float32 and do == jnp.float32 for dx, do in seen)
    assert x.dtype == jnp.float32 and info["trajectory"].dtype == jnp.float32
    assert x.shape == (2, 28, 28, 1) and bool(jnp.all(jnp.isfinite(info["trajectory"])))
    assert int(info["nfe"]) == 3
