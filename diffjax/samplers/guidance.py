"""Classifier-free guidance: a guided model function from a conditional and an unconditional one."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import concrete_float

__all__ = ["classifier_free_guidance"]


def classifier_free_guidance(cond_fn: Callable, uncond_fn: Callable, w: float | Array) -> Callable:
    """Guided model ``m_w = (1 + w) m(x, t | c) - w m(x, t)`` (thesis eq. 5.5; Ho & Salimans 2021).

    Works for any parameterisation that is affine in the score (denoiser ``D``, eps, score).
    The thesis writes the same family twice: eq. (5.5) above, where ``w = 0`` is the plain
    conditional model, and eq. (4.27) ``(1 - w') D(x; sigma) + w' D(x; sigma, y)``, where ``w' = 1``
    is conditional; they agree for ``w' = 1 + w``. This function uses eq. (5.5).

    ``w`` may be a traced array (e.g. an argument of a jitted sampler): changing it does not
    recompile.

    Args:
      cond_fn: conditional model ``(x, t) -> out`` (condition closed over or bound by the caller).
      uncond_fn: unconditional model ``(x, t) -> out`` of the same shape.
      w: guidance strength (scalar; any real, ``0`` = conditional, ``-1`` = unconditional).

    Returns:
      ``model_fn(x, t)``; 2 model evaluations per call (count it as 2 NFE per step).

    Raises:
      ValueError: if a concrete ``w`` is not a finite scalar.
    """
    if not isinstance(w, jax.core.Tracer):
        w_arr = jnp.asarray(w)
        if w_arr.ndim != 0:
            raise ValueError(f"w must be a scalar, got shape {w_arr.shape}")
        concrete_float("w", float(w_arr))

    def guided(x, t):
        c = cond_fn(x, t)
        u = uncond_fn(x, t)
        return c + w * (c - u)

    return guided
