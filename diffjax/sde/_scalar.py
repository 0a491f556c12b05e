"""Scalar (isotropic) SDEs: VP, sub-VP and VE (thesis §1.2, eqs. 1.15-1.27).

Each has a Gaussian perturbation kernel ``x_t = alpha_t x_0 + sigma_t eps`` and a linear
forward SDE ``dx = f(t) x dt + g(t) dw``. Hyper-parameters are pytree leaves (they may be
traced or vmapped); validation runs once, when a user constructs the SDE. Checks that cannot run
at trace time are never dropped silently: an invalid traced hyper-parameter (``VPSDE(beta_min=b)``
inside ``jit`` with ``b = -1``) or time (``marginal(x0, t)`` with a traced ``t`` outside ``[0, T]``)
becomes NaN, so the results are NaN instead of silently extrapolated.

Numerics: every coefficient is computed from ``log alpha_t`` with ``expm1``/``softplus``
forms, so ``sigma_t`` and the log-SNR are accurate in float32 at both ends of ``[0, T]``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_finite, check_less, check_time, concrete_float, is_concrete, nan_unless
from diffjax._pytree import pytree_dataclass
from diffjax.sde._base import batch_sum, broadcast_to_data

__all__ = ["VPSDE", "SubVPSDE", "VESDE"]


class _ScalarSDE:
    """Shared methods of SDEs with kernel ``N(alpha_t x_0, sigma_t^2 I)``.

    Subclasses define ``T``, ``marginal_coeffs``, ``drift_coeff`` (f(t)), ``diffusion_sq`` (g(t)^2),
    ``prior_std`` and ``t_from_log_snr``.
    """

    def log_snr(self, t: Array) -> Array:
        """``lambda_t = log(alpha_t^2 / sigma_t^2)``; shape of ``t``."""
        alpha, sigma = self.marginal_coeffs(t)
        return 2.0 * (jnp.log(alpha) - jnp.log(sigma))

    def drift(self, x: Array, t: Array) -> Array:
        """Forward drift ``f(t) x``. ``x``: ``(batch, *data)``; ``t``: scalar or ``(batch,)``."""
        return broadcast_to_data(self.drift_coeff(t), x) * x

    def diffusion(self, t: Array) -> Array:
        """Forward diffusion coefficient ``g(t)`` (shape of ``t``)."""
        return jnp.sqrt(self.diffusion_sq(t))

    def diffusion_apply(self, t: Array, z: Array) -> Array:
        """``G(t) z = g(t) z`` for noise ``z`` of the data shape (EM-type steps use ``sqrt(|dt|) G z``)."""
        return broadcast_to_data(self.diffusion(t), z) * z

    def marginal(self, x0: Array, t: Array) -> tuple[Array, Array]:
        """Perturbation kernel ``p(x_t | x_0) = N(mean, std^2 I)``; returns ``(mean, std)``.

        ``mean`` has the shape of ``x0``; ``std`` broadcasts against it. A traced ``t`` outside
        ``[0, T]`` gives NaN (it cannot raise under ``jit``).

        Raises:
          ValueError: a concrete ``t`` outside ``[0, T]`` or not finite.
        """
        t = check_time(t, self.T)
        alpha, sigma = self.marginal_coeffs(t)
        return broadcast_to_data(alpha, x0) * x0, broadcast_to_data(sigma, x0)

    def perturb(self, key: Array, x0: Array, t: Array) -> tuple[Array, Array]:
        """Draw ``x_t = alpha_t x_0 + sigma_t eps``; returns ``(x_t, eps)`` with ``eps ~ N(0, I)``."""
        check_finite("x0", x0)
        mean, std = self.marginal(x0, t)
        eps = jax.random.normal(key, x0.shape, x0.dtype)
        return mean + std * eps, eps

    def prior_sample(self, key: Array, shape: tuple[int, ...]) -> Array:
        """Sample the prior ``N(0, prior_std^2 I)`` of shape ``shape`` (batch first)."""
        return self.prior_std * jax.random.normal(key, shape)

    def prior_logp(self, z: Array) -> Array:
        """Log-density of the prior, summed over data dims: ``(batch, *data) -> (batch,)``."""
        s = self.prior_std
        d = math.prod(z.shape[1:])
        return -0.5 * batch_sum(z**2) / s**2 - d * (jnp.log(s) + 0.5 * math.log(2 * math.pi))

    def reverse_drift(self, x: Array, t: Array, score: Array, *, probability_flow: bool = False) -> Array:
        """Drift of the reverse SDE (eq. 1.20) or of the probability-flow ODE (eq. 1.21).

        ``f(t) x - c g(t)^2 score`` with ``c = 1`` (SDE) or ``1/2`` (ODE); integrate backwards in t.
        """
        c = 0.5 if probability_flow else 1.0
        return self.drift(x, t) - c * broadcast_to_data(self.diffusion_sq(t), x) * score


def _store_floats(obj, **values) -> None:
    """Store validated hyper-parameters on a frozen SDE.

    Concrete values become Python floats, so ``VPSDE(0.1, 20)`` and ``VPSDE(0.2, 15.0)`` have leaves
    of the same (weak float) type and a jitted function taking the SDE compiles once for both.
    """
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def _check_range(obj, lo_name: str, hi_name: str) -> None:
    """Validate a frozen SDE's ``0 < lo < hi`` (finite) and ``T > 0`` and store them as Python floats.

    Traced values (the SDE is built inside ``jit``/``vmap``) cannot raise: an invalid traced value
    is stored as NaN (and both ``lo`` and ``hi`` when ``lo < hi`` fails), so every coefficient of
    the SDE is NaN (loud) instead of silently different; valid traced values are stored unchanged.

    Raises:
      ValueError: naming the offending hyper-parameter.
    """
    names = (lo_name, hi_name, "T")
    lo, hi, T = (concrete_float(n, getattr(obj, n), lo=0.0, lo_open=True, allow_traced=True, poison_traced=True)
                 for n in names)
    check_less(lo_name, lo, hi_name, hi)
    if not is_concrete(lo, hi):
        lo, hi = nan_unless(lo < hi, lo), nan_unless(lo < hi, hi)
    _store_floats(obj, **dict(zip(names, (lo, hi, T))))


@dataclasses.dataclass(frozen=True)
class _LinearBeta(_ScalarSDE):
    """``beta(t) = beta_min + t (beta_max - beta_min)``; ``log alpha_t = -t^2 (bmax-bmin)/4 - t bmin/2``.

    The fields and their validation are shared by :class:`VPSDE` and :class:`SubVPSDE`.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __post_init__(self):
        _check_range(self, "beta_min", "beta_max")

    def beta(self, t: Array) -> Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Array) -> Array:
        t = jnp.asarray(t, jnp.result_type(float))
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_coeff(self, t: Array) -> Array:
        return -0.5 * self.beta(t)

    def _t_from_neg_log_alpha_sq(self, s: Array) -> Array:
        # Solve s = t^2 (bmax-bmin)/2 + t bmin for t >= 0, in the cancellation-free form.
        d = self.beta_max - self.beta_min
        return 2.0 * s / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * d * s))

    @property
    def prior_std(self):
        return 1.0


@pytree_dataclass
class VPSDE(_LinearBeta):
    """Variance-preserving SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw`` (thesis eq. 1.15).

    ``alpha_t = exp(-t^2 (beta_max - beta_min)/4 - t beta_min/2)``, ``sigma_t^2 = 1 - alpha_t^2``,
    ``lambda_t = log(alpha_t^2 / sigma_t^2)``; the prior is ``N(0, I)``.

    Raises:
      ValueError: if ``beta_min <= 0``, ``beta_max <= beta_min`` or ``T <= 0``.
        Under ``jit``/``vmap`` (traced values) such a value is stored as NaN instead (module docstring).
    """

    def marginal_coeffs(self, t: Array) -> tuple[Array, Array]:
        """``(alpha_t, sigma_t)``, each of the shape of ``t``; ``sigma_t = sqrt(-expm1(2 log alpha_t))``."""
        la = self.log_alpha(t)
        return jnp.exp(la), jnp.sqrt(-jnp.expm1(2.0 * la))

    def log_snr(self, t: Array) -> Array:
        """``lambda_t = 2 log alpha_t - log(-expm1(2 log alpha_t))`` (stable at both ends)."""
        la2 = 2.0 * self.log_alpha(t)
        return la2 - jnp.log(-jnp.expm1(la2))

    def t_from_log_snr(self, lam: Array) -> Array:
        """Inverse of :meth:`log_snr`: ``alpha^2 = sigmoid(lambda)`` so ``-log alpha^2 = softplus(-lambda)``."""
        return self._t_from_neg_log_alpha_sq(jax.nn.softplus(-jnp.asarray(lam)))

    def diffusion_sq(self, t: Array) -> Array:
        """``g(t)^2 = beta(t)``."""
        return self.beta(t)


@pytree_dataclass
class SubVPSDE(_LinearBeta):
    """Sub-VP SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - alpha_t^4)) dw`` (Song et al. 2021).

    Same mean as VP, ``sigma_t = 1 - alpha_t^2``; prior ``N(0, I)``.

    Raises:
      ValueError: if ``beta_min <= 0``, ``beta_max <= beta_min`` or ``T <= 0``.
        Under ``jit``/``vmap`` (traced values) such a value is stored as NaN instead (module docstring).
    """

    def marginal_coeffs(self, t: Array) -> tuple[Array, Array]:
        """``(alpha_t, sigma_t)`` with ``sigma_t = -expm1(2 log alpha_t)``."""
        la = self.log_alpha(t)
        return jnp.exp(la), -jnp.expm1(2.0 * la)

    def log_snr(self, t: Array) -> Array:
        """``lambda_t = 2 log alpha_t - 2 log(-expm1(2 log alpha_t))``."""
        la2 = 2.0 * self.log_alpha(t)
        return la2 - 2.0 * jnp.log(-jnp.expm1(la2))

    def t_from_log_snr(self, lam: Array) -> Array:
        """Inverse of :meth:`log_snr`.

        With ``a = alpha^2 = e^{-s}``: ``sqrt(a)/(1-a) = e^{lambda/2}`` gives ``2 sinh(s/2) = e^{-lambda/2}``,
        i.e. ``s = 2 asinh(e^{-lambda/2} / 2)`` (no cancellation at either end).
        """
        s = 2.0 * jnp.arcsinh(0.5 * jnp.exp(-0.5 * jnp.asarray(lam)))
        return self._t_from_neg_log_alpha_sq(s)

    def diffusion_sq(self, t: Array) -> Array:
        """``g(t)^2 = beta(t) (1 - alpha_t^4)``."""
        return self.beta(t) * -jnp.expm1(4.0 * self.log_alpha(t))


@pytree_dataclass
class VESDE(_ScalarSDE):
    """Variance-exploding SDE ``dx = sqrt(d sigma^2/dt) dw`` with ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``.

    Mean ``x_0``, ``sigma_t = sigma(t)`` (Song et al. 2021, thesis §1.2); prior ``N(0, sigma_max^2 I)``.

    Raises:
      ValueError: if ``sigma_min <= 0`` or ``sigma_max <= sigma_min`` or ``T <= 0``.
        Under ``jit``/``vmap`` (traced values) such a value is stored as NaN instead (module docstring).
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0

    def __post_init__(self):
        _check_range(self, "sigma_min", "sigma_max")

    def _log_ratio(self):
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    def sigma(self, t: Array) -> Array:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^(t/T)``."""
        return self.sigma_min * jnp.exp(jnp.asarray(t, jnp.result_type(float)) / self.T * self._log_ratio())

    def marginal_coeffs(self, t: Array) -> tuple[Array, Array]:
        """``(1, sigma(t))``."""
        s = self.sigma(t)
        return jnp.ones_like(s), s

    def log_snr(self, t: Array) -> Array:
        """``lambda_t = -2 log sigma(t)``."""
        return -2.0 * (jnp.log(self.sigma_min) + jnp.asarray(t, jnp.result_type(float)) / self.T * self._log_ratio())

    def t_from_log_snr(self, lam: Array) -> Array:
        """Inverse of :meth:`log_snr`."""
        return self.T * (-0.5 * jnp.asarray(lam) - jnp.log(self.sigma_min)) / self._log_ratio()

    def drift_coeff(self, t: Array) -> Array:
        return jnp.zeros_like(jnp.asarray(t, jnp.result_type(float)))

    def diffusion_sq(self, t: Array) -> Array:
        """``g(t)^2 = d sigma^2/dt = 2 sigma(t)^2 log(sigma_max/sigma_min) / T``."""
        return 2.0 * self.sigma(t) ** 2 * self._log_ratio() / self.T

    @property
    def prior_std(self):
        return self.sigma_max
