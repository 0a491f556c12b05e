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
``e^{+4 beta h/Gamma}`` overflow). This is CLD's forward perturbation kernel from ``Sigma_0 = 0``
after the time ``h`` (``tau = k``, thesis eqs. 2.31-2.36) conjugated by ``v -> -v`` (the Hamiltonian
part runs backwards): same ``Sigma_xx``, ``Sigma_vv`` and determinant, negated ``Sigma_xv`` and
off-diagonal mean coefficients. So the half-step reuses CLD's float32-stable forms from
:mod:`diffjax.sde._series`: ``P3`` (``~ y^3/6``, cancels for small steps) and the determinant
``det = Gamma^2 e^{-2k} s1 (s1 + 2k)``, ``s1 = sinh(k) - k``, by Taylor series below ``2k = 1``
(double-``where``, finite gradients on both branches), and the NaN-safe Cholesky factor
``L = [[sqrt(Sxx), 0], [Sxv / sqrt(Sxx), sqrt(det / Sxx)]]``. All of this is accurate in float32
for steps down to ``dt = 1e-8`` and below (see tests).

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
from diffjax.schedules import time_grid
from diffjax.sde._series import cholesky_2x2, kernel_cov, transition_mean

__all__ = ["sscs_rule", "sscs", "ou_half_step_moments", "ou_half_step"]


def ou_half_step_moments(cld: Any, h: Array) -> tuple[Array, Array, Array, Array, Array]:
    """Transition coefficients of the ``A``-part of the generative CLD SDE over time ``h >= 0``.

    Returns:
      ``(k, Sxx, Sxv, Svv, det)``: ``k = 2 beta h / Gamma`` (the mean of eq. 2.88 is linear in
      ``u`` with coefficients in ``k``), the covariance entries of eqs. (2.90)-(2.93) (per data
      dimension) and their determinant ``Sxx Svv - Sxv^2``; each of the shape of ``h``.
    """
    k = 2.0 * cld.beta * jnp.asarray(h) / cld.Gamma
    sxx, sxv, svv, det = kernel_cov(k, cld.M, cld.Gamma)  # the forward kernel from Sigma_0 = 0 ...
    return k, sxx, -sxv, svv, det  # ... conjugated by v -> -v


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
    mx, mv = transition_mean(k, cld.Gamma, x, -v)  # Phi of eq. 2.31 conjugated by v -> -v (eq. 2.88)
    mv = -mv
    l11, l21, l22 = cholesky_2x2(sxx, sxv, svv, det)
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
      TypeError: if ``cld`` is not a CLD (lacks ``beta``, ``Gamma``, ``M``, ``m_inv``, ``prior_sample``, ``T``).
      ValueError: if ``denoise_final`` is not a bool.
    """
    missing = [n for n in ("beta", "Gamma", "M", "m_inv", "prior_sample", "T") if not hasattr(cld, n)]
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
                    nfe_final=0, **StepRule.declare("cld_velocity_score", cld))


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
      grid: ``"uniform"`` or ``"quadratic"`` striding (:func:`diffjax.schedules.time_grid`; CLD has no
        log-SNR, so not ``"log_snr"``).
      denoise_final: see :func:`sscs_rule`.

    Returns:
      ``(x, info)``: data samples ``(batch, *data)`` and ``info["nfe"]``.

    Raises:
      ValueError: on an unknown ``grid`` or bad ``n_steps``/``t_min``.
    """
    g = time_grid(n_steps, grid, t_min, cld.T)
    return sample(sscs_rule(cld, denoise_final=denoise_final), score_v_fn, key, shape, g)
