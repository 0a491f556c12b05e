"""Poisson subsampling of mini-batches with static shapes (thesis Alg. 5).

Each of the ``N`` examples joins the batch independently with probability ``q = B / N``, so the
batch size is ``Binomial(N, q)`` with mean ``B``. For ``jit`` the batch is padded to a fixed
``capacity`` and returned with a boolean ``mask``; padded rows are zeroed and contribute exactly
nothing to the DP gradient (see :func:`diffjax.privacy.clipped_grad_sum`).

Overflow (more than ``capacity`` examples drawn) must not be handled by truncating or
resampling: both change the sampling distribution that the privacy analysis assumes. The
default capacity makes overflow a ``<= 1e-9`` event per step (Chernoff bound, see
:func:`poisson_capacity`); :func:`poisson_batch` still returns every drawn index when asked
for a larger ``capacity``, and :func:`diffjax.privacy.train_dp` handles an overflow by
re-padding that batch to twice the capacity (one extra compile, analysis unchanged) and
counting it.
"""

from __future__ import annotations

import math
import numbers
from functools import partial

import jax
import jax.numpy as jnp

__all__ = ["poisson_capacity", "poisson_indices", "poisson_batch"]


def poisson_capacity(expected_batch_size: float, *, overflow_prob: float = 1e-9) -> int:
    """Static capacity ``M`` with ``P(Binomial(N, q) > M) <= overflow_prob`` for every ``N`` with ``N q = B``.

    Chernoff: ``P(X >= (1 + d) mu) <= exp(-d^2 mu / (2 + d))``; solving for ``d`` with
    ``L = log(1 / overflow_prob)`` gives ``d = (L + sqrt(L^2 + 8 mu L)) / (2 mu)`` and
    ``M = ceil((1 + d) B)`` (about ``B + sqrt(2 L B) + L``; e.g. 4519 for ``B = 4096``).

    Raises:
      ValueError: for ``expected_batch_size <= 0`` or ``overflow_prob`` outside ``(0, 1)``.
    """
    if not isinstance(expected_batch_size, numbers.Real) or not expected_batch_size > 0:
        raise ValueError(f"expected_batch_size must be positive, got {expected_batch_size!r}")
    if not 0.0 < overflow_prob < 1.0:
        raise ValueError(f"overflow_prob must lie in (0, 1), got {overflow_prob!r}")
    mu, L = float(expected_batch_size), math.log(1.0 / overflow_prob)
    d = (L + math.sqrt(L * L + 8.0 * mu * L)) / (2.0 * mu)
    return int(math.ceil((1.0 + d) * mu))


@partial(jax.jit, static_argnames=("dataset_size", "capacity"))
def poisson_indices(key, sample_rate, *, dataset_size: int, capacity: int):
    """Alg. 5: ``c_j ~ Bernoulli(q)``, ``B = {j : c_j = 1}``, padded to ``capacity``.

    Args:
      key: PRNG key.
      sample_rate: ``q`` in ``(0, 1]`` (may be traced).
      dataset_size: ``N`` (static).
      capacity: padded batch size (static).

    Returns:
      ``(indices, mask, count)``: ``indices`` ``(capacity,)`` int32 (the drawn indices in
      increasing order, padded with ``0``), ``mask`` ``(capacity,)`` bool, ``count`` the number
      drawn (may exceed ``capacity``: then only the first ``capacity`` indices are returned and
      the caller must handle the overflow).
    """
    chosen = jax.random.bernoulli(key, sample_rate, (dataset_size,))
    count = jnp.sum(chosen, dtype=jnp.int32)
    (indices,) = jnp.nonzero(chosen, size=capacity, fill_value=0)
    mask = jnp.arange(capacity) < count
    return indices.astype(jnp.int32), mask, count


@partial(jax.jit, static_argnames=("capacity",))
def poisson_batch(key, data, sample_rate, *, capacity: int):
    """A Poisson-sampled padded batch of ``data`` ``(N, *shape)``: ``(batch, mask, count)`` (jitted).

    ``batch`` has shape ``(capacity, *shape)`` with padded rows set to zero.
    """
    n = int(data.shape[0])
    idx, mask, count = poisson_indices(key, sample_rate, dataset_size=n, capacity=int(capacity))
    batch = jnp.take(data, idx, axis=0)
    batch = jnp.where(mask.reshape((-1,) + (1,) * (batch.ndim - 1)), batch, 0)
    return batch, mask, count
