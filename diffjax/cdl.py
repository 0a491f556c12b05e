"""Contrastive Diffusion Loss (CDL eq. 7, Alg. 1) and its combination with DSM.

The denoiser defines a noise classifier between ``q(x | y=+1) = p`` (data) and ``q(x | y=-1) = p_zeta``
(data through the VP channel at log-SNR ``zeta``); its Bayes posterior is
``log q(y | x) = -softplus(y (log p_zeta(x) - log p(x)))`` (CDL eq. 6), so the cross-entropy is

    L_CDL = E_{q(x, y)}[ softplus(y LLR_zeta(x)) ],   LLR_zeta = log p_zeta(x) - log p(x)   (eq. 7)

with ``y = +1`` for clean data (small loss when ``p(x) >> p_zeta(x)``) and ``y = -1`` for
``x = sqrt(sigmoid(zeta)) x_0 + sqrt(sigmoid(-zeta)) eps_0`` (small loss when ``p_zeta(x) >> p(x)``).
The LLR is estimated by :func:`diffjax.noise_classifier.log_likelihood_ratio` (eq. 8, common
``(a, eps)`` draws, logistic importance sampling). (Alg. 1 line 15 prints "softmax"; eqs. 6-7 say softplus.)

Per example, as Alg. 1: ``y = +-1`` with probability 1/2, ``zeta ~ U[zeta_min, zeta_max]`` (default
``[6, 15]``, CDL §3). All ``n_examples x n_samples`` draws and both log-SNRs ``(a, beta)`` go through
the network in ONE call (``2 n_examples n_samples`` rows), which is differentiable end to end; the
naive form (Alg. 1 calls ``nll`` twice, per example) costs two calls per example and, with
independent draws for the two NLLs, a much noisier LLR (see ``benchmarks/cdl_parallel.py``).

Builders return the standard loss ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``
of :mod:`diffjax.losses` (``apply_fn(params, x, t)`` is a time-indexed eps network of ``sde``,
converted with :func:`diffjax.noise_classifier.eps_fn_in_log_snr`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax.losses import dsm_loss
from diffjax.noise_classifier import _check_n, _check_proposal, _check_x, eps_fn_in_log_snr, log_likelihood_ratio
from diffjax.sde._base import broadcast_to_data

__all__ = ["cdl_objective", "cdl_loss", "dsm_cdl_loss", "dsm_plus_cdl_loss"]

LossFn = Callable[..., tuple[Array, dict[str, Any]]]


def _check_zeta_range(zeta_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in zeta_range)
    except (TypeError, ValueError):
        raise ValueError(f"zeta_range must be a pair (zeta_min, zeta_max), got {zeta_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"zeta_range must be finite with zeta_min <= zeta_max, got {zeta_range!r}")
    return lo, hi


def _check_n_examples(n_examples: Any) -> int | None:
    if n_examples is None:
        return None
    return _check_n("n_examples", n_examples)


def cdl_objective(eps_fn: Callable[[Array, Array], Array], x0: Array, key: Array, *, n_samples: int = 16,
                  zeta_range: tuple[float, float] = (6.0, 15.0), loc: float = 0.0, scale: float = 2.0,
                  clip: float | None = None) -> tuple[Array, dict[str, Array]]:
    """Per-example contrastive diffusion loss ``softplus(y LLR_zeta(x))`` (CDL eq. 7, Alg. 1).

    Args:
      eps_fn: log-SNR model ``eps_fn(x, a)`` (``a`` scalar or ``(batch,)``).
      x0: ``(batch, *data)`` clean data.
      key: PRNG key (labels, ``zeta``, the noised inputs and the LLR draws).
      n_samples: ``(a, eps)`` draws per example for the LLR (static int).
      zeta_range: ``zeta ~ U[zeta_min, zeta_max]`` per example (``zeta_min == zeta_max``: fixed).
      loc, scale, clip: logistic log-SNR proposal (:func:`diffjax.noise_classifier.sample_log_snr`).

    Returns:
      ``(loss, aux)``: ``loss`` of shape ``(batch,)``; ``aux`` holds per-example ``"y"`` (+-1),
      ``"zeta"``, ``"x"`` (the classified input) and ``"llr"`` (estimated ``log p_zeta(x) - log p(x)``).

    Raises:
      ValueError: bad ``x0``, ``n_samples``, ``zeta_range`` or proposal.
    """
    x0 = _check_x(x0)
    n = _check_n("n_samples", n_samples)
    lo, hi = _check_zeta_range(zeta_range)
    _check_proposal(loc, scale, clip)
    k_y, k_zeta, k_noise, k_llr = jax.random.split(key, 4)
    batch = x0.shape[0]
    y = jnp.where(jax.random.bernoulli(k_y, 0.5, (batch,)), 1.0, -1.0).astype(x0.dtype)
    zeta = jax.random.uniform(k_zeta, (batch,), x0.dtype, minval=lo, maxval=hi)
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    noised = (broadcast_to_data(jnp.sqrt(jax.nn.sigmoid(zeta)), x0) * x0
              + broadcast_to_data(jnp.sqrt(jax.nn.sigmoid(-zeta)), x0) * noise)
    x = jnp.where(broadcast_to_data(y > 0, x0), x0, noised)
    llr = log_likelihood_ratio(eps_fn, x, zeta, k_llr, n, loc=loc, scale=scale, clip=clip)
    return jax.nn.softplus(y * llr), {"y": y, "zeta": zeta, "x": x, "llr": llr}


def _subset(x0: Array, n_examples: int | None) -> Array:
    if n_examples is None:
        return x0
    if n_examples > x0.shape[0]:
        raise ValueError(f"n_examples={n_examples} exceeds the batch size {x0.shape[0]}")
    return x0[:n_examples]


def cdl_loss(sde: Any, *, n_samples: int = 16, zeta_range: tuple[float, float] = (6.0, 15.0),
             n_examples: int | None = None, loc: float = 3.0, scale: float = 2.0,
             clip: float | None = 5.0) -> LossFn:
    """CDL alone (CDL eq. 7) for a time-indexed eps network of a scalar SDE, as a standard loss.

    The network ``apply_fn(params, x, t)`` is read as ``eps(x, t)`` and converted to log-SNR with
    :func:`diffjax.noise_classifier.eps_fn_in_log_snr`. CDL runs on the first ``n_examples`` of the
    batch (``None``: all; the paper uses one example per batch for cost, CDL App. B.5). The default
    proposal ``loc=3, scale=2, clip=5`` covers log-SNRs ``[-7, 13]``: inside the range a VP network
    trained on ``t in [1e-5, 1]`` has seen (``lambda in [-10, 13.8]``), and reaching the high log-SNRs
    where the LLR of ``zeta in [6, 15]`` lives (for ``a >> zeta`` its integrand decays like ``e^{-a}``).

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``; with ``reduce=False`` the
      ``(batch,)`` losses are ``batch/n_examples * softplus(...)`` on the CDL subset and 0 elsewhere
      (their mean is the subset mean). ``aux``: ``"cdl"`` (subset per-example), ``"llr"``, ``"y"``,
      ``"zeta"`` and the scalar ``"cdl_loss"``.

    Raises:
      ValueError: bad ``n_samples``, ``zeta_range``, ``n_examples`` or proposal.
    """
    _check_n("n_samples", n_samples)
    zeta_range = _check_zeta_range(zeta_range)
    n_examples = _check_n_examples(n_examples)
    _check_proposal(loc, scale, clip)

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        x0 = _check_x(x0)
        eps_fn = eps_fn_in_log_snr(sde, lambda x, t: apply_fn(params, x, t))
        sub = _subset(x0, n_examples)
        per, aux = cdl_objective(eps_fn, sub, key, n_samples=n_samples, zeta_range=zeta_range, loc=loc,
                                 scale=scale, clip=clip)
        aux = {"cdl": per, "llr": aux["llr"], "y": aux["y"], "zeta": aux["zeta"], "cdl_loss": jnp.mean(per)}
        if reduce:
            return jnp.mean(per), aux
        m = sub.shape[0]
        full = jnp.zeros((x0.shape[0],), per.dtype).at[:m].set(per * (x0.shape[0] / m))
        return full, aux

    return loss


def dsm_cdl_loss(sde: Any, *, cdl_weight: float, zeta_range: tuple[float, float] = (6.0, 15.0),
                 n_samples: int = 16, n_examples: int | None = None, loc: float = 3.0, scale: float = 2.0,
                 clip: float | None = 5.0, parameterization: str = "eps", t_min: float = 1e-5) -> LossFn:
    """DSM plus ``cdl_weight`` x CDL (CDL §3: CDL as a regulariser of the standard loss).

    ``loss = dsm + cdl_weight * cdl`` where ``dsm`` is :func:`diffjax.losses.dsm_loss` (``"simple"``
    weighting) evaluated with the SAME ``key`` as a plain DSM run, and ``cdl`` is :func:`cdl_loss` with
    ``fold_in(key, 1)``: with ``cdl_weight=0`` the loss and its gradient equal plain DSM exactly.

    Args:
      sde: scalar SDE (VP, sub-VP or VE).
      cdl_weight: weight ``>= 0`` of the CDL term.
      zeta_range, n_samples, n_examples, loc, scale, clip: see :func:`cdl_loss`.
      parameterization, t_min: see :func:`diffjax.losses.dsm_loss`; CDL needs an eps model, so
        ``parameterization`` must be ``"eps"``.

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``. ``aux`` is DSM's (``"t"``,
      ``"x_t"``, ``"eps"``, ``"mse"``, ``"weight"`` -- note ``loss_i != weight_i * mse_i`` here) plus
      CDL's (:func:`cdl_loss`) and the scalars ``"dsm_loss"`` and ``"cdl_loss"``.

    Raises:
      ValueError: ``cdl_weight`` negative or not finite, ``parameterization != "eps"``, or any
        invalid DSM/CDL option.
    """
    if not isinstance(cdl_weight, numbers.Real) or isinstance(cdl_weight, bool) or not (
            math.isfinite(cdl_weight) and cdl_weight >= 0):
        raise ValueError(f"cdl_weight must be a finite number >= 0, got {cdl_weight!r}")
    if parameterization != "eps":
        raise ValueError(f"dsm_cdl_loss needs an eps network (parameterization='eps'), got {parameterization!r}")
    dsm = dsm_loss(sde, parameterization="eps", t_min=t_min)
    cdl = cdl_loss(sde, n_samples=n_samples, zeta_range=zeta_range, n_examples=n_examples, loc=loc, scale=scale,
                   clip=clip)
    w = float(cdl_weight)

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        d_val, d_aux = dsm(apply_fn, params, key, x0, reduce=reduce)
        c_val, c_aux = cdl(apply_fn, params, jax.random.fold_in(key, 1), x0, reduce=reduce)
        aux = dict(d_aux)
        aux.update(c_aux)
        aux["dsm_loss"] = d_val if reduce else jnp.mean(d_val)
        return d_val + w * c_val, aux

    return loss


dsm_plus_cdl_loss = dsm_cdl_loss
"""Alias of :func:`dsm_cdl_loss`."""
