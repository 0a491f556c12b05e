"""Coordinates and coefficients shared by the exponential-integrator rules (DPM-Solver++, UniPC).

For a kernel ``x_t = alpha_t x_0 + sigma_t eps`` the rules work in ``lambda_t = log(alpha_t / sigma_t)``
(half the log-SNR of :meth:`sde.log_snr`). With ``sde=None`` the "time" is the EDM noise level
``sigma`` itself (``alpha = 1``, ``lambda = -log sigma``). A level ``sigma = 0`` has ``lambda = +inf``,
and every coefficient below is a function of ``e^{-h}``, so such a step never forms ``log 0``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_sde, concrete_float

__all__ = ["coords", "time_from_lambda", "phis", "prior", "check_rule_args", "effective_order", "grid_counts",
           "LOWER_ORDER_FINAL_BELOW"]

# DPM-Solver++'s lower-order final steps are used only below this many steps (diffusers'
# DPMSolverMultistepScheduler: ``len(timesteps) < 15``, the step to sigma = 0 included; its
# UniPCMultistepScheduler has no such threshold).
LOWER_ORDER_FINAL_BELOW = 15
_SERIES_BELOW = 0.05  # |h| below which the phi-coefficients use their Taylor series


def coords(sde: Any, t: Array) -> tuple[Array, Array, Array]:
    """``(alpha_t, sigma_t, lambda_t)``, ``lambda = log(alpha/sigma)``; ``sde=None``: EDM ``(1, t, -log t)``.

    ``lambda = +inf`` where ``sigma = 0`` (never ``nan``).
    """
    if sde is None:
        t = jnp.asarray(t, jnp.result_type(float))
        return jnp.ones_like(t), t, -jnp.log(t)
    alpha, sigma = sde.marginal_coeffs(t)
    return alpha, sigma, 0.5 * sde.log_snr(t)


def time_from_lambda(sde: Any, lam: Array) -> Array:
    """Inverse of ``lambda`` in :func:`coords` (``sigma = e^{-lambda}`` in EDM coordinates)."""
    if sde is None:
        return jnp.exp(-lam)
    return sde.t_from_log_snr(2.0 * lam)


def phis(h: Array) -> tuple[Array, Array, Array]:
    """``(1 - e^{-h}, h - (1 - e^{-h}), h^2/2 - h + 1 - e^{-h})`` without cancellation.

    These are ``int_0^h e^{tau-h} tau^k / k! dtau`` for ``k = 0, 1, 2``; ``h = +inf`` gives ``(1, inf, inf)``.
    """
    g1 = -jnp.expm1(-h)
    small = jnp.abs(h) < _SERIES_BELOW
    hs = jnp.where(small, h, 0.0)
    # Taylor series (error ~ h^7 / 5040 relative to the leading term at the threshold).
    b2s = hs**2 / 2 - hs**3 / 6 + hs**4 / 24 - hs**5 / 120 + hs**6 / 720
    b3s = hs**3 / 6 - hs**4 / 24 + hs**5 / 120 - hs**6 / 720
    b2 = jnp.where(small, b2s, h - g1)
    b3 = jnp.where(small, b3s, 0.5 * h**2 - h + g1)
    return g1, b2, b3


def prior(sde: Any, sigma_max: Any):
    """The rule's prior: ``sde.prior_sample``, or ``N(0, sigma_max^2 I)`` in EDM coordinates."""
    if sde is not None:
        return sde.prior_sample

    def edm_prior(key, shape):
        return sigma_max * jax.random.normal(key, shape)

    return edm_prior


def check_rule_args(sde: Any, sigma_max: Any) -> Any:
    """Validate the common arguments; returns ``sigma_max`` as a float (or the tracer)."""
    if sde is not None:
        check_sde(sde, scalar=True)
    return concrete_float("sigma_max", sigma_max, lo=0.0, lo_open=True, allow_traced=True, poison_traced=True)


def grid_counts(sde: Any, grid: Array) -> tuple[Array, Array]:
    """``(n_steps, n_positive)`` (int32) of a grid: its steps of non-zero length (a repeated time is a
    padding no-op) and those of them that end at a positive noise level (all but a final step to
    ``sigma = 0``, where ``lambda = +inf``). Traced for a traced grid."""
    grid = jnp.asarray(grid)
    n_steps = jnp.sum(grid[1:] != grid[:-1]).astype(jnp.int32)
    to_zero = ~jnp.isfinite(coords(sde, grid[-1])[2])
    return n_steps, n_steps - to_zero.astype(jnp.int32)


def effective_order(order: int, step: Array, final: Array, n_steps: Array, n_positive: Array, *,
                    lower_order_final: bool, euler_at_final: bool, below: int | None) -> Array:
    """Order of a multistep rule at step ``step`` (int32, 0-based), selected with ``jnp.where``.

    ``min(order, step + 1)`` (warm-up: only ``step`` earlier model outputs exist). ``n_steps`` and
    ``n_positive`` are :func:`grid_counts` of the grid (``-1``: unknown, then the two options below
    are off). ``lower_order_final`` caps the order by ``n_steps - step`` (the last step first
    order, the one before at most second order) when ``n_steps < below`` (``below=None``: always),
    as diffusers' ``lower_order_final`` does. ``euler_at_final`` makes the last step to a
    POSITIVE level (step ``n_positive - 1``) first order. A step to ``sigma = 0`` (``final``) is
    first order always: it is the denoising step ``x = alpha x0``.
    """
    k = jnp.minimum(order, step + 1)
    if lower_order_final:
        use = n_steps > 0
        if below is not None:
            use = use & (n_steps < below)
        k = jnp.where(use, jnp.minimum(k, jnp.maximum(n_steps - step, 1)), k)
    if euler_at_final:
        k = jnp.where((n_positive > 0) & (step >= n_positive - 1), 1, k)
    return jnp.where(final, 1, k)
