"""Scaffolding shared by every loss builder (diffjax.losses and diffjax.distill).

A loss is ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``. Most objectives
draw one noise level per example (a time ``t ~ U[t_min, T]`` or an EDM ``sigma ~ p(sigma)``),
noise the data and compare a network output with a target; :func:`level_loss` is that skeleton
(``x0`` check, key split, level draw, ``reduce``), the per-example part is the objective's own.

Also here: the scalar-SDE perturbation ``x_t = alpha_t x_0 + sigma_t eps`` (thesis eq. 1.18) and its
``"simple"``/``"likelihood"`` weights, the EDM perturbation ``x = x_0 + sigma n`` (thesis eq. 4.23),
and the noise prediction implied by a network output. Argument validators come from
:mod:`diffjax._validate`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_batch
from diffjax.sde._base import broadcast_to_data

__all__ = [
    "LossFn", "PARAMETERIZATIONS", "SCALAR_WEIGHTINGS", "check_x0", "finish", "sample_t", "eps_hat",
    "level_loss", "uniform_time", "edm_sigma", "Perturbed", "perturb", "scalar_weight", "add_noise",
]

LossFn = Callable[..., tuple[Array, dict[str, Any]]]
PerExample = Callable[[Callable, Any, Array, Array, Array], tuple[Array, dict[str, Any]]]

PARAMETERIZATIONS = ("eps", "score", "x0", "v")
SCALAR_WEIGHTINGS = ("simple", "likelihood")


def check_x0(x0: Array) -> Array:
    """``x0`` must be ``(batch, *data)``, non-empty, finite when concrete (see ``_validate.check_batch``)."""
    return check_batch("x0", x0)


def finish(per_example: Array, aux: dict[str, Any], reduce: bool):
    """``(mean, aux)`` when ``reduce`` else ``(per_example, aux)``; ``per_example`` is ``(batch,)``."""
    return (jnp.mean(per_example) if reduce else per_example), aux


def sample_t(key: Array, n: int, t_min: float, T: Any) -> Array:
    """``n`` times ``t ~ U[t_min, T]``, shape ``(n,)``."""
    return jax.random.uniform(key, (n,), minval=t_min, maxval=T)


def eps_hat(parameterization: str, out: Array, x: Array, alpha: Array, sigma: Array) -> Array:
    """Network output in the given parameterisation -> implied noise prediction (see diffjax.param).

    ``x = alpha x_0 + sigma eps``: score ``s = -eps/sigma``, ``x_0 = (x - sigma eps)/alpha``,
    ``v = alpha eps - sigma x_0`` (so ``eps = (alpha v + sigma x)/(alpha^2 + sigma^2)``).
    """
    if parameterization == "eps":
        return out
    if parameterization == "score":
        return -sigma * out
    if parameterization == "x0":
        return (x - alpha * out) / sigma
    return (alpha * out + sigma * x) / (alpha**2 + sigma**2)  # "v"


def level_loss(draw_level: Callable[[Array, Array], Array], per_example: PerExample) -> LossFn:
    """The standard loss from a noise-level draw and a per-example objective.

    ``loss(apply_fn, params, key, x0, *, reduce)`` checks ``x0``, splits ``key`` into
    ``(k_level, k_noise)``, draws ``level = draw_level(k_level, x0)`` (``(batch,)``) and returns
    ``finish(*per_example(apply_fn, params, k_noise, x0, level), reduce)``.
    """

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        x0 = check_x0(x0)
        k_level, k_noise = jax.random.split(key)
        per, aux = per_example(apply_fn, params, k_noise, x0, draw_level(k_level, x0))
        return finish(per, aux, reduce)

    return loss


def uniform_time(t_min: float, T: Any) -> Callable[[Array, Array], Array]:
    """Level draw ``t ~ U[t_min, T]`` per example (for :func:`level_loss`)."""
    return lambda key, x0: sample_t(key, x0.shape[0], t_min, T)


def edm_sigma(config: Any) -> Callable[[Array, Array], Array]:
    """Level draw ``sigma ~ config.sample_sigma`` per example, in ``x0``'s dtype (for :func:`level_loss`)."""
    return lambda key, x0: config.sample_sigma(key, x0.shape[0]).astype(x0.dtype)


class Perturbed(NamedTuple):
    """``x_t = alpha x_0 + sigma eps``; ``alpha``, ``sigma`` broadcast to the data, ``sigma_t`` ``(batch,)``."""

    x_t: Array
    eps: Array
    alpha: Array
    sigma: Array
    sigma_t: Array


def perturb(sde: Any, key: Array, x0: Array, t: Array) -> Perturbed:
    """Draw ``x_t ~ p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)`` of a scalar SDE (thesis eq. 1.18)."""
    alpha_t, sigma_t = sde.marginal_coeffs(t)
    alpha, sigma = broadcast_to_data(alpha_t, x0), broadcast_to_data(sigma_t, x0)
    eps = jax.random.normal(key, x0.shape, x0.dtype)
    return Perturbed(alpha * x0 + sigma * eps, eps, alpha, sigma, sigma_t)


def scalar_weight(sde: Any, weighting: str, t: Array, sigma_t: Array) -> Array:
    """Per-example weight of an eps error: ``1`` ("simple") or ``g(t)^2 / sigma_t^2`` ("likelihood", eq. 1.24)."""
    return jnp.ones_like(t) if weighting == "simple" else sde.diffusion_sq(t) / sigma_t**2


def add_noise(key: Array, x0: Array, sigma: Array) -> Array:
    """``x = x_0 + sigma n``, ``n ~ N(0, I)``, ``sigma`` scalar or ``(batch,)`` (thesis eq. 4.23)."""
    return x0 + broadcast_to_data(sigma, x0) * jax.random.normal(key, x0.shape, x0.dtype)
