"""Symmetric Splitting CLD Sampler (SSCS), thesis App. 2.4.4, Alg. 1.

The generative CLD SDE (thesis eq. 2.78, reverse time ``s = T - t``) splits into an analytically
solvable linear part ``A = A_H + A_O + A_D`` (Hamiltonian + Ornstein-Uhlenbeck + noise) and the
score part ``S = (0, 2 Gamma beta [s(u, t) + M^-1 v])``. One SSCS step of size ``dt`` applies the
Strang splitting ``exp(dt/2 L_A) exp(dt L_S) exp(dt/2 L_A)`` (eq. 2.87): an exact Gaussian
half-step of ``A``, one Euler step of ``S`` (the only model call), another exact half-step.

The half-step of length ``h`` is the Ornstein-Uhlenbeck transition ``N(mu_h(u), Sigma_h)`` with,
per data dimension, ``k = 2 beta h / Gamma`` (critical damping ``M = Gamma^2 / 4``):

    mu_h(u) = e^{-k} ((1 + k) x - 2 k v / Gamma,  k Gamma x / 2 + (1 - k) v)             (eq. 2.88)
    Sigma_xx = 1 - e^{-2k} (1 + 2k + 2k^2)                 = P3(2k)                       (eq. 2.91)
    Sigma_xv = -Gamma k^2 e^{-2k}                                                        (eq. 2.92)
    Sigma_vv = Gamma^2/4 (-expm1(-2k) + e^{-2k} (2k - 2k^2))                              (eq. 2.93)

(eqs. 2.90-2.93 with the common factor ``e^{-4 beta h / Gamma}`` multiplied in, which avoids
``e^{+4 beta h/Gamma}`` overflow). ``P3`` cancels catastrophically for small steps
(``P3(y) ~ y^3/6``), so below ``y = 1`` it is evaluated by its Taylor series (double-``where``
so gradients stay finite on both branches). The noise uses the Cholesky factor
``L = [[sqrt(Sxx), 0], [Sxv / sqrt(Sxx), sqrt(det / Sxx)]]`` with the cancellation-free
determinant ``det = Gamma^2 (e^{-k} s1)(e^{-k} s1 + 2 k e^{-k})``, ``s1 = sinh(k) - k`` (also a
series for small ``k``). All of this is accurate in float32 for steps down to ``dt = 1e-8`` and
below (see tests).

Score time: as in Alg. 1 the score is evaluated at the start time ``t`` of the step (on the
half-stepped state). Final denoising (Alg. 1 last line, thesis eq. 2.112): ``x_0 = x_eps - eps beta
M^-1 v_eps`` with ``eps = t_N`` (the grid's last time); only the data component is updated, which
needs no model call (``nfe_final = 0``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax.samplers._rule import StepRule
from diffjax.samplers.sequential import sample
from diffjax.schedules import quadratic_grid, uniform_grid

__all__ = ["sscs_rule", "sscs", "ou_half_step_moments", "ou_half_step"]

_SWITCH = 1.0  # series below y = 2k < 1 (P3) and k < 1 (sinh(k) - k)


def _series(z: Array, start: int, stride: int, n_terms: int) -> Array:
    """``sum_{j < n_terms} z^(start + stride j) / (start + stride j)!`` (Horner form)."""
    powers = [start + stride * j for j in range(n_terms)]
    # sum_j z^{p_j}/p_j! = z^{p_0}/p_0! (1 + z^s/((p0+1)...(p0+s)) (1 + ...))
    acc = jnp.ones_like(z)
    for p in reversed(powers[1:]):
        denom = 1.0
        for q in range(p - stride + 1, p + 1):
            denom *= q
        acc = 1.0 + acc * z**stride / denom
    fact = 1.0
    for q in range(2, powers[0] + 1):
        fact *= q
    return acc * z ** powers[0] / fact


def _p3(y: Array) -> Array:
    """``1 - e^{-y}(1 + y + y^2/2)`` (the regularised incomplete gamma ``P(3, y)``), no cancellation."""
    small = y < _SWITCH
    ys = jnp.where(small, y, 0.5 * _SWITCH)
    yb = jnp.where(small, 2.0 * _SWITCH, y)
    series = jnp.exp(-ys) * _series(ys, 3, 1, 14)
    closed = -jnp.expm1(-yb) - jnp.exp(-yb) * (yb + 0.5 * yb**2)
    return jnp.where(small, series, closed)


def _e_s1(k: Array) -> Array:
    """``e^{-k} (sinh(k) - k)``, no cancellation for small ``k``, no overflow for large ``k``."""
    small = k < _SWITCH
    ks = jnp.where(small, k, 0.5 * _SWITCH)
    kb = jnp.where(small, 2.0 * _SWITCH, k)
    series = jnp.exp(-ks) * _series(ks, 3, 2, 8)
    closed = -0.5 * jnp.expm1(-2.0 * kb) - kb * jnp.exp(-kb)
    return jnp.where(small, series, closed)


def ou_half_step_moments(cld: Any, h: Array) -> tuple[Array, Array, Array, Array, Array]:
    """Transition coefficients of the ``A``-part of the generative CLD SDE over time ``h >= 0``.

    Returns:
      ``(k, Sxx, Sxv, Svv, det)``: ``k = 2 beta h / Gamma`` (the mean of eq. 2.88 is linear in
      ``u`` with coefficients in ``k``), the covariance entries of eqs. (2.90)-(2.93) (per data
      dimension) and their determinant ``Sxx Svv - Sxv^2``; each of the shape of ``h``.
    """
    G = cld.Gamma
    k = 2.0 * cld.beta * jnp.asarray(h) / G
    e2 = jnp.exp(-2.0 * k)
    sxx = _p3(2.0 * k)
    sxv = -G * k**2 * e2
    svv = 0.25 * G**2 * (-jnp.expm1(-2.0 * k) + e2 * (2.0 * k - 2.0 * k**2))
    es1 = _e_s1(k)
    det = G**2 * es1 * (es1 + 2.0 * k * jnp.exp(-k))
    return k, sxx, sxv, svv, det


def _mean(cld: Any, k: Array, x: Array, v: Array) -> tuple[Array, Array]:
    G = cld.Gamma
    e = jnp.exp(-k)
    return e * ((1.0 + k) * x - (2.0 * k / G) * v), e * ((0.5 * G * k) * x + (1.0 - k) * v)


def ou_half_step(cld: Any, u: tuple[Array, Array], h: Array, z: Array) -> tuple[Array, Array]:
    """One exact draw of ``exp(h L_A) u`` (thesis eqs. 2.88-2.94): ``mu_h(u) + L (z_x, z_v)``.

    Args:
      cld: the ``CLD`` SDE (``beta``, ``Gamma``; critical damping).
      u: ``(x, v)``, each ``(batch, *data)``.
      h: scalar step length ``>= 0`` (reverse time).
      z: ``(2, batch, *data)`` standard normal draws for the ``x`` and ``v`` channels.

    Returns:
      ``(x', v')`` of the shapes of ``u``.
    """
    x, v = u
    k, sxx, sxv, svv, det = ou_half_step_moments(cld, h)
    mx, mv = _mean(cld, k, x, v)
    pos = sxx > 0
    sxx_safe = jnp.where(pos, sxx, 1.0)
    l11 = jnp.where(pos, jnp.sqrt(sxx_safe), 0.0)
    l21 = jnp.where(pos, sxv / jnp.sqrt(sxx_safe), 0.0)
    l22 = jnp.where(pos, jnp.sqrt(jnp.maximum(det, 0.0) / sxx_safe), jnp.sqrt(jnp.maximum(svv, 0.0)))
    zx, zv = z[0], z[1]
    return (mx + l11 * zx).astype(x.dtype), (mv + l21 * zx + l22 * zv).astype(v.dtype)


def sscs_rule(cld: Any, *, denoise_final: bool = True) -> StepRule:
    """SSCS step rule for CLD (thesis App. 2.4.4, Alg. 1).

    State ``(x, v)``; per step from ``t`` to ``t_next < t`` with ``dt = t - t_next``:
    ``u <- exp(dt/2 L_A) u``; ``v <- v + dt 2 beta Gamma (s(u, t) + M^-1 v)``; ``u <- exp(dt/2 L_A) u``.

    Args:
      cld: a ``CLD`` SDE (critically damped, constant ``beta``).
      denoise_final: apply the final denoising step ``x <- x - t_N beta M^-1 v`` (eq. 2.112) in
        ``finalize`` (no model call). With ``False`` ``finalize`` returns ``x`` as is.

    Returns:
      A :class:`StepRule`; ``model_fn`` is ``score_v_fn((x, v), t) -> grad_v log p_t``; noise per
      step is ``(2, 2, *shape)`` standard normals (half-step, channel); ``finalize`` returns the
      data samples ``x``; ``nfe_per_step = 1``, ``nfe_final = 0``.

    Raises:
      TypeError: if ``cld`` is not a CLD (lacks ``beta``, ``Gamma``, ``m_inv``, ``prior_sample``).
      ValueError: if ``denoise_final`` is not a bool.
    """
    missing = [n for n in ("beta", "Gamma", "m_inv", "prior_sample", "T") if not hasattr(cld, n)]
    if missing:
        raise TypeError(f"sscs_rule needs a CLD SDE; {type(cld).__name__} lacks {', '.join(missing)}")
    if not isinstance(denoise_final, bool):
        raise ValueError(f"denoise_final must be a bool, got {denoise_final!r}")

    def noise(key, shape):
        return jax.random.normal(key, (2, 2) + tuple(shape))

    def step(model_fn, state, t, t_next, z):
        dt = t - t_next
        x, v = ou_half_step(cld, state, 0.5 * dt, z[0])
        score = model_fn((x, v), t)
        v = v + dt * 2.0 * cld.beta * cld.Gamma * (score + cld.m_inv * v)
        return ou_half_step(cld, (x, v), 0.5 * dt, z[1])

    def finalize(model_fn, state, t_last):
        x, v = state
        if not denoise_final:
            return x
        return x - t_last * cld.beta * cld.m_inv * v

    return StepRule(step=step, prior=cld.prior_sample, noise=noise, finalize=finalize, nfe_per_step=1,
                    nfe_final=0)


def sscs(score_v_fn: Callable, cld: Any, *, key: Array, shape: tuple[int, ...], n_steps: int,
         t_min: float = 1e-3, grid: str = "uniform", denoise_final: bool = True) -> tuple[Array, dict]:
    """Sample CLD with SSCS from ``T`` to ``t_min`` (then the final denoising step).

    Args:
      score_v_fn: ``score_v_fn((x, v), t) -> grad_v log p_t(x, v)``.
      cld: the ``CLD`` SDE.
      key: PRNG key (prior and all half-step noise).
      shape: ``(batch, *data)``.
      n_steps: static number of SSCS steps (= model calls).
      t_min: cut-off time ``eps`` (thesis uses ``1e-3``).
      grid: ``"uniform"`` or ``"quadratic"`` striding.
      denoise_final: see :func:`sscs_rule`.

    Returns:
      ``(x, info)``: data samples ``(batch, *data)`` and ``info["nfe"]``.

    Raises:
      ValueError: on an unknown ``grid`` or bad ``n_steps``/``t_min``.
    """
    if grid == "uniform":
        g = uniform_grid(n_steps, t_min, cld.T)
    elif grid == "quadratic":
        g = quadratic_grid(n_steps, t_min, cld.T)
    else:
        raise ValueError(f"grid must be 'uniform' or 'quadratic', got {grid!r}")
    return sample(sscs_rule(cld, denoise_final=denoise_final), score_v_fn, key, shape, g)
