"""The logistic proposal over log-SNR used to importance-sample log-SNR integrals (CDL eq. 2).

Information-theoretic estimators write ``-log p(x)`` as an integral over the log-SNR ``a`` (CDL
eqs. 2-8; Kong et al. 2023) and estimate it with draws ``a ~ q``, ``int f(a) da ~= 1/n sum f(a_i)/q(a_i)``.
The proposal is ``q = Logistic(loc, scale)``, density ``q(a) = sigmoid(u) sigmoid(-u) / scale`` with
``u = (a - loc)/scale``, optionally truncated to ``|u| <= clip`` (as in Kong et al.'s code;
``clip=None``: untruncated, unbiased). Its tails ``~ e^{-|u|}`` cover both ends of the integral.

This module is the one home of the proposal: :mod:`diffjax.likelihood` (NLL, LLR, noise
classifier) and :mod:`diffjax.losses` (CDL) draw from it. It imports only jax.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import concrete_float

__all__ = ["check_logistic_proposal", "sample_log_snr", "logistic_log_snr_sample", "logistic_log_snr_logpdf"]


def check_logistic_proposal(loc: Any, scale: Any, clip: Any) -> None:
    """Validate the proposal ``Logistic(loc, scale)`` truncated to ``|a - loc| <= clip * scale``.

    ``loc`` and ``scale`` may be traced (then unchecked); ``clip`` fixes the truncation and must be
    concrete.

    Raises:
      ValueError: non-finite ``loc``, ``scale <= 0`` or not finite, ``clip`` neither ``None`` nor ``> 0``.
    """
    concrete_float("loc", loc, allow_traced=True)
    concrete_float("scale", scale, lo=0.0, lo_open=True, allow_traced=True)
    if clip is not None:
        concrete_float("clip", clip, lo=0.0, lo_open=True, allow_inf=True)


def logistic_log_snr_logpdf(a: Array, loc: float = 0.0, scale: float = 2.0) -> Array:
    """Log-density of the untruncated proposal: ``log q(a) = -softplus(-u) - softplus(u) - log scale``.

    Args:
      a: log-SNRs, any shape.
      loc, scale: location and scale (``scale > 0``) of the logistic.

    Returns:
      ``log q(a)``, shape of ``a``.
    """
    u = (jnp.asarray(a) - loc) / scale
    return -jax.nn.softplus(-u) - jax.nn.softplus(u) - jnp.log(scale)


def sample_log_snr(key: Array, shape: tuple[int, ...], *, loc: float = 0.0, scale: float = 2.0,
                   clip: float | None = None, dtype: Any = None) -> tuple[Array, Array]:
    """Draw log-SNRs from the (optionally truncated) logistic proposal; returns ``(a, log q(a))``.

    ``a = loc + scale logit(p)`` with ``p ~ U(sigmoid(-clip), sigmoid(clip))`` (``U(0, 1)``, i.e. a
    standard logistic draw, when ``clip is None``), and
    ``log q = logistic_log_snr_logpdf(a, loc, scale) - log(sigmoid(clip) - sigmoid(-clip))``.

    Args:
      key: PRNG key.
      shape: static output shape.
      loc, scale, clip: the proposal (see module docstring).
      dtype: float dtype of the draws (default: the default float).

    Returns:
      ``(a, log_q)``, both of shape ``shape``.

    Raises:
      ValueError: see :func:`check_logistic_proposal`.
    """
    check_logistic_proposal(loc, scale, clip)
    dtype = jnp.result_type(float) if dtype is None else dtype
    if clip is None:
        u = jax.random.logistic(key, shape, dtype)
        log_mass = 0.0
    else:
        lo = 1.0 / (1.0 + math.exp(clip))
        p = jax.random.uniform(key, shape, dtype, minval=lo, maxval=1.0 - lo)
        u = jnp.log(p) - jnp.log1p(-p)
        log_mass = math.log(math.tanh(0.5 * clip))     # sigmoid(c) - sigmoid(-c)
    a = loc + scale * u
    return a, logistic_log_snr_logpdf(a, loc, scale) - log_mass


def logistic_log_snr_sample(key: Array, shape: tuple[int, ...], loc: float = 0.0, scale: float = 2.0) -> Array:
    """Draws ``a ~ Logistic(loc, scale)`` only: :func:`sample_log_snr` with ``clip=None``, without ``log q``.

    Raises:
      ValueError: see :func:`check_logistic_proposal`.
    """
    return sample_log_snr(key, shape, loc=loc, scale=scale)[0]
