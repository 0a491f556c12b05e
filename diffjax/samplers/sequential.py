"""The sequential executor: one ``lax.scan`` over the time grid."""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax import Array

from diffjax.samplers._rule import StepRule, prepare, resolve_model, sequential_nfe

__all__ = ["sample"]


def sample(rule: StepRule, model_fn: Callable, key: Array, shape: tuple[int, ...], grid: Array, *,
           x_init: Any = None, return_trajectory: bool = False) -> tuple[Array, dict]:
    """Run ``rule`` along ``grid`` (from the prior at ``grid[0]`` to ``grid[-1]``).

    Pure and traceable: wrap it in ``jax.jit`` (``rule``, ``shape`` and ``return_trajectory``
    static; pass network parameters as arguments, not closures, to compile once per shape).

    Args:
      rule: a :class:`StepRule`.
      model_fn: the model: a bare callable of the kind the rule expects (``rule.model_kind``: score,
        eps, x0 or denoiser function; used as is), or a model declared with
        :func:`diffjax.param.model` (``param.model(eps_fn, "eps")``), converted to the rule's kind.
      key: PRNG key; fixes the prior draw and every step's noise.
      shape: sample shape ``(batch, *data)`` (static).
      grid: ``(n_steps + 1,)`` times (or sigmas, for EDM rules), in integration order: decreasing
        (DDIM inversion: increasing), inside ``[0, sde.T]`` (sigma rules: ``>= 0``), only the last
        entry may be ``0``. A concrete grid is checked (``ValueError``); a traced grid (a ``jit``
        argument) that is invalid makes the samples NaN (:func:`~diffjax.samplers._rule.prepare`).
      x_init: optional initial state replacing the prior draw (the prior draw's structure and shapes).
      return_trajectory: also return every intermediate state (leading ``(n_steps,)`` axis).

    Returns:
      ``(samples, info)``; ``info["nfe"]`` counts model evaluations per sample, and
      ``info["trajectory"]`` holds the states when asked for.

    Raises:
      ValueError: bad ``grid``, ``shape`` or ``x_init``; a ``model_fn`` output of another shape than
        the state it is called on (checked at trace time, no evaluation).
      TypeError: a declared model kind the rule cannot use.
    """
    model_fn = resolve_model(rule, model_fn)
    state, zs, n = prepare(rule, model_fn, key, shape, grid, x_init)

    def body(s, inputs):
        t, t_next, z = inputs
        s_next = rule.step(model_fn, s, t, t_next, z)
        return s_next, (s_next if return_trajectory else None)

    state, traj = jax.lax.scan(body, state, (grid[:-1], grid[1:], zs))
    info = {"nfe": sequential_nfe(rule, grid)}
    if return_trajectory:
        info["trajectory"] = traj
    return rule.finalize(model_fn, state, grid[-1]), info
