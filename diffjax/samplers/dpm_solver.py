"""DPM-Solver++ in data prediction (Lu et al. 2022): 2M, 3M, 2M-SDE, 3M-SDE and 2S as step rules.

Coordinates. For a kernel ``x_t = alpha_t x_0 + sigma_t eps`` write ``lambda_t = log(alpha_t / sigma_t)``
(HALF the log-SNR of :meth:`sde.log_snr`) and ``x0(x, t)`` for the data prediction. The probability-flow
ODE has the exact solution (variation of constants in ``lambda``, Lu et al. 2022 eq. (8))

    x_u = (sigma_u / sigma_t) x_t + alpha_u int_0^h e^{tau - h} x0(lambda_t + tau) dtau,   h = lambda_u - lambda_t,

and the solvers replace ``x0`` by a polynomial in ``lambda``: constant (first order, = DDIM), linear from
the previous model output (2M), quadratic from the last two (3M) or a midpoint evaluation (2S). The
SDE variant (Lu et al. 2022 App. / "SDE-DPM-Solver++", eta = 1) integrates the reverse SDE exactly in
the linear part: with ``c = 1 + eta``,

    x_u = (sigma_u / sigma_t) e^{-eta h} x_t + alpha_u int_0^h c e^{-c (h - tau)} x0 dtau
          + sigma_u sqrt(1 - e^{-2 eta h}) z,

whose ``eta = 1`` first-order step is the DDPM posterior and ``eta = 0`` the ODE solver. Every
coefficient is a function of ``e^{-h}``, so a step to ``sigma_u = 0`` (``lambda_u = +inf``; ``t = 0``
for VP, a trailing ``0`` on an EDM grid) never forms ``log 0``: it is taken as a first-order step,
``x_u = alpha_u x0(x_t, t)`` (the divided differences would need ``h / h_prev = inf``).

Multistep state. The multistep rules carry their history in the state pytree
``DPMState(x, x0_hist, lam_hist, step, n_steps, n_positive)``: the last ``order - 1`` model outputs
and their ``lambda``s, an int32 step counter and the grid's step counts, which the executor writes
into the initial state from the grid (``StepRule.on_grid``; zero-length padding steps are not
counted). They select the effective order inside ``lax.scan`` with ``jnp.where`` (no Python
branching on traced values), as diffusers' ``DPMSolverMultistepScheduler`` does: ``min(order,
step + 1)`` (first-order warm-up); with ``lower_order_final`` (default) and ``N = n_steps < 15`` also
``min(., N - step)`` (the last step first order, the one before at most second); a step to
``sigma = 0`` is first order always; ``euler_at_final`` (diffjax's option, off by default) makes the
last step to a positive level first order. ``init`` evaluates nothing, so ``info["nfe"]`` is
exactly one evaluation per step (2S: two, one on a step to ``0``). A zero-length step (a repeated
time) is a no-op that leaves the whole state, history included, unchanged. The rules are pure
:class:`~diffjax.samplers._rule.StepRule` s; the Picard executor treats the history leaves as
overwritten (Jacobi) components and reaches the sequential trajectory.

Two ways to use them:
  * scalar SDE (VP, sub-VP, VE): ``sde`` given, grid in ``t`` (e.g.
    :func:`diffjax.schedules.log_snr_uniform_grid`), ``model_fn = x0_fn(x, t)``, e.g.
    ``diffjax.param.x0_from_eps(sde, eps_fn)``; prior ``sde.prior_sample``.
  * EDM coordinates: ``sde=None``: the "time" is the EDM noise level ``sigma`` with ``alpha = 1``
    (``x = x_0 + sigma n``, VE-like), grid = sigmas (e.g. :func:`diffjax.schedules.karras_sigmas`, may end
    in ``0``), ``model_fn = denoiser(x, sigma)``, prior ``N(0, sigma_max^2 I)``. Both parameterise the
    same ODE: for a VP model, ``x_hat = x / alpha_t`` at ``sigma = sigma_t / alpha_t`` (the solver is
    invariant to the choice of ``(alpha, sigma)`` for a fixed set of ``lambda`` values).

References:
  Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
  Probabilistic Models" (2022), Alg. 1 (2S), Alg. 2 (2M); third-order multistep and SDE variant from
  the same work; Lu et al., "DPM-Solver" (NeurIPS 2022) for the exponential-integrator form.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import concrete_float
from diffjax.samplers._exponential import LOWER_ORDER_FINAL_BELOW, effective_order, grid_counts
from diffjax.samplers._exponential import check_rule_args as _check
from diffjax.samplers._exponential import coords as _coords
from diffjax.samplers._exponential import phis as _phis
from diffjax.samplers._exponential import prior as _prior
from diffjax.samplers._exponential import time_from_lambda as _time_from_lambda
from diffjax.samplers._rule import StepRule, gaussian_noise, no_noise

__all__ = ["DPMState", "dpmpp_2m_rule", "dpmpp_3m_rule", "dpmpp_2m_sde_rule", "dpmpp_3m_sde_rule", "dpmpp_2s_rule"]


class DPMState(NamedTuple):
    """State of a multistep DPM-Solver++ rule (``x`` first, as :func:`inpaint_rule` expects).

    Attributes:
      x: current sample ``(batch, *data)``.
      x0_hist: the previous ``order - 1`` data predictions, newest first (each ``(batch, *data)``).
      lam_hist: their ``lambda = log(alpha / sigma)`` values (scalars), newest first.
      step: int32 number of steps taken.
      n_steps: int32 number of steps of the grid (zero-length padding steps excluded), set from the
        grid by the executor (``StepRule.on_grid``); ``-1`` if unknown.
      n_positive: int32 number of those steps that end at a positive noise level; ``-1`` if unknown.
    """

    x: Array
    x0_hist: tuple
    lam_hist: tuple
    step: Array
    n_steps: Array
    n_positive: Array


def _history(order: int, k: Array, c: Any, h: Array, l_t: Array, m0: Array, x0_hist: tuple, lam_hist: tuple,
             g1: Array, reference_3m: bool) -> Array:
    """The multistep terms beyond first order (to be multiplied by ``alpha_u``) at effective order ``k``.

    With ``f01``, ``f012`` the Newton divided differences in ``lambda`` of the last data predictions
    (``x0' = f01 + h_1 f012``, ``x0'' = 2 f012`` at ``lambda_t``) and ``H = c h``: second order is Lu
    et al.'s midpoint ``(1 - e^{-H}) (h / 2) f01`` or, for ``reference_3m``, k-diffusion's exact linear
    term ``phi_1(H) / c f01``; third order is ``phi_1(H) / c x0' + q phi_2(H) / c^2 f012`` with
    ``q = 2`` (the exact integral of the quadratic) or ``q = 1`` (``reference_3m``: k-diffusion and
    diffusers halve it). ``phi_k`` as in :func:`~diffjax.samplers._exponential.phis`.
    """
    h1 = jnp.where(k >= 2, l_t - lam_hist[0], 1.0)
    f01 = (m0 - x0_hist[0]) / h1
    _, b2, b3 = _phis(c * h)
    second = (b2 / c) * f01 if reference_3m else g1 * (0.5 * h) * f01
    if order == 2:
        return jnp.where(k >= 2, second, 0.0)
    h0 = jnp.where(k >= 3, lam_hist[0] - lam_hist[1], 1.0)
    f012 = (f01 - (x0_hist[0] - x0_hist[1]) / h0) / (h1 + h0)
    third = (b2 / c) * (f01 + h1 * f012) + ((1.0 if reference_3m else 2.0) * b3 / c**2) * f012
    return jnp.where(k >= 3, third, jnp.where(k == 2, second, 0.0))


def _multistep(sde: Any, order: int, eta: Any, s_noise: Any, lower_order_final: bool, euler_at_final: bool,
               sigma_max: Any, reference_3m: bool = False) -> StepRule:
    sigma_max = _check(sde, sigma_max)
    stochastic = not (isinstance(eta, float) and eta == 0.0)

    def init(model_fn, x, t0):
        lam0 = jnp.zeros_like(_coords(sde, t0)[2])
        unknown = jnp.full((), -1, jnp.int32)
        return DPMState(x, tuple(jnp.zeros_like(x) for _ in range(order - 1)),
                        tuple(lam0 for _ in range(order - 1)), jnp.zeros((), jnp.int32), unknown, unknown)

    def on_grid(state, grid):
        n_steps, n_positive = grid_counts(sde, grid)
        return state._replace(n_steps=n_steps, n_positive=n_positive)

    def step(model_fn, state, t, t_next, z):
        x, x0_hist, lam_hist, i = state.x, state.x0_hist, state.lam_hist, state.step
        _, s_t, l_t = _coords(sde, t)
        a_n, s_n, l_n = _coords(sde, t_next)
        m0 = model_fn(x, t)
        h = l_n - l_t
        final = ~jnp.isfinite(l_n)             # step to sigma = 0: first order (x_u = alpha_u x0)
        k = effective_order(order, i, final, state.n_steps, state.n_positive, lower_order_final=lower_order_final,
                            euler_at_final=euler_at_final, below=LOWER_ORDER_FINAL_BELOW)
        c = 1.0 + eta
        g1 = -jnp.expm1(-c * h)                # 1 at h = inf
        decay = s_n / s_t
        if stochastic:
            decay = decay * jnp.exp(-eta * h)
        hist = _history(order, k, c, jnp.where(final, 1.0, h), l_t, m0, x0_hist, lam_hist, g1, reference_3m)
        out = decay * x + a_n * (g1 * m0 + hist)
        if stochastic:
            out = out + (s_noise * s_n * jnp.sqrt(-jnp.expm1(-2.0 * eta * h))) * z
        new = state._replace(x=out.astype(x.dtype), x0_hist=(m0,) + tuple(x0_hist[:-1]),
                             lam_hist=(l_t,) + tuple(lam_hist[:-1]), step=i + 1)
        # A zero-length step (repeated time, e.g. a padded grid) is a no-op that keeps the history.
        return jax.tree_util.tree_map(lambda a, b: jnp.where(h == 0, a, b), state, new)

    def finalize(model_fn, state, t_last):
        return state.x

    return StepRule(step=step, prior=_prior(sde, sigma_max), noise=gaussian_noise if stochastic else no_noise,
                    init=init, finalize=finalize, nfe_per_step=1, on_grid=on_grid,
                    **StepRule.declare("x0" if sde else "denoiser", sde))


_COMMON_DOC = """
    Args:
      sde: a scalar SDE (VP, sub-VP, VE; grid in ``t``, ``model_fn = x0_fn(x, t)``, build it with
        :func:`diffjax.param.x0_from_eps`), or ``None`` for EDM coordinates (grid of sigmas,
        ``model_fn = denoiser(x, sigma)``, ``alpha = 1``). A BARE CALLABLE IS USED AS IS AND MUST
        PREDICT x0 (a denoiser for ``sde=None``): an eps model passed bare gives garbage without an
        error. Declare any other kind, ``diffjax.param.model(eps_fn, "eps")``, to have it converted.
      lower_order_final: on a grid of ``N < 15`` steps (the step to ``sigma = 0`` included, padding
        excluded), use order ``min(order, N - i)`` at step ``i``: the last step first order, the one
        before at most second order (Lu et al.'s stabilisation for few steps; diffusers'
        ``lower_order_final=True``, its default). ``N`` is read from the grid.
      euler_at_final: make the last step to a POSITIVE noise level first order whatever ``N``
        (diffjax's option for grids whose last positive step is much longer in ``lambda`` than the
        others, e.g. quadratic or time-uniform grids ending at a tiny ``t_min``). On a grid ending
        at a positive level it is diffusers' ``euler_at_final=True``; on a grid ending in ``0`` it
        also lowers the step before the final denoising step (where diffusers' flag does nothing).
      sigma_max: prior std in EDM coordinates (``sde=None``): must equal the grid's first sigma.
"""


def dpmpp_2m_rule(sde: Any = None, *, lower_order_final: bool = True, euler_at_final: bool = False,
                  sigma_max: float = 80.0) -> StepRule:
    """DPM-Solver++(2M), Lu et al. 2022 Alg. 2: second-order multistep exponential integrator.

    ``x_u = (sigma_u / sigma_t) x_t + alpha_u (1 - e^{-h}) D``, ``D = m_0 + (h / (2 h_1)) (m_0 - m_1)``,
    ``h = lambda_u - lambda_t``, ``h_1 = lambda_t - lambda_prev``, ``m`` the data predictions; the first
    step is first order (DDIM). One model evaluation per step; state :class:`DPMState`. With the
    defaults this is diffusers' ``DPMSolverMultistepScheduler()`` (``solver_order=2``,
    ``algorithm_type="dpmsolver++"``, ``solver_type="midpoint"``, ``lower_order_final=True``,
    ``euler_at_final=False``; ``final_sigmas_type="zero"`` is a grid ending in ``0``) and, on a grid
    ending in ``0``, k-diffusion's ``sample_dpmpp_2m``.
    {common}
    Returns:
      A deterministic :class:`StepRule` (``finalize`` returns ``state.x``).

    Raises:
      TypeError: if ``sde`` is neither ``None`` nor a scalar SDE.
      ValueError: on ``sigma_max <= 0``.
    """
    return _multistep(sde, 2, 0.0, 1.0, lower_order_final, euler_at_final, sigma_max)


def dpmpp_3m_rule(sde: Any = None, *, lower_order_final: bool = True, euler_at_final: bool = False,
                  sigma_max: float = 80.0) -> StepRule:
    """DPM-Solver++(3M): third-order multistep exponential integrator (Lu et al. 2022).

    ``x_u = (sigma_u / sigma_t) x_t + alpha_u [phi_0(h) m_0 + phi_1(h) x0' + phi_2(h) x0'']`` with
    ``phi_k(h) = int_0^h e^{tau - h} tau^k / k! dtau`` and ``x0'``, ``x0''`` the derivatives in ``lambda`` of
    the quadratic through the last three data predictions (Newton divided differences
    ``f01 = (m_0 - m_1) / h_1``, ``f012 = (f01 - f12) / (h_1 + h_2)``: ``x0' = f01 + h_1 f012``,
    ``x0'' = 2 f012``). Warm-up: first order, then 2M (the midpoint form of :func:`dpmpp_2m_rule`),
    then 3M; order schedule (``lower_order_final``, step to ``0``) exactly as diffusers'
    ``DPMSolverMultistepScheduler(solver_order=3)``. One model evaluation per step.

    **Differs from the references in the quadratic term.** This rule integrates the fitted
    quadratic exactly: its third-order term is ``phi_2(h) x0'' = 2 phi_2(h) f012``. diffusers
    (``multistep_dpm_solver_third_order_update``: ``D2 = (D1_0 - D1_1) / (r0 + r1) = h^2 f012``
    with coefficient ``((e^{-h} - 1 + h) / h^2 - 1/2) = -phi_2(h) / h^2``) and k-diffusion
    (``sample_dpmpp_3m_sde`` with ``eta = 0``: ``- phi_3 d2``, the same ``phi_2(h) f012``) add
    ``phi_2(h) f012``, HALF of it; everything else (first order, ``x0'`` term, warm-up) is equal
    to diffusers'. The per-step difference ``alpha_u phi_2(h) f012 = O(h^3)`` is a local error of
    the references' scheme, which makes them second order: on a log-sigma-uniform grid 80 -> 0.05
    (float64, analytic mixture) the halved term's error drops 4x per halving of ``h``, this rule's
    about 8x; at 6-20 Karras steps the samples differ by 0.03-0.2 (``tests/test_peer_parity.py``).
    :func:`dpmpp_3m_sde_rule` follows k-diffusion, halving included.
    {common}
    Returns:
      A deterministic :class:`StepRule`.

    Raises:
      TypeError, ValueError: as :func:`dpmpp_2m_rule`.
    """
    return _multistep(sde, 3, 0.0, 1.0, lower_order_final, euler_at_final, sigma_max)


def dpmpp_2m_sde_rule(sde: Any = None, eta: float = 1.0, *, s_noise: float = 1.0, lower_order_final: bool = True,
                      euler_at_final: bool = False, sigma_max: float = 80.0) -> StepRule:
    """SDE-DPM-Solver++(2M): second-order multistep solver of the reverse SDE in data prediction.

    ``x_u = (sigma_u / sigma_t) e^{-eta h} x_t + alpha_u (1 - e^{-(1+eta) h}) D
    + s_noise sigma_u sqrt(1 - e^{-2 eta h}) z``, ``D = m_0 + (h / (2 h_1)) (m_0 - m_1)`` (first step:
    ``D = m_0``, the DDPM posterior mean for ``eta = 1``). ``eta = 1`` is Lu et al.'s SDE solver,
    ``eta = 0`` :func:`dpmpp_2m_rule`. k-diffusion's ``sample_dpmpp_2m_sde`` (midpoint) on a grid
    ending in ``0``; diffusers' ``algorithm_type="sde-dpmsolver++"``.
    {common}
      eta: stochasticity in ``[0, 1]`` (may be traced; then noise is always drawn).
      s_noise: noise inflation ``>= 0`` (may be traced).

    Returns:
      A :class:`StepRule` with one standard normal draw of the data shape per step.

    Raises:
      TypeError, ValueError: as :func:`dpmpp_2m_rule`; ``ValueError`` for ``eta`` outside ``[0, 1]``
        or a negative ``s_noise``.
    """
    eta = concrete_float("eta", eta, lo=0.0, hi=1.0, allow_traced=True, poison_traced=True)
    s_noise = concrete_float("s_noise", s_noise, lo=0.0, allow_traced=True, poison_traced=True)
    return _multistep(sde, 2, eta, s_noise, lower_order_final, euler_at_final, sigma_max)


def dpmpp_3m_sde_rule(sde: Any = None, eta: float = 1.0, s_noise: float = 1.0, *,
                      sigma_max: float = 80.0) -> StepRule:
    """DPM-Solver++(3M) SDE, as k-diffusion's ``sample_dpmpp_3m_sde``: third-order multistep, 1 NFE/step.

    With ``H = (1 + eta) h``, ``phi_1(H) = H - (1 - e^{-H})``, ``phi_2(H) = H^2/2 - H + 1 - e^{-H}``
    and the divided differences of :func:`dpmpp_3m_rule`::

        x_u = (sigma_u / sigma_t) e^{-eta h} x_t + alpha_u [(1 - e^{-H}) m_0 + T]
              + s_noise sigma_u sqrt(1 - e^{-2 eta h}) z,

    ``T = 0`` on the first step, ``T = phi_1(H) / (1 + eta) f01`` on the second (the linear term
    integrated exactly, k-diffusion's ``phi_2 d``), ``T = phi_1(H) / (1 + eta) x0' + phi_2(H) /
    (1 + eta)^2 f012`` afterwards (k-diffusion's ``phi_2 d1 - phi_3 d2``: the quadratic term is HALF
    its exact integral, see :func:`dpmpp_3m_rule`, so ``eta = 0`` is not :func:`dpmpp_3m_rule`). No
    lower-order final steps; a step to ``sigma = 0`` returns ``alpha_u m_0`` (k-diffusion's
    denoising step). The noise is one standard normal draw per step (k-diffusion's default
    Brownian-tree sampler gives the same law).

    Args:
      sde: a scalar SDE or ``None`` for EDM coordinates (see :func:`dpmpp_2m_rule`).
      eta: stochasticity in ``[0, 1]`` (may be traced; then noise is always drawn).
      s_noise: noise inflation ``>= 0`` (may be traced).
      sigma_max: prior std in EDM coordinates.

    Returns:
      A :class:`StepRule` with state :class:`DPMState` and one standard normal draw per step.

    Raises:
      TypeError: if ``sde`` is neither ``None`` nor a scalar SDE.
      ValueError: ``eta`` outside ``[0, 1]``, a negative ``s_noise`` or ``sigma_max <= 0``.
    """
    eta = concrete_float("eta", eta, lo=0.0, hi=1.0, allow_traced=True, poison_traced=True)
    s_noise = concrete_float("s_noise", s_noise, lo=0.0, allow_traced=True, poison_traced=True)
    return _multistep(sde, 3, eta, s_noise, False, False, sigma_max, reference_3m=True)


for _f in (dpmpp_2m_rule, dpmpp_3m_rule, dpmpp_2m_sde_rule):
    _f.__doc__ = _f.__doc__.replace("{common}", _COMMON_DOC.strip())


def _to_zero(sde: Any, t: Array) -> Array:
    """Is ``t`` (scalar or ``(n,)``) a level ``sigma = 0`` (``lambda = +inf``)?"""
    return ~jnp.isfinite(jax.vmap(lambda s: _coords(sde, s)[2])(jnp.atleast_1d(t))).reshape(jnp.shape(t))


def dpmpp_2s_rule(sde: Any = None, *, sigma_max: float = 80.0) -> StepRule:
    """DPM-Solver++(2S), Lu et al. 2022 Alg. 1 (``r = 1/2``): second-order single-step, 2 NFE/step.

    ``lambda_s = lambda_t + h/2``, ``u = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h/2}) x0(x_t, t)``,
    ``x_u = (sigma_u / sigma_t) x_t + alpha_u (1 - e^{-h}) x0(u, s)``. A step to ``sigma = 0`` is the
    first-order denoising step ``alpha_u x0(x_t, t)``: one evaluation (``lax.cond``), as
    k-diffusion's ``sample_dpmpp_2s_ancestral(eta=0)`` does (:func:`dpmpp_2s_ancestral_rule`).

    Args:
      sde: a scalar SDE or ``None`` for EDM coordinates (see :func:`dpmpp_2m_rule`).
      sigma_max: prior std in EDM coordinates.

    Returns:
      A deterministic :class:`StepRule` with ``nfe_per_step = 2`` (``nfe_fn``: 1 on a step to
      ``sigma = 0``); the state is ``x``.

    Raises:
      TypeError, ValueError: as :func:`dpmpp_2m_rule`.
    """
    sigma_max = _check(sde, sigma_max)

    def step(model_fn, x, t, t_next, z):
        _, s_t, l_t = _coords(sde, t)
        a_n, s_n, l_n = _coords(sde, t_next)
        final = ~jnp.isfinite(l_n)
        h = jnp.where(final, 1.0, l_n - l_t)
        m0 = model_fn(x, t)

        def two_stage(_):
            t_mid = _time_from_lambda(sde, l_t + 0.5 * h)
            a_m, s_m, _ = _coords(sde, t_mid)
            u = (s_m / s_t) * x - (a_m * jnp.expm1(-0.5 * h)) * m0
            m_mid = model_fn(u.astype(x.dtype), t_mid)
            return ((s_n / s_t) * x - (a_n * jnp.expm1(-h)) * m_mid).astype(x.dtype)

        return jax.lax.cond(final, lambda _: (a_n * m0).astype(x.dtype), two_stage, None)

    def nfe_fn(grid):
        return jnp.where(_to_zero(sde, grid[1:]), 1, 2), jnp.zeros((), jnp.int32)

    return StepRule(step=step, prior=_prior(sde, sigma_max), noise=no_noise, nfe_per_step=2, nfe_fn=nfe_fn,
                    **StepRule.declare("x0" if sde else "denoiser", sde))
