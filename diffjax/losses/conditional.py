"""Class-conditional training with label dropout (classifier-free guidance training).

Classifier-free guidance (Ho & Salimans 2021; thesis §4.4.3.3.1) trains *one* network for the
conditional model ``m(x, t | y)`` and the unconditional model ``m(x, t)``: during training each
label is replaced, with probability ``p_uncond``, by a *null token*, so the same weights learn
both. At sampling time the two are mixed (thesis eq. (5.5)),
``m_w(x, t | y) = (1 + w) m(x, t | y) - w m(x, t)``: see
:func:`diffjax.samplers.guidance.class_guided_model` (also ``diffjax.conditioning.guided_model``).

Network convention (``UNet(num_classes=K)``, ``ScoreMLP(num_classes=K)``): the model is called as
``apply_fn(params, x, t, y=labels)`` with integer labels ``(batch,)`` in ``[0, K]``; the index
``K`` is the null token (the label embedding has ``K + 1`` rows).

* :func:`drop_labels`: label dropout to the null token (pure ``jnp``).
* :func:`class_conditional_loss`: wraps any :mod:`diffjax.losses` loss so it trains on
  ``(x0, y)`` batches with label dropout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import batch_size, check_int, check_labels, check_prob

__all__ = ["drop_labels", "class_conditional_loss"]


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
    p = check_prob("p", p)
    num_classes = check_int("num_classes", num_classes)
    y = check_labels("y", y, num_classes).astype(jnp.int32)
    return jnp.where(_drop_mask(key, y.shape, p), jnp.int32(num_classes), y)


def class_conditional_loss(loss: Callable, *, num_classes: int, p_uncond: float = 0.1) -> Callable:
    """Train a class-conditional model with label dropout (classifier-free guidance training).

    One network learns ``m(x, t | y)`` and the unconditional ``m(x, t) = m(x, t | null)`` jointly
    (thesis §4.4.3.3.1 around eq. (4.27); guided sampling with eq. (5.5), see
    :func:`diffjax.samplers.guidance.class_guided_model`): per call, each label is replaced by the
    null token ``num_classes`` with probability ``p_uncond`` (:func:`drop_labels`), and the
    unconditional objective ``loss`` is evaluated with the network
    ``(p, x, t) -> apply_fn(p, x, t, y=y_dropped)``.

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
    num_classes = check_int("num_classes", num_classes)
    p_uncond = check_prob("p_uncond", p_uncond)
    if not callable(loss):
        raise ValueError(f"loss must be callable, got {type(loss).__name__}")

    def cond_loss(apply_fn, params, key, batch, *, reduce: bool = True):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                f"class_conditional_loss expects the batch (x0, y), got {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
        x0, y = batch
        n = batch_size("x0", x0)
        y = check_labels("y", y, num_classes)
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
