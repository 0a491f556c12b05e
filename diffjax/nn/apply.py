"""Bridges from Flax modules to the pure ``apply_fn(params, x, t)`` the rest of diffjax takes.

``params`` is the full Flax variable dict returned by ``module.init`` (``{"params": ...}``), so
``apply_fn(params, x, t) == module.apply(params, x, t)``. For CLD the network sees the
concatenation of position and velocity, ``apply_fn(params, (x, v), t)`` (thesis §2.3.3: the
score model takes ``u_t = (x_t, v_t)`` and outputs a ``v``-shaped score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["make_apply", "make_cld_apply", "init_params", "init_module", "param_count"]


def make_apply(module: nn.Module, *, method: str | None = None) -> Callable:
    """Return the pure function ``apply(params, x, t, **kwargs) = module.apply(params, x, t, **kwargs)``.

    Extra keyword arguments (e.g. ``y=labels`` for a class-conditional U-Net,
    ``return_features=True``) are forwarded.
    """

    def apply(params, x, t, **kwargs):
        if method is None:
            return module.apply(params, x, t, **kwargs)
        return module.apply(params, x, t, method=method, **kwargs)

    return apply


def make_cld_apply(module: nn.Module) -> Callable:
    """Return ``apply(params, (x, v), t, **kwargs)`` feeding ``concat([x, v], axis=-1)`` to ``module``.

    The last axis is the feature axis for vectors and the channel axis for NHWC images. The
    module must output the shape of ``v`` (set ``ScoreMLP(out_dim=d)`` /
    ``UNet(out_channels=C)``); initialise it with ``init_params(module, key, x_shape, cld=True)``.

    Raises:
      ValueError: (at trace time) if ``x`` and ``v`` shapes differ or the output shape is not
        the shape of ``v``.
    """

    def apply(params, u, t, **kwargs):
        x, v = u
        if x.shape != v.shape:
            raise ValueError(f"CLD input: x and v must have equal shapes, got {x.shape} and {v.shape}")
        out = module.apply(params, jnp.concatenate([x, v], axis=-1), t, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        if first.shape != v.shape:
            raise ValueError(
                f"CLD network output has shape {first.shape}, expected the shape of v {v.shape}; "
                "set the module's out_dim / out_channels to the data's last-axis size")
        return out

    return apply


def init_params(module: nn.Module, key: jax.Array, x_shape: Sequence[int], *, cld: bool = False, **kwargs):
    """Initialise ``module`` for inputs of shape ``x_shape`` (batch first); jit-compiled.

    Args:
      module: a diffjax network (``__call__(x, t, ...)``).
      key: PRNG key.
      x_shape: data shape ``(batch, *data)``; with ``cld=True`` the last axis is doubled
        (the network sees ``concat([x, v])``).
      **kwargs: forwarded to ``module.init`` (e.g. ``y=...``).

    Returns:
      The Flax variable dict ``{"params": ...}``.
    """
    shape = tuple(int(s) for s in x_shape)
    if len(shape) < 2:
        raise ValueError(f"x_shape must be (batch, *data), got {x_shape}")
    if cld:
        shape = shape[:-1] + (2 * shape[-1],)
    x = jnp.zeros(shape, jnp.float32)
    t = jnp.zeros((shape[0],), jnp.float32)
    return init_module(module, key, x, t, **kwargs)


def init_module(module: nn.Module, key: jax.Array, *args, **kwargs):
    """``module.init(key, *args, **kwargs)``, jit-compiled with cheap compiler settings on CPU.

    Initialisation runs once but draws one threefry stream per parameter, which XLA:CPU is slow
    to optimise (tens of seconds for a small U-Net); backend optimisations are skipped there.
    """
    lowered = jax.jit(lambda k, a: module.init(k, *a, **kwargs)).lower(key, args)
    opts = _FAST_COMPILE if jax.default_backend() == "cpu" else None
    return lowered.compile(compiler_options=opts)(key, args)


_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def param_count(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
