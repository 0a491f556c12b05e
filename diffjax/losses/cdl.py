"""Contrastive Diffusion Loss (CDL eq. 7, Alg. 1) and its combination with a base loss (DSM, ITD).

The denoiser defines a noise classifier between ``q(x | y=+1) = p`` (data) and ``q(x | y=-1) = p_zeta``
(data through the VP channel at log-SNR ``zeta``); its Bayes posterior is
``log q(y | x) = -softplus(y (log p_zeta(x) - log p(x)))`` (CDL eq. 6), so the cross-entropy is

    L_CDL = E_{q(x, y)}[ softplus(y LLR_zeta(x)) ],   LLR_zeta = log p_zeta(x) - log p(x)   (eq. 7)

with ``y = +1`` for clean data (small loss when ``p(x) >> p_zeta(x)``) and ``y = -1`` for
``x = sqrt(sigmoid(zeta)) x_0 + sqrt(sigmoid(-zeta)) eps_0`` (small loss when ``p_zeta(x) >> p(x)``).
The LLR is estimated by :func:`diffjax.likelihood.log_likelihood_ratio` (eq. 8, common
``(a, eps)`` draws, logistic importance sampling). (Alg. 1 line 15 prints "softmax"; eqs. 6-7 say softplus.)

Per example, as Alg. 1: ``y = +-1`` with probability 1/2, ``zeta ~ U[zeta_min, zeta_max]`` (default
``[6, 15]``, CDL §3). All ``n_examples x n_samples`` draws and both log-SNRs ``(a, beta)`` go through
the network in ONE call (``2 n_examples n_samples`` rows), which is differentiable end to end; the
naive form (Alg. 1 calls ``nll`` twice, per example) costs two calls per example and, with
independent draws for the two NLLs, a much noisier LLR (an earlier ``benchmarks/cdl_parallel.py``
measured 4.7x the cost of a loss+gradient and 13x the LLR standard error, ``benchmarks/RESULTS.md``).

**As a regulariser** (:func:`with_cdl`): ``base + weight * mean_{i in S} softplus(y_i LLR_i)`` over a
subset ``S`` of the batch. The authors (dino notebook, github.com/yunshuwu/ContrastiveDiffusionLoss)
add CDL on the first 2 examples of a batch of 128, each divided by the batch size, to the ITD loss
(:func:`diffjax.losses.itd_loss`): ``per_example_scale = 1/128`` with ``n_examples = 2``, i.e.
``weight = n_examples * per_example_scale = 1/64`` on the subset mean. The ITD base integrates the
eps error over ~18 log-SNR units with weight 1/2 (7-10x the DSM loss: 9.5 from the weights, 7.3-7.7
from gradient norms at initialisation, ``benchmarks/cdl_parallel.py``), so on a DSM base the same
balance is a weight of about 0.002.

Builders return the standard loss ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``
of :mod:`diffjax.losses` (``apply_fn(params, x, t)`` is a time-indexed eps network of ``sde``,
converted with :func:`diffjax.likelihood.eps_fn_in_log_snr`; ``sde=None``: a log-SNR network).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_batch, check_int, check_sde, concrete_float
from diffjax.likelihood.noise_classifier import log_likelihood_ratio
from diffjax.log_snr import check_logistic_proposal
from diffjax.losses._scaffold import LossFn
from diffjax.losses.itd import log_snr_eps_fn
from diffjax.losses.score_matching import dsm_loss
from diffjax.sde._base import broadcast_to_data

__all__ = ["cdl_objective", "cdl_loss", "with_cdl", "dsm_cdl_loss"]


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
    return check_int("n_examples", n_examples)


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
      loc, scale, clip: logistic log-SNR proposal (:func:`diffjax.log_snr.sample_log_snr`).

    Returns:
      ``(loss, aux)``: ``loss`` of shape ``(batch,)``; ``aux`` holds per-example ``"y"`` (+-1),
      ``"zeta"``, ``"x"`` (the classified input) and ``"llr"`` (estimated ``log p_zeta(x) - log p(x)``).

    Raises:
      ValueError: bad ``x0``, ``n_samples``, ``zeta_range`` or proposal.
    """
    x0 = check_batch("x0", x0)
    n = check_int("n_samples", n_samples)
    lo, hi = _check_zeta_range(zeta_range)
    check_logistic_proposal(loc, scale, clip)
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
    """CDL alone (CDL eq. 7) as a standard loss: the mean cross-entropy over the CDL subset.

    The network is a time-indexed eps model of the scalar SDE ``sde`` (``apply_fn(params, x, t)``,
    converted with :func:`diffjax.likelihood.eps_fn_in_log_snr`) or, with ``sde=None``, a log-SNR
    model ``apply_fn(params, x, a)`` (:func:`diffjax.losses.itd.log_snr_eps_fn`). CDL runs on the first
    ``n_examples`` of the batch (``None``: all; the authors use one or two per batch for cost, CDL
    App. B.5). The default proposal ``loc=3, scale=2, clip=5`` covers log-SNRs ``[-7, 13]``: inside the
    range a VP network trained on ``t in [1e-5, 1]`` has seen (``lambda in [-10, 13.8]``), and reaching
    the high log-SNRs where the LLR of ``zeta in [6, 15]`` lives (for ``a >> zeta`` its integrand decays
    like ``e^{-a}``). The authors' dino setting uses the ITD proposal ``loc=0, scale=3, clip=3``
    (``a in [-9, 9]``), which sees the ``zeta > 9`` half of ``U[6, 15]`` only through its tail.

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``; with ``reduce=False`` the
      ``(batch,)`` losses are ``batch/n_examples * softplus(...)`` on the CDL subset and 0 elsewhere
      (their mean is the subset mean). ``aux``: ``"cdl"`` (subset per-example), ``"llr"``, ``"y"``,
      ``"zeta"`` and the scalar ``"cdl_loss"``.

    Raises:
      ValueError: bad ``n_samples``, ``zeta_range``, ``n_examples`` or proposal.
      TypeError: ``sde`` neither ``None`` nor a scalar SDE.
    """
    if sde is not None:
        check_sde(sde, scalar=True)
    check_int("n_samples", n_samples)
    zeta_range = _check_zeta_range(zeta_range)
    n_examples = _check_n_examples(n_examples)
    check_logistic_proposal(loc, scale, clip)

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        x0 = check_batch("x0", x0)
        sub = _subset(x0, n_examples)
        per, aux = cdl_objective(log_snr_eps_fn(sde, apply_fn, params), sub, key, n_samples=n_samples,
                                 zeta_range=zeta_range, loc=loc, scale=scale, clip=clip)
        aux = {"cdl": per, "llr": aux["llr"], "y": aux["y"], "zeta": aux["zeta"], "cdl_loss": jnp.mean(per)}
        if reduce:
            return jnp.mean(per), aux
        m = sub.shape[0]
        full = jnp.zeros((x0.shape[0],), per.dtype).at[:m].set(per * (x0.shape[0] / m))
        return full, aux

    return loss


def _check_weighting(weight: Any, per_example_scale: Any) -> None:
    if (weight is None) == (per_example_scale is None):
        raise ValueError("give exactly one of weight (on the CDL subset mean) and per_example_scale (on each "
                         f"CDL example), got weight={weight!r}, per_example_scale={per_example_scale!r}")
    if weight is not None:
        concrete_float("weight", weight, lo=0.0, allow_traced=True)
    else:
        concrete_float("per_example_scale", per_example_scale, lo=0.0, allow_traced=True)


def with_cdl(base: LossFn, sde: Any = None, *, weight: float | Array | None = None,
             per_example_scale: float | Array | None = None, n_examples: int | None = None,
             n_samples: int = 16, zeta_range: tuple[float, float] = (6.0, 15.0), loc: float = 3.0,
             scale: float = 2.0, clip: float | None = 5.0) -> LossFn:
    """A base loss plus the CDL regulariser (CDL §3, App. B.4-B.5), weighted as a weight or per example.

    ``loss = base + weight * mean_{i in S} softplus(y_i LLR_i)`` over the CDL subset ``S`` (the first
    ``n_examples`` of the batch, all if ``None``; :func:`cdl_loss`). The authors instead add each CDL
    example's cross-entropy divided by the batch size: ``per_example_scale * sum_{i in S}``. The two
    are the same loss with

        weight = |S| * per_example_scale        (authors, dino: 2 * 1/128 = 1/64),

    and since the subset mean is an unbiased estimate of the full-batch CDL, a ``weight`` means the
    same thing for every ``n_examples`` (only the noise changes). The base loss is evaluated with the
    caller's ``key`` and CDL with ``fold_in(key, 1)``, so with weight 0 the loss and its gradient equal
    the base loss exactly. ``weight``/``per_example_scale`` may be traced (e.g. vmapped over a sweep).

    Args:
      base: a standard loss on the same network (e.g. :func:`diffjax.losses.dsm_loss` with
        ``parameterization="eps"`` or :func:`diffjax.losses.itd_loss`).
      sde: the network's convention for CDL (see :func:`cdl_loss`; ``None``: log-SNR network).
      weight: ``>= 0``, multiplies the CDL subset mean.
      per_example_scale: ``>= 0``, multiplies each CDL example (exactly one of the two).
      n_examples, n_samples, zeta_range, loc, scale, clip: see :func:`cdl_loss`.

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``: ``aux`` is the base's plus
      CDL's (:func:`cdl_loss`), the scalars ``"base_loss"`` and ``"cdl_loss"``, and ``"cdl_weight"``
      (the effective weight). ``reduce=False``: ``(batch,)`` base losses plus the weighted CDL
      per-example losses of :func:`cdl_loss` (their mean is the reduced loss).

    Raises:
      ValueError: both or neither of ``weight``/``per_example_scale``, a concrete one negative or not
        finite, or any invalid CDL option.
    """
    _check_weighting(weight, per_example_scale)
    cdl = cdl_loss(sde, n_samples=n_samples, zeta_range=zeta_range, n_examples=n_examples, loc=loc, scale=scale,
                   clip=clip)

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        b_val, b_aux = base(apply_fn, params, key, x0, reduce=reduce)
        c_val, c_aux = cdl(apply_fn, params, jax.random.fold_in(key, 1), x0, reduce=reduce)
        w = weight if weight is not None else per_example_scale * c_aux["cdl"].shape[0]
        aux = dict(b_aux)
        aux.update(c_aux)
        aux["base_loss"] = b_val if reduce else jnp.mean(b_val)
        aux["cdl_weight"] = jnp.asarray(w, c_val.dtype)
        return b_val + w * c_val, aux

    return loss


def dsm_cdl_loss(sde: Any, *, cdl_weight: float | None = None, per_example_scale: float | None = None,
                 zeta_range: tuple[float, float] = (6.0, 15.0), n_samples: int = 16,
                 n_examples: int | None = None, loc: float = 3.0, scale: float = 2.0,
                 clip: float | None = 5.0, parameterization: str = "eps", t_min: float = 1e-5) -> LossFn:
    """DSM plus CDL: :func:`with_cdl` on :func:`diffjax.losses.dsm_loss` (``"simple"`` weighting).

    ``loss = dsm + cdl_weight * cdl`` (or ``per_example_scale`` per CDL example, see
    :func:`with_cdl`); with weight 0 the loss and its gradient equal plain DSM exactly. Note the scale
    of the base: DSM averages ``||eps - eps_hat||^2`` over ``t``, the authors' ITD base integrates it
    over ~18 log-SNR units with weight 1/2 (7-10x more, :mod:`diffjax.losses.itd`), so the authors'
    ratio ``1/64`` on ITD corresponds to ``cdl_weight ~ 0.002`` here.

    Args:
      sde: scalar SDE (VP, sub-VP or VE).
      cdl_weight: weight ``>= 0`` of the CDL subset mean; or
      per_example_scale: ``>= 0`` on each CDL example (exactly one of the two).
      zeta_range, n_samples, n_examples, loc, scale, clip: see :func:`cdl_loss`.
      parameterization, t_min: see :func:`diffjax.losses.dsm_loss`; CDL needs an eps model, so
        ``parameterization`` must be ``"eps"``.

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``. ``aux`` is DSM's (``"t"``,
      ``"x_t"``, ``"eps"``, ``"mse"``, ``"weight"`` -- note ``loss_i != weight_i * mse_i`` here) plus
      CDL's (:func:`cdl_loss`), :func:`with_cdl`'s scalars and ``"dsm_loss"`` (= ``"base_loss"``).

    Raises:
      ValueError: both or neither weight given, a negative or non-finite one,
        ``parameterization != "eps"``, or any invalid DSM/CDL option.
    """
    if cdl_weight is not None:
        concrete_float("cdl_weight", cdl_weight, lo=0.0, allow_traced=True)
    if parameterization != "eps":
        raise ValueError(f"dsm_cdl_loss needs an eps network (parameterization='eps'), got {parameterization!r}")
    combined = with_cdl(dsm_loss(sde, parameterization="eps", t_min=t_min), sde, weight=cdl_weight,
                        per_example_scale=per_example_scale, n_examples=n_examples, n_samples=n_samples,
                        zeta_range=zeta_range, loc=loc, scale=scale, clip=clip)

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        val, aux = combined(apply_fn, params, key, x0, reduce=reduce)
        aux["dsm_loss"] = aux["base_loss"]
        return val, aux

    return loss
