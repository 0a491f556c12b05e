"""Score matching: DSM for scalar SDEs, HSM and plain DSM for CLD (thesis eqs. 1.18, 1.24, 2.12, 2.56-2.57).

Each builder validates its hyper-parameters once (outside ``jit``) and returns the standard
``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)`` (see :mod:`diffjax.losses`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_option, check_t_min
from diffjax.losses._scaffold import (PARAMETERIZATIONS, SCALAR_WEIGHTINGS, LossFn, eps_hat, level_loss, perturb,
                                      scalar_weight, uniform_time)
from diffjax.param import cld_mixed_score
from diffjax.sde._base import batch_sum, broadcast_to_data

__all__ = ["dsm_loss", "hsm_loss", "cld_dsm_loss"]

_CLD_WEIGHTINGS = ("quality", "likelihood")


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
    check_option("parameterization", parameterization, PARAMETERIZATIONS)
    check_option("weighting", weighting, SCALAR_WEIGHTINGS)
    t_min = check_t_min(t_min, sde.T)

    def per_example(apply_fn, params, key, x0, t):
        p = perturb(sde, key, x0, t)
        mse = batch_sum((p.eps - eps_hat(parameterization, apply_fn(params, p.x_t, t), p.x_t, p.alpha, p.sigma)) ** 2)
        weight = scalar_weight(sde, weighting, t, p.sigma_t)
        return weight * mse, {"t": t, "x_t": p.x_t, "eps": p.eps, "mse": mse, "weight": weight}

    return level_loss(uniform_time(t_min, sde.T), per_example)


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
    check_option("weighting", weighting, _CLD_WEIGHTINGS)
    t_min = check_t_min(t_min, cld.T)

    def per_example(apply_fn, params, key, x0, t):
        u_t, (_, eps_v) = cld.perturb(key, x0, t, kernel=kernel)
        ell_h_t = cld.ell(t, kernel="hsm")
        mse = mse_fn(apply_fn, params, u_t, eps_v, t, broadcast_to_data(ell_h_t, eps_v))
        weight = _cld_lambda(cld, weighting, t) * ell_h_t**2
        return weight * mse, {"t": t, "u_t": u_t, "eps_v": eps_v, "mse": mse, "weight": weight}

    return level_loss(uniform_time(t_min, cld.T), per_example)


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
