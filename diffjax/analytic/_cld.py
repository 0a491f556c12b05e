"""Exact CLD marginals of isotropic Gaussian mixtures, and the CLD perturbation-kernel scores.

With ``x_0 ~ sum_k w_k N(mu_k, s_k^2 I)`` and ``v_0 ~ N(0, gamma M I)`` (thesis §2.3.3.1), CLD is
linear, so ``u_t = (x_t, v_t)`` is a mixture of ``2d``-dimensional Gaussians: component ``k`` has
per-dimension mean ``Phi_t (mu_k, 0)`` (``CLD.marginal_mean(mu_k, 0, t)``) and per-dimension
``2 x 2`` covariance ``CLD.marginal_cov(t, s_k^2, gamma M)`` (eqs. 2.31-2.36), i.e.
``Sigma_t = Sigma_t^DSM + Phi_t diag(s_k^2, gamma M) Phi_t^T``.

The marginal does not depend on the kernel used for training: the HSM kernel ``p(u_t | x_0)``
(``Sigma_0 = diag(0, gamma M)``) equals the DSM kernel ``p(u_t | x_0, v_0)`` (``Sigma_0 = 0``)
averaged over ``v_0 ~ N(0, gamma M I)``, since ``marginal_cov(t, 0, gamma M) =
marginal_cov(t, 0, 0) + gamma M Phi_t e_v e_v^T Phi_t^T`` (tested).

Numerics: each component's Gaussian is evaluated through the conditional factorisation
``p(x) p(v | x)``: ``quad = dx^2 / S_xx + (dv - k dx)^2 / c`` with ``k = S_xv / S_xx`` and
``c = det / S_xx``, using CLD's cancellation-free determinant, so no ``2 x 2`` inverse is formed
and nothing cancels in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array

from diffjax.analytic._mixture import GaussianMixture
from diffjax.sde._base import broadcast_to_data
from diffjax.sde._cld import CLD

__all__ = [
    "cld_log_prob",
    "cld_score",
    "cld_score_v_fn",
    "cld_sample",
    "cld_kernel_score",
]


def _check_u(mixture: GaussianMixture, u) -> tuple[Array, Array]:
    if not (isinstance(u, (tuple, list)) and len(u) == 2):
        raise ValueError(f"u must be a tuple (x, v), got {type(u).__name__}")
    x, v = u
    d = mixture.dim
    if x.ndim != 2 or x.shape[1] != d or v.shape != x.shape:
        raise ValueError(f"x and v must both have shape (batch, {d}), got {x.shape} and {v.shape}")
    return x, v


def _col(c: Array, n: int) -> Array:
    """Scalar or ``(n,)`` time -> ``(n, 1)``."""
    c = jnp.asarray(c, jnp.result_type(float))
    if c.ndim == 0:
        return jnp.broadcast_to(c, (n,))[:, None]
    if c.shape != (n,):
        raise ValueError(f"t must be a scalar or of shape (batch,)=({n},), got shape {c.shape}")
    return c[:, None]


def _components(mixture: GaussianMixture, cld: CLD, x: Array, v: Array, t: Array):
    """Per-component log-densities ``(n, K)`` and conditional-form pieces.

    Returns ``logc`` (log w_k + log N_k), ``dx, dv`` ``(n, K, d)``, ``sxx, k, c`` ``(n, K)``.
    """
    n, d = x.shape
    tc = _col(t, n)                                                        # (n, 1)
    one = jnp.ones((n, 1), tc.dtype)
    phi_xx, phi_vx = cld.marginal_mean(one, 0.0, tc[:, 0])                 # (n, 1): Phi_t (1, 0)
    a = (mixture.stds**2)[None, :]                                         # (1, K)
    b = cld.gamma * cld.M
    sxx, sxv, _ = cld.marginal_cov(tc, a, b)                               # (n, K)
    det = cld.marginal_det(tc, a, b)
    k = sxv / sxx
    c = det / sxx
    mu = mixture.means[None]                                               # (1, K, d)
    dx = x[:, None, :] - phi_xx[:, :, None] * mu
    dv = v[:, None, :] - phi_vx[:, :, None] * mu
    r = dv - k[:, :, None] * dx                                            # v - E[v | x], per component
    quad = jnp.sum(dx**2, -1) / sxx + jnp.sum(r**2, -1) / c
    logc = jnp.log(mixture.weights)[None] - 0.5 * quad - 0.5 * d * jnp.log(det) - d * math.log(2 * math.pi)
    return logc, dx, r, sxx, k, c


def cld_log_prob(mixture: GaussianMixture, cld: CLD, u, t: Array) -> Array:
    """Exact ``log p_t(u)`` of the CLD-diffused mixture (``v_0 ~ N(0, gamma M I)``).

    Args:
      mixture: the data distribution ``p_0(x_0)``.
      cld: the forward CLD.
      u: ``(x, v)``, each ``(n, d)``.
      t: scalar or ``(n,)`` in ``[0, T]``.

    Returns:
      ``(n,)``.

    Raises:
      ValueError: on shape mismatches.
    """
    x, v = _check_u(mixture, u)
    logc = _components(mixture, cld, x, v, t)[0]
    return jax.nn.logsumexp(logc, axis=1)


def cld_score(mixture: GaussianMixture, cld: CLD, u, t: Array):
    """Exact joint score ``(grad_x, grad_v) log p_t(u)`` of the CLD-diffused mixture.

    Per component ``-Sigma^{-1} (u - m)`` in conditional form: ``score_v = -(dv - k dx) / c``,
    ``score_x = -dx / S_xx - k score_v``; mixed with the responsibilities ``softmax(logc)``.

    Args:
      u: ``(x, v)``, each ``(n, d)``; t: scalar or ``(n,)``.

    Returns:
      ``(score_x, score_v)``, each ``(n, d)``.
    """
    x, v = _check_u(mixture, u)
    logc, dx, r, sxx, k, c = _components(mixture, cld, x, v, t)
    w = jax.nn.softmax(logc, axis=1)[:, :, None]                           # (n, K, 1)
    sv = -r / c[:, :, None]
    sx = -dx / sxx[:, :, None] - k[:, :, None] * sv
    return jnp.sum(w * sx, axis=1), jnp.sum(w * sv, axis=1)


def cld_score_v_fn(mixture: GaussianMixture, cld: CLD):
    """The exact velocity score as a model function ``f((x, v), t) -> grad_v log p_t(u)``.

    Plugs in exactly where a CLD score network would (samplers, ``param.cld_mixed_score``
    inverses). ``t`` scalar or ``(n,)``; output ``(n, d)``.
    """

    def score_v(u, t):
        return cld_score(mixture, cld, u, t)[1]

    return score_v


def cld_sample(mixture: GaussianMixture, cld: CLD, key: Array, n: int, t: Array):
    """``n`` exact samples of ``p_t(u)``: ``x_0`` from the mixture, then the HSM kernel ``p(u_t | x_0)``.

    Returns:
      ``(x, v)``, each ``(n, d)``.
    """
    k0, k1 = jax.random.split(key)
    x0 = mixture.sample(k0, n)
    return cld.perturb(k1, x0, t, kernel="hsm")[0]


def cld_kernel_score(cld: CLD, u, t: Array, x0: Array, v0: Array | None = None, kernel: str = "hsm"):
    """Exact score of a CLD perturbation kernel, the target of HSM/DSM (thesis eqs. 2.48-2.54).

    HSM (``kernel="hsm"``): ``grad log p_t(u | x_0)``, mean ``Phi_t (x_0, 0)``,
    ``Sigma_0 = diag(0, gamma M)``; ``v0`` must be ``None``. DSM (``kernel="dsm"``):
    ``grad log p_t(u | x_0, v_0)``, mean ``Phi_t (x_0, v_0)``, ``Sigma_0 = 0``. With
    ``u = mu_t + L_t eps`` (``CLD.perturb``) the velocity part is ``-ell_t eps_v`` (eq. 2.54) and
    the full score ``-L_t^{-T} eps`` (eqs. 2.51, 2.53).

    Args:
      cld: the forward CLD.
      u: ``(x, v)``, each ``(batch, *data)``.
      t: scalar or ``(batch,)``, ``t > 0`` for ``score_x`` (at ``t = 0`` the HSM kernel is
        degenerate in ``x``; ``score_v = -v / (gamma M)`` is still returned, ``score_x`` is 0).
      x0: ``(batch, *data)``.
      v0: ``(batch, *data)`` for DSM.
      kernel: ``"hsm"`` or ``"dsm"``.

    Returns:
      ``(score_x, score_v)`` of the shapes of ``u``.

    Raises:
      ValueError: unknown kernel, or ``v0`` given for HSM / missing for DSM.
    """
    x, v = u
    if kernel == "dsm" and v0 is None:
        raise ValueError("kernel='dsm' conditions on v0: pass v0")
    if kernel == "hsm" and v0 is not None:
        raise ValueError("kernel='hsm' marginalises v0 ~ N(0, gamma M I): v0 must be None")
    lxx, lxv, lvv = (broadcast_to_data(c, x) for c in cld.cholesky(t, kernel))
    mx, mv = cld.marginal_mean(x0, 0.0 if v0 is None else v0, t)
    pos = lxx > 0
    lxx_s = jnp.where(pos, lxx, 1.0)
    eps_x = jnp.where(pos, (x - mx) / lxx_s, 0.0)
    eps_v = (v - mv - lxv * eps_x) / lvv
    score_v = -eps_v / lvv
    score_x = jnp.where(pos, -(eps_x - lxv * eps_v / lvv) / lxx_s, 0.0)
    return score_x, score_v
