"""Frozen dataclasses that are JAX pytrees and validate only when a user builds them.

``flax.struct.dataclass`` re-runs ``__post_init__`` on unflatten, where fields may be
tracers, so value checks there break ``jit`` (google/flax#1628). Here unflatten bypasses
``__init__``: validation runs once, on user construction, and never on traced values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax

__all__ = ["pytree_dataclass", "static_field"]

T = TypeVar("T")


def static_field(**kwargs: Any) -> Any:
    """A dataclass field stored in the treedef (hashable, not traced)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


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
