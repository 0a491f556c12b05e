"""Scaffolding shared by every loss builder (diffjax.losses, diffjax.distill, diffjax.cdl).

Builder-time validation (``check_option``, ``check_t_min``), call-time validation of the data
(``check_x0``), the uniform time draw, the eps implied by a network output, and the
``reduce=True/False`` convention of ``loss(apply_fn, params, key, x0, *, reduce)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_batch, check_option, check_t_min

__all__ = ["check_option", "check_t_min", "check_x0", "finish", "sample_t", "eps_hat"]  # validators re-exported from _validate


def finish(per_example: Array, aux: dict[str, Any], reduce: bool):
    return (jnp.mean(per_example) if reduce else per_example), aux


def sample_t(key: Array, n: int, t_min: float, T: Any) -> Array:
    return jax.random.uniform(key, (n,), minval=t_min, maxval=T)


def eps_hat(parameterization: str, out: Array, x: Array, alpha: Array, sigma: Array) -> Array:
    """Network output in the given parameterisation -> implied noise prediction (see diffjax.param)."""
    if parameterization == "eps":
        return out
    if parameterization == "score":
        return -sigma * out
    if parameterization == "x0":
        return (x - alpha * out) / sigma
    return (alpha * out + sigma * x) / (alpha**2 + sigma**2)  # "v": v = alpha eps - sigma x0


def check_x0(x0: Array) -> Array:
    """``x0`` must be ``(batch, *data)``, non-empty, finite when concrete (see ``_validate.check_batch``)."""
    return check_batch("x0", x0)
