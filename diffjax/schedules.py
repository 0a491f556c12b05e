"""Time grids and conversions between time ``t``, log-SNR ``lambda`` and EDM's ``sigma``.

Conventions: data at ``t = 0``, prior at ``t = T``; grids run *backwards* (from ``T`` to
``t_min``) because samplers integrate from the prior to the data. Grid sizes are static
Python ints (they set shapes); everything else may be traced.

For a scalar SDE with kernel ``alpha_t x_0 + sigma_t eps`` the EDM noise level is
``sigma = sigma_t / alpha_t = exp(-lambda/2)`` (CDL App. B.3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "uniform_grid",
    "quadratic_grid",
    "edm_sigma_grid",
    "sigma_from_log_snr",
    "log_snr_from_sigma",
    "t_from_sigma",
    "sigma_from_t",
    "logistic_log_snr_sample",
    "logistic_log_snr_logpdf",
]


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"number of steps must be a positive Python int, got {n!r}")


def _check_interval(t_min, T, name="t_min") -> None:
    if isinstance(t_min, (int, float)) and isinstance(T, (int, float)) and not 0 <= t_min < T:
        raise ValueError(f"need 0 <= {name} < T, got {name}={t_min}, T={T}")


def uniform_grid(n: int, t_min: float = 1e-3, T: float = 1.0) -> Array:
    """``n + 1`` times from ``T`` down to ``t_min``, equally spaced. Shape ``(n + 1,)``."""
    _check_n(n)
    _check_interval(t_min, T)
    return jnp.linspace(T, t_min, n + 1)


def quadratic_grid(n: int, t_min: float = 1e-3, T: float = 1.0) -> Array:
    """Quadratic striding (thesis §3.4.3.2.4): ``t_k = T (1 - (1 - sqrt(t_min/T)) k/n)^2``, ``k = 0..n``.

    Shape ``(n + 1,)``, from ``T`` down to ``t_min``; steps shrink towards the data.
    """
    _check_n(n)
    _check_interval(t_min, T)
    k = jnp.arange(n + 1) / n
    return T * (1.0 - (1.0 - jnp.sqrt(t_min / T)) * k) ** 2


def edm_sigma_grid(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                   *, append_zero: bool = True) -> Array:
    """EDM/Karras noise levels (thesis eq. 4.26).

    ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` for
    ``i = 0..n-1``, then ``0`` appended when ``append_zero``. Shape ``(n + 1,)`` or ``(n,)``.
    """
    _check_n(n)
    if isinstance(sigma_min, (int, float)) and isinstance(sigma_max, (int, float)) and not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if isinstance(rho, (int, float)) and rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    i = jnp.arange(n) / max(n - 1, 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    # (1 - i) hi + i lo rather than hi + i (lo - hi): exact at both ends (no cancellation at sigma_min).
    sigmas = ((1.0 - i) * hi + i * lo) ** rho
    return jnp.concatenate([sigmas, jnp.zeros(1)]) if append_zero else sigmas


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


def logistic_log_snr_sample(key: Array, shape: tuple[int, ...], loc: float = 0.0, scale: float = 2.0) -> Array:
    """Draw log-SNRs from the logistic proposal ``Logistic(loc, scale)`` (CDL eq. 2 importance sampling).

    The logistic density in log-SNR is ``sigmoid(z) sigmoid(-z) / scale`` with ``z = (a - loc)/scale``:
    its heavy-ish tails cover both ends of the log-SNR integral.
    """
    return loc + scale * jax.random.logistic(key, shape)


def logistic_log_snr_logpdf(a: Array, loc: float = 0.0, scale: float = 2.0) -> Array:
    """Log-density of :func:`logistic_log_snr_sample` at ``a``."""
    z = (jnp.asarray(a) - loc) / scale
    return -jax.nn.softplus(-z) - jax.nn.softplus(z) - jnp.log(scale)
