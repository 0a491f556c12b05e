"""GENIE derivative heads (thesis eqs. 3.19-3.22, 3.70-3.73, Algs. 2-3) and knowledge distillation (eqs. 5.5-5.9)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic._mixture import GaussianMixture
from diffjax.distill import (conditioned_apply, conditioned_input_dim, edm_kd_loss, exact_derivative_model,
                             genie_head_apply, genie_head_loss, genie_head_rule, genie_head_sample, guided_kd_loss,
                             guided_model, kd_loss, mixed_derivative, train_genie_head, with_features)
from diffjax.losses import dsm_loss, edm_loss
from diffjax.param import denoiser_from_eps, edm_config, precondition, v_from_eps, x0_from_eps
from diffjax.samplers.genie import ddim_gamma_coords, genie_derivative, genie_rule
from diffjax.samplers.guidance import classifier_free_guidance
from diffjax.samplers.picard import picard_sample
from diffjax.samplers.sequential import sample
from diffjax.schedules import quadratic_grid, uniform_grid
from diffjax.sde._scalar import VESDE, VPSDE


def _wide(dtype=jnp.float32):
    return GaussianMixture(jnp.array([0.2, 0.3, 0.5], dtype), jnp.array([[-1.0, 0.5], [1.0, -0.5], [0.2, 1.0]], dtype),
                           jnp.array([0.3, 0.4, 0.5], dtype))


_draw = jax.jit(lambda mix, key, n: mix.sample(key, n), static_argnums=2)  # eager sampling compiles op by op


def _sample(rule, model, key, shape, grid, x_init=None):
    """The sequential executor under one jit (cheaper than eager dispatch around the scan)."""
    return jax.jit(lambda k, g, xi: sample(rule, model, k, shape, g, x_init=xi))(key, grid, x_init)


def _gauss_eps(sde, var=0.25):
    """Exact eps of data N(0, var I): eps(x, t) = sigma_t x / (var alpha_t^2 + sigma_t^2) (cheap to compile)."""

    def eps_fn(x, t):
        a, s = sde.marginal_coeffs(t)
        a, s = jnp.reshape(a, (-1, 1)), jnp.reshape(s, (-1, 1))
        return s * x / (var * a**2 + s**2)

    return eps_fn


def _terms(eps_fn, sde, x, t):
    """The three terms of thesis eq. (3.19) by separate JVPs (VP: alpha = 1 / sqrt(1 + gamma^2))."""
    _, g = ddim_gamma_coords(sde, t)
    _, dlam = jax.jvp(sde.log_snr, (t,), (jnp.ones_like(t),))
    dt_dgamma = -2.0 / (g * dlam)
    e = eps_fn(x, t)
    jvp_x = lambda v: jax.jvp(lambda y: eps_fn(y, t), (x,), (v,))[1]
    g_ = g[:, None]
    term1 = jvp_x(e) / jnp.sqrt(1.0 + g_**2)
    term2 = -g_ / (1.0 + g_**2) * jvp_x(x)
    term3 = jax.jvp(lambda s: eps_fn(x, s), (t,), (jnp.ones_like(t),))[1] * dt_dgamma[:, None]
    return g_, (term1, term2, term3)


def _exact_head(eps_fn, sde):
    """A "head" whose mixed output (3.73) is exactly d_gamma eps: k^(i) = term_i / (coefficient_i)."""

    def head_apply(params, feats, x, t, eps):
        g, (a, b, c) = _terms(eps_fn, sde, x, t)
        return (-g * a, (1.0 + g**2) / g * b, g * (1.0 + g**2) * c)

    return head_apply


# ------------------------------------------------------------------------------------ GENIE head


def test_eq_3_19_terms_sum_to_exact_derivative_and_mixed_head_loss_is_zero():
    """float64: the three JVP terms of eq. (3.19) sum to genie_derivative; a head that outputs them through
    the mixed parameterisation (3.73) has loss (3.22) zero, while a zero head does not."""
    with jax.enable_x64(True):
        sde, mix = VPSDE(), _wide(jnp.float64)
        eps_fn = mix.eps_fn(sde)
        x = _draw(mix.marginal(sde, 0.3), jax.random.PRNGKey(0), 64)
        t = jnp.linspace(0.01, 0.99, 64)
        feats_apply = lambda p, y, s: (eps_fn(y, s), y)
        loss = genie_head_loss(sde, feats_apply, None, t_min=1e-3)
        x0 = _draw(mix, jax.random.PRNGKey(1), 256)
        key = jax.random.PRNGKey(2)

        @jax.jit
        def run(x, t, x0):
            return (sum(_terms(eps_fn, sde, x, t)[1]), genie_derivative(eps_fn, sde, x, t),
                    loss(_exact_head(eps_fn, sde), None, key, x0))

        terms_sum, exact_d, (exact, aux) = run(x, t, x0)
        np.testing.assert_allclose(terms_sum, exact_d, rtol=1e-10, atol=1e-12)
        zero = jnp.mean(aux["weight"] * jnp.sum(aux["target"] ** 2, -1))  # the loss of a zero head
        assert zero > 1e-3
        assert exact <= 1e-20 * zero
        _, g = ddim_gamma_coords(sde, aux["t"])
        np.testing.assert_allclose(aux["weight"], g**2, rtol=1e-12)  # g_d(t) = gamma_t^2


def test_mixed_parameterisation_is_exact_for_a_point_mass():
    """Thesis eqs. (3.70)-(3.72): for p_0 = delta_0, eps = x / sigma_t and each term of (3.19) equals its
    coefficient in (3.73) times -x / sigma_t; so k^(1) = k^(2) = k^(3) = -eps reproduce each term."""
    with jax.enable_x64(True):
        sde = VPSDE()
        eps_fn = lambda x, t: x / sde.marginal_coeffs(t)[1][:, None]
        t = jnp.linspace(0.02, 1.0, 16)
        x = jax.random.normal(jax.random.PRNGKey(0), (16, 3)) * sde.marginal_coeffs(t)[1][:, None]
        g, terms = jax.jit(lambda x, t: _terms(eps_fn, sde, x, t))(x, t)
        m = -eps_fn(x, t)
        coeffs = (-1.0 / g, g / (1 + g**2), 1.0 / (g * (1 + g**2)))
        for term, c in zip(terms, coeffs):
            np.testing.assert_allclose(term, c * m, rtol=1e-9, atol=1e-12)
        zero = jnp.zeros_like(x)
        for i in range(3):  # each channel alone picks out its coefficient
            k = [zero, zero, zero]
            k[i] = m
            np.testing.assert_allclose(mixed_derivative(sde, tuple(k), x, t), coeffs[i] * m, rtol=1e-12)


def test_head_rule_with_exact_derivative_is_genie_and_counts_nfe():
    sde, mix = VPSDE(), _wide()
    eps_fn = mix.eps_fn(sde)
    grid = quadratic_grid(8, 1e-3)
    key = jax.random.PRNGKey(0)
    ref, info_ref = _sample(genie_rule(sde), eps_fn, key, (256, 2), grid)
    out, info = _sample(genie_head_rule(sde), exact_derivative_model(eps_fn, sde), key, (256, 2), grid)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert info["nfe"] == 8 and info_ref["nfe"] == 16  # 1 backbone(+head) call vs 1 JVP (2 passes) per step
    cheap = lambda x, t: (x, x)
    for afs, den, nfe in [(True, False, 7), (False, True, 9), (True, True, 8)]:
        _, info = genie_head_sample(cheap, sde, key=key, shape=(4, 2), n_steps=8, grid="quadratic", afs=afs,
                                    denoise=den)
        assert info["nfe"] == nfe


def test_head_samples_converge_linearly_to_exact_genie():
    """Head = exact derivative + delta * perturbation: the sample distance to exact-JVP GENIE is linear in
    delta (the per-step error h^2/2 delta p propagates linearly), and zero at delta = 0 (float64)."""
    with jax.enable_x64(True):
        sde, mix = VPSDE(), _wide(jnp.float64)
        eps_fn = mix.eps_fn(sde)
        grid = uniform_grid(10, 1e-3)
        key = jax.random.PRNGKey(3)
        ref, _ = _sample(genie_rule(sde), eps_fn, key, (128, 2), grid)

        @jax.jit
        def dist(delta):
            def model(x, t):
                e, d = exact_derivative_model(eps_fn, sde)(x, t)
                return e, d + delta * jnp.sin(3.0 * x + t) * (1.0 + x[:, ::-1] ** 2)

            out, _ = _sample(genie_head_rule(sde), model, key, (128, 2), grid)
            return jnp.sqrt(jnp.mean(jnp.sum((out - ref) ** 2, -1)))

        deltas = [1e-3, 1e-4, 1e-5]
        d = np.array([float(dist(dl)) for dl in deltas])
        assert float(dist(0.0)) < 1e-12
        slopes = d / np.array(deltas)
        assert slopes[0] > 1e-3
        np.testing.assert_allclose(slopes, slopes[-1], rtol=0.02)


def test_afs_first_step_denoising_and_picard():
    """AFS (Alg. 3 line 5, eqs. 3.82-3.85): the first step from T is xbar_1 = xbar_0 + (gamma_1 - gamma_0) x_0
    for VP without calling the model; the denoising step is (x - sigma eps) / alpha; Picard == sequential."""
    sde = VPSDE()
    nan_model = lambda x, t: (x * jnp.nan, x * jnp.nan)
    grid = jnp.array([1.0, 0.6])
    x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 2))
    out, _ = _sample(genie_head_rule(sde, afs=True), nan_model, jax.random.PRNGKey(1), (32, 2), grid, x_init=x0)
    (a0, g0), (a1, g1) = ddim_gamma_coords(sde, grid[0]), ddim_gamma_coords(sde, grid[1])
    s_T = sde.marginal_coeffs(grid[0])[1]  # eps of the prior N(0, I) is sigma_T x (= x to 2e-5, eq. 3.82)
    np.testing.assert_allclose(out, a1 * (x0 / a0 + (g1 - g0) * s_T * x0), rtol=1e-4, atol=1e-5)
    # a later step does call the model
    out2, _ = _sample(genie_head_rule(sde, afs=True), nan_model, jax.random.PRNGKey(1), (32, 2),
                      jnp.array([0.6, 0.3]), x_init=x0)
    assert bool(jnp.all(jnp.isnan(out2)))
    # VE: eps of the prior N(0, sigma_max^2) is x / sigma_max, constant along the ODE -> plain Euler step
    ve = VESDE()
    out_ve, _ = _sample(genie_head_rule(ve, afs=True), nan_model, jax.random.PRNGKey(1), (32, 2),
                        jnp.array([1.0, 0.5]), x_init=x0 * ve.sigma_max)
    _, s1 = ve.marginal_coeffs(jnp.array(0.5))
    np.testing.assert_allclose(out_ve, x0 * s1, rtol=1e-4)
    # final denoising (data N(0, 0.25 I))
    eps_fn = _gauss_eps(sde)
    model = exact_derivative_model(eps_fn, sde)
    grid = uniform_grid(4, 1e-2)
    x_last, _ = _sample(genie_head_rule(sde, afs=True), model, jax.random.PRNGKey(2), (64, 2), grid)
    y, _ = _sample(genie_head_rule(sde, afs=True, denoise=True), model, jax.random.PRNGKey(2), (64, 2), grid)
    a, s = sde.marginal_coeffs(grid[-1])
    np.testing.assert_allclose(y, (x_last - s * eps_fn(x_last, grid[-1])) / a, rtol=1e-5, atol=1e-6)
    # both executors
    yp, info = picard_sample(genie_head_rule(sde, afs=True, denoise=True), model, jax.random.PRNGKey(2), (64, 2), grid,
                             tol=0.0, atol=0.0)
    assert bool(info["converged"])
    np.testing.assert_allclose(yp, y, rtol=1e-4, atol=1e-5)


def test_head_training_driver_and_combined_model(tmp_path):
    """Alg. 2 through train_genie_head (a real GenieHead on analytic 'features'); the loss falls and the
    restored head plugs into the one-call model (eps, d_eps)."""
    from diffjax.nn.apply import init_module
    from diffjax.nn.heads import GenieHead
    from diffjax.train import make_mesh, restore_params

    sde, mix = VPSDE(), _wide()
    eps_fn = _gauss_eps(sde)
    feats_apply = lambda p, x, t: (eps_fn(x, t), jnp.concatenate([x, eps_fn(x, t)], -1))
    head = GenieHead(hidden=16, num_outputs=3, time_dim=8)
    x = jnp.zeros((8, 2))
    e, f = feats_apply(None, x, jnp.full((8,), 0.5))
    hp = init_module(head, jax.random.PRNGKey(0), f, x, jnp.full((8,), 0.5), e)
    data_fn = lambda s: _draw(mix, jax.random.fold_in(jax.random.PRNGKey(5), s), 64)
    state = train_genie_head(sde, feats_apply, None, head.apply, hp, data_fn, steps=60, out_dir=tmp_path,
                             config={"test": 1}, lr=3e-3, batch_size=64, log_every=20, ckpt_every=60,
                             progress=False, log=lambda s: None, mesh=make_mesh(jax.devices()[:1]))
    # (one device: the 8 forced host devices would only add partitioning to the compile)
    import json
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["loss"] < 0.8 * recs[0]["loss"]
    restored = restore_params(tmp_path, ema=False)
    backbone = lambda p, y, s, return_features=False: feats_apply(p, y, s) if return_features else eps_fn(y, s)
    apply = genie_head_apply(sde, with_features(backbone), head.apply)
    eps, d = jax.jit(apply)({"backbone": None, "head": restored}, x + 0.3, jnp.float32(0.4))
    np.testing.assert_allclose(eps, eps_fn(x + 0.3, jnp.float32(0.4)), rtol=1e-6)
    assert d.shape == x.shape and bool(jnp.all(jnp.isfinite(d)))
    assert int(state.step) == 60


# ------------------------------------------------------------------------------------ knowledge distillation


def _student(kind, sde, eps_fn):
    """apply_fn(params, x, t) reproducing eps_fn in the given parameterisation, scaled by params."""
    conv = {"eps": lambda f: f, "x0": lambda f: x0_from_eps(sde, f), "v": lambda f: v_from_eps(sde, f),
            "score": lambda f: (lambda x, t: -eps_fn(x, t) / sde.marginal_coeffs(t)[1][:, None])}[kind](eps_fn)
    return lambda p, x, t: p * conv(x, t)


def test_kd_loss_zero_when_student_is_teacher():
    """Eq. (5.6) is consistent: zero when the student (in any output parameterisation) equals the teacher."""
    sde, mix = VPSDE(), _wide()
    teacher = _gauss_eps(sde)
    x0 = _draw(mix, jax.random.PRNGKey(0), 128)
    kinds = ("eps", "x0", "v", "score")

    @jax.jit
    def run(p):
        return [kd_loss(sde, teacher, parameterization=k, t_min=1e-2)(_student(k, sde, teacher), p,
                                                                      jax.random.PRNGKey(1), x0) for k in kinds]

    for (same, aux), (off, _) in zip(run(1.0), run(1.1)):
        assert float(same) < 1e-8 * float(off) + 1e-9
    np.testing.assert_allclose(aux["teacher"], teacher(aux["x_t"], aux["t"]), rtol=1e-5, atol=1e-6)


def test_mixed_training_is_distillation_plus_regulariser_and_alpha_one_is_dsm():
    """Eqs. (5.9) = (5.6) + (5.8) + const (5.13-5.14): values and student gradients; alpha = 1 is DSM (5.4)."""
    with jax.enable_x64(True):
        sde, mix = VPSDE(), _wide(jnp.float64)
        teacher = mix.eps_fn(sde)
        x0 = _draw(mix, jax.random.PRNGKey(0), 64)
        key = jax.random.PRNGKey(1)
        apply_fn = lambda W, x, t: teacher(x, t) @ W + 0.1 * x * t[:, None]
        W = jnp.array([[1.2, 0.1], [-0.3, 0.8]])
        a = 0.3
        mixed = kd_loss(sde, teacher, alpha=a)
        def kd_plus_reg(W):
            _, ax = mixed(apply_fn, W, key, x0, reduce=False)
            return jnp.mean(ax["weight"] * (ax["mse"] + ax["reg"]))

        @jax.jit
        def run(W):
            dsm_pairs = [(kd_loss(sde, teacher, alpha=1.0, weighting=w, t_min=1e-3)(apply_fn, W, key, x0)[0],
                          dsm_loss(sde, weighting=w, t_min=1e-3)(apply_fn, W, key, x0)[0])
                         for w in ("simple", "likelihood")]
            grads = (jax.grad(lambda W: mixed(apply_fn, W, key, x0)[0])(W), jax.grad(kd_plus_reg)(W))
            return mixed(apply_fn, W, key, x0, reduce=False), grads, dsm_pairs

        (val, aux), (g_mixed, g_split), dsm_pairs = run(W)
        const = a * jnp.sum((aux["teacher"] - aux["eps"]) ** 2, -1)
        np.testing.assert_allclose(val, aux["weight"] * (aux["mse"] + aux["reg"] + const), rtol=1e-12)
        np.testing.assert_allclose(g_mixed, g_split, rtol=1e-10)
        for d1, d2 in dsm_pairs:
            np.testing.assert_allclose(d1, d2, rtol=1e-12)


def test_kd_with_exact_teacher_equals_dsm_up_to_a_constant():
    """Eq. (5.6) becomes score matching as the teacher approaches the true score (thesis §5.3.3): with the
    exact eps of the mixture, E[dsm] - E[kd] is the same for any student (Monte Carlo, paired draws)."""
    sde, mix = VPSDE(), _wide()
    teacher = mix.eps_fn(sde)
    x0 = _draw(mix, jax.random.PRNGKey(0), 40_000)
    key = jax.random.PRNGKey(1)
    kd, dsm = kd_loss(sde, teacher, t_min=0.05), dsm_loss(sde, t_min=0.05)
    students = [lambda p, x, t: 0.5 * x, lambda p, x, t: jnp.tanh(x) + 0.2 * t[:, None]]
    diffs = jax.jit(lambda x0: [dsm(st, None, key, x0, reduce=False)[0] - kd(st, None, key, x0, reduce=False)[0]
                                for st in students])(x0)
    delta = diffs[0] - diffs[1]  # = -2 (a1 - a2).(eps - eps*) : mean zero given x_t
    se = float(jnp.std(delta)) / np.sqrt(delta.shape[0])
    assert abs(float(jnp.mean(delta))) < 4 * se
    assert float(jnp.mean(diffs[0])) > 20 * se  # the constant itself is not zero


def test_edm_kd_loss_zero_at_teacher_and_alpha_one_is_edm_loss():
    config = edm_config()
    F = lambda p, y, c: p * jnp.tanh(y) * (1.0 + 0.1 * c[:, None])
    teacher = precondition(config, lambda y, c: F(1.0, y, c))
    x0 = _draw(_wide(), jax.random.PRNGKey(0), 128)
    key = jax.random.PRNGKey(1)
    same, _ = edm_kd_loss(config, teacher)(F, 1.0, key, x0)
    off, _ = edm_kd_loss(config, teacher)(F, 0.7, key, x0)
    assert float(same) < 1e-10 and float(off) > 1e-3
    np.testing.assert_allclose(edm_kd_loss(config, teacher, alpha=1.0)(F, 0.7, key, x0)[0],
                               edm_loss(config)(F, 0.7, key, x0)[0], rtol=1e-6)


def _conditional(mix, sde):
    """Exact eps of the mixture (unconditional) and of component c (conditional)."""
    def cond(x, t, c):
        alpha, sigma = sde.marginal_coeffs(t)
        means, stds = mix.means[c], mix.stds[c]
        a, s = alpha[:, None], sigma[:, None]
        var = a**2 * stds[:, None] ** 2 + s**2
        return s * (x - a * means) / var  # eps = -sigma score of N(alpha m, alpha^2 s_c^2 + sigma^2)
    return cond, mix.eps_fn(sde)


def test_guidance_conventions_agree_and_are_parameterisation_free():
    """Eq. (5.5) (1 + w) D_c - w D_u == (1 - w') D_u + w' D_c with w' = 1 + w (eq. 4.27 convention, the
    guidance.py docstring); per-example w; guiding eps or the denoiser gives the same guided denoiser."""
    sde, mix = VPSDE(), _wide()
    cond, _ = _conditional(mix, sde)
    uncond = _gauss_eps(sde, 0.5)  # any pair of models: the identities are affine
    c = jnp.array([0, 1, 2, 1] * 8)
    cond_c = lambda x, t: cond(x, t, c)
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 2))
    t = jnp.linspace(0.05, 0.9, 32)
    for w in (0.0, 1.5, -1.0):
        g = guided_model(cond_c, uncond, w)(x, t)
        np.testing.assert_allclose(g, classifier_free_guidance(cond_c, uncond, w)(x, t), rtol=1e-6)
        wp = 1.0 + w
        np.testing.assert_allclose(g, (1 - wp) * uncond(x, t) + wp * cond_c(x, t), rtol=1e-5, atol=1e-6)
    w = jnp.linspace(0.0, 3.0, 32)
    g = guided_model(cond_c, uncond, w)(x, t)
    np.testing.assert_allclose(g[5], guided_model(cond_c, uncond, w[5])(x, t)[5], rtol=1e-6)
    # denoisers: D^w from guided eps == (1 + w) D_c - w D_u
    sig = jnp.exp(-0.5 * sde.log_snr(t))
    D = lambda f: denoiser_from_eps(sde, f)(x, sig)
    lhs = D(guided_model(cond_c, uncond, w))
    rhs = (1 + w)[:, None] * D(cond_c) - w[:, None] * D(uncond)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)


def test_guided_model_is_the_one_guidance_and_kd_losses_live_in_losses():
    from diffjax import losses

    f = lambda x, t: x
    for bad in (jnp.array([1.0, jnp.nan]), jnp.ones((2, 2))):
        with pytest.raises(ValueError, match="w"):
            guided_model(f, f, bad)
    assert (kd_loss, edm_kd_loss, guided_kd_loss) == (losses.kd_loss, losses.edm_kd_loss, losses.guided_kd_loss)


def test_guided_kd_loss_zero_at_guided_teacher():
    sde, mix = VPSDE(), _wide()
    cond, uncond = _conditional(mix, sde)
    loss = guided_kd_loss(sde, cond, uncond, w_min=0.0, w_max=3.0, t_min=1e-2)
    key = jax.random.PRNGKey(0)
    c = jax.random.randint(key, (256,), 0, 3)
    x0 = mix.means[c] + mix.stds[c][:, None] * jax.random.normal(jax.random.PRNGKey(1), (256, 2))
    perfect = lambda p, x, t, cc, w: guided_model(lambda y, s: cond(y, s, cc), uncond, w)(x, t)
    blind = lambda p, x, t, cc, w: cond(x, t, cc)  # ignores w (= the w = 0 model)
    (zero, aux), (bad, _) = jax.jit(lambda b: (loss(perfect, None, key, b), loss(blind, None, key, b)))((x0, c))
    assert float(zero) < 1e-10 and float(bad) > 1e-2
    assert float(aux["w"].min()) >= 0.0 and float(aux["w"].max()) <= 3.0
    with pytest.raises(ValueError, match="batch"):
        loss(perfect, None, key, x0)


def test_conditioned_student_and_teacher_inside_the_jitted_step():
    """A ScoreMLP student fed [x, one_hot(c), phi(w)] trains by guided KD with make_train_step; the teacher
    is traced once into the jitted step (no Python call per step)."""
    from diffjax.nn.apply import init_params, make_apply
    from diffjax.nn.mlp import ScoreMLP
    from diffjax.train import create_train_state, make_optimizer, make_train_step

    sde, mix = VPSDE(), _wide()
    cond, uncond = _conditional(mix, sde)
    calls = []

    def counted_cond(x, t, c):
        calls.append(1)
        return cond(x, t, c)

    net = ScoreMLP(width=16, depth=1, out_dim=2)
    apply = conditioned_apply(make_apply(net), num_classes=3)
    params = init_params(net, jax.random.PRNGKey(0), (4, conditioned_input_dim(2, num_classes=3)))
    out = apply(params, jnp.zeros((4, 2)), 0.5, jnp.array([0, 1, 2, 0]), 1.0)
    assert out.shape == (4, 2)
    opt = make_optimizer(1e-2)
    step = make_train_step(guided_kd_loss(sde, counted_cond, uncond), apply, opt)
    state = create_train_state(params, opt, jax.random.PRNGKey(1))
    c = jnp.arange(64) % 3
    x0 = mix.means[c]
    losses = []
    for _ in range(30):
        state, m = step(state, (x0, c))
        losses.append(float(m["loss"]))
    assert len(calls) == 1
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_validation_errors():
    sde = VPSDE()
    f = lambda x, t: x
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(sde, f, alpha=1.5)
    with pytest.raises(ValueError, match="parameterization"):
        kd_loss(sde, f, parameterization="noise")
    with pytest.raises(ValueError, match="t_min"):
        genie_head_loss(sde, lambda p, x, t: (x, x), None, t_min=2.0)
    with pytest.raises(ValueError, match="w_min"):
        guided_kd_loss(sde, f, f, w_min=2.0, w_max=1.0)
    with pytest.raises(TypeError, match="afs"):
        genie_head_rule(sde, afs=1)
    with pytest.raises(ValueError, match="config"):
        edm_kd_loss("edm", f)
    with pytest.raises(ValueError, match="three"):
        mixed_derivative(sde, (jnp.zeros((2, 2)),), jnp.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="num_classes"):
        conditioned_apply(lambda p, x, t: x, num_classes=0)
    with pytest.raises(ValueError, match="grid"):
        genie_head_sample(lambda x, t: (x, x), sde, key=jax.random.PRNGKey(0), shape=(2, 2), n_steps=3, grid="cubic")
