"""Every time, sigma and log-SNR grid, and the conversions between time ``t``, log-SNR ``lambda``
and EDM's ``sigma``.

Conventions: data at ``t = 0``, prior at ``t = T``; grids run *backwards* (from ``T`` to
``t_min``, from ``sigma_max`` to ``sigma_min``) because samplers integrate from the prior to the
data. Grid sizes are static Python ints (they set shapes); everything else may be traced.

For a scalar SDE with kernel ``alpha_t x_0 + sigma_t eps`` the EDM noise level is
``sigma = sigma_t / alpha_t = exp(-lambda/2)`` (CDL App. B.3).

Two kinds of grid, matching the samplers that consume them:

* **time grids** (scalar SDEs, CLD): ``n`` steps, ``n + 1`` times from ``T`` down to ``t_min``.
  :func:`time_grid` picks one by name: ``"uniform"`` (:func:`uniform_grid`), ``"quadratic"``
  (:func:`quadratic_grid`, thesis §3.4.3.2.4) or ``"log_snr"`` (:func:`log_snr_uniform_grid`).
* **sigma grids** (EDM coordinates ``x = x_0 + sigma n``: EDM rules, ancestral rules and
  DPM-Solver++ with ``sde=None``): ``n`` positive levels from ``sigma_max`` down to ``sigma_min``,
  shape ``(n,)``, or ``(n + 1,)`` with a trailing ``0`` when ``append_zero`` (k-diffusion style):
  :func:`edm_sigma_grid` (alias :func:`karras_sigmas`), :func:`exponential_sigmas`,
  :func:`polyexponential_sigmas`. :func:`sigmas_to_times` maps them to a scalar SDE's times.

**Ending at zero without a huge last step.** Pinning the last level of an ``n``-level grid to ``0``
would turn its last interval into one huge step. ``append_zero`` instead keeps the whole grid down
to ``sigma_min`` (``t_min``) and appends ``0`` as ONE extra step: from ``sigma_min`` (small) to ``0``,
which every first-order or data-prediction step takes as ``x <- x0_hat(x, sigma_min)`` (a tiny
change). The step costs one more model evaluation.

Every builder validates its concrete arguments outside ``jit`` (:mod:`diffjax._validate`) and raises
``ValueError`` naming the argument; traced values pass unchecked.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_int, check_less, check_option, concrete_float

__all__ = [
    "time_grid",
    "TIME_GRIDS",
    "uniform_grid",
    "quadratic_grid",
    "log_snr_uniform_grid",
    "edm_sigma_grid",
    "karras_sigmas",
    "exponential_sigmas",
    "polyexponential_sigmas",
    "append_zero",
    "sigmas_to_times",
    "sigma_from_log_snr",
    "log_snr_from_sigma",
    "t_from_sigma",
    "sigma_from_t",
    "logistic_log_snr_sample",
    "logistic_log_snr_logpdf",
]


_STEPS = "n (number of steps)"

TIME_GRIDS: tuple[str, ...] = ("uniform", "quadratic", "log_snr")


def _check_times(n: Any, t_min: Any, T: Any, *, t_min_positive: bool = False) -> None:
    """``n >= 1`` a Python int, ``0 <= t_min < T`` (``0 < t_min`` when ``t_min_positive``), ``T > 0``."""
    check_int(_STEPS, n)
    concrete_float("T", T, lo=0.0, lo_open=True, allow_traced=True)
    concrete_float("t_min", t_min, lo=0.0, lo_open=t_min_positive, allow_traced=True)
    check_less("t_min", t_min, "T", T)


def _check_sigmas(n: Any, sigma_min: Any, sigma_max: Any, rho: Any) -> None:
    """``n >= 1`` a Python int, ``0 < sigma_min < sigma_max`` (finite) and ``rho > 0``."""
    check_int(_STEPS, n)
    concrete_float("sigma_min", sigma_min, lo=0.0, lo_open=True, allow_traced=True)
    concrete_float("sigma_max", sigma_max, lo=0.0, lo_open=True, allow_traced=True)
    check_less("sigma_min", sigma_min, "sigma_max", sigma_max)
    concrete_float("rho", rho, lo=0.0, lo_open=True, allow_traced=True)


def append_zero(grid: Array) -> Array:
    """``grid`` with a trailing ``0`` (one extra final step to ``sigma = 0`` / ``t = 0``)."""
    grid = jnp.asarray(grid)
    return jnp.concatenate([grid, jnp.zeros((1,), grid.dtype)])


def _finish(grid: Array, zero: bool) -> Array:
    # the builders' ``append_zero`` keyword shadows the function of that name
    return append_zero(grid) if zero else grid


# -- time grids --------------------------------------------------------------------------------------


def time_grid(n: int, kind: str = "uniform", t_min: float = 1e-3, T: float | None = None, *,
              sde: Any = None) -> Array:
    """``n + 1`` times from ``T`` down to ``t_min`` with the spacing named ``kind``: the one entry point
    that every sampler uses to turn ``(n_steps, grid name)`` into times.

    ``"uniform"``: :func:`uniform_grid`; ``"quadratic"``: :func:`quadratic_grid` (thesis §3.4.3.2.4,
    ``sqrt(t)`` equally spaced); ``"log_snr"``: :func:`log_snr_uniform_grid` (Lu et al. 2022 §3.3,
    ``lambda_t`` equally spaced; needs the scalar ``sde`` and ``t_min > 0``).

    Args:
      n: number of steps (static Python int ``>= 1``).
      kind: one of :data:`TIME_GRIDS`.
      t_min: last time, ``0 <= t_min < T`` (``0 < t_min`` for ``"log_snr"``).
      T: first time; default ``sde.T``, or ``1.0`` without an ``sde``.
      sde: the scalar SDE whose log-SNR spaces a ``"log_snr"`` grid (unused by the others).

    Returns:
      ``(n + 1,)`` descending times.

    Raises:
      ValueError: unknown ``kind``; ``"log_snr"`` without a scalar ``sde``; bad ``n``, ``t_min`` or ``T``.
    """
    check_option("grid kind", kind, TIME_GRIDS)
    if T is None:
        T = 1.0 if sde is None else sde.T
    if kind == "log_snr":
        if not (hasattr(sde, "log_snr") and hasattr(sde, "t_from_log_snr")):
            raise ValueError(f"grid kind 'log_snr' needs a scalar sde (log_snr, t_from_log_snr), "
                             f"got {type(sde).__name__}")
        return log_snr_uniform_grid(sde, n, t_min, T)
    return (uniform_grid if kind == "uniform" else quadratic_grid)(n, t_min, T)


def uniform_grid(n: int, t_min: float = 1e-3, T: float = 1.0) -> Array:
    """``n + 1`` times from ``T`` down to ``t_min``, equally spaced. Shape ``(n + 1,)``.

    Raises:
      ValueError: ``n`` not a Python int ``>= 1``, or not ``0 <= t_min < T``.
    """
    _check_times(n, t_min, T)
    return jnp.linspace(T, t_min, n + 1)


def quadratic_grid(n: int, t_min: float = 1e-3, T: float = 1.0) -> Array:
    """Quadratic striding (thesis §3.4.3.2.4): ``t_k = T (1 - (1 - sqrt(t_min/T)) k/n)^2``, ``k = 0..n``.

    Shape ``(n + 1,)``, from ``T`` down to ``t_min``; steps shrink towards the data.

    Raises:
      ValueError: ``n`` not a Python int ``>= 1``, or not ``0 <= t_min < T``.
    """
    _check_times(n, t_min, T)
    k = jnp.arange(n + 1) / n
    return T * (1.0 - (1.0 - jnp.sqrt(t_min / T)) * k) ** 2


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
    T = sde.T if T is None else T
    _check_times(n, t_min, T, t_min_positive=True)
    lam_T, lam_min = sde.log_snr(jnp.asarray(T, float)), sde.log_snr(jnp.asarray(t_min, float))
    k = jnp.arange(n + 1) / n
    t = sde.t_from_log_snr((1.0 - k) * lam_T + k * lam_min)
    t = t.at[0].set(T).at[-1].set(t_min)
    return _finish(t, append_zero)


# -- sigma grids ---------------------------------------------------------------------------------------


def edm_sigma_grid(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                   *, append_zero: bool = True) -> Array:
    """EDM/Karras rho-schedule (thesis eq. 4.26); :func:`karras_sigmas` is the same function.

    ``sigma_i = ((1 - i/(n-1)) sigma_max^(1/rho) + i/(n-1) sigma_min^(1/rho))^rho`` for
    ``i = 0..n-1``, then ``0`` appended when ``append_zero``.

    Returns:
      ``(n + 1,)`` levels (descending, last ``0``), or ``(n,)`` without ``append_zero``.

    Raises:
      ValueError: ``n`` not a Python int ``>= 1``, ``not 0 < sigma_min < sigma_max`` or ``rho <= 0``.
    """
    _check_sigmas(n, sigma_min, sigma_max, rho)
    i = jnp.arange(n) / max(n - 1, 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    # (1 - i) hi + i lo rather than hi + i (lo - hi): exact at both ends (no cancellation at sigma_min).
    return _finish(((1.0 - i) * hi + i * lo) ** rho, append_zero)


karras_sigmas = edm_sigma_grid  # Karras et al.'s name for the same schedule (k-diffusion ``get_sigmas_karras``)


def polyexponential_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 1.0, *,
                           append_zero: bool = True) -> Array:
    """Polyexponential schedule: ``log sigma_i = log sigma_min + (1 - i/(n-1))^rho log(sigma_max / sigma_min)``.

    ``rho = 1`` is :func:`exponential_sigmas` (uniform in ``log sigma``, i.e. in log-SNR); ``rho > 1``
    puts more levels at small ``sigma``.

    Returns:
      ``(n,)`` or ``(n + 1,)`` levels (see :func:`edm_sigma_grid`).

    Raises:
      ValueError: ``n`` not a Python int ``>= 1``, ``not 0 < sigma_min < sigma_max`` or ``rho <= 0``.
    """
    _check_sigmas(n, sigma_min, sigma_max, rho)
    ramp = (1.0 - jnp.arange(n) / max(n - 1, 1)) ** rho
    lo, hi = jnp.log(sigma_min), jnp.log(sigma_max)
    return _finish(jnp.exp(lo + ramp * (hi - lo)), append_zero)


def exponential_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, *,
                       append_zero: bool = True) -> Array:
    """Geometric (log-uniform) levels from ``sigma_max`` to ``sigma_min``: uniform in ``lambda = -2 log sigma``.

    Returns:
      ``(n,)`` or ``(n + 1,)`` levels (see :func:`edm_sigma_grid`).

    Raises:
      ValueError: ``n`` not a Python int ``>= 1`` or ``not 0 < sigma_min < sigma_max``.
    """
    return polyexponential_sigmas(n, sigma_min, sigma_max, 1.0, append_zero=append_zero)


def sigmas_to_times(sde: Any, sigmas: Array) -> Array:
    """Times of a scalar SDE at the EDM noise levels ``sigmas`` (``sigma = sigma_t / alpha_t``).

    ``sigma = 0`` maps to ``t = 0`` for VP/sub-VP (``lambda = +inf``). VE cannot reach levels below
    its ``sigma_min`` (the times would be negative): use ``sde=None`` EDM coordinates instead.

    Args:
      sde: a scalar SDE.
      sigmas: ``(m,)`` noise levels (e.g. from :func:`edm_sigma_grid`).

    Returns:
      ``(m,)`` times.
    """
    return t_from_sigma(sde, jnp.asarray(sigmas))


# -- conversions ---------------------------------------------------------------------------------------


def sigma_from_log_snr(lam: Array) -> Array:
    """EDM noise level ``sigma = exp(-lambda / 2)``."""
    return jnp.exp(-0.5 * jnp.asarray(lam))


def log_snr_from_sigma(sigma: Array) -> Array:
    """``lambda = -2 log sigma``."""
    return -2.0 * jnp.log(jnp.asarray(sigma))


def t_from_sigma(sde, sigma: Array) -> Array:
    """Time at which a scalar SDE has EDM noise level ``sigma`` (``sigma_t / alpha_t``)."""
    return sde.t_from_log_snr(log_snr_from_sigma(sigma))


def sigma_from_t(sde, t: Array) -> Array:
    """EDM noise level ``sigma_t / alpha_t`` of a scalar SDE at time ``t``."""
    return sigma_from_log_snr(sde.log_snr(t))


# The logistic log-SNR proposal (CDL eq. 2 importance sampling) lives in diffjax.log_snr; old names kept here.
from diffjax.log_snr import logistic_log_snr_logpdf, logistic_log_snr_sample  # noqa: E402
