"""2-D toy data sets as pure functions ``sampler(key, n) -> (n, 2)`` float32.

Every set is scaled to roughly unit size (per-coordinate std between about 0.7 and 1.25,
all points within radius 3), except ``mixture_9`` / ``mixture_64``, which sample the analytic
mixtures of :mod:`diffjax.analytic` unchanged so that their exact ``log_prob`` stays the ground
truth (per-coordinate std about 0.41 and 0.65).

Each sampler is jitted with ``n`` static (one compile per batch size); call it inside your own
``jit`` freely.

``toy_batch(name, seed, step, batch_size)`` draws the batch of a training step from
``fold_in(PRNGKey(seed), step)``: a run resumed at step ``s`` sees exactly the batches it would
have seen without the interruption.
"""

from __future__ import annotations

import functools
import math
from types import MappingProxyType
from typing import Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_int
from diffjax.analytic._mixture import nine_gaussians, sixty_four_gaussians
from diffjax.data.dino import dino

__all__ = [
    "swiss_roll",
    "checkerboard",
    "rings",
    "moons",
    "mixture_9",
    "mixture_64",
    "toy_sampler",
    "toy_batch",
    "TOY_NAMES",
]

_N = "n (positive number of points)"  # n as check_int names it in errors


@functools.partial(jax.jit, static_argnames=("n",))
def swiss_roll(key: Array, n: int, *, noise: float = 0.05) -> Array:
    """2-D Swiss roll: ``u ~ U(1.5 pi, 4.5 pi)``, ``x = (u cos u, u sin u) / 7 + noise * N(0, I)``.

    Args:
      key: PRNG key.
      n: number of points (static int).
      noise: std of the isotropic Gaussian jitter (after scaling).

    Returns:
      ``(n, 2)`` float32.
    """
    check_int(_N, n)
    ku, kn = jax.random.split(key)
    u = jax.random.uniform(ku, (n,), minval=1.5 * math.pi, maxval=4.5 * math.pi)
    x = jnp.stack([u * jnp.cos(u), u * jnp.sin(u)], axis=1) / 7.0
    return x + noise * jax.random.normal(kn, (n, 2))


@functools.partial(jax.jit, static_argnames=("n",))
def checkerboard(key: Array, n: int) -> Array:
    """Uniform on the 8 dark cells of a 4x4 checkerboard covering ``[-2, 2]^2`` (cells of side 1).

    A cell ``(i, j)`` (column, row in ``0..3``) is dark when ``i + j`` is even.

    Returns:
      ``(n, 2)`` float32.
    """
    check_int(_N, n)
    kc, kr, ku = jax.random.split(key, 3)
    col = jax.random.randint(kc, (n,), 0, 4)
    row = 2 * jax.random.randint(kr, (n,), 0, 2) + col % 2
    cell = jnp.stack([col, row], axis=1).astype(jnp.float32)
    return cell - 2.0 + jax.random.uniform(ku, (n, 2))


@functools.partial(jax.jit, static_argnames=("n", "radii"))
def rings(key: Array, n: int, *, radii: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0), noise: float = 0.04) -> Array:
    """Concentric circles: a ring chosen uniformly from ``radii``, a uniform angle, Gaussian jitter.

    Returns:
      ``(n, 2)`` float32.
    """
    check_int(_N, n)
    kr, ka, kn = jax.random.split(key, 3)
    r = jnp.asarray(radii, jnp.float32)[jax.random.randint(kr, (n,), 0, len(radii))]
    a = jax.random.uniform(ka, (n,), maxval=2 * math.pi)
    x = r[:, None] * jnp.stack([jnp.cos(a), jnp.sin(a)], axis=1)
    return x + noise * jax.random.normal(kn, (n, 2))


@functools.partial(jax.jit, static_argnames=("n",))
def moons(key: Array, n: int, *, noise: float = 0.05) -> Array:
    """Two interleaving half circles, centred and scaled by 1.4.

    Upper moon ``(cos a, sin a)``, lower moon ``(1 - cos a, 1/2 - sin a)``, ``a ~ U(0, pi)``; then
    ``1.4 * (p - (1/2, 1/4)) + noise * N(0, I)``.

    Returns:
      ``(n, 2)`` float32.
    """
    check_int(_N, n)
    km, ka, kn = jax.random.split(key, 3)
    a = jax.random.uniform(ka, (n,), maxval=math.pi)
    upper = jnp.stack([jnp.cos(a), jnp.sin(a)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(a), 0.5 - jnp.sin(a)], axis=1)
    p = jnp.where(jax.random.bernoulli(km, 0.5, (n,))[:, None], upper, lower)
    return 1.4 * (p - jnp.array([0.5, 0.25])) + noise * jax.random.normal(kn, (n, 2))


@functools.partial(jax.jit, static_argnames=("n",))
def mixture_9(key: Array, n: int) -> Array:
    """Samples of the 9-Gaussian mixture of thesis eq. (2.100) (:func:`diffjax.analytic.nine_gaussians`)."""
    check_int(_N, n)
    return nine_gaussians().sample(key, n).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("n",))
def mixture_64(key: Array, n: int) -> Array:
    """Samples of the 64-Gaussian mixture of thesis eqs. (3.80)-(3.81) (:func:`diffjax.analytic.sixty_four_gaussians`)."""
    check_int(_N, n)
    return sixty_four_gaussians().sample(key, n).astype(jnp.float32)


_SAMPLERS = MappingProxyType({
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
    "rings": rings,
    "moons": moons,
    "mixture_9": mixture_9,
    "mixture_64": mixture_64,
    "dino": dino,      # the Datasaurus dino of the CDL paper (diffjax.data.dino)
})

TOY_NAMES: tuple[str, ...] = tuple(_SAMPLERS)


def toy_sampler(name: str) -> Callable[[Array, int], Array]:
    """The sampler ``(key, n) -> (n, 2)`` of a toy set by name (one of :data:`TOY_NAMES`).

    Raises:
      ValueError: for an unknown name; the message lists the valid names.
    """
    try:
        return _SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown toy data set {name!r}; valid names: {', '.join(TOY_NAMES)}") from None


def toy_batch(name: str, seed: int, step: int | Array, batch_size: int) -> Array:
    """The deterministic batch of training step ``step``: ``sampler(fold_in(PRNGKey(seed), step), batch_size)``.

    Args:
      name: toy set name (see :func:`toy_sampler`).
      seed: run seed (int).
      step: training step (int, or a traced integer inside ``jit``).
      batch_size: static positive int.

    Returns:
      ``(batch_size, 2)`` float32.

    Raises:
      ValueError: for an unknown name or a bad ``batch_size``.
    """
    sampler = toy_sampler(name)
    check_int("batch_size (positive)", batch_size)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    return sampler(key, batch_size)
