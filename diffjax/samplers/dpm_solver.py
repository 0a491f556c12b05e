"""DPM-Solver++ in data prediction (Lu et al. 2022): 2M, 3M, 2M-SDE and 2S as step rules.

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
``DPMState(x, x0_hist, lam_hist, step)``: the last ``order - 1`` model outputs and their ``lambda``s
and an int32 step counter. The counter selects the effective order inside ``lax.scan`` with
``jnp.where`` (no Python branching on traced values): ``min(order, step + 1)`` (first-order warm-up),
and with ``lower_order_final`` and a known ``n_steps < 15`` also ``min(., n_steps - step)`` (lower
orders on the last steps, as Lu et al. recommend for few steps; ``n_steps`` counts the steps to the
last positive level, a trailing step to ``sigma = 0`` being the separate denoising step), or with
``euler_at_final`` a first-order last positive step. ``init`` evaluates nothing, so
``info["nfe"]`` is exactly one evaluation per step (2S: two). A zero-length step (a repeated time)
is a no-op that leaves the whole state, history included, unchanged. The rules are pure
:class:`~diffjax.samplers._rule.StepRule` s; the Picard executor treats the history leaves as
overwritten (Jacobi) components and reaches the sequential trajectory.

Two ways to use them:
  * scalar SDE (VP, sub-VP, VE): ``sde`` given, grid in ``t`` (e.g.
    :func:`diffjax.grids.log_snr_uniform_grid`), ``model_fn = x0_fn(x, t)``, e.g.
    ``diffjax.param.x0_from_eps(sde, eps_fn)``; prior ``sde.prior_sample``.
  * EDM coordinates: ``sde=None``: the "time" is the EDM noise level ``sigma`` with ``alpha = 1``
    (``x = x_0 + sigma n``, VE-like), grid = sigmas (e.g. :func:`diffjax.grids.karras_sigmas`, may end
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
from diffjax.samplers._exponential import check_rule_args as _check
from diffjax.samplers._exponential import coords as _coords
from diffjax.samplers._exponential import effective_order
from diffjax.samplers._exponential import phis as _phis
from diffjax.samplers._exponential import prior as _prior
from diffjax.samplers._exponential import time_from_lambda as _time_from_lambda
from diffjax.samplers._rule import StepRule, gaussian_noise, no_noise

__all__ = ["DPMState", "dpmpp_2m_rule", "dpmpp_3m_rule", "dpmpp_2m_sde_rule", "dpmpp_2s_rule"]


class DPMState(NamedTuple):
    """State of a multistep DPM-Solver++ rule (``x`` first, as :func:`inpaint_rule` expects).

    Attributes:
      x: current sample ``(batch, *data)``.
      x0_hist: the previous ``order - 1`` data predictions, newest first (each ``(batch, *data)``).
      lam_hist: their ``lambda = log(alpha / sigma)`` values (scalars), newest first.
      step: int32 number of steps taken.
    """

    x: Array
    x0_hist: tuple
    lam_hist: tuple
    step: Array


def _multistep(sde: Any, order: int, eta: Any, lower_order_final: bool, euler_at_final: bool,
               n_steps: int | None, sigma_max: Any) -> StepRule:
    sigma_max = _check(sde, sigma_max, n_steps)
    stochastic = not (isinstance(eta, float) and eta == 0.0)

    def init(model_fn, x, t0):
        lam0 = jnp.zeros_like(_coords(sde, t0)[2])
        return DPMState(x, tuple(jnp.zeros_like(x) for _ in range(order - 1)),
                        tuple(lam0 for _ in range(order - 1)), jnp.zeros((), jnp.int32))

    def step(model_fn, state, t, t_next, z):
        x, x0_hist, lam_hist, i = state
        _, s_t, l_t = _coords(sde, t)
        a_n, s_n, l_n = _coords(sde, t_next)
        m0 = model_fn(x, t)
        h = l_n - l_t
        final = ~jnp.isfinite(l_n)             # step to sigma = 0: first order (x_u = alpha_u x0)
        k = effective_order(order, i, final, lower_order_final=lower_order_final,
                            euler_at_final=euler_at_final, n_steps=n_steps)
        h_safe = jnp.where(final, 1.0, h)

        c = 1.0 + eta
        g1 = -jnp.expm1(-c * h)                # 1 at h = inf
        decay = s_n / s_t
        if stochastic:
            decay = decay * jnp.exp(-eta * h)
        out = decay * x + (a_n * g1) * m0

        # Second order, Lu et al. Alg. 2: D = m0 + (h / (2 h_1)) (m0 - m1) (SDE: the same midpoint form).
        h1 = jnp.where(k >= 2, l_t - lam_hist[0], 1.0)
        second = (a_n * g1) * (0.5 * h_safe / h1) * (m0 - x0_hist[0])
        if order == 2:
            out = out + jnp.where(k >= 2, second, 0.0)
        else:
            # Third order: quadratic in lambda through (l_t, m0), (l_1, m1), (l_2, m2); Newton divided
            # differences give x0' = f01 + h1 f012 and x0'' = 2 f012 at l_t, integrated exactly with _phis.
            h0 = jnp.where(k >= 3, lam_hist[0] - lam_hist[1], 1.0)
            f01 = (m0 - x0_hist[0]) / h1
            f012 = (f01 - (x0_hist[0] - x0_hist[1]) / h0) / (h1 + h0)
            _, b2, b3 = _phis(h_safe)
            third = a_n * (b2 * (f01 + h1 * f012) + b3 * (2.0 * f012))
            out = out + jnp.where(k >= 3, third, jnp.where(k == 2, second, 0.0))
        if stochastic:
            out = out + (s_n * jnp.sqrt(-jnp.expm1(-2.0 * eta * h))) * z
        new = DPMState(out.astype(x.dtype), (m0,) + tuple(x0_hist[:-1]), (l_t,) + tuple(lam_hist[:-1]), i + 1)
        # A zero-length step (repeated time, e.g. a padded grid) is a no-op that keeps the history.
        return jax.tree_util.tree_map(lambda a, b: jnp.where(h == 0, a, b), state, new)

    def finalize(model_fn, state, t_last):
        return state.x

    return StepRule(step=step, prior=_prior(sde, sigma_max), noise=gaussian_noise if stochastic else no_noise,
                    init=init, finalize=finalize, nfe_per_step=1)


_COMMON_DOC = """
    Args:
      sde: a scalar SDE (VP, sub-VP, VE; grid in ``t``, ``model_fn = x0_fn(x, t)``, build it with
        :func:`diffjax.param.x0_from_eps`), or ``None`` for EDM coordinates (grid of sigmas,
        ``model_fn = denoiser(x, sigma)``, ``alpha = 1``).
      lower_order_final: with ``n_steps < 15`` given, use order ``min(order, n_steps - i)`` at step
        ``i`` (Lu et al.'s stabilisation for few steps).
      euler_at_final: with ``n_steps`` given, make the last step to a positive level first order
        whatever ``n_steps`` (for grids whose last positive step is much longer in ``lambda`` than the
        others, e.g. quadratic or time-uniform grids ending at a tiny ``t_min``).
      n_steps: number of steps to the LAST POSITIVE noise level (static int; only needed for
        ``lower_order_final`` / ``euler_at_final``). A further step to ``sigma = 0`` (a grid ending in
        ``0``, e.g. ``append_zero=True``) is not counted: it is the denoising step ``x = alpha x0``
        (Lu et al.'s ``denoise_to_zero``), first order always.
      sigma_max: prior std in EDM coordinates (``sde=None``): must equal the grid's first sigma.
"""


def dpmpp_2m_rule(sde: Any = None, *, lower_order_final: bool = True, euler_at_final: bool = False,
                  n_steps: int | None = None, sigma_max: float = 80.0) -> StepRule:
    """DPM-Solver++(2M), Lu et al. 2022 Alg. 2: second-order multistep exponential integrator.

    ``x_u = (sigma_u / sigma_t) x_t + alpha_u (1 - e^{-h}) D``, ``D = m_0 + (h / (2 h_1)) (m_0 - m_1)``,
    ``h = lambda_u - lambda_t``, ``h_1 = lambda_t - lambda_prev``, ``m`` the data predictions; the first
    step is first order (DDIM). One model evaluation per step; state :class:`DPMState`.
    {common}
    Returns:
      A deterministic :class:`StepRule` (``finalize`` returns ``state.x``).

    Raises:
      TypeError: if ``sde`` is neither ``None`` nor a scalar SDE.
      ValueError: on ``n_steps`` not a positive int or ``sigma_max <= 0``.
    """
    return _multistep(sde, 2, 0.0, lower_order_final, euler_at_final, n_steps, sigma_max)


def dpmpp_3m_rule(sde: Any = None, *, lower_order_final: bool = True, euler_at_final: bool = False,
                  n_steps: int | None = None, sigma_max: float = 80.0) -> StepRule:
    """DPM-Solver++(3M): third-order multistep exponential integrator (Lu et al. 2022).

    ``x_u = (sigma_u / sigma_t) x_t + alpha_u [phi_0(h) m_0 + phi_1(h) x0' + phi_2(h) x0'']`` with
    ``phi_k(h) = int_0^h e^{tau - h} tau^k / k! dtau`` and ``x0'``, ``x0''`` the derivatives in ``lambda`` of
    the quadratic through the last three data predictions (Newton divided differences). Warm-up:
    first order, then 2M, then 3M. One model evaluation per step.
    {common}
    Returns:
      A deterministic :class:`StepRule`.

    Raises:
      TypeError, ValueError: as :func:`dpmpp_2m_rule`.
    """
    return _multistep(sde, 3, 0.0, lower_order_final, euler_at_final, n_steps, sigma_max)


def dpmpp_2m_sde_rule(sde: Any = None, eta: float = 1.0, *, lower_order_final: bool = True,
                      euler_at_final: bool = False, n_steps: int | None = None,
                      sigma_max: float = 80.0) -> StepRule:
    """SDE-DPM-Solver++(2M): second-order multistep solver of the reverse SDE in data prediction.

    ``x_u = (sigma_u / sigma_t) e^{-eta h} x_t + alpha_u (1 - e^{-(1+eta) h}) D + sigma_u sqrt(1 - e^{-2 eta h}) z``,
    ``D = m_0 + (h / (2 h_1)) (m_0 - m_1)`` (first step: ``D = m_0``, the DDPM posterior mean for
    ``eta = 1``). ``eta = 1`` is Lu et al.'s SDE solver, ``eta = 0`` :func:`dpmpp_2m_rule`.
    {common}
      eta: stochasticity in ``[0, 1]`` (may be traced; then noise is always drawn).

    Returns:
      A :class:`StepRule` with one standard normal draw of the data shape per step.

    Raises:
      TypeError, ValueError: as :func:`dpmpp_2m_rule`; ``ValueError`` for ``eta`` outside ``[0, 1]``.
    """
    eta = concrete_float("eta", eta, lo=0.0, hi=1.0, allow_traced=True)
    return _multistep(sde, 2, eta, lower_order_final, euler_at_final, n_steps, sigma_max)


for _f in (dpmpp_2m_rule, dpmpp_3m_rule, dpmpp_2m_sde_rule):
    _f.__doc__ = _f.__doc__.replace("{common}", _COMMON_DOC.strip())


def dpmpp_2s_rule(sde: Any = None, *, sigma_max: float = 80.0) -> StepRule:
    """DPM-Solver++(2S), Lu et al. 2022 Alg. 1 (``r = 1/2``): second-order single-step, 2 NFE/step.

    ``lambda_s = lambda_t + h/2``, ``u = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h/2}) x0(x_t, t)``,
    ``x_u = (sigma_u / sigma_t) x_t + alpha_u (1 - e^{-h}) x0(u, s)``. A step to ``sigma = 0`` returns
    ``alpha_u x0(x_t, t)`` (the midpoint evaluation is made at a safe time and discarded).

    Args:
      sde: a scalar SDE or ``None`` for EDM coordinates (see :func:`dpmpp_2m_rule`).
      sigma_max: prior std in EDM coordinates.

    Returns:
      A deterministic :class:`StepRule` with ``nfe_per_step = 2``; the state is ``x``.

    Raises:
      TypeError, ValueError: as :func:`dpmpp_2m_rule`.
    """
    sigma_max = _check(sde, sigma_max, None)

    def step(model_fn, x, t, t_next, z):
        _, s_t, l_t = _coords(sde, t)
        a_n, s_n, l_n = _coords(sde, t_next)
        final = ~jnp.isfinite(l_n)
        h = jnp.where(final, 1.0, l_n - l_t)
        m0 = model_fn(x, t)
        t_mid = _time_from_lambda(sde, l_t + 0.5 * h)
        a_m, s_m, _ = _coords(sde, t_mid)
        u = (s_m / s_t) * x - (a_m * jnp.expm1(-0.5 * h)) * m0
        m_mid = model_fn(u.astype(x.dtype), t_mid)
        out = (s_n / s_t) * x - (a_n * jnp.expm1(-h)) * m_mid
        return jnp.where(final, a_n * m0, out).astype(x.dtype)

    return StepRule(step=step, prior=_prior(sde, sigma_max), noise=no_noise, nfe_per_step=2)
