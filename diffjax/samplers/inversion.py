"""DDIM inversion: encode data to the prior deterministically by running the DDIM ODE forwards.

The deterministic DDIM step (thesis eqs. 3.3-3.6; :func:`~diffjax.samplers.ode_rules.ddim_rule`)

    x_s = alpha_s (x_t - sigma_t eps(x_t, t)) / alpha_t + sigma_s eps(x_t, t)

is the Euler method of ``d(x/alpha) / d gamma = eps`` (``gamma = sigma/alpha``) for any pair of
times, in either direction. Inversion runs it from the data end of a sampling grid to its start
(``t_min -> T``), evaluating ``eps`` at the current (lower) time; DDIM sampling on the same grid
then maps the code back. Both are first-order discretisations of the same probability-flow ODE,
so the round trip reproduces ``x_0`` up to ``O(max step)`` (Song et al. 2021 "DDIM" §5.4;
Dhariwal & Nichol 2021 App.).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from diffjax.samplers._rule import check_grid
from diffjax.samplers.ode_rules import ddim_rule
from diffjax.samplers.sequential import sample

__all__ = ["ddim_invert", "ddim_reconstruct"]


def ddim_invert(eps_fn: Callable, sde: Any, x0: Array, grid: Array) -> tuple[Array, dict]:
    """Encode ``x0`` (the state at ``grid[-1]``) to the prior time ``grid[0]`` with DDIM steps run forwards.

    Args:
      eps_fn: ``eps_fn(x, t)`` of a scalar SDE.
      sde: a scalar SDE (VP, sub-VP, VE).
      x0: ``(batch, *data)`` data, treated as the state at ``grid[-1]`` (keep ``grid[-1] > 0``:
        ``eps`` is evaluated there, and is undefined at ``sigma = 0``).
      grid: the SAMPLING grid, ``(n + 1,)`` descending times ``T ... t_min`` (e.g.
        :func:`diffjax.schedules.quadratic_grid`); inversion walks it backwards.

    Returns:
      ``(x_T, info)``: the code at ``grid[0]`` (shape of ``x0``) and ``info["nfe"] = n``.

    Raises:
      ValueError: on a grid that is not a valid sampling grid of ``sde`` (1-D, at least 2 times,
        decreasing inside ``[0, T]``, ``grid[-1] > 0``: :func:`~diffjax.samplers._rule.check_grid`).
      TypeError: if ``sde`` is not a scalar SDE.
    """
    rule = ddim_rule(sde, 0.0)
    if check_grid(rule, grid)[1] is True and float(np.asarray(grid)[-1]) <= 0.0:
        raise ValueError(f"grid[-1] must be > 0 for inversion (eps is evaluated there), got {grid[-1]}")
    grid, x0 = jnp.asarray(grid), jnp.asarray(x0)
    # The sampling grid read backwards, by the same rule declared to integrate upwards.
    return sample(rule._replace(grid_direction=1), eps_fn, jax.random.PRNGKey(0), x0.shape, grid[::-1], x_init=x0)


def ddim_reconstruct(eps_fn: Callable, sde: Any, x_T: Array, grid: Array) -> tuple[Array, dict]:
    """Decode a code ``x_T`` at ``grid[0]`` back to ``grid[-1]`` with deterministic DDIM (inverse of
    :func:`ddim_invert`); same arguments. Returns ``(x0_hat, info)``, ``info["nfe"] = n``."""
    grid, x_T = jnp.asarray(grid), jnp.asarray(x_T)
    return sample(ddim_rule(sde, 0.0), eps_fn, jax.random.PRNGKey(0), x_T.shape, grid, x_init=x_T)
