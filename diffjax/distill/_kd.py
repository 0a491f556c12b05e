"""Knowledge distillation of diffusion models into smaller students (thesis §5.3.3, App. 5.4.2).

The objectives (:func:`~diffjax.losses.kd_loss`, :func:`~diffjax.losses.edm_kd_loss`,
:func:`~diffjax.losses.guided_kd_loss`, thesis eqs. 5.6-5.9) live in :mod:`diffjax.losses.distillation`
and are re-exported by :mod:`diffjax.distill`. This module holds what belongs to the student and
teacher models of guided distillation (thesis eq. 5.7):

* :func:`guided_model`: the classifier-free-guided teacher ``(1 + w) m(x, t | c) - w m(x, t)`` with a
  per-example strength ``w`` (thesis eq. 5.5), i.e.
  :func:`diffjax.samplers.guidance.classifier_free_guidance` with ``per_example=True``;
* :func:`conditioned_apply` / :func:`conditioned_input_dim`: feed a condition ``c`` and the guidance
  strength ``w`` to a plain vector network (the ``w``-conditioned student).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_int
from diffjax.samplers.guidance import classifier_free_guidance

__all__ = ["guided_model", "conditioned_apply", "conditioned_input_dim"]


def guided_model(cond_fn: Callable, uncond_fn: Callable, w: Array) -> Callable:
    """Classifier-free guidance with a per-example strength (thesis eq. 5.5).

    ``m_w(x, t) = (1 + w) m(x, t | c) - w m(x, t)``, ``w`` scalar or ``(batch,)``:
    :func:`diffjax.samplers.guidance.classifier_free_guidance` with ``per_example=True`` (``w = 0``:
    conditional, ``w = -1``: unconditional); it equals ``(1 - w') m(x, t) + w' m(x, t | c)`` (thesis
    eq. 4.27) with ``w' = 1 + w``. The weights sum to one, so guiding eps, the score or the denoiser
    ``D = x_hat - sigma eps`` gives the same guided model in every parameterisation.

    Args:
      cond_fn, uncond_fn: ``(x, t) -> out`` of the shape of ``x``.
      w: guidance strength, scalar or ``(batch,)`` (may be traced).

    Returns:
      ``model_fn(x, t)`` (two model evaluations per call).

    Raises:
      ValueError: a concrete ``w`` that is not finite or neither scalar nor 1-D.
    """
    return classifier_free_guidance(cond_fn, uncond_fn, w, per_example=True)


def _w_features(w: Array, n: int) -> Array:
    """``[w, sin(f_k w), cos(f_k w)]`` with ``f_k = 2^k / 2``, ``k < (n - 1) // 2``; shape ``(batch, n)``."""
    m = (n - 1) // 2
    freqs = 0.5 * 2.0 ** jnp.arange(m, dtype=w.dtype)
    ang = w[:, None] * freqs
    out = jnp.concatenate([w[:, None], jnp.sin(ang), jnp.cos(ang)], axis=-1)
    return jnp.pad(out, ((0, 0), (0, n - out.shape[1])))


def conditioned_input_dim(data_dim: int, *, num_classes: int | None = None, w_features: int = 7) -> int:
    """Input width of the network wrapped by :func:`conditioned_apply` (for ``init_params``)."""
    return int(data_dim) + (int(num_classes) if num_classes else 0) + int(w_features)


def conditioned_apply(apply_fn: Callable, *, num_classes: int | None = None, w_features: int = 7) -> Callable:
    """Feed a condition ``c`` and guidance strength ``w`` to a vector network by concatenation.

    ``apply(params, x, t, c, w) = apply_fn(params, [x, one_hot(c), phi(w)], t)`` with
    ``phi(w) = [w, sin(f_k w), cos(f_k w)]`` (``w_features`` columns). The wrapped network must
    output the data dimension (``ScoreMLP(out_dim=d)``) and be initialised for inputs of width
    :func:`conditioned_input_dim`. Used for the ``w``-conditioned student of guided distillation
    (thesis eq. 5.7).

    Args:
      apply_fn: ``apply_fn(params, x, t)`` of a vector network.
      num_classes: number of integer labels ``c`` (one-hot encoded); ``None`` ignores ``c``.
      w_features: size of the ``w`` embedding (``>= 1``).

    Returns:
      ``apply(params, x, t, c, w)``, ``x`` of shape ``(batch, d)``, ``c`` ``(batch,)`` integers,
      ``w`` scalar or ``(batch,)``.

    Raises:
      ValueError: ``num_classes < 1`` or ``w_features < 1``; at trace time, ``x`` not 2-D.
    """
    if num_classes is not None:
        check_int("num_classes", num_classes)
    check_int("w_features", w_features)

    def apply(params, x, t, c, w):
        if x.ndim != 2:
            raise ValueError(f"conditioned_apply expects x of shape (batch, d), got {x.shape}")
        n = x.shape[0]
        parts = [x]
        if num_classes is not None:
            parts.append(jax.nn.one_hot(jnp.asarray(c), num_classes, dtype=x.dtype))
        parts.append(_w_features(jnp.broadcast_to(jnp.asarray(w, x.dtype), (n,)), w_features))
        return apply_fn(params, jnp.concatenate(parts, axis=-1), t)

    return apply
