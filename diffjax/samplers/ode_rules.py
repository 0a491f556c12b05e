"""Deterministic step rules: probability-flow ODE (Euler, Heun) and DDIM.

Probability-flow ODE (thesis eqs. 1.21-1.22): ``dx/dt = f(x, t) - 1/2 G G^T score(x, t)``,
integrated backwards from ``T``; ``sde.reverse_drift(x, t, score, probability_flow=True)``
supplies the right-hand side for every SDE (scalar or CLD, where the state is ``(x, v)`` and
the model returns the velocity score).

DDIM (thesis §3.1.1, Song et al. 2021 "DDIM"): for a kernel ``x_t = alpha_t x_0 + sigma_t eps``
with an eps model, ``x0_hat = (x_t - sigma_t eps_hat) / alpha_t`` and

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,
    c = eta sigma_s sqrt(1 - exp(lambda_t - lambda_s)),

where ``lambda = log(alpha^2 / sigma^2)`` and ``sigma_s^2 (1 - exp(lambda_t - lambda_s))`` is the
variance of the DDPM posterior ``q(x_s | x_t, x_0)``. ``eta = 0`` is deterministic DDIM, the
Euler method for ``d(x/alpha) / d gamma = eps`` with ``gamma = sigma/alpha`` (thesis eqs. 3.3-3.6);
``eta = 1`` is ancestral DDPM sampling.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_sde, concrete_float
from diffjax.samplers._rule import StepRule, gaussian_noise, no_noise, score_kind

__all__ = ["probability_flow_euler_rule", "probability_flow_heun_rule", "ddim_rule"]

_tmap = jax.tree_util.tree_map


def _pf_velocity(sde: Any, model_fn: Callable, state: Any, t: Array) -> Any:
    """Right-hand side of the probability-flow ODE (thesis eq. 1.21) at ``(state, t)``."""
    return sde.reverse_drift(state, t, model_fn(state, t), probability_flow=True)


def probability_flow_euler_rule(sde: Any) -> StepRule:
    """Euler method on the probability-flow ODE (thesis eqs. 1.21-1.22); first order, 1 NFE/step.

    ``x_{t_next} = x_t + (t_next - t) f~(x_t, t)`` with
    ``f~ = sde.reverse_drift(x, t, score_fn(x, t), probability_flow=True)``.

    Args:
      sde: any SDE with the generic sampler interface (VP, sub-VP, VE, CLD).

    Returns:
      A :class:`StepRule` whose ``model_fn`` is ``score_fn(state, t)`` (``t`` scalar).

    Raises:
      TypeError: if ``sde`` lacks the SDE interface.
    """
    check_sde(sde, scalar=False)

    def step(model_fn, state, t, t_next, z):
        v = _pf_velocity(sde, model_fn, state, t)
        dt = t_next - t
        return _tmap(lambda s, d: s + dt * d, state, v)

    return StepRule(step=step, prior=sde.prior_sample, noise=no_noise, nfe_per_step=1,
                    **StepRule.declare(score_kind(sde), sde))


def probability_flow_heun_rule(sde: Any) -> StepRule:
    """Heun's method (explicit trapezoidal) on the probability-flow ODE; second order, 2 NFE/step.

    ``x' = x_t + h f~(x_t, t)``, ``x_{t_next} = x_t + h/2 (f~(x_t, t) + f~(x', t_next))``,
    ``h = t_next - t`` (thesis eqs. 1.21-1.22; Karras et al.'s Heun step, thesis Alg. 7).

    Args:
      sde: any SDE with the generic sampler interface (VP, sub-VP, VE, CLD).

    Returns:
      A :class:`StepRule` with ``nfe_per_step = 2``; ``model_fn`` is ``score_fn(state, t)``.

    Raises:
      TypeError: if ``sde`` lacks the SDE interface.
    """
    check_sde(sde, scalar=False)

    def step(model_fn, state, t, t_next, z):
        h = t_next - t
        v1 = _pf_velocity(sde, model_fn, state, t)
        pred = _tmap(lambda s, d: s + h * d, state, v1)
        v2 = _pf_velocity(sde, model_fn, pred, t_next)
        return _tmap(lambda s, a, b: s + (0.5 * h) * (a + b), state, v1, v2)

    return StepRule(step=step, prior=sde.prior_sample, noise=no_noise, nfe_per_step=2,
                    **StepRule.declare(score_kind(sde), sde))


def _coeffs(sde: Any, t: Array, s: Array):
    """``alpha_t, sigma_t, alpha_s, sigma_s`` and ``1 - r``, ``r = exp(lambda_t - lambda_s)`` (stable)."""
    alpha_t, sigma_t = sde.marginal_coeffs(t)
    alpha_s, sigma_s = sde.marginal_coeffs(s)
    dl = sde.log_snr(t) - sde.log_snr(s)          # <= 0 when s < t; -inf when sigma_s = 0
    return alpha_t, sigma_t, alpha_s, sigma_s, jnp.exp(dl), -jnp.expm1(dl)


def ddim_rule(sde: Any, eta: float = 0.0) -> StepRule:
    """DDIM step for a scalar SDE with an eps model (thesis §3.1.1, Alg. 6; Song et al. 2021).

    ``x0_hat = (x_t - sigma_t eps_hat) / alpha_t`` and
    ``x_s = alpha_s x0_hat + sigma_s sqrt(1 - eta^2 (1 - r)) eps_hat + eta sigma_s sqrt(1 - r) z``,
    ``r = exp(lambda_t - lambda_s)``: exact in the ``(alpha, sigma)`` form, so it works for VP,
    sub-VP and VE alike. ``eta = 0`` is deterministic (first order in ``gamma = sigma/alpha``);
    ``eta = 1`` coincides with :func:`~diffjax.samplers.sde_rules.ddpm_rule`.

    Args:
      sde: a scalar SDE (``marginal_coeffs``, ``log_snr``).
      eta: stochasticity in ``[0, 1]``; a concrete ``0`` gives a noise-free rule (``z`` is ``None``).
        A traced ``eta`` is allowed (then noise is always drawn); a traced value outside ``[0, 1]``
        (DDIM's ``sigma_s^2 = eta^2 (1 - r) sigma_s^2 <= sigma_s^2`` needs ``eta <= 1``) cannot raise
        and makes every sample NaN instead of silently clamping the variance.

    Returns:
      A :class:`StepRule` (``model_kind="eps"``); ``model_fn`` is ``eps_fn(x, t)`` with ``x`` of shape
      ``(batch, *data)``, or any model declared with :func:`diffjax.param.model` (converted with ``sde``).

    Raises:
      ValueError: if ``eta`` is outside ``[0, 1]`` or not finite.
      TypeError: if ``sde`` is not a scalar SDE.
    """
    check_sde(sde, scalar=True)
    eta = concrete_float("eta", eta, lo=0.0, hi=1.0, allow_traced=True, poison_traced=True)
    deterministic = isinstance(eta, float) and eta == 0.0

    def step(model_fn, x, t, s, z):
        alpha_t, sigma_t, alpha_s, sigma_s, _, one_minus_r = _coeffs(sde, t, s)
        eps = model_fn(x, t)
        x0 = (x - sigma_t * eps) / alpha_t
        if deterministic:
            return alpha_s * x0 + sigma_s * eps
        c = eta * sigma_s * jnp.sqrt(one_minus_r)
        keep = sigma_s * jnp.sqrt(jnp.maximum(1.0 - eta**2 * one_minus_r, 0.0))
        return alpha_s * x0 + keep * eps + c * z

    return StepRule(step=step, prior=sde.prior_sample, noise=no_noise if deterministic else gaussian_noise,
                    nfe_per_step=1, **StepRule.declare("eps", sde))
