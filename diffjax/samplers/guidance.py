"""Classifier-free guidance: the one implementation (Ho & Salimans 2021; thesis eqs. 4.27, 5.5).

* :func:`classifier_free_guidance`: a guided model function from a conditional and an
  unconditional one, with a scalar strength ``w`` or (``per_example=True``) one per example;
* :func:`class_guided_model`: the same for a class-conditional network called as
  ``apply_fn(params, x, t, y=labels)`` whose null token (index ``num_classes``) is the
  unconditional model (trained with :func:`diffjax.losses.class_conditional_loss`).

``diffjax.conditioning.guided_model`` is :func:`class_guided_model` and
``diffjax.distill.guided_model`` is :func:`classifier_free_guidance` with ``per_example=True``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import batch_size, check_finite, check_int, check_labels, concrete_float, is_concrete
from diffjax.sde._base import broadcast_to_data

__all__ = ["classifier_free_guidance", "class_guided_model"]


def _check_w(w: Any, per_example: bool) -> None:
    if not is_concrete(w):
        return
    w_arr = jnp.asarray(w)
    if per_example and w_arr.ndim <= 1:
        check_finite("w", w_arr)
        return
    if w_arr.ndim != 0:
        raise ValueError(f"w must be a scalar{' or of shape (batch,)' if per_example else ''}, got shape {w_arr.shape}")
    concrete_float("w", float(w_arr))


def classifier_free_guidance(cond_fn: Callable, uncond_fn: Callable, w: float | Array, *,
                             per_example: bool = False) -> Callable:
    """Guided model ``m_w = (1 + w) m(x, t | c) - w m(x, t)`` (thesis eq. 5.5; Ho & Salimans 2021).

    Works for any parameterisation that is affine in the score (denoiser ``D``, eps, score): the
    weights sum to one, so guiding eps, the score or ``D = x_hat - sigma eps`` gives the same guided
    model. The thesis writes the same family twice: eq. (5.5) above, where ``w = 0`` is the plain
    conditional model, and eq. (4.27) ``(1 - w') D(x; sigma) + w' D(x; sigma, y)``, where ``w' = 1``
    is conditional; they agree for ``w' = 1 + w``. This function uses eq. (5.5).

    ``w`` may be a traced array (e.g. an argument of a jitted sampler): changing it does not
    recompile.

    Args:
      cond_fn: conditional model ``(x, t) -> out`` (condition closed over or bound by the caller).
      uncond_fn: unconditional model ``(x, t) -> out`` of the same shape (arrays or pytrees).
      w: guidance strength (any real; ``0`` = conditional, ``-1`` = unconditional): a scalar, or
        with ``per_example`` a scalar or ``(batch,)`` (broadcast over the data axes of ``out``).
      per_example: allow one strength per example (guided distillation, thesis eq. 5.7).

    Returns:
      ``model_fn(x, t)``; 2 model evaluations per call (count it as 2 NFE per step).

    Raises:
      ValueError: a concrete ``w`` that is not a finite scalar (``per_example``: not finite, or
        neither scalar nor 1-D).
    """
    _check_w(w, per_example)

    def mix(c: Array, u: Array) -> Array:
        ww = broadcast_to_data(jnp.asarray(w, c.dtype), c) if per_example else w
        return c + ww * (c - u)

    def guided(x, t):
        return jax.tree_util.tree_map(mix, cond_fn(x, t), uncond_fn(x, t))

    return guided


def class_guided_model(apply_fn: Callable, params: Any, y: Any, w: float | Array, *, num_classes: int) -> Callable:
    """Classifier-free-guided class-conditional network ``(x, t) -> (1 + w) m(x, t | y) - w m(x, t | null)``.

    Thesis eq. (5.5) (equivalently eq. (4.27) with ``w' = 1 + w``) via
    :func:`classifier_free_guidance`: the conditional branch calls ``apply_fn(params, x, t, y=y)``,
    the unconditional one ``apply_fn(params, x, t, y=null)`` with the null token ``num_classes``.
    The result can be passed to any sampler (e.g. :func:`diffjax.samplers.api.ddim`).
    ``w = 0`` is the conditional model, ``w = -1`` the unconditional one.

    ``w`` (and ``y``, ``params``) may be traced: inside ``jax.jit`` a new ``w`` does not recompile.

    Args:
      apply_fn: ``apply_fn(params, x, t, y=labels)`` of a class-conditional network.
      params: its parameters.
      y: integer label, scalar (same class for the whole batch) or ``(batch,)``, in
        ``[0, num_classes]`` (``num_classes`` gives the unconditional model for every ``w``).
      w: guidance strength, real scalar (Python number or array, possibly traced).
      num_classes: number of real classes ``K >= 1`` (null token ``K``).

    Returns:
      ``model_fn(x, t)`` with ``x`` of shape ``(batch, *data)`` (or a pytree whose leaves lead
      with ``batch``), ``t`` scalar or ``(batch,)``; output as ``apply_fn``'s. Two network
      evaluations per call.

    Raises:
      ValueError: ``num_classes`` not an integer ``>= 1``; ``y`` not integer, not scalar or 1-D,
        or (concrete) outside ``[0, num_classes]``; a concrete ``w`` not a finite scalar; at trace
        time, ``(batch,)`` labels whose length differs from ``x``'s batch.
    """
    num_classes = check_int("num_classes", num_classes)
    y = check_labels("y", y, num_classes)
    if y.ndim > 1:
        raise ValueError(f"y must be a scalar label or have shape (batch,), got shape {y.shape}")
    y = y.astype(jnp.int32)

    def labels(x):
        n = batch_size("x", x)
        if y.ndim == 1 and y.shape[0] != n:
            raise ValueError(f"y has shape {y.shape} but x has batch size {n}")
        return jnp.broadcast_to(y, (n,))

    def cond_fn(x, t):
        return apply_fn(params, x, t, y=labels(x))

    def uncond_fn(x, t):
        return apply_fn(params, x, t, y=jnp.full((batch_size("x", x),), num_classes, jnp.int32))

    return classifier_free_guidance(cond_fn, uncond_fn, w)
