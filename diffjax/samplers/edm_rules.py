"""EDM samplers on a denoiser ``D(x, sigma)`` (thesis App. 4.4.3.3, Alg. 7; Karras et al. 2022).

State and time are in EDM coordinates: ``x = x_0 + sigma n``, the "time" is the noise level
``sigma`` and the ODE is ``dx/dsigma = (x - D(x, sigma)) / sigma`` (thesis eq. 4.24 with
``sigma(t) = t``). Grids come from :func:`diffjax.schedules.edm_sigma_grid` (eq. 4.26).

**Grid convention and NFE** (k-diffusion's ``sample_euler`` / ``sample_heun``). Alg. 7 runs ``N``
steps over ``sigma_0 > ... > sigma_{N-1} > 0`` and ``sigma_N = 0``: pass that grid, e.g.
``edm_sigma_grid(N)`` / ``karras_sigmas(N)`` (they append the ``0`` by default). Every step to a
positive level is a Heun step (2 NFE); the step to ``sigma = 0`` is an Euler step (1 NFE), which
equals the denoiser output ``x_N = D(x_{N-1}, sigma_{N-1})`` (thesis eq. 3.6; the return line of
Alg. 6): it is selected with ``lax.cond``, so the second evaluation is not made and ``D(x, 0)`` is
never evaluated. ``info["nfe"] = 2N - 1`` for Heun, ``N`` for Euler: the calls made.

A grid of the ``N`` positive levels only (``append_zero=False``) gives the same samples and NFE:
``finalize`` then takes the final step, ``D(x, sigma_{N-1})`` (1 NFE), which on a grid ending in
``0`` is the identity (0 NFE; again via ``lax.cond``). The one difference: with churn the step to
``0`` of a zero-terminated grid churns first (as Alg. 7 and k-diffusion do), ``finalize`` does not
(with Karras et al.'s ``S_min = 0.05`` it never churns there anyway). ``nfe_per_step`` is the most a
step costs (a ``vmap`` over grids evaluates both branches of the ``lax.cond``, at a safe level).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffjax._validate import check_int, concrete_float
from diffjax.samplers._rule import StepRule, gaussian_noise, no_noise

__all__ = ["edm_heun_rule", "edm_euler_rule"]


def _edm_rule(heun: bool, s_churn, s_min, s_max, s_noise, n_steps, sigma_max) -> StepRule:
    s_churn = concrete_float("s_churn", s_churn, lo=0.0)
    s_min = concrete_float("s_min", s_min, lo=0.0)
    s_max = concrete_float("s_max", s_max, lo=0.0, allow_inf=True)
    s_noise = concrete_float("s_noise", s_noise, lo=0.0)
    sigma_max = concrete_float("sigma_max", sigma_max, lo=0.0, lo_open=True, allow_traced=True, poison_traced=True)
    if s_min > s_max:
        raise ValueError(f"need s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    if n_steps is not None:
        check_int("n_steps", n_steps, 1)
    churn = s_churn > 0.0
    if churn:
        if n_steps is None:
            raise ValueError("n_steps (the number N of positive noise levels) is required when s_churn > 0: "
                             "gamma = min(s_churn / N, sqrt(2) - 1) (thesis Alg. 7)")
        gamma_max = min(s_churn / n_steps, math.sqrt(2.0) - 1.0)
    else:
        gamma_max = 0.0

    def step(denoiser, x, sigma, sigma_next, z):
        if churn:
            gamma = jnp.where((sigma >= s_min) & (sigma <= s_max), gamma_max, 0.0)
            sigma_hat = sigma * (1.0 + gamma)
            # sqrt(sigma_hat^2 - sigma^2) = sigma sqrt(gamma (2 + gamma)): no cancellation (or NaN) at gamma = 0
            x = x + (s_noise * sigma * jnp.sqrt(gamma * (2.0 + gamma))) * z
        else:
            sigma_hat = sigma
        h = sigma_next - sigma_hat
        d = (x - denoiser(x, sigma_hat)) / sigma_hat
        x_next = (x + h * d).astype(x.dtype)
        if not heun:
            return x_next

        def correct(_):
            # sigma_next > 0 here; the safe level only matters when vmap turns the cond into a select.
            safe = jnp.where(sigma_next > 0, sigma_next, 1.0)
            d2 = (x_next - denoiser(x_next, safe)) / safe
            return (x + (0.5 * h) * (d + d2)).astype(x.dtype)

        # The step to sigma = 0 is the Euler step (k-diffusion's sample_heun): no second evaluation.
        return jax.lax.cond(sigma_next > 0, correct, lambda _: x_next, None)

    def prior(key, shape):
        return sigma_max * jax.random.normal(key, shape)

    def finalize(denoiser, x, sigma_last):
        # The final step to 0 on a grid of positive levels; the identity on a grid ending in 0.
        safe = jnp.where(sigma_last > 0, sigma_last, 1.0)
        return jax.lax.cond(sigma_last > 0, lambda y: denoiser(y, safe).astype(y.dtype), lambda y: y, x)

    def nfe_fn(grid):
        per_step = jnp.where(grid[1:] > 0, 2, 1) if heun else jnp.ones(grid.shape[0] - 1, jnp.int32)
        return per_step, (grid[-1] > 0).astype(jnp.int32)

    return StepRule(step=step, prior=prior, noise=gaussian_noise if churn else no_noise, finalize=finalize,
                    nfe_per_step=2 if heun else 1, nfe_final=1, nfe_fn=nfe_fn,
                    n_levels=n_steps if churn else None,   # gamma = s_churn / N holds for one grid length only
                    **StepRule.declare("denoiser"))


def edm_heun_rule(s_churn: float = 0.0, s_min: float = 0.0, s_max: float = math.inf, s_noise: float = 1.0,
                  *, n_steps: int | None = None, sigma_max: float = 80.0) -> StepRule:
    """Karras et al.'s stochastic Heun ("Churn") sampler, thesis Alg. 7.

    Per step ``sigma_i -> sigma_{i+1}``: ``gamma_i = min(s_churn / N, sqrt(2) - 1)`` if
    ``sigma_i in [s_min, s_max]`` else ``0``; ``sigma_hat = (1 + gamma_i) sigma_i``;
    ``x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) z``, ``z ~ N(0, s_noise^2 I)``;
    ``d = (x_hat - D(x_hat, sigma_hat)) / sigma_hat``; Euler ``x' = x_hat + (sigma_{i+1} - sigma_hat) d``;
    Heun ``x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) (d + d') / 2`` with
    ``d' = (x' - D(x', sigma_{i+1})) / sigma_{i+1}``. ``s_churn = 0`` is the deterministic
    second-order EDM sampler; the step to ``sigma = 0`` is the Euler step (k-diffusion's
    ``sample_heun``: ``if sigmas[i + 1] == 0``), 1 NFE, and ``D(x, 0)`` is never evaluated. See the
    module docstring for the grid convention: ``edm_sigma_grid(N)`` (ending in ``0``) and
    ``edm_sigma_grid(N, append_zero=False)`` give the same samples (without churn) and NFE.

    Args:
      s_churn: total churn ``>= 0``; ``0`` makes the rule deterministic (no noise drawn).
      s_min, s_max: churn only while ``s_min <= sigma_i <= s_max``.
      s_noise: noise inflation ``>= 0``.
      n_steps: ``N``, the number of positive noise levels of the grid (required when
        ``s_churn > 0``; sets ``gamma``; k-diffusion's ``len(sigmas) - 1`` for a grid ending in ``0``).
        With churn the rule records it as ``n_levels`` and the executors reject a grid of
        another length (its ``gamma`` would be wrong).
      sigma_max: std of the prior ``N(0, sigma_max^2 I)``; must equal the grid's first level.

    Returns:
      A :class:`StepRule` on ``denoiser(x, sigma)`` (``sigma`` scalar), ``nfe_per_step = 2``,
      ``nfe_final = 1`` and ``nfe_fn`` counting the calls made on the grid (``2N - 1`` in all).

    Raises:
      ValueError: on negative or non-finite ``s_churn``/``s_noise``/``s_min``, ``s_min > s_max``,
        ``sigma_max <= 0``, or a missing/invalid ``n_steps`` with ``s_churn > 0``.
    """
    return _edm_rule(True, s_churn, s_min, s_max, s_noise, n_steps, sigma_max)


def edm_euler_rule(s_churn: float = 0.0, s_min: float = 0.0, s_max: float = math.inf, s_noise: float = 1.0,
                   *, n_steps: int | None = None, sigma_max: float = 80.0) -> StepRule:
    """First-order variant of :func:`edm_heun_rule` (the Euler step of Alg. 7, no correction).

    With ``s_churn = 0`` this is deterministic DDIM in EDM coordinates (thesis Alg. 6:
    ``x_{n+1} = x_n + (sigma_{n+1} - sigma_n) / sigma_n (x_n - d_n)``, final ``D(x, sigma_{N-1})``) and
    k-diffusion's ``sample_euler``. Same arguments, grid convention and errors as
    :func:`edm_heun_rule`; ``nfe_per_step = 1``, ``N`` NFE in all.
    """
    return _edm_rule(False, s_churn, s_min, s_max, s_noise, n_steps, sigma_max)
