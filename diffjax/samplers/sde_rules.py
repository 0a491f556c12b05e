"""Stochastic step rules: reverse-SDE Euler-Maruyama, predictor-corrector, ancestral DDPM.

Reverse SDE (thesis eqs. 1.19-1.20): ``dx = [f(x, t) - G G^T score(x, t)] dt + G dw-bar``,
integrated backwards from ``T``. All noise is pre-drawn by the executor (one pytree per step).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffjax._validate import check_int, check_sde, concrete_float
from diffjax.samplers._rule import StepRule, gaussian_noise, score_kind
from diffjax.samplers.ode_rules import _coeffs

__all__ = ["euler_maruyama_rule", "predictor_corrector_rule", "ddpm_rule"]

_tmap = jax.tree_util.tree_map


def euler_maruyama_rule(sde: Any) -> StepRule:
    """Euler-Maruyama on the reverse SDE (thesis eq. 1.19; eq. 1.20 for scalar kernels).

    ``x_{t_next} = x_t + h [f(x_t, t) - G G^T s(x_t, t)] + sqrt(-h) G(t) z``, ``h = t_next - t < 0``,
    written through the generic interface ``sde.reverse_drift`` and ``sde.diffusion_apply`` so the
    same rule drives VP, sub-VP, VE and CLD (state ``(x, v)``, noise only in ``v``).

    Args:
      sde: any SDE with the generic sampler interface.

    Returns:
      A :class:`StepRule`; ``model_fn`` is ``score_fn(state, t)`` (for CLD the velocity score);
      one standard normal draw of the data shape per step.

    Raises:
      TypeError: if ``sde`` lacks the SDE interface.
    """
    check_sde(sde, scalar=False)

    def step(model_fn, state, t, t_next, z):
        h = t_next - t
        drift = sde.reverse_drift(state, t, model_fn(state, t))
        noise = sde.diffusion_apply(t, z)
        sq = jnp.sqrt(-h)
        return _tmap(lambda s, d, n: s + h * d + sq * n, state, drift, noise)

    return StepRule(step=step, prior=sde.prior_sample, noise=gaussian_noise, nfe_per_step=1,
                    **StepRule.declare(score_kind(sde), sde))


def _mean_norm(x):
    """Batch mean of the per-example norms ``||x_i||`` (a scalar), as in Song et al.'s corrector."""
    return jnp.mean(jnp.sqrt(jnp.sum(x**2, axis=tuple(range(1, x.ndim)))))


def predictor_corrector_rule(sde: Any, snr: float = 0.16, n_corrector: int = 1) -> StepRule:
    """Predictor-corrector sampler (Song et al. 2021, Alg. 2-4) for scalar SDEs.

    At each grid time ``t``: ``n_corrector`` Langevin corrector steps at ``t``,
    ``x <- x + e s(x, t) + sqrt(2 e) z``, ``e = 2 (snr ||z|| / ||s(x, t)||)^2`` where the norms are
    batch means of per-example norms (as in Song et al.; a per-example ratio blows up for samples
    sitting on a mode, where ``||s|| ~ 0``), so the step size depends on the batch. Then one
    Euler-Maruyama predictor step of the reverse SDE (thesis eq. 1.20) from ``t`` to ``t_next``.

    Args:
      sde: a scalar SDE.
      snr: target signal-to-noise ratio of the corrector, ``> 0`` (a traced value that is not makes
        the samples NaN).
      n_corrector: Langevin steps per grid time (Python int ``>= 0``; ``0`` is plain EM).

    Returns:
      A :class:`StepRule` with ``nfe_per_step = 1 + n_corrector``; ``model_fn`` is
      ``score_fn(x, t)``. Its noise per step is ``(z_predictor, z_corrector)`` with shapes
      ``shape`` and ``(n_corrector, *shape)``.

    Raises:
      ValueError: if ``snr <= 0`` (or not finite) or ``n_corrector`` is not an int ``>= 0``.
      TypeError: if ``sde`` is not a scalar SDE.
    """
    check_sde(sde, scalar=True)
    snr = concrete_float("snr", snr, lo=0.0, lo_open=True, allow_traced=True, poison_traced=True)
    n_corrector = check_int("n_corrector", n_corrector, 0)

    def noise(key, shape):
        kp, kc = jax.random.split(key)
        return jax.random.normal(kp, shape), jax.random.normal(kc, (n_corrector,) + tuple(shape))

    def step(model_fn, x, t, t_next, z):
        z_pred, z_corr = z

        for i in range(n_corrector):  # static and small: unrolled
            score = model_fn(x, t)
            e = 2.0 * (snr * _mean_norm(z_corr[i]) / jnp.maximum(_mean_norm(score), 1e-30)) ** 2
            x = x + e * score + jnp.sqrt(2.0 * e) * z_corr[i]
        h = t_next - t
        x = x + h * sde.reverse_drift(x, t, model_fn(x, t)) + jnp.sqrt(-h) * sde.diffusion_apply(t, z_pred)
        return x

    return StepRule(step=step, prior=sde.prior_sample, noise=noise, nfe_per_step=1 + n_corrector,
                    **StepRule.declare("score", sde))


def ddpm_rule(sde: Any) -> StepRule:
    """Ancestral sampling with the Gaussian posterior ``q(x_s | x_t, x0_hat)`` (Ho et al. 2020).

    For ``x_t = alpha_t x_0 + sigma_t eps`` and ``s < t``: ``alpha_{t|s} = alpha_t / alpha_s``,
    ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 = sigma_t^2 (1 - r)`` with
    ``r = exp(lambda_t - lambda_s)`` (computed with ``expm1``, no cancellation), and

        mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0_hat
             = r alpha_s / alpha_t x_t + (1 - r) alpha_s x0_hat,
        var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2 = (1 - r) sigma_s^2,

    ``x0_hat = (x_t - sigma_t eps_hat(x_t, t)) / alpha_t``. When the grid ends at a time with
    ``sigma_s = 0`` (``t = 0`` for VP/sub-VP) the last step returns the mean ``x0_hat`` exactly
    (``r = 0``, ``var = 0``), as in DDPM's final step.

    Args:
      sde: a scalar SDE.

    Returns:
      A :class:`StepRule`; ``model_fn`` is ``eps_fn(x, t)``.

    Raises:
      TypeError: if ``sde`` is not a scalar SDE.
    """
    check_sde(sde, scalar=True)

    def step(model_fn, x, t, s, z):
        alpha_t, sigma_t, alpha_s, sigma_s, r, one_minus_r = _coeffs(sde, t, s)
        x0 = (x - sigma_t * model_fn(x, t)) / alpha_t
        mean = (r * alpha_s / alpha_t) * x + (one_minus_r * alpha_s) * x0
        return mean + sigma_s * jnp.sqrt(one_minus_r) * z

    return StepRule(step=step, prior=sde.prior_sample, noise=gaussian_noise, nfe_per_step=1,
                    **StepRule.declare("eps", sde))

