"""Small helpers shared by every SDE: broadcasting a time to data, batch sums."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

__all__ = ["broadcast_to_data", "batch_sum"]


def broadcast_to_data(c: Array, x: Array) -> Array:
    """Reshape a scalar or ``(batch,)`` coefficient so it broadcasts against ``x`` of shape ``(batch, *data)``.

    Raises:
      ValueError: if ``c`` is neither a scalar nor has the leading (batch) size of ``x``.
    """
    c = jnp.asarray(c)
    if c.ndim == 0:
        return c
    if c.ndim != 1 or (x.ndim >= 1 and c.shape[0] != x.shape[0]):
        raise ValueError(
            f"time/coefficient must be a scalar or of shape (batch,)=({x.shape[0] if x.ndim else '?'},), got shape {c.shape}"
        )
    return c.reshape(c.shape + (1,) * (x.ndim - 1))


def batch_sum(x: Array) -> Array:
    """Sum over all but the leading (batch) axis: ``(batch, *data) -> (batch,)``."""
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))
