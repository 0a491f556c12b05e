"""Critically-damped Langevin diffusion (CLD) on ``u = (x, v)`` (thesis §2.3.3, App. 2.4.2).

Forward SDE (thesis eq. 2.8), per data dimension::

    dx = beta M^-1 v dt
    dv = (-beta x - Gamma beta M^-1 v) dt + sqrt(2 Gamma beta) dw,      Gamma^2 = 4 M

with ``M = 1 / m_inv`` and critical damping ``Gamma = 2 / sqrt(m_inv)``. The state is the tuple
``(x, v)``, each of shape ``(batch, *data)``.

Numerics
--------
With ``tau = 2 beta t / Gamma`` (so ``B(t) = beta t = Gamma tau / 2``) and ``y = 2 tau``, the
transition matrix is ``Phi_t = e^{-tau} [[1 + tau, 2 tau / Gamma], [-Gamma tau / 2, 1 - tau]]``
(eq. 2.31, nilpotent part squared is zero because of critical damping). Since the equilibrium
``diag(1, M)`` is stationary, the covariance of eqs. (2.33)-(2.36) for ``Sigma_0 = diag(a, b)`` is
``Sigma_t = diag(1, M) + Phi_t (diag(a, b) - diag(1, M)) Phi_t^T``, i.e. per dimension::

    Sigma_xx = P3(y) + E ((1 + tau)^2 a + tau^2 b / M)
    Sigma_xv = E tau (Gamma tau - Gamma (1 + tau) a / 2 + 2 (1 - tau) b / Gamma)
    Sigma_vv = M (-expm1(-y) + E y (1 - tau)) + E (M tau^2 a + (1 - tau)^2 b)
    det      = 4 M E s1 (s1 + 2 tau) + a (M E (-expm1(-y) + y + y^2/2) + b E^2) + b E R3(y)

where ``E = e^{-y}``, ``P3(y) = 1 - e^{-y} (1 + y + y^2/2)``, ``R3(y) = 1 - y + y^2/2 - e^{-y}``
and ``s1 = sinh(tau) - tau``. The determinant identity was derived symbolically from
eqs. (2.33)-(2.36). Every term is non-negative for ``a, b >= 0``, so there is no cancellation
between terms; the three cancelling functions ``P3``, ``R3``, ``s1`` (``O(y^3)`` at 0) switch to
their Taylor series for ``y < 1``. The thesis instead adds ``1e-9 I`` and uses float64
(App. 2.4.2.4); these forms are accurate to a few float32 ulps for all ``t`` (see tests). They
live in :mod:`diffjax.sde._series`, shared with the SSCS sampler's exact half-step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import check_finite, check_nonneg, check_option, check_time, concrete_float, is_concrete
from diffjax._pytree import pytree_dataclass
from diffjax.sde._base import batch_sum, broadcast_to_data
from diffjax.sde._series import cholesky_2x2, kernel_cov, safe_sqrt, transition_mean

__all__ = ["CLD"]

_KERNELS = ("hsm", "dsm")


def _check_pair(u):
    if not (isinstance(u, (tuple, list)) and len(u) == 2):
        raise ValueError(f"CLD state must be a tuple (x, v), got {type(u).__name__}")
    x, v = u
    if jnp.shape(x) != jnp.shape(v):
        raise ValueError(f"x and v must have the same shape, got {jnp.shape(x)} and {jnp.shape(v)}")
    return x, v


@pytree_dataclass
class CLD:
    """Critically-damped Langevin diffusion (thesis eqs. 2.7/2.8, 2.28), constant ``beta``.

    Attributes:
      beta: time rescaling ``beta > 0`` (``B(t) = beta t``).
      m_inv: inverse mass ``M^-1 > 0``; ``M = 1 / m_inv``, ``Gamma = 2 / sqrt(m_inv)`` (critical
        damping ``Gamma^2 = 4 M``).
      gamma: initial velocity variance factor, ``v_0 ~ N(0, gamma M I)``; the thesis uses
        ``gamma < 1`` (default 0.04), any ``gamma > 0`` is accepted.
      T: final time (prior ``N(0, I) x N(0, M I)`` at ``t = T``).

    Defaults (thesis): ``beta = 4``, ``M^-1 = 4`` (``M = 0.25``, ``Gamma = 1``), ``gamma = 0.04``.

    Raises:
      ValueError: if ``beta``, ``m_inv``, ``gamma`` or ``T`` is not a finite number ``> 0``. Under
        ``jit``/``vmap`` such a (traced) value cannot raise and is stored as NaN instead, so every
        result is NaN (loud; e.g. ``CLD(m_inv=0)`` would otherwise give ``Gamma = inf``); a traced
        ``t`` outside ``[0, T]`` likewise gives NaN kernels.
    """

    beta: float = 4.0
    m_inv: float = 4.0
    gamma: float = 0.04
    T: float = 1.0

    def __post_init__(self):
        for name in ("beta", "m_inv", "gamma", "T"):
            value = concrete_float(name, getattr(self, name), lo=0.0, lo_open=True, allow_traced=True,
                                   poison_traced=True)
            object.__setattr__(self, name, value)

    # -- constants ---------------------------------------------------------------------------------

    @property
    def M(self):
        """Mass ``M = 1 / m_inv``."""
        return 1.0 / self.m_inv

    @property
    def Gamma(self):
        """Friction ``Gamma = 2 / sqrt(m_inv) = 2 sqrt(M)`` (critical damping)."""
        return 2.0 / jnp.sqrt(self.m_inv) if not is_concrete(self.m_inv) else 2.0 / math.sqrt(self.m_inv)

    def _tau(self, t):
        return 2.0 * self.beta * jnp.asarray(t, jnp.result_type(float)) / self.Gamma

    # -- forward SDE -------------------------------------------------------------------------------

    def drift(self, u, t: Array):
        """Forward drift ``f(u, t) = (beta M^-1 v, -beta x - Gamma beta M^-1 v)`` (thesis eq. 2.8).

        Args:
          u: ``(x, v)``, each ``(batch, *data)``.
          t: scalar or ``(batch,)`` (unused: ``beta`` is constant).

        Returns:
          ``(dx, dv)`` of the shapes of ``u``.
        """
        x, v = _check_pair(u)
        b = self.beta
        return b * self.m_inv * v, -b * x - self.Gamma * b * self.m_inv * v

    def diffusion(self, t: Array) -> Array:
        """Velocity diffusion coefficient ``sqrt(2 Gamma beta)`` (thesis eq. 2.7), shape of ``t``."""
        t = jnp.asarray(t, jnp.result_type(float))
        return jnp.broadcast_to(jnp.sqrt(2.0 * self.Gamma * self.beta), t.shape).astype(t.dtype)

    def diffusion_apply(self, t: Array, z: Array):
        """``G(t) z = (0, sqrt(2 Gamma beta) z)`` for one standard normal ``z`` of the data shape."""
        return jnp.zeros_like(z), broadcast_to_data(self.diffusion(t), z) * z

    # -- perturbation kernel -----------------------------------------------------------------------

    def marginal_mean(self, x0: Array, v0, t: Array):
        """Mean ``mu_t = Phi_t (x0, v0)`` of the kernel (thesis eq. 2.31 with ``B(t) = beta t``).

        ``mu_x = e^{-tau} ((1 + tau) x0 + 2 tau v0 / Gamma)``,
        ``mu_v = e^{-tau} (-Gamma tau x0 / 2 + (1 - tau) v0)``, ``tau = 2 beta t / Gamma``.

        Args:
          x0: ``(batch, *data)``.
          v0: broadcastable to ``x0`` (``0`` for the HSM kernel).
          t: scalar or ``(batch,)`` in ``[0, T]``.

        Returns:
          ``(mean_x, mean_v)``, each of the shape of ``x0``.
        """
        t = check_time(t, self.T)
        x0 = jnp.asarray(x0)
        v0 = jnp.broadcast_to(jnp.asarray(v0, x0.dtype), x0.shape)
        return transition_mean(broadcast_to_data(self._tau(t), x0), self.Gamma, x0, v0)

    def _cov_det(self, t, sxx0, svv0):
        tau = self._tau(t)
        return kernel_cov(tau, self.M, self.Gamma, jnp.asarray(sxx0, tau.dtype), jnp.asarray(svv0, tau.dtype))

    def marginal_cov(self, t: Array, sxx0=0.0, svv0=0.0):
        """Per-dimension covariance of ``u_t`` given ``u_0 ~ N(mu_0, diag(sxx0, svv0) (x) I)`` (eqs. 2.33-2.36).

        Float32-stable form (module docstring): relative error of a few ulps for all ``t >= 0``.
        HSM kernel ``p(u_t | x_0)``: ``sxx0 = 0, svv0 = gamma M``; DSM kernel ``p(u_t | u_0)``: ``0, 0``.

        Args:
          t: scalar or array in ``[0, T]``.
          sxx0, svv0: initial per-dimension variances ``>= 0``, broadcastable against ``t``.

        Returns:
          ``(Sigma_xx, Sigma_xv, Sigma_vv)``, each of the broadcast shape of ``t, sxx0, svv0``.

        Raises:
          ValueError: for concrete ``t`` outside ``[0, T]`` or negative/non-finite ``sxx0``/``svv0``.
        """
        t = self._check_cov_args(t, sxx0, svv0)
        return self._cov_det(t, sxx0, svv0)[:3]

    def marginal_det(self, t: Array, sxx0=0.0, svv0=0.0) -> Array:
        """``Sigma_xx Sigma_vv - Sigma_xv^2`` of :meth:`marginal_cov`, evaluated without cancellation."""
        t = self._check_cov_args(t, sxx0, svv0)
        return self._cov_det(t, sxx0, svv0)[3]

    def _check_cov_args(self, t, sxx0, svv0):
        check_nonneg("sxx0", sxx0)
        check_nonneg("svv0", svv0)
        return check_time(t, self.T)

    def _kernel_init(self, kernel):
        check_option("kernel", kernel, _KERNELS)
        return (0.0, self.gamma * self.M) if kernel == "hsm" else (0.0, 0.0)

    def kernel_cov(self, t: Array, kernel: str = "hsm"):
        """:meth:`marginal_cov` of the HSM (``Sigma_0 = diag(0, gamma M)``) or DSM (``Sigma_0 = 0``) kernel."""
        return self.marginal_cov(t, *self._kernel_init(kernel))

    def cholesky(self, t: Array, kernel: str = "hsm"):
        """Per-dimension Cholesky factor ``L_t`` of the kernel covariance (thesis eq. 2.52).

        ``L_xx = sqrt(Sigma_xx)``, ``L_xv = Sigma_xv / L_xx`` (lower-left entry),
        ``L_vv = sqrt(det / Sigma_xx)`` with the cancellation-free determinant. At ``t = 0``
        (``Sigma_xx = 0``) the factor of ``diag(0, Sigma_vv)`` is returned: ``(0, 0, sqrt(Sigma_vv))``.

        Args:
          t: scalar or array in ``[0, T]``.
          kernel: ``"hsm"`` (``p(u_t | x_0)``) or ``"dsm"`` (``p(u_t | u_0)``).

        Returns:
          ``(L_xx, L_xv, L_vv)``, each of the shape of ``t``.

        Raises:
          ValueError: on an unknown ``kernel`` or a concrete ``t`` outside ``[0, T]``.
        """
        a, b = self._kernel_init(kernel)
        t = check_time(t, self.T)
        return cholesky_2x2(*self._cov_det(t, a, b))

    def ell(self, t: Array, kernel: str = "hsm") -> Array:
        """``ell_t = sqrt(Sigma_xx / (Sigma_xx Sigma_vv - Sigma_xv^2)) = 1 / L_vv`` (thesis eq. 2.55).

        ``grad_v log p_t(u_t | .) = -ell_t eps_v`` (eq. 2.54). Both kernels diverge like ``t^{-1/2}``
        as ``t -> 0+``; at exactly ``t = 0`` the HSM value is ``1 / sqrt(gamma M)`` (the thesis's
        ``ell_0``), the DSM value ``inf``.

        Returns:
          Shape of ``t``.
        """
        a, b = self._kernel_init(kernel)
        t = check_time(t, self.T)
        sxx, _, svv, det = self._cov_det(t, a, b)
        pos = sxx > 0
        sxx_s = jnp.where(pos, sxx, 1.0)
        det_s = jnp.where(pos, det, 1.0)
        return jnp.where(pos, jnp.sqrt(sxx_s / det_s), 1.0 / safe_sqrt(svv))

    def perturb(self, key: Array, x0: Array, t: Array, kernel: str = "hsm"):
        """Draw ``u_t = mu_t + L_t eps`` from the kernel (thesis eq. 2.58).

        HSM: ``mu_t`` from ``(x0, 0)``, covariance with ``Sigma_0 = diag(0, gamma M)``.
        DSM: ``v0 ~ N(0, gamma M I)`` is drawn here, ``mu_t`` from ``(x0, v0)``, ``Sigma_0 = 0``.
        Either way ``grad_v log p_t(u_t | .) = -ell_t(kernel) eps_v``.

        Args:
          key: PRNG key.
          x0: ``(batch, *data)``, finite.
          t: scalar or ``(batch,)`` in ``[0, T]``.
          kernel: ``"hsm"`` or ``"dsm"``.

        Returns:
          ``((x_t, v_t), (eps_x, eps_v))``, all of the shape of ``x0``.

        Raises:
          ValueError: unknown ``kernel``, ``x0`` of rank 0 or non-finite, ``t`` outside ``[0, T]``.
        """
        check_option("kernel", kernel, _KERNELS)
        x0 = jnp.asarray(x0)
        if x0.ndim < 1:
            raise ValueError(f"x0 must have shape (batch, *data), got {x0.shape}")
        check_finite("x0", x0)
        k_ex, k_ev, k_v0 = jax.random.split(key, 3)
        dtype = x0.dtype if jnp.issubdtype(x0.dtype, jnp.floating) else jnp.result_type(float)
        x0 = x0.astype(dtype)
        eps_x = jax.random.normal(k_ex, x0.shape, dtype)
        eps_v = jax.random.normal(k_ev, x0.shape, dtype)
        if kernel == "dsm":
            v0 = jnp.sqrt(self.gamma * self.M) * jax.random.normal(k_v0, x0.shape, dtype)
        else:
            v0 = jnp.zeros_like(x0)
        mx, mv = self.marginal_mean(x0, v0, t)
        lxx, lxv, lvv = (broadcast_to_data(c, x0) for c in self.cholesky(t, kernel))
        return (mx + lxx * eps_x, mv + lxv * eps_x + lvv * eps_v), (eps_x, eps_v)

    def mixed_score_prior_term(self, v: Array, t: Array) -> Array:
        """``-v / Sigma_t^vv`` of the HSM kernel of ``x_0 = 0`` (thesis §2.3.3.2, mixed score).

        Args:
          v: ``(batch, *data)``; t: scalar or ``(batch,)``.

        Returns:
          Shape of ``v``.
        """
        svv = self.marginal_cov(t, 0.0, self.gamma * self.M)[2]
        return -v / broadcast_to_data(svv, v)

    # -- prior ---------------------------------------------------------------------------------------

    def prior_sample(self, key: Array, shape: tuple[int, ...]):
        """Sample the equilibrium ``N(0, I) x N(0, M I)`` (eqs. 2.37-2.40): returns ``(x, v)`` of ``shape``."""
        kx, kv = jax.random.split(key)
        return jax.random.normal(kx, shape), jnp.sqrt(self.M) * jax.random.normal(kv, shape)

    def prior_logp(self, u) -> Array:
        """Log-density of the equilibrium prior summed over data dims: ``(x, v) -> (batch,)``."""
        x, v = _check_pair(u)
        d = math.prod(x.shape[1:])
        M = self.M
        return (
            -0.5 * batch_sum(x**2)
            - 0.5 * batch_sum(v**2) / M
            - d * (math.log(2 * math.pi) + 0.5 * jnp.log(M))
        )

    # -- reverse-time dynamics -------------------------------------------------------------------------

    def reverse_drift(self, u, t: Array, score_v: Array, *, probability_flow: bool = False):
        """Drift of the generative SDE (§2.3.3.3) or probability-flow ODE (eq. 2.62), in forward time.

        ``f(u, t) - c G G^T grad_u log p_t = (beta M^-1 v, -beta x - Gamma beta M^-1 v - 2 c Gamma beta s)``
        with ``c = 1`` (SDE) or ``1/2`` (ODE), ``s = grad_v log p_t(u)``. Integrate with ``dt < 0``:
        ``u + reverse_drift * dt + sqrt(-dt) * diffusion_apply(t, z)`` (no noise for the ODE).

        Args:
          u: ``(x, v)``, each ``(batch, *data)``.
          t: scalar or ``(batch,)``.
          score_v: ``(batch, *data)``.

        Returns:
          ``(drift_x, drift_v)`` of the shapes of ``u``.
        """
        dx, dv = self.drift(u, t)
        if jnp.shape(score_v) != jnp.shape(dv):
            raise ValueError(f"score_v must have the shape of v {jnp.shape(dv)}, got {jnp.shape(score_v)}")
        c = 0.5 if probability_flow else 1.0
        return dx, dv - 2.0 * c * self.Gamma * self.beta * score_v
