"""Peer conventions: with default arguments the samplers give k-diffusion's and diffusers' numbers.

The references below are plain numpy float64 loops written from the published algorithms
(k-diffusion ``k_diffusion/sampling.py``: ``sample_euler``, ``sample_heun``, ``sample_euler_ancestral``,
``sample_dpm_2_ancestral``, ``sample_dpmpp_2m``, ``sample_dpmpp_2m_sde``, ``sample_dpmpp_2s_ancestral``,
``sample_dpmpp_3m_sde``; diffusers ``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler``
``step()`` with their default configuration). They call the same analytic mixture denoiser on the
same grid from the same prior draw, with the same pre-drawn standard normals (taken from
:func:`prepare`, which both executors use), and count their model calls. Agreement: max abs error
<= 1e-10 on samples of size O(1), and equal NFE.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.analytic import GaussianMixture
from diffjax.param import x0_from_eps
from diffjax.samplers import (
    dpm2_ancestral_rule,
    dpmpp_2m_rule,
    dpmpp_2m_sde_rule,
    dpmpp_2s_ancestral_rule,
    dpmpp_2s_rule,
    dpmpp_3m_rule,
    dpmpp_3m_sde_rule,
    edm_euler_rule,
    edm_heun_rule,
    euler_ancestral_rule,
    picard_sample,
    prepare,
    sample,
    unipc_rule,
)
from diffjax.schedules import karras_sigmas, log_snr_uniform_grid
from diffjax.sde import VPSDE

TOL = 1e-10
SHAPE = (16, 2)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _mixture():
    return GaussianMixture(jnp.array([0.3, 0.3, 0.4]), jnp.array([[1.0, 0.5], [-1.0, 0.0], [0.2, -1.0]]),
                           jnp.array([0.3, 0.2, 0.4]))


class _Counted:
    """A numpy view of a jax model that counts its calls and refuses a zero noise level."""

    def __init__(self, fn, zero_forbidden=True):
        self.fn, self.calls, self.zero_forbidden = jax.jit(fn), 0, zero_forbidden

    def __call__(self, x, s):
        self.calls += 1
        assert not (self.zero_forbidden and s == 0), "reference evaluated the model at sigma = 0"
        return np.asarray(self.fn(jnp.asarray(x), jnp.asarray(s, jnp.float64)), np.float64)


def _lam(sigma):
    with np.errstate(divide="ignore"):
        return -np.log(sigma)                   # k-diffusion's t_fn; +inf at sigma = 0


def _run(rule, model, grid, key=0):
    """diffjax sample, and the prior draw and per-step noise (n_steps, *shape) it used."""
    key = jax.random.PRNGKey(key)
    out, info = jax.jit(lambda k: sample(rule, model, k, SHAPE, grid))(key)
    state0, zs, _ = prepare(rule, model, key, SHAPE, grid)
    x_T = state0 if isinstance(state0, jax.Array) else state0[0]
    zs = None if zs is None else np.asarray(zs, np.float64)
    return np.asarray(out), int(info["nfe"]), np.asarray(x_T, np.float64), zs


# -- k-diffusion references -----------------------------------------------------------------------

def kd_euler_heun(D, x, sigmas, heun, zs=None, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    """``sample_euler`` / ``sample_heun``: churn, then Euler; Heun unless ``sigmas[i + 1] == 0``."""
    n = len(sigmas) - 1
    for i in range(n):
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + zs[i] * s_noise * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
        d = (x - D(x, sigma_hat)) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if not heun or sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - D(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def kd_ancestral_step(sigma_from, sigma_to, eta):
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - up**2) ** 0.5, up


def kd_ancestral(D, x, sigmas, zs, kind, eta=1.0, s_noise=1.0):
    """``sample_euler_ancestral`` / ``sample_dpm_2_ancestral`` / ``sample_dpmpp_2s_ancestral``."""
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        down, up = kd_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if kind == "euler" or down == 0:
            x = x + (x - denoised) / sigmas[i] * (down - sigmas[i])
        elif kind == "dpm2":
            mid = math.exp(0.5 * (math.log(sigmas[i]) + math.log(down)))
            x_2 = x + (x - denoised) / sigmas[i] * (mid - sigmas[i])
            d_2 = (x_2 - D(x_2, mid)) / mid
            x = x + d_2 * (down - sigmas[i])
        else:                                   # DPM-Solver++(2S), r = 1/2, in t = -log sigma
            t, t_next = _lam(sigmas[i]), _lam(down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-0.5 * h) * denoised
            denoised_2 = D(x_2, math.exp(-s))
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * denoised_2
        if sigmas[i + 1] > 0:
            x = x + zs[i] * s_noise * up
    return x


def kd_dpmpp_2m(D, x, sigmas):
    old = None
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        t, t_next = _lam(sigmas[i]), _lam(sigmas[i + 1])
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * denoised
        else:
            r = (t - _lam(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * denoised_d
        old = denoised
    return x


def kd_dpmpp_sde(D, x, sigmas, zs, order, eta=1.0, s_noise=1.0):
    """``sample_dpmpp_2m_sde`` (midpoint) for ``order = 2``, ``sample_dpmpp_3m_sde`` for ``order = 3``."""
    d_1 = d_2 = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = D(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _lam(sigmas[i + 1]) - _lam(sigmas[i])
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * math.exp(-eta * h) * x - math.expm1(-h_eta) * denoised
            if order == 2 and d_1 is not None:
                x = x + 0.5 * -math.expm1(-h_eta) * (h / h_1) * (denoised - d_1)
            elif order == 3 and h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif order == 3 and h_1 is not None:
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if eta:
                x = x + zs[i] * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
            h_1, h_2 = h, h_1
        d_1, d_2 = denoised, d_1
    return x


# -- diffusers references (data prediction, generic alpha_t, sigma_t; lambda = log alpha - log sigma) --

def df_dpmsolver(model, x, ts, alpha, sig, order=2, lower_order_final=True, euler_at_final=False, q=1.0):
    """``DPMSolverMultistepScheduler.step`` (dpmsolver++, midpoint); ``final_sigmas_type`` "zero" iff
    ``sig[-1] == 0``. ``q = 2`` doubles the third-order quadratic term (diffjax's exact integral)."""
    n = len(ts) - 1
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sig)
    outs, lower_nums = [], 0
    for i in range(n):
        m = model(x, ts[i])
        outs.append(m)
        lof = i == n - 1 and (euler_at_final or (lower_order_final and n < 15) or sig[-1] == 0)
        los = i == n - 2 and lower_order_final and n < 15
        h = lam[i + 1] - lam[i]
        e = math.expm1(-h)
        x = sig[i + 1] / sig[i] * x - alpha[i + 1] * e * m
        if not (order == 1 or lower_nums < 1 or lof):
            h_0 = lam[i] - lam[i - 1]
            d1_0 = (h / h_0) * (m - outs[-2])
            if order == 2 or lower_nums < 2 or los:
                x = x - 0.5 * alpha[i + 1] * e * d1_0
            else:
                r0, r1 = h_0 / h, (lam[i - 1] - lam[i - 2]) / h
                d1_1 = (1 / r1) * (outs[-2] - outs[-3])
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (1 / (r0 + r1)) * (d1_0 - d1_1)
                x = x + alpha[i + 1] * (e / h + 1) * d1 - q * alpha[i + 1] * ((e + h) / h**2 - 0.5) * d2
        lower_nums = min(lower_nums + 1, order)
    return x


def _unipc_rhos(h, rks, order):
    """UniPC bh2 ``R`` and ``b`` (predict_x0: ``hh = -h``)."""
    hh = -h
    h_phi_k, fact, b_h = math.expm1(hh) / hh - 1, 1, math.expm1(hh)
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(np.power(rks, i - 1))
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    return np.stack(rows), np.array(b)


def df_unipc(model, x, ts, alpha, sig, lower_order_final=True):
    """``UniPCMultistepScheduler.step`` (bh2, predict_x0, solver_order 2): corrector, then predictor."""
    n = len(ts) - 1
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sig)
    outs, lower_nums, last, this_order = [], 0, None, None
    for i in range(n):
        m = model(x, ts[i])
        if i > 0:                               # UniC for the step i-1 -> i (order of its predictor)
            h = lam[i] - lam[i - 1]
            m0 = outs[-1]
            rks, d1s = [], []
            if this_order == 2:
                rk = (lam[i - 2] - lam[i - 1]) / h
                rks.append(rk)
                d1s.append((outs[-2] - m0) / rk)
            rks.append(1.0)
            r, b = _unipc_rhos(h, np.array(rks), this_order)
            rhos = np.array([0.5]) if this_order == 1 else np.linalg.solve(r, b)
            corr = sum(rho * d for rho, d in zip(rhos[:-1], d1s))
            x = sig[i] / sig[i - 1] * last - alpha[i] * math.expm1(-h) * m0 \
                - alpha[i] * math.expm1(-h) * (corr + rhos[-1] * (m - m0))
        outs.append(m)
        this_order = min(2, n - i) if lower_order_final else 2
        this_order = min(this_order, lower_nums + 1)
        last = x
        h = lam[i + 1] - lam[i]
        x_new = sig[i + 1] / sig[i] * x - alpha[i + 1] * math.expm1(-h) * m
        if this_order == 2:
            rk = (lam[i - 1] - lam[i]) / h
            x_new = x_new - alpha[i + 1] * math.expm1(-h) * 0.5 * (outs[-2] - m) / rk
        x = x_new
        lower_nums = min(lower_nums + 1, 2)
    return x


def _check(got, ref, nfe, ref_calls):
    err = float(np.max(np.abs(got - ref)))
    assert err <= TOL, err
    assert nfe == ref_calls, (nfe, ref_calls)
    return err


# -- k-diffusion parity -----------------------------------------------------------------------------

@pytest.mark.parametrize("heun", [False, True])
@pytest.mark.parametrize("s_churn", [0.0, 10.0])
def test_edm_rules_match_k_diffusion_on_zero_terminated_grids(heun, s_churn):
    """``sample(edm_heun_rule(), D, key, shape, karras_sigmas(N))`` is ``sample_heun`` on the same grid:
    the step to 0 is an Euler step, NFE = 2N - 1 (Euler: N), churn with the same normals (gamma =
    s_churn / N, S_min = 0.05 so the last steps do not churn, S_max = 50)."""
    gm, n = _mixture(), 10
    grid = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    build = edm_heun_rule if heun else edm_euler_rule
    churn = dict(s_churn=s_churn, s_min=0.05, s_max=50.0, s_noise=1.003, n_steps=n) if s_churn else {}
    got, nfe, x_T, zs = _run(build(**churn), gm.denoiser, grid)
    D = _Counted(gm.denoiser)
    kd_churn = dict(s_churn=s_churn, s_tmin=0.05, s_tmax=50.0, s_noise=1.003) if s_churn else {}
    ref = kd_euler_heun(D, x_T, np.asarray(grid, np.float64), heun, zs, **kd_churn)
    _check(got, ref, nfe, D.calls)
    assert nfe == (2 * n - 1 if heun else n)


def test_edm_heun_never_evaluates_zero_and_grids_agree():
    """A denoiser that is NaN at sigma = 0 (as ``precondition(edm_config(), F)`` with a Fourier
    embedding of log sigma) gives finite samples; the model is called exactly 2N - 1 times at
    positive levels (counted with a host callback, sequential and Picard's finalize alike); the grid
    without the trailing 0 gives the same samples and NFE (``finalize`` takes the last step)."""
    gm, n = _mixture(), 8
    calls = []

    def nan_at_zero(x, s, gm=gm):
        jax.debug.callback(lambda v: calls.append(float(v)), s)
        return gm.denoiser(x, s) + 0.0 * jnp.log(s)

    zero = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    a, nfe_a, _, _ = _run(edm_heun_rule(), nan_at_zero, zero)
    assert np.all(np.isfinite(a)) and nfe_a == 2 * n - 1
    assert len(calls) == 2 * n - 1 and min(calls) > 0, calls
    b, nfe_b, _, _ = _run(edm_heun_rule(), gm.denoiser, karras_sigmas(n, SIGMA_MIN, SIGMA_MAX, append_zero=False))
    assert nfe_b == 2 * n - 1 and float(np.max(np.abs(a - b))) <= TOL
    calls.clear()
    with jax.enable_x64(False):                 # (the Picard executor runs in float32 here)
        gm32, zero32 = _mixture(), karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
        seq, _ = sample(edm_heun_rule(), gm32.denoiser, jax.random.PRNGKey(0), SHAPE, zero32)
        p, info = picard_sample(edm_heun_rule(), functools.partial(nan_at_zero, gm=gm32), jax.random.PRNGKey(0),
                                SHAPE, zero32, tol=0.0, atol=0.0)
        assert bool(info["converged"]) and np.all(np.isfinite(np.asarray(p)))
        np.testing.assert_allclose(np.asarray(p), np.asarray(seq), rtol=0, atol=1e-4)
        assert min(calls) > 0                   # vmapped windows evaluate the skipped branch at a safe level
        assert int(info["nfe"]) == int(info["iterations"]) * n * 2   # finalize: 0 calls on a zero-ended grid


@pytest.mark.parametrize("kind, build, eta, s_noise", [
    ("euler", euler_ancestral_rule, 1.0, 1.0),
    ("dpm2", dpm2_ancestral_rule, 1.0, 1.0),
    ("dpmpp_2s", dpmpp_2s_ancestral_rule, 1.0, 1.0),
    ("dpmpp_2s", dpmpp_2s_ancestral_rule, 0.6, 0.9),
])
def test_ancestral_rules_match_k_diffusion(kind, build, eta, s_noise):
    """Ancestral samplers with the same pre-drawn normals; the two-evaluation moves make one call on
    the step to 0 (NFE 2N - 1)."""
    gm, n = _mixture(), 10
    grid = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    got, nfe, x_T, zs = _run(build(eta, s_noise), gm.denoiser, grid)
    D = _Counted(gm.denoiser)
    ref = kd_ancestral(D, x_T, np.asarray(grid, np.float64), zs, kind, eta, s_noise)
    _check(got, ref, nfe, D.calls)
    assert nfe == (n if kind == "euler" else 2 * n - 1)


def test_dpmpp_2s_eta_zero_is_deterministic_2s():
    gm, grid = _mixture(), karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    a, nfe_a, _, _ = _run(dpmpp_2s_ancestral_rule(0.0), gm.denoiser, grid)
    b, nfe_b, _, _ = _run(dpmpp_2s_rule(), gm.denoiser, grid)
    assert float(np.max(np.abs(a - b))) <= TOL and nfe_a == nfe_b == 19


def test_dpmpp_2m_matches_k_diffusion():
    gm, n = _mixture(), 10
    grid = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    got, nfe, x_T, _ = _run(dpmpp_2m_rule(), gm.denoiser, grid)
    D = _Counted(gm.denoiser)
    _check(got, kd_dpmpp_2m(D, x_T, np.asarray(grid, np.float64)), nfe, D.calls)


@pytest.mark.parametrize("order, eta, s_noise", [(3, 1.0, 1.0), (3, 0.5, 0.8), (3, 0.0, 1.0), (2, 1.0, 0.8)])
def test_dpmpp_sde_rules_match_k_diffusion(order, eta, s_noise):
    """``dpmpp_3m_sde_rule`` = ``sample_dpmpp_3m_sde`` (halved quadratic term included) and
    ``dpmpp_2m_sde_rule`` = ``sample_dpmpp_2m_sde`` (midpoint), same normals, N NFE."""
    gm, n = _mixture(), 12
    grid = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    rule = dpmpp_3m_sde_rule(None, eta, s_noise) if order == 3 else dpmpp_2m_sde_rule(None, eta, s_noise=s_noise)
    got, nfe, x_T, zs = _run(rule, gm.denoiser, grid)
    D = _Counted(gm.denoiser)
    _check(got, kd_dpmpp_sde(D, x_T, np.asarray(grid, np.float64), zs, order, eta, s_noise), nfe, D.calls)


# -- diffusers parity -------------------------------------------------------------------------------

def _edm_coeffs(grid):
    g = np.asarray(grid, np.float64)
    return g, np.ones_like(g), g


def _vp_coeffs(sde, grid):
    a, s = sde.marginal_coeffs(jnp.asarray(grid))
    return np.asarray(grid, np.float64), np.asarray(a, np.float64), np.asarray(s, np.float64)


GRIDS = ("zero9", "sigma_min9", "zero20", "sigma_min20", "vp_zero")


def _grid(name):
    """``(sde, grid)`` (float64: built under x64): Karras sigmas ending in 0 (final_sigmas_type="zero")
    or at sigma_min ("sigma_min"), below and above diffusers' 15-step threshold, and a VP log-SNR grid
    ending at t = 0."""
    if name == "vp_zero":
        vp = VPSDE()
        return vp, log_snr_uniform_grid(vp, 9, 1e-3, append_zero=True)
    n = int("".join(c for c in name if c.isdigit()))
    if name.startswith("zero"):
        return None, karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    return None, karras_sigmas(n + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False)


def _model(gm, sde):
    if sde is None:
        return gm.denoiser
    return x0_from_eps(sde, gm.eps_fn(sde))


@pytest.mark.parametrize("name", GRIDS)
def test_dpmpp_2m_and_unipc_match_diffusers(name):
    """Defaults = ``DPMSolverMultistepScheduler()`` (2M, lower_order_final, euler_at_final=False) and
    ``UniPCMultistepScheduler()`` (bh2, lower_order_final, no corrector after the last step), on the
    sigma grid the scheduler would use; also ``euler_at_final=True`` on the sigma_min grids."""
    gm, (sde, grid) = _mixture(), _grid(name)
    assert grid.dtype == jnp.float64
    model = _model(gm, sde)
    ts, alpha, sig = _edm_coeffs(grid) if sde is None else _vp_coeffs(sde, grid)
    for rule, ref_fn in [(dpmpp_2m_rule(sde), lambda m, x: df_dpmsolver(m, x, ts, alpha, sig)),
                         (unipc_rule(sde), lambda m, x: df_unipc(m, x, ts, alpha, sig))]:
        got, nfe, x_T, _ = _run(rule, model, grid)
        counted = _Counted(model)
        _check(got, ref_fn(counted, x_T), nfe, counted.calls)
    if name.startswith("sigma_min"):
        got, nfe, x_T, _ = _run(dpmpp_2m_rule(sde, euler_at_final=True), model, grid)
        counted = _Counted(model)
        _check(got, df_dpmsolver(counted, x_T, ts, alpha, sig, euler_at_final=True), nfe, counted.calls)


@pytest.mark.parametrize("n", [6, 20])
def test_dpmpp_3m_order_schedule_is_diffusers_and_quadratic_is_exact(n):
    """``dpmpp_3m_rule()`` follows ``DPMSolverMultistepScheduler(solver_order=3)``'s order schedule
    (warm-up, second order on the step before last when N < 15, first order to 0) with the quadratic
    term integrated exactly: equal to the reference with that term doubled (<= 1e-10), and away from
    diffusers' halved term by the size of that term (> 1e-6: documented, not rounding)."""
    gm = _mixture()
    grid = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    ts, alpha, sig = _edm_coeffs(grid)
    got, nfe, x_T, _ = _run(dpmpp_3m_rule(), gm.denoiser, grid)
    counted = _Counted(gm.denoiser)
    _check(got, df_dpmsolver(counted, x_T, ts, alpha, sig, order=3, q=2.0), nfe, counted.calls)
    diffusers = df_dpmsolver(_Counted(gm.denoiser), x_T, ts, alpha, sig, order=3)
    assert float(np.max(np.abs(got - diffusers))) > 1e-6


def test_lower_order_final_reads_the_grid_and_ignores_padding():
    """The step count comes from the grid: a grid padded with repeated levels (zero-length no-op
    steps, at the front and the back) gives the unpadded run's samples for 3M and UniPC."""
    gm, n = _mixture(), 7
    grid = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX)
    padded = jnp.concatenate([jnp.full((2,), grid[0]), grid[:-1], jnp.full((3,), grid[-2]), grid[-1:]])
    for rule in (dpmpp_3m_rule(), unipc_rule()):
        a, _, x_T, _ = _run(rule, gm.denoiser, grid)
        b = sample(rule, gm.denoiser, jax.random.PRNGKey(0), SHAPE, padded, x_init=jnp.asarray(x_T))[0]
        assert float(np.max(np.abs(a - np.asarray(b)))) <= TOL


@pytest.mark.parametrize("rule", [dpmpp_2s_ancestral_rule(), dpmpp_3m_sde_rule()], ids=["2s_ancestral", "3m_sde"])
def test_new_samplers_picard_equals_sequential(rule):
    """tol = atol = 0: the Picard fixed point is the sequential trajectory (same pre-drawn noise), up
    to float32 rounding (samples O(1); the Picard executor runs in float32 here)."""
    with jax.enable_x64(False):
        gm, grid = _mixture(), karras_sigmas(8, SIGMA_MIN, SIGMA_MAX)
        key = jax.random.PRNGKey(3)
        seq, seq_info = sample(rule, gm.denoiser, key, SHAPE, grid)
        par, info = picard_sample(rule, gm.denoiser, key, SHAPE, grid, tol=0.0, atol=0.0)
    assert bool(info["converged"])
    np.testing.assert_allclose(np.asarray(par), np.asarray(seq), rtol=0, atol=1e-4)
    assert float(np.max(np.abs(np.asarray(seq)))) > 0.1
