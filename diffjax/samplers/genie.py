"""GENIE: truncated Taylor methods on the DDIM ODE with exact (autodiff) derivatives.

The DDIM ODE (thesis eq. 3.13) in the coordinates ``gamma_t = sigma_t / alpha_t`` and
``xbar = x / alpha_t`` (``= x sqrt(1 + gamma^2)`` for VP) is

    d xbar / d gamma = eps(x_t, t).

GENIE is the second truncated Taylor method (TTM-2, eq. 3.16),
``xbar' = xbar + h eps + h^2/2 d_gamma eps`` with ``h = gamma_next - gamma``, and TTM-3 adds
``h^3/6 d^2_gamma eps`` (eq. 3.59). The total derivatives along the ODE (eqs. 3.17-3.19 and
3.60-3.67) are computed exactly by forward-mode autodiff: with the ODE's velocity in ``(x, t)``,

    V(x, t) = (dx/dgamma, dt/dgamma) = (alpha_t eps + (d log alpha_t/dt)(dt/dgamma) x, dt/dgamma),

``d_gamma eps = J_(x,t) eps . V`` is ONE Jacobian-vector product through ``(x, t)``, and
``d^2_gamma eps`` is the JVP of that map along the same ``V`` (a nested JVP). ``dt/dgamma`` comes
from the log-SNR: ``gamma = exp(-lambda_t / 2)`` so ``dt/dgamma = -2 / (gamma lambda'(t))`` with
``lambda'(t)`` by autodiff of ``sde.log_snr`` (exact, no finite differences). For VP the first
component reduces to eq. (3.18): ``eps / sqrt(1 + gamma^2) - gamma / (1 + gamma^2) x``.

Cost accounting (``nfe_per_step``, in forward-pass equivalents, counting a linearised tangent
pass as one forward pass): GENIE evaluates ``eps`` and its tangent with one ``jax.linearize``
(= one JVP: primal + tangent) -> 2; TTM-3 linearises the (eps, d_gamma eps) map -> 4. In
"model calls" GENIE is 1 JVP and TTM-3 one nested JVP. Wall-clock ratios to a plain forward pass
are typically ~2-3x (GENIE) and ~4-8x (TTM-3) and depend on the model.

References: thesis §3.1.1, §3.3.2-3.3.3, App. 3.4.1-3.4.2 (Dockhorn, Vahdat, Kreis,
"GENIE: Higher-Order Denoising Diffusion Solvers", NeurIPS 2022).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_sde
from diffjax.samplers._rule import StepRule, no_noise
from diffjax.samplers.sequential import sample
from diffjax.schedules import time_grid
from diffjax.sde._base import broadcast_to_data

__all__ = ["genie_derivative", "genie_second_derivative", "genie_rule", "ttm3_rule", "genie", "ttm3",
           "ddim_gamma_coords"]


def ddim_gamma_coords(sde: Any, t: Array) -> tuple[Array, Array]:
    """``(alpha_t, gamma_t)`` with ``gamma_t = sigma_t / alpha_t = exp(-lambda_t / 2)``; shapes of ``t``."""
    alpha, _ = sde.marginal_coeffs(t)
    return alpha, jnp.exp(-0.5 * sde.log_snr(t))


def _rates(sde: Any, t: Array) -> tuple[Array, Array]:
    """``dt/dgamma`` and ``(d log alpha_t / dt)(dt/dgamma)`` at ``t`` (shape of ``t``), by autodiff."""
    ones = jnp.ones_like(t)
    lam, dlam = jax.jvp(sde.log_snr, (t,), (ones,))
    gamma = jnp.exp(-0.5 * lam)
    dt_dgamma = -2.0 / (gamma * dlam)
    _, dlog_alpha = jax.jvp(lambda s: jnp.log(sde.marginal_coeffs(s)[0]), (t,), (ones,))
    return dt_dgamma, dlog_alpha * dt_dgamma


def _velocity(sde: Any, x: Array, t: Array, eps: Array) -> tuple[Array, Array]:
    """Tangent ``(dx/dgamma, dt/dgamma)`` of the DDIM ODE at ``(x, t)`` (thesis eq. 3.18, general form)."""
    alpha, _ = sde.marginal_coeffs(t)
    dt_dgamma, c = _rates(sde, t)
    vx = broadcast_to_data(alpha, x) * eps + broadcast_to_data(c, x) * x
    return vx.astype(x.dtype), dt_dgamma.astype(t.dtype)


def _as_time(t: Array, x: Array) -> Array:
    t = jnp.asarray(t)
    return t.astype(jnp.result_type(x.dtype, float)) if not jnp.issubdtype(t.dtype, jnp.floating) else t


def _eps_and_derivative(eps_fn: Callable, sde: Any, x: Array, t: Array) -> tuple[Array, Array]:
    """``(eps, d_gamma eps)`` with one ``jax.linearize`` (primal + one tangent pass)."""
    t = _as_time(t, x)
    eps, lin = jax.linearize(eps_fn, x, t)
    vx, vt = _velocity(sde, x, t, eps)
    return eps, lin(vx, vt)


def genie_derivative(eps_fn: Callable, sde: Any, x: Array, t: Array) -> Array:
    """Exact total derivative ``d eps / d gamma`` along the DDIM ODE (thesis eqs. 3.17-3.19).

    ``d_gamma eps = d_x eps . dx/dgamma + d_t eps . dt/dgamma`` evaluated as a single JVP through
    ``(x, t)`` with tangent ``(dx/dgamma, dt/dgamma)`` (see module docstring); no finite differences.

    Args:
      eps_fn: noise prediction ``eps_fn(x, t)``; ``x`` of shape ``(batch, *data)``, ``t`` scalar or
        ``(batch,)``.
      sde: a scalar SDE (``marginal_coeffs``, ``log_snr``), e.g. ``VPSDE``.
      x: ``(batch, *data)`` state at time ``t``.
      t: scalar or ``(batch,)`` time in ``(0, T]``.

    Returns:
      ``(batch, *data)`` array ``d eps / d gamma``.
    """
    return _eps_and_derivative(eps_fn, sde, x, t)[1]


def _eps_d1_d2(eps_fn: Callable, sde: Any, x: Array, t: Array) -> tuple[Array, Array, Array]:
    """``(eps, d_gamma eps, d^2_gamma eps)``: the JVP of ``(x, t) -> (eps, d_gamma eps)`` along ``V``."""
    t = _as_time(t, x)
    (eps, d1), lin = jax.linearize(lambda y, s: _eps_and_derivative(eps_fn, sde, y, s), x, t)
    vx, vt = _velocity(sde, x, t, eps)
    _, d2 = lin(vx, vt)
    return eps, d1, d2


def genie_second_derivative(eps_fn: Callable, sde: Any, x: Array, t: Array) -> Array:
    """Exact second total derivative ``d^2 eps / d gamma^2`` along the DDIM ODE (thesis eqs. 3.60-3.67).

    The derivative of ``(x, t) -> d_gamma eps(x, t)`` (itself a JVP whose tangent depends on
    ``eps(x, t)``) along the ODE velocity: one nested JVP; autodiff produces every term of
    eqs. (3.61)-(3.67), including the derivative of the tangent ``dx/dgamma`` itself.

    Args and shapes as in :func:`genie_derivative`.
    """
    return _eps_d1_d2(eps_fn, sde, x, t)[2]


def _taylor_rule(sde: Any, order: int, nfe: int) -> StepRule:
    check_sde(sde, scalar=True)

    def step(model_fn, x, t, t_next, z):
        alpha, gamma = ddim_gamma_coords(sde, t)
        alpha_n, gamma_n = ddim_gamma_coords(sde, t_next)
        h = gamma_n - gamma
        xbar = x / alpha
        if order == 2:
            eps, d1 = _eps_and_derivative(model_fn, sde, x, t)
            xbar_n = xbar + h * eps + 0.5 * h**2 * d1
        else:
            eps, d1, d2 = _eps_d1_d2(model_fn, sde, x, t)
            xbar_n = xbar + h * eps + 0.5 * h**2 * d1 + (h**3 / 6.0) * d2
        return (alpha_n * xbar_n).astype(x.dtype)

    return StepRule(step=step, prior=sde.prior_sample, noise=no_noise, nfe_per_step=nfe,
                    **StepRule.declare("eps", sde))


def genie_rule(sde: Any) -> StepRule:
    """GENIE: the second truncated Taylor method on the DDIM ODE (thesis eq. 3.16), exact derivative.

    ``xbar_{n+1} = xbar_n + h eps(x_n, t_n) + h^2/2 d_gamma eps(x_n, t_n)``, ``h = gamma_{n+1} - gamma_n``,
    ``xbar = x / alpha_t``; the state is ``x`` (data coordinates). Order 2 in the step size.

    Args:
      sde: a scalar SDE (VP, sub-VP, VE).

    Returns:
      A deterministic :class:`StepRule`; ``model_fn`` is ``eps_fn(x, t)``. ``nfe_per_step = 2``
      forward-pass equivalents (one JVP = primal + tangent pass; see module docstring).

    Raises:
      TypeError: if ``sde`` is not a scalar SDE.
    """
    return _taylor_rule(sde, 2, 2)


def ttm3_rule(sde: Any) -> StepRule:
    """Third truncated Taylor method on the DDIM ODE (thesis eq. 3.59), exact derivatives.

    ``xbar_{n+1} = xbar_n + h eps + h^2/2 d_gamma eps + h^3/6 d^2_gamma eps``; order 3.

    Args:
      sde: a scalar SDE (VP, sub-VP, VE).

    Returns:
      A deterministic :class:`StepRule`; ``model_fn`` is ``eps_fn(x, t)``. ``nfe_per_step = 4``
      forward-pass equivalents (a nested JVP; see module docstring).

    Raises:
      TypeError: if ``sde`` is not a scalar SDE.
    """
    return _taylor_rule(sde, 3, 4)


def genie(eps_fn: Callable, sde: Any, *, key: Array, shape: tuple[int, ...], n_steps: int,
          t_min: float = 1e-3, grid: str = "uniform") -> tuple[Array, dict]:
    """Sample with :func:`genie_rule` from ``T`` down to ``t_min`` (sequential executor).

    Args:
      eps_fn: ``eps_fn(x, t)``.
      sde: a scalar SDE.
      key: PRNG key (prior draw).
      shape: ``(batch, *data)``.
      n_steps: number of steps (static int).
      t_min: last time of the grid.
      grid: a :func:`diffjax.schedules.time_grid` kind: ``"uniform"``, ``"quadratic"`` striding
        (thesis §3.4.3.2.4) or ``"log_snr"``.

    Returns:
      ``(samples, info)`` with ``info["nfe"]`` in forward-pass equivalents.

    Raises:
      ValueError: on an unknown ``grid``, bad ``n_steps`` or ``t_min``.
    """
    return sample(genie_rule(sde), eps_fn, key, shape, time_grid(n_steps, grid, t_min, sde.T, sde=sde))


def ttm3(eps_fn: Callable, sde: Any, *, key: Array, shape: tuple[int, ...], n_steps: int,
         t_min: float = 1e-3, grid: str = "uniform") -> tuple[Array, dict]:
    """Sample with :func:`ttm3_rule`; arguments as in :func:`genie`."""
    return sample(ttm3_rule(sde), eps_fn, key, shape, time_grid(n_steps, grid, t_min, sde.T, sde=sde))
