"""The sequential executor: one ``lax.scan`` over the time grid."""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax import Array

from diffjax.samplers._rule import StepRule, prepare

__all__ = ["sample"]


def sample(rule: StepRule, model_fn: Callable, key: Array, shape: tuple[int, ...], grid: Array, *,
           x_init: Any = None, return_trajectory: bool = False) -> tuple[Array, dict]:
    """Run ``rule`` along ``grid`` (from the prior at ``grid[0]`` to ``grid[-1]``).

    Pure and traceable: wrap it in ``jax.jit`` (``rule``, ``shape`` and ``return_trajectory``
    static; pass network parameters as arguments, not closures, to compile once per shape).

    Args:
      rule: a :class:`StepRule`.
      model_fn: the model the rule expects (score, eps or denoiser function).
      key: PRNG key; fixes the prior draw and every step's noise.
      shape: sample shape ``(batch, *data)`` (static).
      grid: ``(n_steps + 1,)`` times (or sigmas, for EDM rules), in integration order.
      x_init: optional initial state replacing the prior draw.
      return_trajectory: also return every intermediate state (leading ``(n_steps,)`` axis).

    Returns:
      ``(samples, info)``; ``info["nfe"]`` counts model evaluations per sample, and
      ``info["trajectory"]`` holds the states when asked for.
    """
    state, zs, n = prepare(rule, model_fn, key, shape, grid, x_init)

    def body(s, inputs):
        t, t_next, z = inputs
        s_next = rule.step(model_fn, s, t, t_next, z)
        return s_next, (s_next if return_trajectory else None)

    state, traj = jax.lax.scan(body, state, (grid[:-1], grid[1:], zs))
    info = {"nfe": n * rule.nfe_per_step + rule.nfe_final}
    if return_trajectory:
        info["trajectory"] = traj
    return rule.finalize(model_fn, state, grid[-1]), info
