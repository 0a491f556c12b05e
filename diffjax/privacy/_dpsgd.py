"""DP-SGD gradients with noise multiplicity for diffusion losses (thesis eqs. 4.7, 4.10-4.11).

Per example ``i`` of a padded batch (``mask_i`` marks real rows) the loss averages ``K`` noise
draws before anything else (noise multiplicity, thesis eq. 4.7),

    ``l~_i = (1/K) sum_k loss_ik``,

its gradient is clipped to L2 norm ``C`` (``clip_C(g) = min(1, C/||g||) g``), the clipped
gradients are summed, Gaussian noise ``C z``, ``z ~ N(0, sigma_DP^2 I)`` is added and the
result is divided by the *expected* batch size ``B`` (eqs. 4.10-4.11):

    ``G~ = (1/B) (sum_i mask_i clip_C(grad l~_i) + C z)``.

The release has sensitivity ``C/B`` whatever ``K`` is (thesis Theorem 4). ``G~`` feeds any
optax optimiser (:func:`private_grad`); no model rewriting is needed.

Randomness: slot ``i`` of the padded batch uses ``fold_in(key, i)`` for its ``K`` draws, so
masking a row out leaves every other row's draws unchanged.

Two ways to get the per-example norms (same mathematics, checked against each other in tests):

* ``method="vmap"`` — generic: per-example squared gradient norms from
  ``vmap(grad(l~_i))`` (XLA fuses the square-and-sum), then the clipped sum as one ordinary
  backward pass of ``sum_i c_i l~_i`` with ``c_i = mask_i min(1, C/||g_i||)`` held fixed.
* ``method="ghost"`` / ``"auto"`` — for Flax ``nn.Dense`` layers the per-example weight
  gradient is ``a_i^T d_i`` (layer input rows ``a_i``, output cotangent rows ``d_i``), whose
  norm needs only the Gram matrices (``||a||^2 ||d||^2`` for one row) and whose clipped sum is
  ``A^T (c * D)`` — no per-example gradient is materialised (ghost clipping, Li et al. 2022;
  Bu et al. 2022). Parameters outside ``nn.Dense`` layers fall back to ``vmap``. ``"auto"`` is
  ``"ghost"`` (it reduces to ``"vmap"`` for non-Flax models).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["per_example_loss_fn", "clipped_grad_sum", "add_noise", "private_grad", "METHODS"]

METHODS = ("auto", "ghost", "vmap")


def _check_positive(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_multiplicity(multiplicity):
    if not isinstance(multiplicity, numbers.Integral) or isinstance(multiplicity, bool) or multiplicity < 1:
        raise ValueError(f"multiplicity must be a positive integer, got {multiplicity!r}")
    return int(multiplicity)


def per_example_loss_fn(loss: Callable, apply_fn: Callable, multiplicity: int = 1) -> Callable:
    """``f(params, key, x_i) -> l~_i``: the ``K``-draw average of one example's loss (thesis eq. 4.7).

    ``x_i`` (shape ``data``) is repeated ``K`` times and passed as a batch ``(K, *data)`` to
    ``loss(apply_fn, params, key, x, reduce=False)``; the ``K`` per-draw losses are averaged.
    """
    K = _check_multiplicity(multiplicity)

    def f(params, key, x_i):
        xk = jnp.broadcast_to(x_i, (K,) + tuple(x_i.shape))
        values, _ = loss(apply_fn, params, key, xk, reduce=False)
        return jnp.mean(values)

    return f


def _slot_keys(key, n):
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n, dtype=jnp.uint32))


def _sq_norm(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(jnp.sum(jnp.square(x)) for x in leaves) if leaves else jnp.zeros(())


def _vmap_parts(f, params, keys, batch, select=None):
    """Per-example squared norms of ``grad f`` restricted to ``select(params)`` leaves (all if None)."""

    def norm_i(p, k, x):
        return _sq_norm(jax.grad(f)(p, k, x) if select is None else select(jax.grad(f)(p, k, x)))

    return jax.vmap(norm_i, in_axes=(None, 0, 0))(params, keys, batch)


def clipped_grad_sum(loss: Callable, apply_fn: Callable, params, key, batch, mask, *, clip: float,
                     multiplicity: int = 1, method: str = "auto"):
    """``sum_i mask_i clip_C(grad l~_i)`` over a padded batch (thesis eq. 4.10 times ``B``).

    Args:
      loss: a :mod:`diffjax.losses` loss, ``loss(apply_fn, params, key, x0, *, reduce)``.
      apply_fn: ``apply_fn(params, x, t)``.
      params: parameter pytree.
      key: PRNG key; slot ``i`` uses ``fold_in(key, i)``.
      batch: padded batch ``(capacity, *data)``; rows with ``mask == False`` are replaced by
        zeros before use, so their content never matters.
      mask: ``(capacity,)`` bool, the real rows.
      clip: clipping norm ``C > 0``.
      multiplicity: noise multiplicity ``K >= 1`` (thesis eq. 4.7).
      method: ``"auto" | "ghost" | "vmap"`` (see the module docstring).

    Returns:
      ``(grad_sum, aux)``: ``grad_sum`` has the structure of ``params``; ``aux`` holds
      ``"loss"`` ``(capacity,)`` (``l~_i``, zero on padded rows), ``"grad_norm"``
      ``(capacity,)`` (unclipped ``||grad l~_i||``) and ``"scale"`` ``(capacity,)``
      (``mask_i min(1, C/||g_i||)``).

    Raises:
      ValueError: bad ``clip``/``multiplicity``/``method`` or (at trace time) shape mismatch
        between ``batch`` and ``mask``.
    """
    clip = _check_positive("clip", clip)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    f = per_example_loss_fn(loss, apply_fn, multiplicity)
    mask = jnp.asarray(mask)
    if mask.ndim != 1 or batch.shape[:1] != mask.shape:
        raise ValueError(f"mask must have shape (capacity,) matching batch {batch.shape}, got {mask.shape}")
    mask = mask.astype(bool)
    batch = jnp.where(mask.reshape((-1,) + (1,) * (batch.ndim - 1)), batch, jnp.zeros((), batch.dtype))
    keys = _slot_keys(key, batch.shape[0])

    if method == "vmap":
        from diffjax.nn.ghost_clipping import no_ghost  # noqa: PLC0415
        plan = no_ghost(params, f)
    else:
        from diffjax.nn.ghost_clipping import ghost_plan  # noqa: PLC0415
        plan = ghost_plan(f, params, keys[0], batch[0])

    values, dense_sq, dense_sum = plan.dense_pass(params, keys, batch)
    sq = dense_sq
    if plan.has_rest:
        sq = sq + _vmap_parts(f, params, keys, batch, select=plan.select_rest)
    norm = jnp.sqrt(sq)
    scale = jnp.where(mask, jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-30)), 0.0)
    scale = jax.lax.stop_gradient(scale)
    rest_sum = None
    if plan.has_rest:
        def weighted(p):
            return jnp.sum(scale * jax.vmap(f, in_axes=(None, 0, 0))(p, keys, batch))
        rest_sum = plan.select_rest(jax.grad(weighted)(params))
    grad_sum = plan.combine(dense_sum(scale), rest_sum, params)
    aux = {"loss": jnp.where(mask, values, 0.0), "grad_norm": norm, "scale": scale}
    return grad_sum, aux


def add_noise(grad_sum, key, *, clip: float, noise_multiplier: float, expected_batch_size: float):
    """``(grad_sum + C z) / B`` with ``z ~ N(0, sigma_DP^2 I)`` (thesis eq. 4.11)."""
    leaves, treedef = jax.tree_util.tree_flatten(grad_sum)
    keys = jax.random.split(key, max(len(leaves), 1))
    std = noise_multiplier * clip
    noisy = [(g + std * jax.random.normal(k, g.shape, g.dtype)) / expected_batch_size
             for g, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def private_grad(loss: Callable, apply_fn: Callable, params, key, batch, mask, *, clip: float,
                 noise_multiplier: float, expected_batch_size: float, multiplicity: int = 1,
                 method: str = "auto"):
    """The privatised gradient ``G~`` of thesis eqs. (4.10)-(4.11) (Alg. 4), ready for any optax optimiser.

    ``key`` is split into a loss key (per-slot draws) and a noise key.

    Args:
      noise_multiplier: ``sigma_DP >= 0`` (e.g. from :func:`calibrate_noise`).
      expected_batch_size: ``B = q N`` (the divisor, *not* the realised batch size).
      others: as :func:`clipped_grad_sum`.

    Returns:
      ``(grads, aux)``; ``aux`` as :func:`clipped_grad_sum` plus ``"grad_sum"`` (pre-noise).

    Raises:
      ValueError: as :func:`clipped_grad_sum`, or for negative ``noise_multiplier`` /
        non-positive ``expected_batch_size``.
    """
    if not isinstance(noise_multiplier, numbers.Real) or not noise_multiplier >= 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    _check_positive("expected_batch_size", expected_batch_size)
    k_loss, k_noise = jax.random.split(key)
    grad_sum, aux = clipped_grad_sum(loss, apply_fn, params, k_loss, batch, mask, clip=clip,
                                     multiplicity=multiplicity, method=method)
    grads = add_noise(grad_sum, k_noise, clip=float(clip), noise_multiplier=float(noise_multiplier),
                      expected_batch_size=float(expected_batch_size))
    return grads, dict(aux, grad_sum=grad_sum)
