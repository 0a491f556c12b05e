"""A denoiser as a density estimator and noise classifier (CDL §2-3, App. A.2; Kong et al. 2023).

Log-SNR channel (CDL eq. 4): ``x_a = sqrt(sigmoid(a)) x + sqrt(sigmoid(-a)) eps``, ``eps ~ N(0, I)``.
A model ``eps_fn(x, a)`` predicts ``eps`` from ``x_a`` at log-SNR ``a`` (scalar or ``(batch,)``); for an
SDE model trained in time ``t`` use :func:`eps_fn_in_log_snr`.

**NLL (CDL eq. 2) with the constant made exact.** Eq. 2 reads
``-log p(x) = c + 1/2 int mmse(x, a) da`` with ``mmse(x, a) = E_eps ||eps - eps_hat(x_a, a)||^2``, but
``mmse -> d`` as ``a -> inf`` for every continuous density, so the integral and
``c = d/2 log(2 pi e) - d/2 int sigmoid`` both diverge; only differences are finite. We subtract the
same identity for the reference ``N(0, I)``, whose optimal denoiser is linear,
``eps_hat_G(z, a) = sqrt(sigmoid(-a)) z``, with pointwise MMSE
``mmse_G(x, a) = d sigmoid(a)^2 + sigmoid(a) sigmoid(-a) |x|^2`` (``int sigmoid sigmoid(-.) = 1`` gives back
``-log N(x; 0, I) = d/2 log(2 pi) + |x|^2 / 2``). Hence, exactly,

    -log p(x) = d/2 log(2 pi) + |x|^2/2
                + 1/2 int E_eps[ ||eps - eps_hat(x_a, a)||^2 - ||eps - sqrt(sigmoid(-a)) x_a||^2 ] da,

an integrand that decays like ``e^{-|a|}`` at both ends. Subtracting the *realised* Gaussian error
(same ``eps``) rather than ``mmse_G`` makes it a control variate: the per-draw term is
``O(e^{-a/2})`` instead of ``O(1)`` at high SNR, which is what makes the importance-sampling variance
finite (equivalently ``c = d/2 log(2 pi e) - d/2 int sigmoid(a) da`` of the paper is the formal
limit of this Gaussian term).

**Noised densities (CDL eqs. 3-5, App. A.2).** ``p_zeta`` is the law of
``sqrt(sigmoid(zeta)) x + sqrt(sigmoid(-zeta)) eps`` (the VP channel at log-SNR ``zeta``; ``zeta = +inf``
is ``p`` itself). Its optimal denoiser is ``b eps_hat(z, beta)`` with
``beta = logit(sigmoid(zeta) sigmoid(a))`` and ``b = sqrt(sigmoid(-a) / sigmoid(-beta))``, so the same
formula with ``eps_hat -> b eps_hat(., beta)`` gives ``-log p_zeta``.

**LLR (CDL eq. 8).** With common draws ``(a, eps)`` the Gaussian term cancels:
``log p_zeta(x) - log p(x) = 1/2 int E[||eps - eps_hat(z, a)||^2 - ||eps - b eps_hat(z, beta)||^2] da``,
``z = x_a`` (the paper prints eq. 8 without the factor 1/2; eqs. 2-3 require it).

**Importance sampling.** ``a ~ q = Logistic(loc, scale)`` (:mod:`diffjax.log_snr`), optionally truncated to
``loc +- clip * scale`` (as in Kong et al.'s code; ``clip=None``: untruncated, unbiased), and
``int f(a) da ~= 1/n sum_i f(a_i) / q(a_i)``. ``q(a) = sigmoid(u) sigmoid(-u) / scale``, ``u = (a - loc)/scale``,
so the weights grow like ``scale e^{|u|}`` while the per-draw integrands ``f`` above fall like
``e^{-|a|/2}`` at both ends (the deviation from the Gaussian denoiser is ``O(e^{-a/2})`` at high SNR
and ``O(e^{a/2})`` at low SNR): ``f^2/q ~ e^{-|a| (1 - 1/scale)}``, so the variance is finite for
``scale > 1`` (default 2). The variance is ``Var = (1/n) Var_{a~q, eps}[f/q]``; every estimator can
return its standard error (``return_std_error=True``), the sample standard deviation of the per-draw
terms over ``sqrt(n)``. Truncation drops ``int_{|u| > clip}``; the expected integrand decays like
``e^{-|a|}``, so the bias is ``O(e^{-(clip scale - |loc|)})``, traded for a lower variance and for
keeping a network inside the log-SNR range it was trained on.

Every estimator evaluates the model once on all ``batch x n_samples`` draws (the LLR on
``2 x batch x n_samples`` rows: ``a`` and ``beta`` stacked), so it is one batched call and
differentiable end to end.

References:
  Kong, Brekelmans, Ver Steeg, "Information-theoretic diffusion", ICLR 2023.
  Wu, Luo, Kong, Papalexakis, Ver Steeg, "Your diffusion model is secretly a noise classifier and
  benefits from contrastive training" (CDL), eqs. 2-9 and App. A.2.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_batch, check_int
from diffjax.log_snr import check_logistic_proposal, sample_log_snr
from diffjax.sde._base import broadcast_to_data

__all__ = [
    "eps_fn_in_log_snr",
    "noised_log_snr",
    "log_snr_nll",
    "noised_nll",
    "log_likelihood_ratio",
    "classify_noise_level",
]

EpsFn = Callable[[Array, Array], Array]


# ----------------------------------------------------------------------------------------------
# conversions
# ----------------------------------------------------------------------------------------------


def eps_fn_in_log_snr(sde: Any, eps_fn_t: EpsFn) -> EpsFn:
    """A time-indexed noise prediction of a scalar SDE as a log-SNR model ``eps(x, a)`` (CDL App. B.3).

    The SDE kernel ``alpha_t x_0 + sigma_t eps`` has log-SNR ``lambda_t = log(alpha_t^2/sigma_t^2)``.
    The VP channel at ``a = lambda_t`` is the same signal rescaled,
    ``x_a = sqrt(sigmoid(a)) x_0 + sqrt(sigmoid(-a)) eps = (alpha_t x_0 + sigma_t eps) / s_t`` with
    ``s_t = sqrt(alpha_t^2 + sigma_t^2)``, and carries the same ``eps``. Hence

        eps(x_a, a) = eps_fn_t(s_t x_a, t),   t = sde.t_from_log_snr(a).

    VP: ``s_t = 1`` (the channels coincide); sub-VP: ``s_t^2 = alpha_t^2 + (1 - alpha_t^2)^2 < 1``;
    VE: ``s_t^2 = 1 + sigma_t^2``. Log-SNRs outside the SDE's range ``[lambda_T, lambda_{t->0})`` map
    to ``t > T`` (VP/sub-VP extrapolate the schedule; exact for analytic models, an extrapolation
    for a network -- truncate the proposal, ``clip``, to stay inside).

    Args:
      sde: scalar SDE (``marginal_coeffs``, ``t_from_log_snr``).
      eps_fn_t: ``eps_fn_t(x, t)`` with ``x`` of shape ``(batch, *data)`` and ``t`` scalar or ``(batch,)``.

    Returns:
      ``eps(x, a)`` with ``a`` scalar or ``(batch,)``.
    """

    def eps(x: Array, a: Array) -> Array:
        t = sde.t_from_log_snr(jnp.asarray(a, x.dtype))
        alpha, sigma = sde.marginal_coeffs(t)
        s = jnp.sqrt(alpha**2 + sigma**2)
        return eps_fn_t(broadcast_to_data(s, x) * x, t)

    return eps


def noised_log_snr(a: Array, zeta: Array) -> tuple[Array, Array]:
    """``(beta, b)`` of CDL eq. 5: ``beta = logit(sigmoid(zeta) sigmoid(a))``, ``b = sqrt(sigmoid(-a)/sigmoid(-beta))``.

    Computed in log space: ``L = log sigmoid(beta) = -softplus(-zeta) - softplus(-a)``,
    ``beta = L - log(-expm1(L))``; ``zeta = +inf`` gives ``beta = a``, ``b = 1``. Shapes broadcast.
    """
    a, zeta = jnp.asarray(a), jnp.asarray(zeta)
    log_sig_beta = -jax.nn.softplus(-zeta) - jax.nn.softplus(-a)
    log_sig_neg_beta = jnp.log(-jnp.expm1(log_sig_beta))
    beta = log_sig_beta - log_sig_neg_beta
    b = jnp.exp(0.5 * (-jax.nn.softplus(a) - log_sig_neg_beta))
    return beta, b


# ----------------------------------------------------------------------------------------------
# per-draw terms
# ----------------------------------------------------------------------------------------------


def _per_example(v: Any, batch: int, name: str, dtype: Any) -> Array:
    """Scalar or ``(batch,)`` -> ``(batch,)``."""
    v = jnp.asarray(v, dtype)
    if v.ndim == 0:
        return jnp.broadcast_to(v, (batch,))
    if v.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {v.shape}")
    return v


def _draws(key: Array, x: Array, n: int, loc, scale, clip):
    """Common draws: ``a (B, n)``, ``log q (B, n)``, ``eps (B, n, *data)``, ``z (B, n, *data)``."""
    k_a, k_eps = jax.random.split(key)
    batch = x.shape[0]
    a, log_q = sample_log_snr(k_a, (batch, n), loc=loc, scale=scale, clip=clip, dtype=x.dtype)
    eps = jax.random.normal(k_eps, (batch, n) + x.shape[1:], x.dtype)
    bshape = (batch, n) + (1,) * (x.ndim - 1)
    sa = jnp.sqrt(jax.nn.sigmoid(a)).reshape(bshape)
    sn = jnp.sqrt(jax.nn.sigmoid(-a)).reshape(bshape)
    z = sa * x[:, None] + sn * eps
    return a, log_q, eps, z


def _eval(eps_fn: EpsFn, z: Array, levels: list[Array]) -> list[Array]:
    """``eps_fn`` at every ``(z, level)`` in ONE call: rows ``(len(levels) * B * n, *data)``."""
    batch, n = z.shape[:2]
    data = z.shape[2:]
    flat = z.reshape((batch * n,) + data)
    k = len(levels)
    out = eps_fn(jnp.concatenate([flat] * k, axis=0), jnp.concatenate([l.reshape(-1) for l in levels], axis=0))
    return [o.reshape((batch, n) + data) for o in jnp.split(out, k, axis=0)]


def _sq(v: Array) -> Array:
    """Sum of squares over data axes: ``(B, n, *data) -> (B, n)``."""
    return jnp.sum(v**2, axis=tuple(range(2, v.ndim)))


def _gaussian_terms(x: Array, a: Array, eps: Array, z: Array) -> tuple[Array, Array]:
    """Reference ``N(0, I)``: ``-log N(x; 0, I)`` ``(B,)`` and realised errors ``||eps - sqrt(sig(-a)) z||^2`` ``(B, n)``."""
    d = math.prod(x.shape[1:])
    nll_g = 0.5 * d * math.log(2 * math.pi) + 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
    sn = jnp.sqrt(jax.nn.sigmoid(-a)).reshape(a.shape + (1,) * (z.ndim - 2))
    return nll_g, _sq(eps - sn * z)


def _mean_and_se(terms: Array) -> tuple[Array, Array]:
    n = terms.shape[1]
    mean = jnp.mean(terms, axis=1)
    se = jnp.std(terms, axis=1, ddof=1) / math.sqrt(n) if n > 1 else jnp.full_like(mean, jnp.inf)
    return mean, se


def _finish(value: Array, se: Array, return_std_error: bool):
    return (value, se) if return_std_error else value


# ----------------------------------------------------------------------------------------------
# public estimators
# ----------------------------------------------------------------------------------------------


def log_snr_nll(eps_fn: EpsFn, x: Array, key: Array, n_samples: int, *, loc: float = 0.0, scale: float = 2.0,
                clip: float | None = None, return_std_error: bool = False):
    """``-log p(x)`` of the density whose optimal denoiser is ``eps_fn`` (CDL eq. 2, exact constant).

    ``-log p(x) = d/2 log(2 pi) + |x|^2/2 + 1/2 E_{a~q, eps}[(||eps - eps_hat(x_a, a)||^2
    - ||eps - sqrt(sigmoid(-a)) x_a||^2) / q(a)]`` (module docstring). Exact in expectation for the
    optimal ``eps_hat`` when ``clip is None``.

    Args:
      eps_fn: ``eps_fn(x, a)``, log-SNR ``a`` scalar or ``(batch,)``.
      x: ``(batch, *data)`` points.
      key: PRNG key for the draws ``(a, eps)``.
      n_samples: draws per example (static int).
      loc, scale, clip: logistic proposal over log-SNR (see :func:`diffjax.log_snr.sample_log_snr`).
      return_std_error: also return the Monte Carlo standard error.

    Returns:
      ``(batch,)`` NLL estimates in nats (and ``(batch,)`` standard errors).

    Raises:
      ValueError: bad ``x`` shape, ``n_samples`` or proposal parameters.
    """
    x = check_batch("x", x)
    n = check_int("n_samples", n_samples)
    check_logistic_proposal(loc, scale, clip)
    a, log_q, eps, z = _draws(key, x, n, loc, scale, clip)
    (e_a,) = _eval(eps_fn, z, [a])
    nll_g, err_g = _gaussian_terms(x, a, eps, z)
    terms = 0.5 * (_sq(eps - e_a) - err_g) * jnp.exp(-log_q)
    mean, se = _mean_and_se(terms)
    return _finish(nll_g + mean, se, return_std_error)


def noised_nll(eps_fn: EpsFn, x: Array, zeta: Array, key: Array, n_samples: int, *, loc: float = 0.0,
               scale: float = 2.0, clip: float | None = None, return_std_error: bool = False):
    """``-log p_zeta(x)`` from the data's denoiser (CDL eqs. 3-5, exact constant as in :func:`log_snr_nll`).

    ``p_zeta`` is the law of ``sqrt(sigmoid(zeta)) x_0 + sqrt(sigmoid(-zeta)) eps``, ``x_0 ~ p``; its
    denoiser at log-SNR ``a`` is ``b eps_hat(z, beta)`` (:func:`noised_log_snr`).

    Args:
      zeta: noise level(s) in log-SNR, scalar or ``(batch,)``; ``+inf`` means ``p`` itself.
      (others as :func:`log_snr_nll`)

    Returns:
      ``(batch,)`` estimates (and standard errors).
    """
    x = check_batch("x", x)
    n = check_int("n_samples", n_samples)
    check_logistic_proposal(loc, scale, clip)
    zeta = _per_example(zeta, x.shape[0], "zeta", x.dtype)
    a, log_q, eps, z = _draws(key, x, n, loc, scale, clip)
    beta, b = noised_log_snr(a, zeta[:, None])
    (e_b,) = _eval(eps_fn, z, [beta])
    b = b.reshape(b.shape + (1,) * (z.ndim - 2))
    nll_g, err_g = _gaussian_terms(x, a, eps, z)
    terms = 0.5 * (_sq(eps - b * e_b) - err_g) * jnp.exp(-log_q)
    mean, se = _mean_and_se(terms)
    return _finish(nll_g + mean, se, return_std_error)


def _llr_terms(eps_fn: EpsFn, x: Array, zetas: Array, key: Array, n: int, loc, scale, clip) -> Array:
    """Per-draw LLR terms ``(K, B, n)`` for zetas ``(K, B)``, sharing ``(a, eps)`` and ``eps_hat(z, a)``.

    One model call on ``(1 + K) B n`` rows.
    """
    a, log_q, eps, z = _draws(key, x, n, loc, scale, clip)
    betas, bs = noised_log_snr(a[None], zetas[:, :, None])                    # (K, B, n)
    outs = _eval(eps_fn, z, [a] + list(betas))
    err_p = _sq(eps - outs[0])
    w = 0.5 * jnp.exp(-log_q)
    extra = (1,) * (z.ndim - 2)
    return jnp.stack([w * (err_p - _sq(eps - bk.reshape(bk.shape + extra) * ek))
                      for bk, ek in zip(bs, outs[1:])])


def log_likelihood_ratio(eps_fn: EpsFn, x: Array, zeta: Array, key: Array, n_samples: int, *, loc: float = 0.0,
                         scale: float = 2.0, clip: float | None = None, return_std_error: bool = False):
    """``log p_zeta(x) - log p(x)`` per example (CDL eq. 8, with its factor 1/2).

    ``1/2 E_{a~q, eps}[(||eps - eps_hat(z, a)||^2 - ||eps - b eps_hat(z, beta)||^2) / q(a)]``,
    ``z = sqrt(sigmoid(a)) x + sqrt(sigmoid(-a)) eps``, with the SAME ``(a, eps)`` in both terms so the
    constant of eq. 2 cancels exactly and most of the Monte Carlo noise with it. One model call on
    ``2 * batch * n_samples`` rows; differentiable in the model's parameters.

    Args:
      eps_fn: ``eps_fn(x, a)`` (log-SNR model; see :func:`eps_fn_in_log_snr`).
      x: ``(batch, *data)``.
      zeta: log-SNR of the noised density, scalar or ``(batch,)``.
      key: PRNG key.
      n_samples: draws per example (static int).
      loc, scale, clip: proposal (see :func:`diffjax.log_snr.sample_log_snr`).
      return_std_error: also return the Monte Carlo standard error.

    Returns:
      ``(batch,)`` LLR estimates (and standard errors).

    Raises:
      ValueError: bad shapes, ``n_samples`` or proposal parameters.
    """
    x = check_batch("x", x)
    n = check_int("n_samples", n_samples)
    check_logistic_proposal(loc, scale, clip)
    zeta = _per_example(zeta, x.shape[0], "zeta", x.dtype)
    terms = _llr_terms(eps_fn, x, zeta[None], key, n, loc, scale, clip)[0]
    mean, se = _mean_and_se(terms)
    return _finish(mean, se, return_std_error)


def classify_noise_level(eps_fn: EpsFn, x: Array, zetas: Array, key: Array, n: int, *, loc: float = 0.0,
                         scale: float = 2.0, clip: float | None = None, return_log: bool = False) -> Array:
    """Posterior over candidate noise levels ``zetas`` (uniform prior) for each point (CDL §3).

    ``P(zeta_k | x) = softmax_k log p_{zeta_k}(x)``; each ``log p_{zeta_k}(x)`` is estimated as the LLR
    against ``p`` with common draws for all candidates (the shared ``log p(x)`` and constant cancel in
    the softmax). ``zeta = +inf`` is the clean data distribution. One model call on ``(1 + K) B n`` rows.

    Args:
      eps_fn: ``eps_fn(x, a)``.
      x: ``(batch, *data)``.
      zetas: ``(K,)`` candidate log-SNRs.
      key: PRNG key.
      n: draws per example (static int).
      loc, scale, clip: proposal (see :func:`diffjax.log_snr.sample_log_snr`).
      return_log: return log-probabilities instead.

    Returns:
      ``(batch, K)`` posterior probabilities (or log-probabilities).

    Raises:
      ValueError: ``zetas`` not 1-D, bad shapes, ``n`` or proposal parameters.
    """
    x = check_batch("x", x)
    n = check_int("n", n)
    check_logistic_proposal(loc, scale, clip)
    zetas = jnp.asarray(zetas, x.dtype)
    if zetas.ndim != 1 or zetas.shape[0] < 1:
        raise ValueError(f"zetas must be a non-empty 1-D array, got shape {zetas.shape}")
    zk = jnp.broadcast_to(zetas[:, None], (zetas.shape[0], x.shape[0]))
    llr = jnp.mean(_llr_terms(eps_fn, x, zk, key, n, loc, scale, clip), axis=2).T      # (B, K)
    return jax.nn.log_softmax(llr, axis=1) if return_log else jax.nn.softmax(llr, axis=1)
