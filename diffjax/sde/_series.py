"""Float32-stable closed forms of critically-damped Langevin dynamics, shared by the CLD perturbation
kernel (:class:`diffjax.sde.CLD`, thesis App. 2.4.2) and the exact Ornstein-Uhlenbeck half-step of
the SSCS sampler (:mod:`diffjax.samplers.sscs`, thesis App. 2.4.4, eqs. 2.88-2.94).

Both are the same linear SDE. Per data dimension, with ``tau = 2 beta t / Gamma`` after a time ``t``
(SSCS: ``k = 2 beta h / Gamma`` after a half-step ``h``) and ``y = 2 tau``, the transition matrix is
``Phi = e^{-tau} [[1 + tau, 2 tau / Gamma], [-Gamma tau / 2, 1 - tau]]`` (thesis eq. 2.31) and the
covariance grown from ``Sigma_0 = diag(a, b)`` is the cancellation-free form derived in the docstring
of :mod:`diffjax.sde._cld`. SSCS's half-step runs the Hamiltonian part backwards: it is this kernel
conjugated by ``v -> -v`` (same ``Sigma_xx``, ``Sigma_vv`` and determinant, negated ``Sigma_xv``
and off-diagonal mean coefficients; compare eqs. 2.88-2.93 with eqs. 2.31-2.36).

The functions that cancel, all ``O(y^3)`` at ``y = 0``::

    P3(y) = 1 - e^{-y} (1 + y + y^2/2)      (regularised lower incomplete gamma P(3, y))
    R3(y) = 1 - y + y^2/2 - e^{-y}
    D0(y) = M ((1 - e^{-y})^2 - y^2 e^{-y}) = 4 M e^{-y} s1 (s1 + y),   s1 = sinh(y/2) - y/2

switch to their Taylor series (Horner form, truncation below ``1e-9`` relative) for ``y < 1``
(``D0``: ``y < 2``, where its closed form still loses about three bits). Each
branch receives a harmless input where it is not selected (the "double where" trick), so values and
gradients are finite on both branches, including ``y = 0``.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
from jax import Array

__all__ = ["SERIES_BELOW", "horner", "p3", "r3", "dsm_det", "safe_sqrt", "transition_mean", "kernel_cov",
           "cholesky_2x2"]

SERIES_BELOW = 1.0  # y = 2 tau below which P3 and R3 use their Taylor series
_D0_SERIES_BELOW = 2.0  # ... and D0 (its closed form still cancels ~3 bits at y = 1; the s1 series is
#                          accurate to 5e-12 relative up to y = 2)

# y^3 * sum_j c_j y^j coefficients (j = 0..9), truncation error < 1e-9 relative for |y| <= 1.
_P3_SERIES = tuple(1.0 / math.factorial(j + 3) for j in range(10))  # e^y P3(y) = sum_{k>=3} y^k / k!
_R3_SERIES = tuple((-1.0) ** j / math.factorial(j + 3) for j in range(10))  # R3 = sum_{k>=3} -(-y)^k / k!
_S1_SERIES = tuple(1.0 / math.factorial(2 * j + 3) for j in range(6))  # sinh(x) - x = x^3 sum x^2j/(2j+3)!


def horner(coeffs: tuple[float, ...], z: Array) -> Array:
    """``sum_j coeffs[j] z^j`` in Horner form; shape of ``z``."""
    out = jnp.zeros_like(z) + coeffs[-1]
    for c in coeffs[-2::-1]:
        out = out * z + c
    return out


def _split(y: Array, below: float = SERIES_BELOW) -> tuple[Array, Array, Array]:
    """Mask of the series branch (``y < below``) and NaN-safe inputs for both branches (the "double
    where" trick)."""
    small = y < below
    return small, jnp.where(small, y, 0.5 * below), jnp.where(small, below, y)


def p3(y: Array) -> Array:
    """``P3(y) = 1 - e^{-y}(1 + y + y^2/2)`` for ``y >= 0``, without cancellation; shape of ``y``."""
    small, y_s, y_l = _split(y)
    ser = jnp.exp(-y_s) * y_s**3 * horner(_P3_SERIES, y_s)
    big = -jnp.expm1(-y_l) - jnp.exp(-y_l) * y_l * (1.0 + 0.5 * y_l)
    return jnp.where(small, ser, big)


def r3(y: Array) -> Array:
    """``R3(y) = 1 - y + y^2/2 - e^{-y}`` (``>= 0`` for ``y >= 0``), without cancellation; shape of ``y``."""
    small, y_s, y_l = _split(y)
    ser = y_s**3 * horner(_R3_SERIES, y_s)
    big = -jnp.expm1(-y_l) - y_l + 0.5 * y_l * y_l
    return jnp.where(small, ser, big)


def dsm_det(y: Array, M: Any) -> Array:
    """Determinant of the CLD covariance grown from ``Sigma_0 = 0``:
    ``M ((1 - e^{-y})^2 - y^2 e^{-y}) = 4 M e^{-y} s1 (s1 + y)``, ``s1 = sinh(y/2) - y/2``; shape of ``y``."""
    small, y_s, y_l = _split(y, _D0_SERIES_BELOW)
    x = 0.5 * y_s
    s1 = x**3 * horner(_S1_SERIES, x * x)
    ser = 4.0 * M * jnp.exp(-y_s) * s1 * (s1 + y_s)
    big = M * (jnp.expm1(-y_l) ** 2 - jnp.exp(-y_l) * y_l * y_l)
    return jnp.where(small, ser, big)


def safe_sqrt(x: Array) -> Array:
    """``sqrt(x)`` with a finite gradient at ``x = 0`` (value 0 there; NaN stays NaN)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0 * x)


def transition_mean(tau: Array, Gamma: Any, x: Array, v: Array) -> tuple[Array, Array]:
    """``Phi (x, v)`` (thesis eq. 2.31): ``e^{-tau} ((1 + tau) x + 2 tau v / Gamma, -Gamma tau x / 2 + (1 - tau) v)``.

    ``tau`` broadcasts against ``x`` and ``v``; returns ``(mean_x, mean_v)`` of the broadcast shape.
    """
    e = jnp.exp(-tau)
    return e * ((1.0 + tau) * x + (2.0 / Gamma) * tau * v), e * (-0.5 * Gamma * tau * x + (1.0 - tau) * v)


def kernel_cov(tau: Array, M: Any, Gamma: Any, a: Any = 0.0, b: Any = 0.0) -> tuple[Array, Array, Array, Array]:
    """Per-dimension covariance ``Phi diag(a, b) Phi^T + Sigma^DSM`` after ``tau`` and its determinant
    (thesis eqs. 2.33-2.36 in the cancellation-free form of :mod:`diffjax.sde._cld`).

    Args:
      tau: ``2 beta t / Gamma >= 0``.
      M, Gamma: mass and friction (critical damping ``Gamma^2 = 4 M``).
      a, b: initial variances ``>= 0`` of ``x`` and ``v``, broadcastable against ``tau``.

    Returns:
      ``(Sigma_xx, Sigma_xv, Sigma_vv, det)``, each of the broadcast shape; every term of ``det`` is
      non-negative, so it does not cancel.
    """
    y = 2.0 * tau
    E = jnp.exp(-y)
    sxx = p3(y) + E * ((1.0 + tau) ** 2 * a + tau**2 * b / M)
    sxv = E * tau * (Gamma * tau - 0.5 * Gamma * (1.0 + tau) * a + (2.0 / Gamma) * (1.0 - tau) * b)
    svv = M * (-jnp.expm1(-y) + E * y * (1.0 - tau)) + E * (M * tau**2 * a + (1.0 - tau) ** 2 * b)
    det = dsm_det(y, M) + a * (M * E * (-jnp.expm1(-y) + y + 0.5 * y * y) + b * E * E) + b * E * r3(y)
    return sxx, sxv, svv, det


def cholesky_2x2(sxx: Array, sxv: Array, svv: Array, det: Array) -> tuple[Array, Array, Array]:
    """Lower Cholesky factor ``[[L_xx, 0], [L_xv, L_vv]]`` of ``[[sxx, sxv], [sxv, svv]]`` (thesis eq. 2.52).

    ``L_xx = sqrt(sxx)``, ``L_xv = sxv / L_xx``, ``L_vv = sqrt(det / sxx)`` with the cancellation-free
    determinant ``det``. Where ``sxx = 0`` (no time elapsed from ``Sigma_0 = diag(0, b)``) the factor of
    ``diag(0, svv)`` is returned, ``(0, 0, sqrt(svv))``; values and gradients stay finite (double where),
    and a NaN input (e.g. a traced time outside ``[0, T]``) stays NaN.

    Returns:
      ``(L_xx, L_xv, L_vv)``, each of the broadcast shape of the inputs.
    """
    pos = sxx > 0
    sxx_s = jnp.where(pos, sxx, 1.0)
    det_s = jnp.where(pos, det, 1.0)
    lxx = jnp.sqrt(sxx_s)
    lvv = jnp.sqrt(det_s / sxx_s)
    zero = 0.0 * sxx                       # 0, or NaN for a NaN input (never silently 0)
    return jnp.where(pos, lxx, zero), jnp.where(pos, sxv / lxx, zero), jnp.where(pos, lvv, safe_sqrt(svv))
