"""Scaffolding shared by every loss builder (diffjax.losses, diffjax.distill, diffjax.cdl).

Builder-time validation (``check_option``, ``check_t_min``), call-time validation of the data
(``check_x0``), the uniform time draw, the eps implied by a network output, and the
``reduce=True/False`` convention of ``loss(apply_fn, params, key, x0, *, reduce)``.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._pytree import check_finite, is_concrete

__all__ = ["check_option", "check_t_min", "check_x0", "finish", "sample_t", "eps_hat"]


def check_option(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, options))}")


def check_t_min(t_min: Any, T: Any) -> float:
    if not isinstance(t_min, numbers.Real) or isinstance(t_min, bool):
        raise ValueError(f"t_min must be a real number in (0, T), got {t_min!r}")
    if is_concrete(T) and not 0.0 < float(t_min) < float(T):
        raise ValueError(f"t_min must lie in (0, T={float(T)}), got {t_min}")
    return float(t_min)


def check_x0(x0: Array) -> Array:
    """``x0`` must be ``(batch, *data)`` with at least one data axis; concrete values must be finite.

    Returns ``x0`` as a floating array (integer data is promoted to the default float dtype).
    """
    if not hasattr(x0, "ndim") or x0.ndim < 2:
        shape = getattr(x0, "shape", type(x0).__name__)
        raise ValueError(f"x0 must have shape (batch, *data) with at least one data axis, got {shape}")
    check_finite("x0", x0)
    x0 = jnp.asarray(x0)
    return x0 if jnp.issubdtype(x0.dtype, jnp.floating) else x0.astype(jnp.result_type(float))


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
