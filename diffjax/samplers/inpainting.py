"""Inpainting / imputation with a known mask by the replacement method, as a step-rule wrapper.

Replacement (Song et al. 2021, "Score-based generative modeling through SDEs", App. I.2,
controllable generation; also Lugmayr et al.'s RePaint without resampling): after every step to
time ``t_next`` the known coordinates are overwritten by a fresh forward-noised copy of the known
data at that time,

    x_{t_next} <- m * (alpha_{t_next} x_known + sigma_{t_next} z_known) + (1 - m) * x_{t_next},

with ``z_known ~ N(0, I)`` drawn up front like every other noise of the run (so Picard and
sequential execution agree for one key), and the final sample takes ``x_known`` exactly on the
mask. The prior draw is replaced the same way at ``t = T``.

The method is approximate: the unknown coordinates see the known ones only through the noised
copies, i.e. the model's ``p_t(x_unknown | x_known,t)`` with an independently noised ``x_known,t``, not
the exact conditional score ``grad log p_t(x_t | x_known)``. The error vanishes when the noise levels
of a step are small relative to the data's correlation scale and grows with strong correlation
between known and unknown parts (tests quantify it on a correlated Gaussian).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from diffjax.samplers._rule import StepRule
from diffjax.samplers._exponential import coords as _coords

__all__ = ["inpaint_rule"]


class _PriorDraw(NamedTuple):
    """The wrapped prior's draw: the base rule's ``x_T`` and the noise of the known part at ``T``."""

    x: Array
    z_known: Array


def _get_x(state: Any) -> Array:
    return state[0] if isinstance(state, tuple) else state


def _set_x(state: Any, x: Array) -> Any:
    if not isinstance(state, tuple):
        return x
    rest = tuple(state[1:])
    return state._replace(**{state._fields[0]: x}) if hasattr(state, "_fields") else (x,) + rest


def inpaint_rule(rule: StepRule, sde: Any, x_known: Array, mask: Array) -> StepRule:
    """Wrap a scalar-SDE (or EDM-coordinate) rule so that it samples ``x`` given ``x[mask] = x_known[mask]``.

    Args:
      rule: any :class:`StepRule` whose state is ``x`` or a tuple/NamedTuple with ``x`` first (all
        DDIM/DDPM/EM/DPM-Solver++/ancestral rules of this package), whose time is ``t`` of ``sde``
        (or the EDM sigma when ``sde is None``).
      sde: the scalar SDE of the rule's time variable (``marginal_coeffs``, ``log_snr``), or ``None``
        for EDM coordinates (``alpha = 1``, ``sigma = t``).
      x_known: known data, broadcastable to the sample shape ``(batch, *data)``; its values off the
        mask are ignored.
      mask: ``1`` (or ``True``) where ``x`` is known, ``0`` elsewhere; broadcastable to ``(batch, *data)``.

    Returns:
      A :class:`StepRule` with the base rule's model (kind and adapter), NFE and grid checks; its
      per-step noise is ``(z_rule, z_known)``; the prior draw gets the noised known data at ``grid[0]`` (an ``x_init``
      given to the executor is used as is); ``finalize`` returns the base rule's samples with ``x_known`` on the mask.

    Raises:
      ValueError: if ``mask`` and ``x_known`` cannot be broadcast together.
    """
    x_known = jnp.asarray(x_known)
    mask = jnp.asarray(mask)
    try:
        jnp.broadcast_shapes(x_known.shape, mask.shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast with x_known of shape {x_known.shape}") \
            from None
    m = mask.astype(bool)

    def noised_known(t, z):
        alpha, sigma, _ = _coords(sde, t)
        return alpha * x_known + sigma * z

    def replace(x, t, z):
        return jnp.where(m, noised_known(t, z), x).astype(x.dtype)

    def noise(key, shape):
        k_rule, k_known = jax.random.split(key)
        return rule.noise(k_rule, shape), jax.random.normal(k_known, shape)

    def prior(key, shape):
        k_rule, k_known = jax.random.split(key)
        return _PriorDraw(rule.prior(k_rule, shape), jax.random.normal(k_known, shape))

    def init(model_fn, x_T, t0):
        if isinstance(x_T, _PriorDraw):             # a user's x_init is taken as is
            x_T = replace(x_T.x, t0, x_T.z_known)
        return rule.init(model_fn, x_T, t0)

    def step(model_fn, state, t, t_next, z):
        z_rule, z_known = z
        new = rule.step(model_fn, state, t, t_next, z_rule)
        return _set_x(new, replace(_get_x(new), t_next, z_known))

    def finalize(model_fn, state, t_last):
        out = rule.finalize(model_fn, state, t_last)
        return jnp.where(m, x_known, out).astype(out.dtype)

    # Everything else (NFE, model kind and adapter, grid direction, domain and length) is the base rule's.
    return rule._replace(step=step, prior=prior, noise=noise, init=init, finalize=finalize)
