"""One-call samplers: a rule, a grid and the sequential executor.

Each function is a thin wrapper over :func:`diffjax.samplers.sequential.sample` and returns
``(samples, info)`` with ``info["nfe"]``. They are pure; to compile once, ``jax.jit`` them with
``shape``/``n_steps``/``grid``/``method`` static and the model's parameters passed as arguments
(a new closure per call is a new static argument, hence a recompile)::

    @partial(jax.jit, static_argnames=("shape",))
    def draw(params, key, shape):
        return ddim(lambda x, t: apply(params, x, t), sde, key=key, shape=shape, n_steps=50)
"""

from __future__ import annotations

import math
from typing import Any, Callable

from jax import Array

from diffjax._validate import check_int, check_option
from diffjax.samplers.adaptive import solve_probability_flow
from diffjax.samplers.edm_rules import edm_euler_rule, edm_heun_rule
from diffjax.samplers.ode_rules import ddim_rule, probability_flow_euler_rule, probability_flow_heun_rule
from diffjax.samplers.sde_rules import ddpm_rule, euler_maruyama_rule, predictor_corrector_rule
from diffjax.samplers.sequential import sample
from diffjax.schedules import edm_sigma_grid
from diffjax.schedules import time_grid as _schedule_time_grid

__all__ = ["ddim", "ddpm", "euler_maruyama", "pc", "probability_flow", "edm_heun", "edm_euler", "time_grid"]


def time_grid(sde: Any, n_steps: int, t_min: float = 1e-3, grid: str = "uniform") -> Array:
    """``(n_steps + 1,)`` times from ``sde.T`` down to ``t_min``: :func:`diffjax.schedules.time_grid`
    with ``T = sde.T`` (``grid``: ``"uniform"``, ``"quadratic"`` (thesis §3.4.3.2.4) or ``"log_snr"``).

    Raises:
      ValueError: on an unknown ``grid`` name, ``n_steps < 1`` or ``t_min`` outside ``[0, T)``.
    """
    return _schedule_time_grid(n_steps, grid, t_min, sde.T, sde=sde)


def ddim(eps_fn: Callable, sde: Any, *, key: Array, shape: tuple[int, ...], n_steps: int, eta: float = 0.0,
         t_min: float = 1e-3, grid: str = "uniform", x_init: Array | None = None) -> tuple[Array, dict]:
    """DDIM (:func:`~diffjax.samplers.ode_rules.ddim_rule`) from ``sde.T`` to ``t_min`` in ``n_steps``.

    Args:
      eps_fn: ``(x, t) -> eps_hat`` with ``x`` of shape ``shape``.
      sde: scalar SDE. key: PRNG key. shape: ``(batch, *data)``. n_steps: Python int.
      eta: ``0`` deterministic, ``1`` DDPM-like. t_min, grid: see :func:`time_grid`.
      x_init: optional ``x_T`` replacing the prior draw.

    Returns:
      ``(samples (batch, *data), info)``, ``info["nfe"] = n_steps``.
    """
    return sample(ddim_rule(sde, eta), eps_fn, key, shape, time_grid(sde, n_steps, t_min, grid), x_init=x_init)


def ddpm(eps_fn: Callable, sde: Any, *, key: Array, shape: tuple[int, ...], n_steps: int, t_min: float = 0.0,
         grid: str = "uniform", x_init: Array | None = None) -> tuple[Array, dict]:
    """Ancestral DDPM sampling (:func:`~diffjax.samplers.sde_rules.ddpm_rule`).

    The grid runs to ``t_min = 0`` by default (the model is never evaluated there): the last
    step then returns the posterior mean ``x0_hat``, as in Ho et al.'s final step.

    Returns:
      ``(samples, info)``, ``info["nfe"] = n_steps``.
    """
    return sample(ddpm_rule(sde), eps_fn, key, shape, time_grid(sde, n_steps, t_min, grid), x_init=x_init)


def euler_maruyama(score_fn: Callable, sde: Any, *, key: Array, shape: tuple[int, ...], n_steps: int,
                   t_min: float = 1e-3, grid: str = "uniform", x_init: Any = None) -> tuple[Any, dict]:
    """Euler-Maruyama on the reverse SDE (:func:`~diffjax.samplers.sde_rules.euler_maruyama_rule`).

    Returns:
      ``(samples, info)``, ``info["nfe"] = n_steps``.
    """
    return sample(euler_maruyama_rule(sde), score_fn, key, shape, time_grid(sde, n_steps, t_min, grid),
                  x_init=x_init)


def pc(score_fn: Callable, sde: Any, *, key: Array, shape: tuple[int, ...], n_steps: int, snr: float = 0.16,
       n_corrector: int = 1, t_min: float = 1e-3, grid: str = "uniform",
       x_init: Array | None = None) -> tuple[Array, dict]:
    """Predictor-corrector sampling (:func:`~diffjax.samplers.sde_rules.predictor_corrector_rule`).

    Returns:
      ``(samples, info)``, ``info["nfe"] = n_steps (1 + n_corrector)``.
    """
    rule = predictor_corrector_rule(sde, snr, n_corrector)
    return sample(rule, score_fn, key, shape, time_grid(sde, n_steps, t_min, grid), x_init=x_init)


def probability_flow(score_fn: Callable, sde: Any, *, key: Array, shape: tuple[int, ...],
                     n_steps: int | None = None, method: str = "heun", t_min: float = 1e-3, grid: str = "uniform",
                     rtol: float = 1e-5, atol: float = 1e-5, x_init: Any = None) -> tuple[Any, dict]:
    """Probability-flow ODE sampling (thesis eqs. 1.21-1.22) with a fixed-step or adaptive solver.

    Args:
      method: ``"euler"`` or ``"heun"`` (fixed ``n_steps``), or ``"adaptive"`` (diffrax Tsit5 with
        ``rtol``/``atol``; ``n_steps`` must be ``None``).

    Returns:
      ``(samples, info)``; ``info["nfe"]`` is exact for all methods.

    Raises:
      ValueError: on an unknown ``method`` or a missing/superfluous ``n_steps``.
    """
    check_option("method", method, ("euler", "heun", "adaptive"))
    if method == "adaptive":
        if n_steps is not None:
            raise ValueError(f"method='adaptive' chooses its own steps; pass n_steps=None, got {n_steps!r}")
        x_T = sde.prior_sample(key, shape) if x_init is None else x_init
        return solve_probability_flow(sde, score_fn, x_T, t1=t_min, rtol=rtol, atol=atol)
    rules = {"euler": probability_flow_euler_rule, "heun": probability_flow_heun_rule}
    if n_steps is None:
        raise ValueError(f"method={method!r} needs n_steps")
    return sample(rules[method](sde), score_fn, key, shape, time_grid(sde, n_steps, t_min, grid), x_init=x_init)


def _edm(heun, denoiser, key, shape, n_steps, sigma_min, sigma_max, rho, s_churn, s_min, s_max, s_noise, x_init):
    check_int("n_steps (EDM sampling)", n_steps, 2)
    build = edm_heun_rule if heun else edm_euler_rule
    rule = build(s_churn, s_min, s_max, s_noise, n_steps=n_steps, sigma_max=sigma_max)
    sigmas = edm_sigma_grid(n_steps, sigma_min, sigma_max, rho, append_zero=False)
    return sample(rule, denoiser, key, shape, sigmas, x_init=x_init)


def edm_heun(denoiser: Callable, *, key: Array, shape: tuple[int, ...], n_steps: int, sigma_min: float = 0.002,
             sigma_max: float = 80.0, rho: float = 7.0, s_churn: float = 0.0, s_min: float = 0.0,
             s_max: float = math.inf, s_noise: float = 1.0, x_init: Array | None = None) -> tuple[Array, dict]:
    """EDM Heun / Churn sampler (thesis Alg. 7) on ``denoiser(x, sigma)`` over ``n_steps`` noise
    levels of eq. (4.26) and a final step to ``sigma = 0``.

    Returns:
      ``(samples, info)``, ``info["nfe"] = 2 n_steps - 1``.

    Raises:
      ValueError: on invalid churn parameters or ``n_steps < 2``.
    """
    return _edm(True, denoiser, key, shape, n_steps, sigma_min, sigma_max, rho, s_churn, s_min, s_max, s_noise,
                x_init)


def edm_euler(denoiser: Callable, *, key: Array, shape: tuple[int, ...], n_steps: int, sigma_min: float = 0.002,
              sigma_max: float = 80.0, rho: float = 7.0, s_churn: float = 0.0, s_min: float = 0.0,
              s_max: float = math.inf, s_noise: float = 1.0, x_init: Array | None = None) -> tuple[Array, dict]:
    """First-order EDM sampler (Euler steps of thesis Alg. 7; with ``s_churn = 0`` deterministic
    DDIM, Alg. 6). Returns ``(samples, info)``, ``info["nfe"] = n_steps``."""
    return _edm(False, denoiser, key, shape, n_steps, sigma_min, sigma_max, rho, s_churn, s_min, s_max, s_noise,
                x_init)
