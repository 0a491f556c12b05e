"""Tests for diffjax.param: parameterisation converters, Table 4.7 preconditioning, CLD mixed score."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from diffjax import param as P
from diffjax.analytic._mixture import nine_gaussians
from diffjax.schedules import sigma_from_t
from diffjax.sde._scalar import VESDE, VPSDE, SubVPSDE

SDES = [VPSDE(), SubVPSDE(), VESDE()]
SDE_IDS = ["vp", "subvp", "ve"]


def _h(x, t):
    """A fixed smooth test function of (x, t) with t scalar or (batch,)."""
    t = jnp.asarray(t)
    tb = t.reshape(t.shape + (1,) * (x.ndim - t.ndim)) if t.ndim else t
    return jnp.sin(1.3 * x + 0.7 * tb) + 0.3 * jnp.roll(x, 1, axis=-1) * jnp.cos(2.0 * tb)


def _hd(x, sigma):
    """A fixed smooth test function of (x, sigma) (plays a denoiser)."""
    return _h(x, jnp.log(jnp.asarray(sigma)))


# --------------------------------------------------------------------------------------------
# scalar converters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_converter_round_trips_are_exact(sde):
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(0)
        kx, kt = jax.random.split(key)
        x = 3.0 * jax.random.normal(kx, (64, 3), jnp.float64)
        t = jax.random.uniform(kt, (64,), jnp.float64, minval=1e-3, maxval=1.0)
        pairs = {
            "eps->score->eps": P.eps_from_score(sde, P.score_from_eps(sde, _h)),
            "score->eps->score": P.score_from_eps(sde, P.eps_from_score(sde, _h)),
            "x0->eps->x0": P.x0_from_eps(sde, P.eps_from_x0(sde, _h)),
            "eps->x0->eps": P.eps_from_x0(sde, P.x0_from_eps(sde, _h)),
            "v->eps->v": P.v_from_eps(sde, P.eps_from_v(sde, _h)),
            "eps->v->eps": P.eps_from_v(sde, P.v_from_eps(sde, _h)),
            "eps->D->eps": P.eps_from_denoiser(sde, P.denoiser_from_eps(sde, _h)),
        }
        sigma = sigma_from_t(sde, t)
        dd = P.denoiser_from_eps(sde, P.eps_from_denoiser(sde, _hd))

        @jax.jit
        def run(x, t, sigma):
            return ({k: (fn(x, t), fn(x, 0.37)) for k, fn in pairs.items()},
                    _h(x, t), _h(x, 0.37), dd(x, sigma), _hd(x, sigma))

        out, ref, ref_scalar, d_out, d_ref = run(x, t, sigma)
        for name, (vec, scal) in out.items():
            assert vec.dtype == jnp.float64
            np.testing.assert_allclose(vec, ref, rtol=1e-9, atol=1e-9, err_msg=name)
            np.testing.assert_allclose(scal, ref_scalar, rtol=1e-9, atol=1e-9, err_msg=name + " (scalar t)")
        # D -> eps -> D, at EDM noise levels inside the SDE's range.
        np.testing.assert_allclose(d_out, d_ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_converters_match_definitions_on_a_known_sample(sde):
    """With an oracle eps(x_t) = (x_t - alpha x0)/sigma: x0, v, score are their defining formulas."""
    with jax.enable_x64(True):
        k0, ke, kt = jax.random.split(jax.random.PRNGKey(1), 3)
        x0 = jax.random.normal(k0, (32, 2), jnp.float64)
        eps = jax.random.normal(ke, (32, 2), jnp.float64)
        t = jax.random.uniform(kt, (32,), jnp.float64, minval=1e-2, maxval=1.0)
        a, s = (c[:, None] for c in sde.marginal_coeffs(t))
        x_t = a * x0 + s * eps
        oracle = lambda x, tt: (x - a * x0) / s  # noqa: E731
        np.testing.assert_allclose(P.x0_from_eps(sde, oracle)(x_t, t), x0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(P.v_from_eps(sde, oracle)(x_t, t), a * eps - s * x0, rtol=1e-9, atol=1e-9)
        # thesis eq. (1.24): the DSM target (alpha x0 - x_t) / sigma^2
        np.testing.assert_allclose(P.score_from_eps(sde, oracle)(x_t, t), (a * x0 - x_t) / s**2, rtol=1e-9)
        # EDM coordinates: x_hat = x_t/alpha = x0 + (sigma/alpha) eps, D = x0.
        D = P.denoiser_from_eps(sde, oracle)
        np.testing.assert_allclose(D(x_t / a, (s / a)[:, 0]), x0, rtol=1e-7, atol=1e-7)


def _close(a, b, tol):
    err = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    assert np.all(err <= tol), f"max error {err.max()}, worst ratio {np.max(err / tol)}"


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_exact_mixture_eps_gives_exact_edm_denoiser(sde):
    gm = nine_gaussians(std=0.1)
    kx, kt = jax.random.split(jax.random.PRNGKey(2))
    t = jax.random.uniform(kt, (128,), minval=1e-3, maxval=1.0)
    sigma = sigma_from_t(sde, t)
    x_hat = gm.sample(kx, 128) + sigma[:, None] * jax.random.normal(kt, (128, 2))

    @jax.jit
    def run(x_hat, sigma, t):
        x_t = sde.marginal_coeffs(t)[0][:, None] * x_hat
        return (P.denoiser_from_eps(sde, gm.eps_fn(sde))(x_hat, sigma), gm.denoiser(x_hat, sigma),
                P.x0_from_eps(sde, gm.eps_fn(sde))(x_t, t),
                P.eps_from_denoiser(sde, gm.denoiser)(x_t, t), gm.eps_fn(sde)(x_t, t))

    D, D_exact, x0_pred, eps_from_D, eps_exact = run(x_hat, sigma, t)
    scale = 1.0 + sigma[:, None]  # float32 error of x_hat - sigma eps grows with |x_hat| ~ sigma
    _close(D, D_exact, 2e-5 * scale)
    # eq. (1.25): x0-prediction of the exact eps is the posterior mean E[x0 | x_t] = D(x_t/alpha, sigma_t/alpha).
    _close(x0_pred, D_exact, 2e-5 * scale)
    # and back: the exact denoiser gives the exact eps.
    np.testing.assert_allclose(eps_from_D, eps_exact, rtol=2e-3, atol=2e-3)


# --------------------------------------------------------------------------------------------
# Table 4.7 configs
# --------------------------------------------------------------------------------------------

SIG = np.geomspace(0.002, 80.0, 41)
SD = 0.5


def _table_4_7(name):
    """Table 4.7, re-typed in numpy float64 (independent of diffjax)."""
    s = SIG
    if name == "vp":
        t = (np.sqrt(0.1**2 + 2 * 19.9 * np.log1p(s**2)) - 0.1) / 19.9
        return dict(c_skip=np.ones_like(s), c_out=-s, c_in=1 / np.sqrt(s**2 + 1), c_noise=999 * t, lam=1 / s**2)
    if name == "ve":
        return dict(c_skip=np.ones_like(s), c_out=s, c_in=np.ones_like(s), c_noise=np.log(s / 2), lam=1 / s**2)
    if name == "v_prediction":
        t = 2 / np.pi * np.arctan(s)
        assert np.allclose(np.sqrt(np.cos(np.pi * t / 2) ** -2 - 1), s)  # sigma(t) of the table
        return dict(c_skip=1 / (s**2 + 1), c_out=s / np.sqrt(1 + s**2), c_in=1 / np.sqrt(s**2 + 1), c_noise=t,
                    lam=(s**2 + 1) / s**2)
    return dict(c_skip=SD**2 / (s**2 + SD**2), c_out=s * SD / np.sqrt(SD**2 + s**2), c_in=1 / np.sqrt(s**2 + SD**2),
                c_noise=np.log(s) / 4, lam=(s**2 + SD**2) / (s * SD) ** 2)


CONFIGS = {"vp": P.vp_config(), "ve": P.ve_config(), "v_prediction": P.v_prediction_config(),
           "edm": P.edm_config(sigma_data=SD)}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_coefficients_match_table_4_7(name):
    cfg, ref = CONFIGS[name], _table_4_7(name)
    s = jnp.asarray(SIG)
    for field, r in [("c_skip", ref["c_skip"]), ("c_out", ref["c_out"]), ("c_in", ref["c_in"]),
                     ("c_noise", ref["c_noise"]), ("loss_weight", ref["lam"])]:
        np.testing.assert_allclose(getattr(cfg, field)(s), r, rtol=2e-5, atol=1e-5, err_msg=f"{name}.{field}")
    # Karras et al. eq. 8: lambda c_out^2 = 1 — the loss is a unit-weighted MSE on F for every config.
    np.testing.assert_allclose(cfg.loss_weight(s) * cfg.c_out(s) ** 2, 1.0, rtol=1e-5)
    assert cfg.name == name


def test_edm_config_unit_variance_input_and_target():
    cfg = P.edm_config(sigma_data=SD)
    s = jnp.asarray(SIG)
    np.testing.assert_allclose(cfg.c_in(s) ** 2 * (s**2 + SD**2), 1.0, rtol=1e-5)
    # Var[F_target] for x0 with std sigma_data: ((1 - c_skip)^2 sd^2 + c_skip^2 sigma^2) / c_out^2 = 1.
    cs, co = cfg.c_skip(s), cfg.c_out(s)
    np.testing.assert_allclose(((1 - cs) ** 2 * SD**2 + cs**2 * s**2) / co**2, 1.0, rtol=1e-5)
    # Monte Carlo with non-Gaussian data of std sigma_data = sqrt(1/3): x0 ~ U(-1, 1) (DPDM's choice).
    sd = math.sqrt(1 / 3)
    cfg = P.edm_config(sigma_data=sd)
    k0, kn = jax.random.split(jax.random.PRNGKey(3))
    n = 20000
    x0 = jax.random.uniform(k0, (n, 1), minval=-1.0, maxval=1.0)
    for sig in [0.01, 0.3, 1.0, 20.0]:
        x = x0 + sig * jax.random.normal(kn, x0.shape)
        target = P.raw_target(cfg, x, x0, sig)
        var_in, var_t = float(jnp.var(cfg.c_in(sig) * x)), float(jnp.var(target))
        # std error of a sample variance ~ var * sqrt(2/n) (x 1.5 for the non-Gaussian kurtosis); 5 SE.
        assert abs(var_in - 1) < 5 * 1.5 * math.sqrt(2 / n), (sig, var_in)
        assert abs(var_t - 1) < 5 * 1.5 * math.sqrt(2 / n), (sig, var_t)


def test_vp_config_time_and_v_prediction_schedule():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    t = jnp.linspace(1e-5, 1.0, 50)
    np.testing.assert_allclose(P.vp_config().c_noise(sigma_from_t(sde, t)), 999 * t, rtol=2e-4, atol=2e-3)
    # Table 4.7 sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1) is sigma_t/alpha_t of VPSDE(0.1, 20).
    np.testing.assert_allclose(sigma_from_t(sde, t), np.sqrt(np.expm1(0.5 * 19.9 * t**2 + 0.1 * t)), rtol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sample_sigma_distributions(name):
    cfg, n = CONFIGS[name], 40000
    sig = np.asarray(cfg.sample_sigma(jax.random.PRNGKey(4), n), np.float64)
    assert sig.shape == (n,) and np.all(np.isfinite(sig)) and np.all(sig > 0)
    if name == "vp":
        u, lo, hi = (np.sqrt(0.1**2 + 2 * 19.9 * np.log1p(sig**2)) - 0.1) / 19.9, 1e-5, 1.0  # t ~ U(eps_t, 1)
    elif name == "ve":
        u, lo, hi = np.log(sig), math.log(0.002), math.log(80.0)  # ln sigma ~ U
    elif name == "v_prediction":
        lo = 2 / np.pi * np.arccos(1 / np.sqrt(1 + np.exp(-13.0)))
        hi = 2 / np.pi * np.arccos(1 / np.sqrt(1 + np.exp(9.0)))
        u = 2 / np.pi * np.arctan(sig)  # t ~ U(eps_min, eps_max)
    else:
        z = np.log(sig)
        assert abs(z.mean() + 1.2) < 5 * 1.2 / math.sqrt(n)
        assert abs(z.std() - 1.2) < 5 * 1.2 / math.sqrt(2 * n)
        return
    width = hi - lo
    assert u.min() >= lo - 1e-4 * width and u.max() <= hi + 1e-4 * width
    assert u.min() < lo + 1e-3 * width and u.max() > hi - 1e-3 * width
    se_mean, se_var = width / math.sqrt(12 * n), width**2 / 12 * math.sqrt(0.8 / n)  # uniform: var of s^2 = 4/5 var^2 / n
    assert abs(u.mean() - (lo + hi) / 2) < 5 * se_mean
    assert abs(u.var() - width**2 / 12) < 5 * se_var


def _c_noise_inverse(name, c):
    return {"vp": lambda: jnp.sqrt(jnp.expm1(0.5 * 19.9 * (c / 999) ** 2 + 0.1 * (c / 999))),
            "ve": lambda: 2 * jnp.exp(c), "v_prediction": lambda: jnp.tan(0.5 * math.pi * c),
            "edm": lambda: jnp.exp(4 * c)}[name]()


def exact_raw_network(name, cfg, denoiser):
    """Solve D = c_skip x + c_out F(c_in x, c_noise) for F, given an exact denoiser."""

    def F(y, c):
        sigma = _c_noise_inverse(name, c)
        x = y / cfg.c_in(sigma)[:, None]
        return (denoiser(x, sigma) - cfg.c_skip(sigma)[:, None] * x) / cfg.c_out(sigma)[:, None]

    return F


@pytest.mark.parametrize("name", list(CONFIGS))
def test_precondition_composes_network_as_eq_4_23(name):
    cfg, ref = CONFIGS[name], _table_4_7(name)
    x = jax.random.normal(jax.random.PRNGKey(5), (SIG.size, 2))
    F = lambda y, c: jnp.tanh(y) * c[:, None] + 0.1  # noqa: E731
    gm = nine_gaussians(std=0.1)
    F_exact = exact_raw_network(name, cfg, gm.denoiser)
    x_noisy = gm.sample(jax.random.PRNGKey(6), SIG.size) + jnp.asarray(SIG)[:, None] * jax.random.normal(
        jax.random.PRNGKey(7), (SIG.size, 2))
    run = jax.jit(lambda x, xn, s: (P.precondition(cfg, F)(x, s), P.precondition(cfg, F_exact)(xn, s),
                                    gm.denoiser(xn, s)))
    D, D_pre, D_exact = run(x, x_noisy, jnp.asarray(SIG))
    xn = np.asarray(x, np.float64)
    expect = (ref["c_skip"][:, None] * xn
              + ref["c_out"][:, None] * (np.tanh(ref["c_in"][:, None] * xn) * ref["c_noise"][:, None] + 0.1))
    np.testing.assert_allclose(D, expect, rtol=1e-4, atol=1e-4)
    # The exact raw network (solved from the exact mixture denoiser) reproduces the exact denoiser.
    np.testing.assert_allclose(D_pre, D_exact, rtol=2e-3, atol=2e-3)


def test_config_validation():
    with pytest.raises(ValueError, match="sigma_data"):
        P.edm_config(sigma_data=0.0)
    with pytest.raises(ValueError, match="P_std"):
        P.edm_config(P_std=-1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        P.ve_config(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="eps_t"):
        P.vp_config(eps_t=1.5)
    with pytest.raises(ValueError, match="M"):
        P.vp_config(M=1)
    with pytest.raises(ValueError, match="log_snr"):
        P.v_prediction_config(log_snr_min=5.0, log_snr_max=1.0)
    with pytest.raises(ValueError, match="finite"):
        P.edm_config(P_mean=float("nan"))


# --------------------------------------------------------------------------------------------
# CLD mixed score (thesis §2.3.3.2)
# --------------------------------------------------------------------------------------------


def _hu(u, t):
    x, v = u
    return _h(x, t) * jnp.cos(v)


def test_cld_mixed_score_definition_and_inverse():
    from diffjax.analytic._cld import cld_score_v_fn
    from diffjax.sde._cld import CLD

    cld = CLD()
    gm = nine_gaussians(std=0.1)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(8), 3)
    n = 64
    t = jax.random.uniform(k1, (n,), minval=1e-3, maxval=1.0)
    u = (jax.random.normal(k2, (n, 2)), 0.5 * jax.random.normal(k3, (n, 2)))

    @jax.jit
    def run(u, t):
        s = P.cld_mixed_score(cld, _hu)(u, t)
        ell = cld.ell(t, kernel="hsm")[:, None]
        svv = cld.kernel_cov(t, kernel="hsm")[2][:, None]
        # thesis: s = -ell alpha, alpha = ell^-1 v / Sigma_vv + alpha'
        expect = -ell * (u[1] / (ell * svv) + _hu(u, t))
        back = P.cld_alpha_prime_from_score(cld, P.cld_mixed_score(cld, _hu))(u, t)
        exact = cld_score_v_fn(gm, cld)
        fwd = P.cld_mixed_score(cld, P.cld_alpha_prime_from_score(cld, exact))(u, t)
        return s, expect, back, fwd, exact(u, t)

    s, expect, back, fwd, exact = run(u, t)
    np.testing.assert_allclose(s, expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back, _hu(u, t), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fwd, exact, rtol=1e-4, atol=1e-4)
    # At t = 0 x and v are independent and v ~ N(0, gamma M): the prior term is the exact score,
    # so the exact residual alpha' vanishes for any data distribution.
    a0 = P.cld_alpha_prime_from_score(cld, cld_score_v_fn(gm, cld))(u, 0.0)
    np.testing.assert_allclose(a0, 0.0, atol=1e-5)


def test_raw_targets_are_the_documented_predictions():
    """F_target = (x0 - c_skip x)/c_out: VP -> eps, VE -> -eps, v-prediction -> -v (v = alpha eps - sigma_vp x0)."""
    k0, kn = jax.random.split(jax.random.PRNGKey(9))
    x0, n = jax.random.normal(k0, (41, 2)), jax.random.normal(kn, (41, 2))
    s = jnp.asarray(SIG)[:, None]
    x = x0 + s * n
    alpha, sigma_vp = 1 / jnp.sqrt(1 + s**2), s / jnp.sqrt(1 + s**2)
    run = jax.jit(lambda x, x0, sig: [P.raw_target(CONFIGS[k], x, x0, sig) for k in ("vp", "ve", "v_prediction")])
    vp, ve, vpred = run(x, x0, s[:, 0])
    np.testing.assert_allclose(vp, n, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ve, -n, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(vpred, -(alpha * n - sigma_vp * x0), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------
# declared model kinds: param.model, as_kind, adapter
# --------------------------------------------------------------------------------------------


def test_model_declaration_is_a_plain_callable():
    """A declared model calls its function, carries its kind, is no pytree (no leaves: it closes into
    jit) and hashes by identity (a static jit argument)."""
    m = P.model(_h, "eps")
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    np.testing.assert_array_equal(m(x, 0.3), _h(x, 0.3))
    assert m.kind == "eps" and m.sde is None and "eps" in repr(m)
    assert jax.tree_util.tree_leaves(m) == [m]
    np.testing.assert_allclose(jax.jit(lambda y: m(y, 0.3))(x), _h(x, 0.3), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda f, y: f(y, 0.3), static_argnums=0)(m, x), _h(x, 0.3), rtol=1e-6)
    assert P.as_kind(_h, "x0", VPSDE()) is _h            # undeclared: as is, whatever the target kind


def test_model_declaration_errors():
    with pytest.raises(ValueError, match=r"unknown kind 'noise'"):
        P.model(_h, "noise")
    with pytest.raises(TypeError, match=r"fn must be callable"):
        P.model(3.0, "eps")
    with pytest.raises(TypeError, match=r"sde must be a scalar SDE"):
        P.model(_h, "eps", sde=object())
    with pytest.raises(ValueError, match=r"unknown kind 'x_0'"):
        P.as_kind(P.model(_h, "eps"), "x_0", VPSDE())
    with pytest.raises(ValueError, match=r"unknown kind 'x_0'"):
        P.adapter("x_0")


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_as_kind_matches_the_closed_form_converters(sde):
    """Every declared time kind converts to every other one through eps (eqs. 1.24-1.25): the results
    are the explicit converters, and the exact mixture's x0 becomes its exact score (Tweedie:
    ``s = (alpha_t x0 - x) / sigma_t^2``), float64 to 1e-10."""
    with jax.enable_x64(True):
        gm = nine_gaussians()
        eps = gm.eps_fn(sde)
        x = jax.random.normal(jax.random.PRNGKey(1), (16, 2), jnp.float64)
        t = jnp.linspace(0.05, 1.0, 16)
        models = {"eps": eps, "score": P.score_from_eps(sde, eps), "x0": P.x0_from_eps(sde, eps),
                  "v": P.v_from_eps(sde, eps), "denoiser": P.denoiser_from_eps(sde, eps)}
        for src, fn in models.items():
            for dst in ("eps", "score", "x0", "v"):
                got = P.as_kind(P.model(fn, src), dst, sde)(x, t)
                np.testing.assert_allclose(got, models[dst](x, t), rtol=1e-10, atol=1e-10, err_msg=f"{src}->{dst}")
        np.testing.assert_allclose(P.as_kind(P.model(models["x0"], "x0"), "score", sde)(x, t),
                                   gm.score_fn(sde)(x, t), rtol=1e-10, atol=1e-10)
        # a time model drives an EDM denoiser with its declared SDE: D = x0 at sigma = sigma_t / alpha_t
        sigma = jnp.exp(-0.5 * sde.log_snr(t))
        alpha = sde.marginal_coeffs(t)[0][:, None]
        den = P.as_kind(P.model(eps, "eps", sde), "denoiser")
        np.testing.assert_allclose(den(x / alpha, sigma), models["x0"](x, t), rtol=1e-9, atol=1e-9)


def test_as_kind_refuses_what_cannot_be_converted():
    sde = VPSDE()
    with pytest.raises(TypeError, match=r"declares kind 'eps' but the rule needs 'cld_velocity_score'"):
        P.as_kind(P.model(_h, "eps"), "cld_velocity_score", sde)
    with pytest.raises(TypeError, match=r"declares kind 'cld_velocity_score' but the rule needs 'x0'"):
        P.as_kind(P.model(_h, "cld_velocity_score"), "x0", sde)
    with pytest.raises(TypeError, match=r"declares kind 'denoiser' but the rule needs 'eps_and_derivative'"):
        P.adapter("eps_and_derivative", sde)(P.model(_hd, "denoiser"))
    with pytest.raises(ValueError, match=r"declares kind 'x0'; converting it to 'eps' needs the rule's SDE"):
        P.as_kind(P.model(_h, "x0"), "eps")
    with pytest.raises(ValueError, match=r"declares kind 'v' but the rule needs 'denoiser'.*sde="):
        P.as_kind(P.model(_h, "v"), "denoiser")
    # the same kind needs nothing
    assert P.as_kind(P.model(_hd, "denoiser"), "denoiser") is _hd
