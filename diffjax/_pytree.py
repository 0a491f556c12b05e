"""Frozen dataclasses that are JAX pytrees and validate only when a user builds them.

``flax.struct.dataclass`` re-runs ``__post_init__`` on unflatten, where fields may be
tracers, so value checks there break ``jit`` (google/flax#1628). Here unflatten bypasses
``__init__``: validation runs once, on user construction, and never on traced values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax
import numpy as np

__all__ = ["pytree_dataclass", "static_field", "is_concrete"]

T = TypeVar("T")


def static_field(**kwargs: Any) -> Any:
    """A dataclass field stored in the treedef (hashable, not traced)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def is_concrete(*values: Any) -> bool:
    """True when every value is a concrete number/array (not a tracer)."""
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def pytree_dataclass(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass registered as a pytree.

    Fields marked with :func:`static_field` go into the treedef; all others are leaves.
    ``__post_init__`` (validation) runs on construction by the user only.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data_names = tuple(f.name for f in fields if not f.metadata.get("static", False))
    meta_names = tuple(f.name for f in fields if f.metadata.get("static", False))

    def flatten_with_keys(obj):
        children = tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data_names)
        return children, tuple(getattr(obj, n) for n in meta_names)

    def flatten(obj):
        return tuple(getattr(obj, n) for n in data_names), tuple(getattr(obj, n) for n in meta_names)

    def unflatten(meta, children):
        obj = object.__new__(cls)
        for n, v in zip(data_names, children):
            object.__setattr__(obj, n, v)
        for n, v in zip(meta_names, meta):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


def as_float(name: str, value: Any) -> Any:
    """Validate a scalar hyper-parameter is finite; return it unchanged if traced."""
    if not is_concrete(value):
        return value
    arr = np.asarray(value)
    if arr.shape != () or not np.isfinite(arr):
        raise ValueError(f"{name} must be a finite scalar, got {value!r}")
    return float(arr)


def check_finite(name: str, value: Any) -> None:
    """Raise ``ValueError`` if a concrete array holds NaN/inf (no-op under tracing)."""
    if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_time(t: Any, T: Any, name: str = "t") -> None:
    """Raise ``ValueError`` if a concrete ``t`` lies outside ``[0, T]``."""
    if is_concrete(t, T):
        arr = np.asarray(t)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {t!r}")
        if np.any(arr < 0) or np.any(arr > float(T) * (1 + 1e-6)):
            raise ValueError(f"{name} must lie in [0, T={float(T)}], got min {arr.min()}, max {arr.max()}")
