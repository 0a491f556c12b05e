"""Training objectives of diffusion models as pure, jit-able functions.

Every builder validates its hyper-parameters once (outside ``jit``) and returns

    ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``

* ``x0``: clean data of shape ``(batch, *data)``;
* ``reduce=True``: ``loss`` is the scalar batch mean; ``reduce=False``: the ``(batch,)``
  per-example losses (what DP-SGD clips, thesis eqs. 4.7-4.11);
* ``aux``: per-example diagnostics, always with ``"mse"`` (the unweighted squared error
  summed over data dims) and ``"weight"`` such that ``loss_i = weight_i * mse_i``, plus the
  sampled time / noise level and the noisy input the network saw.

Objectives:

* :func:`dsm_loss`: denoising score matching for scalar SDEs (thesis eqs. 1.18, 1.24).
* :func:`hsm_loss`: hybrid score matching for CLD with the mixed score (thesis eqs. 2.12, 2.56).
* :func:`cld_dsm_loss`: plain DSM for CLD (thesis eq. 2.57), for the HSM-vs-DSM comparison.
* :func:`edm_loss`: the preconditioned denoiser loss of a Table 4.7 config (thesis eqs. 1.27, 4.23).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._loss_parts import check_option as _check_option
from diffjax._loss_parts import check_t_min as _check_t_min
from diffjax._loss_parts import check_x0 as _check_x0
from diffjax._loss_parts import eps_hat as _eps_hat
from diffjax._loss_parts import finish as _finish
from diffjax._loss_parts import sample_t as _sample_t
from diffjax.param import DenoiserConfig, cld_mixed_score, precondition
from diffjax.sde._base import batch_sum, broadcast_to_data

__all__ = ["dsm_loss", "hsm_loss", "cld_dsm_loss", "edm_loss"]

_PARAMETERIZATIONS = ("eps", "score", "x0", "v")
_DSM_WEIGHTINGS = ("simple", "likelihood")
_CLD_WEIGHTINGS = ("quality", "likelihood")

LossFn = Callable[..., tuple[Array, dict[str, Any]]]


# --------------------------------------------------------------------------------------------
# scalar SDEs
# --------------------------------------------------------------------------------------------


def dsm_loss(sde, *, parameterization: str = "eps", weighting: str = "simple", t_min: float = 1e-5) -> LossFn:
    """Denoising score matching for a scalar SDE (thesis eqs. 1.18 and 1.24).

    ``t ~ U[t_min, T]``, ``x_t = alpha_t x_0 + sigma_t eps``. The network output
    ``apply_fn(params, x_t, t)`` is read as an ``eps``-, ``score``-, ``x0``- or ``v``-prediction
    (``v = alpha_t eps - sigma_t x_0``) and converted to ``eps_hat``. Per example (summed over data):

    * ``"simple"`` (Ho et al. 2020): ``||eps - eps_hat||^2``;
    * ``"likelihood"`` (Song et al. 2021): ``g(t)^2 ||s_theta - grad log p(x_t | x_0)||^2``
      ``= g(t)^2 / sigma_t^2 ||eps - eps_hat||^2``, so that ``T/2 * E[loss]`` is the KL / NLL bound
      up to a constant.

    Args:
      sde: scalar SDE (``marginal_coeffs``, ``diffusion_sq``, ``T``).
      parameterization: ``"eps" | "score" | "x0" | "v"``.
      weighting: ``"simple" | "likelihood"``.
      t_min: lower end of the time interval, in ``(0, T)``.

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``; ``aux`` holds per-example
      ``"t"``, ``"x_t"``, ``"eps"``, ``"mse"`` (``||eps - eps_hat||^2``) and ``"weight"``.

    Raises:
      ValueError: unknown ``parameterization``/``weighting``, or ``t_min`` outside ``(0, T)``; the
        returned loss raises ``ValueError`` for ``x0`` that is not ``(batch, *data)`` or (when
        concrete) not finite.
    """
    _check_option("parameterization", parameterization, _PARAMETERIZATIONS)
    _check_option("weighting", weighting, _DSM_WEIGHTINGS)
    t_min = _check_t_min(t_min, sde.T)

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        x0 = _check_x0(x0)
        k_t, k_eps = jax.random.split(key)
        t = _sample_t(k_t, x0.shape[0], t_min, sde.T)
        alpha_t, sigma_t = sde.marginal_coeffs(t)
        alpha, sigma = broadcast_to_data(alpha_t, x0), broadcast_to_data(sigma_t, x0)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        x_t = alpha * x0 + sigma * eps
        eps_hat = _eps_hat(parameterization, apply_fn(params, x_t, t), x_t, alpha, sigma)
        mse = batch_sum((eps - eps_hat) ** 2)
        weight = jnp.ones_like(t) if weighting == "simple" else sde.diffusion_sq(t) / sigma_t**2
        aux = {"t": t, "x_t": x_t, "eps": eps, "mse": mse, "weight": weight}
        return _finish(weight * mse, aux, reduce)

    return loss


# --------------------------------------------------------------------------------------------
# CLD
# --------------------------------------------------------------------------------------------


def _cld_lambda(cld, weighting: str, t: Array) -> Array:
    """``lambda(t)``: ``ell_t^{-2}`` (HSM ``ell``, "quality") or ``Gamma beta`` ("likelihood"), thesis §2.3.3.2."""
    if weighting == "quality":
        return cld.ell(t, kernel="hsm") ** -2
    return jnp.full_like(t, cld.Gamma * cld.beta)


def _cld_score_matching(cld, weighting: str, t_min: float, kernel: str, mse_fn) -> LossFn:
    """The loss both CLD objectives share: ``t ~ U[t_min, T]``, ``u_t`` from ``cld.perturb(kernel)``,
    per-example ``lambda(t) (ell^HSM_t)^2 mse_fn(apply_fn, params, u_t, eps_v, t, ell^HSM)``."""
    _check_option("weighting", weighting, _CLD_WEIGHTINGS)
    t_min = _check_t_min(t_min, cld.T)

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        x0 = _check_x0(x0)
        k_t, k_u = jax.random.split(key)
        t = _sample_t(k_t, x0.shape[0], t_min, cld.T)
        u_t, (_, eps_v) = cld.perturb(k_u, x0, t, kernel=kernel)
        ell_h_t = cld.ell(t, kernel="hsm")
        mse = mse_fn(apply_fn, params, u_t, eps_v, t, broadcast_to_data(ell_h_t, eps_v))
        weight = _cld_lambda(cld, weighting, t) * ell_h_t**2
        aux = {"t": t, "u_t": u_t, "eps_v": eps_v, "mse": mse, "weight": weight}
        return _finish(weight * mse, aux, reduce)

    return loss


def hsm_loss(cld, *, weighting: str = "quality", t_min: float = 1e-5) -> LossFn:
    """Hybrid score matching for CLD with the mixed score parameterisation (thesis eqs. 2.12, 2.56).

    ``t ~ U[t_min, T]``, ``u_t = mu_t(x_0) + L_t eps`` under the HSM kernel ``p_t(u_t | x_0)``
    (initial velocity ``N(0, gamma M I)`` marginalised). The network output
    ``alpha'_theta = apply_fn(params, (x_t, v_t), t)`` enters
    ``alpha_theta = ell_t^{-1} v_t / Sigma_t^vv + alpha'_theta`` (see :func:`diffjax.param.cld_mixed_score`)
    and the per-example loss is ``lambda(t) ell_t^2 ||eps_v - alpha_theta||^2`` with

    * ``"quality"``: ``lambda = ell_t^{-2}``, i.e. ``||eps_v - alpha_theta||^2`` (eq. 2.59);
    * ``"likelihood"``: ``lambda = Gamma beta`` (maximum likelihood, eq. 2.46).

    Args:
      cld: a :class:`diffjax.sde.CLD`.
      weighting: ``"quality" | "likelihood"``.
      t_min: lower end of the time interval, in ``(0, T)``.

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``; ``aux`` holds per-example
      ``"t"``, ``"u_t"`` (tuple ``(x_t, v_t)``), ``"eps_v"``, ``"mse"`` (``||eps_v - alpha_theta||^2``)
      and ``"weight"`` (``lambda ell_t^2``).

    Raises:
      ValueError: unknown ``weighting`` or ``t_min`` outside ``(0, T)``; the returned loss raises on
        malformed or (concrete) non-finite ``x0``.
    """
    def mse(apply_fn, params, u_t, eps_v, t, ell_h):
        alpha_theta = -cld.mixed_score_prior_term(u_t[1], t) / ell_h + apply_fn(params, u_t, t)
        return batch_sum((eps_v - alpha_theta) ** 2)

    return _cld_score_matching(cld, weighting, t_min, "hsm", mse)


def cld_dsm_loss(cld, *, weighting: str = "quality", t_min: float = 1e-5) -> LossFn:
    """Plain denoising score matching for CLD (thesis eq. 2.49 / 2.57), same model as :func:`hsm_loss`.

    Draws ``v_0 ~ N(0, gamma M I)`` and diffuses ``u_0 = (x_0, v_0)`` with the DSM kernel
    ``p_t(u_t | u_0)`` (``Sigma_0 = 0``). The model is the mixed score of :func:`hsm_loss`
    (``s = -ell^HSM_t alpha_theta``, network output ``alpha'_theta``) and the per-example loss is
    ``lambda(t) ||s - (-ell^DSM_t eps_v)||^2`` with the same ``lambda`` as :func:`hsm_loss`
    (``"quality"``: ``(ell^HSM_t)^{-2}``, ``"likelihood"``: ``Gamma beta``). Hence for every model
    ``E[hsm] - E[cld_dsm] = d E_t[lambda(t) ((ell^HSM_t)^2 - (ell^DSM_t)^2)]`` (eqs. 2.69-2.70; the thesis'
    eq. 2.71 prints the bracket with the opposite sign), and the gradients agree in expectation
    (eq. 2.73) while DSM's have larger variance (App. 2.4.3.1).

    Returns / Raises: as :func:`hsm_loss`; ``aux["mse"]`` is
    ``||(ell^DSM/ell^HSM) eps_v - alpha_theta||^2`` and ``aux["weight"]`` is ``lambda (ell^HSM)^2``.
    """
    def mse(apply_fn, params, u_t, eps_v, t, ell_h):
        ell_d = broadcast_to_data(cld.ell(t, kernel="dsm"), eps_v)
        score = cld_mixed_score(cld, lambda u, s: apply_fn(params, u, s))(u_t, t)
        return batch_sum((ell_d / ell_h * eps_v + score / ell_h) ** 2)

    return _cld_score_matching(cld, weighting, t_min, "dsm", mse)


# --------------------------------------------------------------------------------------------
# EDM-style denoiser configs
# --------------------------------------------------------------------------------------------


def edm_loss(config: DenoiserConfig) -> LossFn:
    """Preconditioned denoiser loss of a thesis Table 4.7 config (thesis eqs. 1.27, 4.23).

    ``sigma ~ config.sample_sigma``, ``x = x_0 + sigma n`` with ``n ~ N(0, I)``, and per example
    ``lambda(sigma) ||D(x, sigma) - x_0||^2`` where ``D = precondition(config, F)`` and the raw
    network is ``F(y, c_noise) = apply_fn(params, y, c_noise)``.

    Args:
      config: a :class:`diffjax.param.DenoiserConfig` (``vp_config()``, ``edm_config()``, ...).

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``; ``aux`` holds per-example
      ``"sigma"``, ``"x"`` (the noisy input), ``"mse"`` (``||D - x_0||^2``) and ``"weight"``
      (``lambda(sigma)``).

    Raises:
      ValueError: if ``config`` is not a ``DenoiserConfig``; the returned loss raises on malformed or
        (concrete) non-finite ``x0``.
    """
    if not isinstance(config, DenoiserConfig):
        raise ValueError(f"config must be a DenoiserConfig (e.g. edm_config()), got {type(config).__name__}")

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        x0 = _check_x0(x0)
        k_sigma, k_n = jax.random.split(key)
        sigma = config.sample_sigma(k_sigma, x0.shape[0]).astype(x0.dtype)
        x = x0 + broadcast_to_data(sigma, x0) * jax.random.normal(k_n, x0.shape, x0.dtype)
        denoiser = precondition(config, lambda y, c: apply_fn(params, y, c))
        mse = batch_sum((denoiser(x, sigma) - x0) ** 2)
        weight = config.loss_weight(sigma)
        aux = {"sigma": sigma, "x": x, "mse": mse, "weight": weight}
        return _finish(weight * mse, aux, reduce)

    return loss
