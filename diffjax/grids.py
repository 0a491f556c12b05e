"""Noise-level and time grids beyond :mod:`diffjax.schedules`: Karras, exponential, polyexponential
and log-SNR-uniform.

Two conventions, matching the samplers that consume them:

* **sigma grids** (EDM coordinates, ``x = x_0 + sigma n``; for EDM rules, ancestral rules and
  DPM-Solver++ with ``sde=None``): ``n`` positive levels from ``sigma_max`` down to ``sigma_min``,
  shape ``(n,)``, or ``(n + 1,)`` with a trailing ``0`` when ``append_zero`` (k-diffusion style).
* **time grids** (scalar SDEs): ``n`` steps, ``n + 1`` times from ``T`` down to ``t_min``, as
  :func:`diffjax.schedules.uniform_grid`, plus a trailing ``t = 0`` when ``append_zero``.

**Ending at zero without a huge last step.** Pinning the last level of an ``n``-level grid to ``0``
would turn its last interval into one huge step. ``append_zero`` instead keeps the whole grid down
to ``sigma_min`` (``t_min``) and appends ``0`` as ONE extra step: from ``sigma_min`` (small) to ``0``,
which every first-order or data-prediction step takes as ``x <- x0_hat(x, sigma_min)`` (a tiny
change). The step costs one more model evaluation. For :func:`karras_sigmas` this is
:func:`diffjax.schedules.edm_sigma_grid` with ``append_zero=True``.

All builders validate their (concrete) arguments outside jit and raise ``ValueError`` naming
the argument; ``n`` is a static Python int (it sets the shape).
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
from jax import Array

from diffjax.schedules import edm_sigma_grid, t_from_sigma

__all__ = ["karras_sigmas", "exponential_sigmas", "polyexponential_sigmas", "log_snr_uniform_grid",
           "sigmas_to_times", "append_zero"]


def _check_n(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive Python int, got {n!r}")
    return n


def _check_range(sigma_min: Any, sigma_max: Any) -> None:
    if isinstance(sigma_min, (int, float)) and isinstance(sigma_max, (int, float)):
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max (finite), got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def append_zero(grid: Array) -> Array:
    """``grid`` with a trailing ``0`` (one extra final step to ``sigma = 0`` / ``t = 0``)."""
    grid = jnp.asarray(grid)
    return jnp.concatenate([grid, jnp.zeros((1,), grid.dtype)])


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, *,
                  append_zero: bool = True) -> Array:
    """Karras et al.'s rho-schedule (thesis eq. 4.26), a wrapper of :func:`diffjax.schedules.edm_sigma_grid`.

    ``sigma_i = ((1 - i/(n-1)) sigma_max^(1/rho) + i/(n-1) sigma_min^(1/rho))^rho``, ``i = 0..n-1``.

    Returns:
      ``(n,)`` or, with ``append_zero``, ``(n + 1,)`` levels (descending, last ``0``).

    Raises:
      ValueError: ``n`` not a positive int, ``not 0 < sigma_min < sigma_max`` or ``rho <= 0``.
    """
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    _positive("rho", rho)
    return edm_sigma_grid(n, sigma_min, sigma_max, rho, append_zero=append_zero)


def polyexponential_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 1.0, *,
                           append_zero: bool = True) -> Array:
    """Polyexponential schedule: ``log sigma_i = log sigma_min + (1 - i/(n-1))^rho log(sigma_max / sigma_min)``.

    ``rho = 1`` is :func:`exponential_sigmas` (uniform in ``log sigma``, i.e. in log-SNR); ``rho > 1``
    puts more levels at small ``sigma``.

    Returns:
      ``(n,)`` or ``(n + 1,)`` levels (see :func:`karras_sigmas`).

    Raises:
      ValueError: ``n`` not a positive int, ``not 0 < sigma_min < sigma_max`` or ``rho <= 0``.
    """
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    _positive("rho", rho)
    ramp = (1.0 - jnp.arange(n) / max(n - 1, 1)) ** rho
    lo, hi = jnp.log(sigma_min), jnp.log(sigma_max)
    sigmas = jnp.exp(lo + ramp * (hi - lo))
    return _finish(sigmas, append_zero)


def exponential_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, *,
                       append_zero: bool = True) -> Array:
    """Geometric (log-uniform) levels from ``sigma_max`` to ``sigma_min``: uniform in ``lambda = -log sigma``.

    Returns:
      ``(n,)`` or ``(n + 1,)`` levels (see :func:`karras_sigmas`).

    Raises:
      ValueError: ``n`` not a positive int or ``not 0 < sigma_min < sigma_max``.
    """
    return polyexponential_sigmas(n, sigma_min, sigma_max, 1.0, append_zero=append_zero)


def _finish(grid: Array, zero: bool) -> Array:
    return append_zero(grid) if zero else grid


def log_snr_uniform_grid(sde: Any, n: int, t_min: float = 1e-3, T: float | None = None, *,
                         append_zero: bool = False) -> Array:
    """``n + 1`` times from ``T`` to ``t_min`` equally spaced in the SDE's log-SNR ``lambda_t``.

    ``t_k = sde.t_from_log_snr(lambda_T + k/n (lambda_{t_min} - lambda_T))`` (the grid DPM-Solver
    recommends; Lu et al. 2022 §3.3), exact at both ends.

    Args:
      sde: a scalar SDE (``log_snr``, ``t_from_log_snr``).
      n: number of steps (static int).
      t_min: last time, ``0 < t_min < T`` (``lambda`` is infinite at ``t = 0`` for VP/sub-VP: use
        ``append_zero`` to end at ``0``).
      T: first time (default ``sde.T``).
      append_zero: append ``t = 0`` (one extra step, see the module docstring).

    Returns:
      ``(n + 1,)`` (``(n + 2,)`` with ``append_zero``) descending times.

    Raises:
      ValueError: ``n`` not a positive int or ``not 0 < t_min < T``.
    """
    _check_n(n)
    T = sde.T if T is None else T
    if isinstance(t_min, (int, float)) and isinstance(T, (int, float)) and not 0 < t_min < T:
        raise ValueError(f"need 0 < t_min < T, got t_min={t_min}, T={T}")
    lam_T, lam_min = sde.log_snr(jnp.asarray(T, float)), sde.log_snr(jnp.asarray(t_min, float))
    k = jnp.arange(n + 1) / n
    t = sde.t_from_log_snr((1.0 - k) * lam_T + k * lam_min)
    t = t.at[0].set(T).at[-1].set(t_min)
    return _finish(t, append_zero)


def sigmas_to_times(sde: Any, sigmas: Array) -> Array:
    """Times of a scalar SDE at the EDM noise levels ``sigmas`` (``sigma = sigma_t / alpha_t``).

    ``sigma = 0`` maps to ``t = 0`` for VP/sub-VP (``lambda = +inf``). VE cannot reach levels below
    its ``sigma_min`` (the times would be negative): use ``sde=None`` EDM coordinates instead.

    Args:
      sde: a scalar SDE.
      sigmas: ``(m,)`` noise levels (e.g. from :func:`karras_sigmas`).

    Returns:
      ``(m,)`` times.
    """
    return t_from_sigma(sde, jnp.asarray(sigmas))
