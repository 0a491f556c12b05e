"""Isotropic Gaussian mixtures with exact diffused densities and scores (ground truth).

A mixture ``p_0 = sum_k w_k N(mu_k, s_k^2 I)`` pushed through a kernel
``x_t = alpha_t x_0 + sigma_t eps`` stays a mixture:
``p_t = sum_k w_k N(alpha_t mu_k, (alpha_t^2 s_k^2 + sigma_t^2) I)`` (thesis eq. 2.101). So the
score, eps and denoiser of every scalar SDE are available in closed form, and plug in exactly
where a network would.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from diffjax._validate import check_finite, is_concrete
from diffjax._pytree import pytree_dataclass
from diffjax.sde._base import broadcast_to_data

__all__ = ["GaussianMixture", "nine_gaussians", "sixty_four_gaussians"]


def _row(c: Array, n: int) -> Array:
    """Scalar or ``(n,)`` coefficient -> ``(n, 1)`` for broadcasting against ``(n, K)``."""
    c = jnp.asarray(c)
    return jnp.broadcast_to(c, (n,))[:, None] if c.ndim == 0 else c[:, None]


@pytree_dataclass
class GaussianMixture:
    """``p(x) = sum_k weights[k] N(x; means[k], stds[k]^2 I)`` in ``d`` dimensions.

    Attributes:
      weights: ``(K,)`` positive, summing to one.
      means: ``(K, d)``.
      stds: ``(K,)`` positive.

    Raises:
      ValueError: on inconsistent shapes, non-positive stds/weights, weights not summing to 1,
        or non-finite values.
    """

    weights: Array
    means: Array
    stds: Array

    def __post_init__(self):
        w, m, s = self.weights, self.means, self.stds
        if not is_concrete(w, m, s):
            return
        w, m, s = np.asarray(w), np.asarray(m), np.asarray(s)
        if m.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {m.shape}")
        if w.shape != (m.shape[0],) or s.shape != (m.shape[0],):
            raise ValueError(f"weights and stds must have shape (K,)=({m.shape[0]},), got {w.shape} and {s.shape}")
        for name, value in (("weights", w), ("means", m), ("stds", s)):
            check_finite(name, value)
        if np.any(w <= 0) or abs(w.sum() - 1.0) > 1e-5:
            raise ValueError(f"weights must be positive and sum to 1, got sum {w.sum()}")
        if np.any(s <= 0):
            raise ValueError("stds must be positive")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # -- exact quantities of the mixture diffused by x_t = alpha x_0 + sigma eps --------------------

    def _component_terms(self, x: Array, alpha: Array, sigma: Array):
        """Log-responsibility numerators ``(n, K)``, component means ``(n, K, d)`` and variances ``(n, K)``."""
        n = x.shape[0]
        a, s = _row(alpha, n), _row(sigma, n)
        var = a**2 * self.stds[None, :] ** 2 + s**2                         # (n, K)
        mu = a[:, :, None] * self.means[None]                               # (n, K, d)
        sq = jnp.sum((x[:, None, :] - mu) ** 2, axis=-1)                    # (n, K)
        logc = jnp.log(self.weights)[None] - 0.5 * sq / var - 0.5 * self.dim * jnp.log(2 * math.pi * var)
        return logc, mu, var

    def _check_x(self, x: Array) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {x.shape}")

    def diffused_log_prob(self, x: Array, alpha: Array, sigma: Array) -> Array:
        """``log p_t(x)`` of the diffused mixture; ``x``: ``(n, d)``; alpha/sigma scalar or ``(n,)``. Returns ``(n,)``."""
        self._check_x(x)
        logc, _, _ = self._component_terms(x, alpha, sigma)
        return jax.nn.logsumexp(logc, axis=1)

    def diffused_score(self, x: Array, alpha: Array, sigma: Array) -> Array:
        """``grad_x log p_t(x) = sum_k r_k(x) (alpha mu_k - x) / var_k``; shape ``(n, d)``."""
        self._check_x(x)
        logc, mu, var = self._component_terms(x, alpha, sigma)
        r = jax.nn.softmax(logc, axis=1)                                    # (n, K)
        return jnp.sum((r / var)[:, :, None] * (mu - x[:, None, :]), axis=1)

    # -- the data distribution itself --------------------------------------------------------------

    def log_prob(self, x: Array) -> Array:
        """``log p(x)``: ``(n, d) -> (n,)``."""
        return self.diffused_log_prob(x, 1.0, 0.0)

    def score(self, x: Array) -> Array:
        """``grad_x log p(x)``: ``(n, d) -> (n, d)``."""
        return self.diffused_score(x, 1.0, 0.0)

    def sample(self, key: Array, n: int) -> Array:
        """``n`` exact samples, shape ``(n, d)``."""
        kc, kn = jax.random.split(key)
        k = jax.random.categorical(kc, jnp.log(self.weights), shape=(n,))
        return self.means[k] + self.stds[k][:, None] * jax.random.normal(kn, (n, self.dim))

    def marginal(self, sde, t: float) -> "GaussianMixture":
        """The mixture diffused by a scalar SDE to a scalar time ``t`` (exact, another mixture)."""
        alpha, sigma = sde.marginal_coeffs(t)
        return GaussianMixture(self.weights, alpha * self.means, jnp.sqrt(alpha**2 * self.stds**2 + sigma**2))

    # -- model functions that plug in where a network would ----------------------------------------

    def score_fn(self, sde):
        """Exact ``score(x, t)`` of the SDE's marginal; ``t`` scalar or ``(batch,)``."""

        def score(x, t):
            alpha, sigma = sde.marginal_coeffs(t)
            return self.diffused_score(x, alpha, sigma)

        return score

    def eps_fn(self, sde):
        """Exact noise prediction ``eps(x, t) = -sigma_t score_t(x)`` (thesis eq. 1.24)."""

        def eps(x, t):
            alpha, sigma = sde.marginal_coeffs(t)
            return -broadcast_to_data(sigma, x) * self.diffused_score(x, alpha, sigma)

        return eps

    def denoiser(self, x: Array, sigma: Array) -> Array:
        """Exact EDM denoiser ``D(x, sigma) = E[x_0 | x_0 + sigma n = x] = x + sigma^2 score``."""
        return x + broadcast_to_data(jnp.asarray(sigma) ** 2, x) * self.diffused_score(x, 1.0, sigma)


def nine_gaussians(std: float = 0.04) -> GaussianMixture:
    """The 9-component 2-D mixture of thesis eq. (2.100), ``a = 2^-1/2``, component std 0.04."""
    a = 2.0**-0.5
    means = jnp.array(
        [[-a, 0], [-a / 2, a / 2], [0, a], [-a / 2, -a / 2], [0, 0], [a / 2, a / 2], [0, -a], [a / 2, -a / 2], [a, 0]]
    )
    return GaussianMixture(jnp.full((9,), 1 / 9), means, jnp.full((9,), std))


def sixty_four_gaussians(std: float = 1e-2, s1: float = 0.9, s2: float = 0.2) -> GaussianMixture:
    """The 64-component 2-D mixture of thesis eqs. (3.80)-(3.81): means ``s1 mu_i + s1 s2 mu_j``."""
    r = 2.0**-0.5
    mu = jnp.array([[1, 0], [-1, 0], [0, 1], [0, -1], [r, r], [r, -r], [-r, r], [-r, -r]])
    means = (s1 * mu[:, None, :] + s1 * s2 * mu[None, :, :]).reshape(64, 2)
    return GaussianMixture(jnp.full((64,), 1 / 64), means, jnp.full((64,), std))
