"""EDM samplers on a denoiser ``D(x, sigma)`` (thesis App. 4.4.3.3, Alg. 7; Karras et al. 2022).

State and time are in EDM coordinates: ``x = x_0 + sigma n``, the "time" is the noise level
``sigma`` and the ODE is ``dx/dsigma = (x - D(x, sigma)) / sigma`` (thesis eq. 4.24 with
``sigma(t) = t``). Grids come from :func:`diffjax.schedules.edm_sigma_grid` (eq. 4.26).

**Grid convention and NFE.** Alg. 7 runs ``N`` steps over ``sigma_0 > ... > sigma_{N-1} > 0``
and ``sigma_N = 0``; its last step (to ``sigma = 0``) is an Euler step, which equals the denoiser
output ``x_N = D(x_{N-1}, sigma_{N-1})`` (thesis eq. 3.6; the return line of Alg. 6). The rules
here make that exact and the NFE count honest by splitting it off: pass the ``N`` positive noise
levels, ``edm_sigma_grid(N, append_zero=False)``; the executor takes ``N - 1`` regular steps
(Heun: 2 NFE each) and the rule's ``finalize`` evaluates ``D`` once at ``sigma_{N-1}``. So
``info["nfe"] = 2 (N - 1) + 1 = 2N - 1`` for Heun and ``N`` for Euler, exactly what is evaluated.
The only difference from Alg. 7 is that the final step does not churn (with Karras et al.'s
``S_min = 0.05`` it never does anyway). A grid that nevertheless ends in ``0`` stays NaN-free:
a step to ``sigma_next = 0`` is the Euler step (the Heun correction is dropped, though evaluated).
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
    sigma_max = concrete_float("sigma_max", sigma_max, lo=0.0, lo_open=True, allow_traced=True)
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
        x_next = x + h * d
        if not heun:
            return x_next
        positive = sigma_next > 0
        safe = jnp.where(positive, sigma_next, 1.0)
        d2 = (x_next - denoiser(x_next, safe)) / safe
        return jnp.where(positive, x + (0.5 * h) * (d + d2), x_next)

    def prior(key, shape):
        return sigma_max * jax.random.normal(key, shape)

    def finalize(denoiser, x, sigma_last):
        return denoiser(x, sigma_last)

    return StepRule(step=step, prior=prior, noise=gaussian_noise if churn else no_noise, finalize=finalize,
                    nfe_per_step=2 if heun else 1, nfe_final=1)


def edm_heun_rule(s_churn: float = 0.0, s_min: float = 0.0, s_max: float = math.inf, s_noise: float = 1.0,
                  *, n_steps: int | None = None, sigma_max: float = 80.0) -> StepRule:
    """Karras et al.'s stochastic Heun ("Churn") sampler, thesis Alg. 7.

    Per step ``sigma_i -> sigma_{i+1}``: ``gamma_i = min(s_churn / N, sqrt(2) - 1)`` if
    ``sigma_i in [s_min, s_max]`` else ``0``; ``sigma_hat = (1 + gamma_i) sigma_i``;
    ``x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) z``, ``z ~ N(0, s_noise^2 I)``;
    ``d = (x_hat - D(x_hat, sigma_hat)) / sigma_hat``; Euler ``x' = x_hat + (sigma_{i+1} - sigma_hat) d``;
    Heun ``x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) (d + d') / 2`` with
    ``d' = (x' - D(x', sigma_{i+1})) / sigma_{i+1}``. ``s_churn = 0`` is the deterministic
    second-order EDM sampler. See the module docstring for the grid convention (no trailing
    zero; the final step to ``sigma = 0`` is ``finalize = D(x, sigma_{N-1})``, 1 NFE).

    Args:
      s_churn: total churn ``>= 0``; ``0`` makes the rule deterministic (no noise drawn).
      s_min, s_max: churn only while ``s_min <= sigma_i <= s_max``.
      s_noise: noise inflation ``>= 0``.
      n_steps: ``N``, the number of positive noise levels of the grid (required when
        ``s_churn > 0``; sets ``gamma``).
      sigma_max: std of the prior ``N(0, sigma_max^2 I)``; must equal the grid's first level.

    Returns:
      A :class:`StepRule` on ``denoiser(x, sigma)`` (``sigma`` scalar), ``nfe_per_step = 2``,
      ``nfe_final = 1``.

    Raises:
      ValueError: on negative or non-finite ``s_churn``/``s_noise``/``s_min``, ``s_min > s_max``,
        ``sigma_max <= 0``, or a missing/invalid ``n_steps`` with ``s_churn > 0``.
    """
    return _edm_rule(True, s_churn, s_min, s_max, s_noise, n_steps, sigma_max)


def edm_euler_rule(s_churn: float = 0.0, s_min: float = 0.0, s_max: float = math.inf, s_noise: float = 1.0,
                   *, n_steps: int | None = None, sigma_max: float = 80.0) -> StepRule:
    """First-order variant of :func:`edm_heun_rule` (the Euler step of Alg. 7, no correction).

    With ``s_churn = 0`` this is deterministic DDIM in EDM coordinates (thesis Alg. 6:
    ``x_{n+1} = x_n + (sigma_{n+1} - sigma_n) / sigma_n (x_n - d_n)``, final ``D(x, sigma_{N-1})``).
    Same arguments, grid convention and errors as :func:`edm_heun_rule`; ``nfe_per_step = 1``.
    """
    return _edm_rule(False, s_churn, s_min, s_max, s_noise, n_steps, sigma_max)
