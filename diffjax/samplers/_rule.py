"""A sampler = a step rule (data: pure functions) + an executor (sequential or Picard).

Every rule advances a state pytree from ``t`` to ``t_next`` given one pre-drawn noise pytree
``z``. All noise of a run is drawn up front from one key by :func:`prepare`, which both
executors call, so the sequential trajectory and the Picard fixed point are the same path.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["StepRule", "prepare", "no_noise", "gaussian_noise"]

PyTree = Any


def no_noise(key: Array, shape: tuple[int, ...]) -> None:
    """Noise of a deterministic rule: nothing."""
    return None


def gaussian_noise(key: Array, shape: tuple[int, ...]) -> Array:
    """One step's standard normal noise of the data shape."""
    return jax.random.normal(key, shape)


def _identity_init(model_fn, x, t):
    return x


def _identity_finalize(model_fn, state, t):
    return state


class StepRule(NamedTuple):
    """A sampling method as data (all fields are pure functions).

    Attributes:
      step: ``(model_fn, state, t, t_next, z) -> state_next``; ``t``, ``t_next`` scalars.
      prior: ``(key, shape) -> x_T`` (a pytree for augmented states such as CLD's ``(x, v)``).
      noise: ``(key, shape) -> z`` for ONE step (``None`` for deterministic rules).
      init: ``(model_fn, x_T, t_0) -> state`` (e.g. adds a multistep history); identity by default.
      finalize: ``(model_fn, state, t_N) -> samples`` (e.g. a final denoising step); identity by default.
      nfe_per_step: model evaluations per step (static int).
      nfe_final: model evaluations spent by ``finalize`` (static int).
    """

    step: Callable[..., PyTree]
    prior: Callable[[Array, tuple[int, ...]], PyTree]
    noise: Callable[[Array, tuple[int, ...]], PyTree] = no_noise
    init: Callable[..., PyTree] = _identity_init
    finalize: Callable[..., Array] = _identity_finalize
    nfe_per_step: int = 1
    nfe_final: int = 0


def _check_grid(grid: Array) -> int:
    grid = jnp.asarray(grid)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"grid must be a 1-D array of at least 2 times, got shape {grid.shape}")
    return grid.shape[0] - 1


def prepare(rule: StepRule, model_fn: Callable, key: Array, shape: tuple[int, ...], grid: Array,
            x_init: PyTree | None = None) -> tuple[PyTree, PyTree, int]:
    """Initial state and all per-step noise of a run, drawn from one key.

    Returns:
      ``(state_0, zs, n_steps)`` where ``zs`` is the pytree of noises stacked on a leading
      ``(n_steps,)`` axis (``None`` for deterministic rules).
    """
    n = _check_grid(grid)
    k_prior, k_noise = jax.random.split(key)
    x_T = rule.prior(k_prior, shape) if x_init is None else x_init
    zs = jax.vmap(lambda k: rule.noise(k, shape))(jax.random.split(k_noise, n))
    return rule.init(model_fn, x_T, grid[0]), zs, n
