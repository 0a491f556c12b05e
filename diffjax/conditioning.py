"""Class conditioning for training and sampling: label dropout and classifier-free guidance.

Classifier-free guidance (Ho & Salimans 2021; thesis §4.4.3.3.1) trains *one* network for the
conditional model ``m(x, t | y)`` and the unconditional model ``m(x, t)``: during training each
label is replaced, with probability ``p_uncond``, by a *null token*, so the same weights learn
both. At sampling time the two are mixed (thesis eq. (5.5))::

    m_w(x, t | y) = (1 + w) m(x, t | y) - w m(x, t),

which is thesis eq. (4.27) ``(1 - w') D(x; sigma) + w' D(x; sigma, y)`` with ``w' = 1 + w``
(``w = 0``: conditional, ``w = -1``: unconditional, ``w > 0``: guided).

Network convention (``UNet(num_classes=K)``, ``ScoreMLP(num_classes=K)``): the model is called as
``apply_fn(params, x, t, y=labels)`` with integer labels ``(batch,)`` in ``[0, K]``; the index
``K`` is the null token (the label embedding has ``K + 1`` rows).

* :func:`drop_labels`: label dropout to the null token (pure ``jnp``).
* :func:`class_conditional_loss`: wraps any :mod:`diffjax.losses` loss so it trains on
  ``(x0, y)`` batches with label dropout.
* :func:`guided_model`: the guided model function ``(x, t) -> out`` for a sampler.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from diffjax._validate import is_concrete
from diffjax.samplers.guidance import classifier_free_guidance

__all__ = ["drop_labels", "class_conditional_loss", "guided_model"]


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_num_classes(num_classes: Any) -> int:
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return int(num_classes)


def _check_prob(name: str, p: Any) -> Any:
    """A concrete ``p`` must be a real scalar in ``[0, 1]`` (returned as float); a traced one passes."""
    if not is_concrete(p):
        return p
    if isinstance(p, bool):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    try:
        arr = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}") from None
    if arr.shape != () or not 0.0 <= float(arr) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(arr)


def _check_labels(y: Any, num_classes: int, name: str = "y") -> Array:
    """Integer dtype; concrete values in ``[0, num_classes]`` (``num_classes`` = null token)."""
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if is_concrete(y) and y.size:
        values = np.asarray(y)  # numpy, not jnp: y may be a constant inside a jit trace
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"{name} must lie in [0, num_classes={num_classes}] (num_classes is the null token), "
                f"got values in [{lo}, {hi}]")
    return y


def _batch_size(x: Any) -> int:
    """Leading dimension of ``x`` (first leaf for a pytree state such as CLD's ``(x, v)``)."""
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves or jnp.ndim(leaves[0]) < 1:
        raise ValueError(f"x must have a leading batch axis, got {type(x).__name__}")
    return int(jnp.shape(leaves[0])[0])


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _drop_mask(key: Array, shape: tuple[int, ...], p: Any) -> Array:
    return jax.random.bernoulli(key, p, shape)


def drop_labels(key: Array, y: Array, p: float, num_classes: int) -> Array:
    """Replace each label by the null token ``num_classes`` independently with probability ``p``.

    The training-time label dropout of classifier-free guidance (thesis §4.4.3.3.1, eq. (4.27):
    the unconditional ``D(x; sigma)`` is trained by discarding ``y`` at random and replacing it
    with a null token). ``p = 0`` keeps every label, ``p = 1`` drops every label.

    Args:
      key: PRNG key.
      y: integer labels, usually ``(batch,)`` (any shape works), values in ``[0, num_classes]``.
      p: drop probability in ``[0, 1]`` (Python float, or a traced scalar).
      num_classes: number of real classes ``K >= 1``; the null token is ``K``.

    Returns:
      Labels of the shape of ``y``, int32.

    Raises:
      ValueError: if a concrete ``p`` is outside ``[0, 1]``, ``num_classes`` is not an integer
        ``>= 1``, ``y`` is not integer, or concrete ``y`` lies outside ``[0, num_classes]``.
    """
    p = _check_prob("p", p)
    num_classes = _check_num_classes(num_classes)
    y = _check_labels(y, num_classes).astype(jnp.int32)
    return jnp.where(_drop_mask(key, y.shape, p), jnp.int32(num_classes), y)


def class_conditional_loss(loss: Callable, *, num_classes: int, p_uncond: float = 0.1) -> Callable:
    """Train a class-conditional model with label dropout (classifier-free guidance training).

    One network learns ``m(x, t | y)`` and the unconditional ``m(x, t) = m(x, t | null)`` jointly
    (thesis §4.4.3.3.1 around eq. (4.27); guided sampling with eq. (5.5), see
    :func:`guided_model`): per call, each label is replaced by the null token ``num_classes``
    with probability ``p_uncond`` (:func:`drop_labels`), and the unconditional objective
    ``loss`` is evaluated with the network ``(p, x, t) -> apply_fn(p, x, t, y=y_dropped)``.

    The key is split once into ``(k_drop, k_loss)``; ``loss`` receives ``k_loss``, so with
    ``p_uncond = 0`` the value is exactly ``loss`` of the conditional network for that key.

    Args:
      loss: ``loss(apply_fn, params, key, x0, *, reduce=True) -> (value, aux)`` from
        :mod:`diffjax.losses` (or any loss with that signature).
      num_classes: number of real classes ``K >= 1`` (null token ``K``).
      p_uncond: label drop probability in ``[0, 1]`` (Ho & Salimans use 0.1-0.2).

    Returns:
      ``cond_loss(apply_fn, params, key, batch, *, reduce=True) -> (value, aux)`` with
      ``batch = (x0, y)``: ``x0`` of shape ``(batch, *data)``, ``y`` integer labels ``(batch,)``
      in ``[0, K]`` (``K`` = already unconditional); ``apply_fn(params, x, t, y=labels)``.
      ``value``/``aux`` are those of ``loss`` (``reduce`` is forwarded), with two entries added
      to ``aux``: ``"y"`` (the ``(batch,)`` labels the network saw) and ``"label_drop_frac"``
      (scalar, fraction of labels dropped in this call). A non-mapping ``aux`` is kept under
      ``"aux"``.

    Raises:
      ValueError: ``num_classes`` not an integer ``>= 1`` or ``p_uncond`` outside ``[0, 1]``;
        the returned loss raises for a batch that is not a pair ``(x0, y)``, ``y`` not of shape
        ``(batch,)`` matching ``x0``, non-integer ``y``, or concrete ``y`` outside ``[0, K]``.
    """
    num_classes = _check_num_classes(num_classes)
    p_uncond = _check_prob("p_uncond", p_uncond)
    if not callable(loss):
        raise ValueError(f"loss must be callable, got {type(loss).__name__}")

    def cond_loss(apply_fn, params, key, batch, *, reduce: bool = True):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                f"class_conditional_loss expects the batch (x0, y), got {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
        x0, y = batch
        n = _batch_size(x0)
        y = _check_labels(y, num_classes)
        if y.shape != (n,):
            raise ValueError(f"labels y must have shape (batch,) = ({n},) to match x0, got {y.shape}")
        k_drop, k_loss = jax.random.split(key)
        dropped = _drop_mask(k_drop, y.shape, p_uncond)
        y_used = jnp.where(dropped, jnp.int32(num_classes), y.astype(jnp.int32))

        def cond_apply(p, x, t):
            return apply_fn(p, x, t, y=y_used)

        value, aux = loss(cond_apply, params, k_loss, x0, reduce=reduce)
        aux = dict(aux) if isinstance(aux, Mapping) else {"aux": aux}
        aux["y"] = y_used
        aux["label_drop_frac"] = jnp.mean(dropped.astype(jnp.float32))
        return value, aux

    return cond_loss


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------


def guided_model(apply_fn: Callable, params: Any, y: Any, w: float | Array, *, num_classes: int) -> Callable:
    """Classifier-free-guided model ``(x, t) -> (1 + w) m(x, t | y) - w m(x, t | null)``.

    Thesis eq. (5.5) (equivalently eq. (4.27) with ``w' = 1 + w``), via
    :func:`diffjax.samplers.guidance.classifier_free_guidance`: the conditional branch calls
    ``apply_fn(params, x, t, y=y)``, the unconditional one ``apply_fn(params, x, t, y=null)`` with
    the null token ``num_classes``. Valid for any parameterisation affine in the score (eps,
    score, denoiser), so the result can be passed to e.g. :func:`diffjax.samplers.api.ddim`.
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
    num_classes = _check_num_classes(num_classes)
    y = _check_labels(y, num_classes)
    if y.ndim > 1:
        raise ValueError(f"y must be a scalar label or have shape (batch,), got shape {y.shape}")
    y = y.astype(jnp.int32)

    def labels(x):
        n = _batch_size(x)
        if y.ndim == 1 and y.shape[0] != n:
            raise ValueError(f"y has shape {y.shape} but x has batch size {n}")
        return jnp.broadcast_to(y, (n,))

    def cond_fn(x, t):
        return apply_fn(params, x, t, y=labels(x))

    def uncond_fn(x, t):
        return apply_fn(params, x, t, y=jnp.full((_batch_size(x),), num_classes, jnp.int32))

    return classifier_free_guidance(cond_fn, uncond_fn, w)
