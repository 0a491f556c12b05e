"""Network parameterisations mapped onto one score / denoiser interface (pure callables).

Samplers and likelihood code only ever see model functions such as ``score_fn(x, t)``,
``eps_fn(x, t)`` or an EDM denoiser ``D(x, sigma)``. This module converts between them.

Scalar SDEs (thesis §1.2.3, eqs. 1.24-1.27), kernel ``x_t = alpha_t x_0 + sigma_t eps``:

* score        ``s = -eps / sigma_t``                              (thesis eq. 1.24)
* data (x0)    ``x0 = (x_t - sigma_t eps) / alpha_t``              (thesis eq. 1.25)
* v            ``v = alpha_t eps - sigma_t x0``                    (Salimans & Ho, thesis [244])
* EDM denoiser ``D(x_hat, sigma) = x0`` with ``x_hat = x_t / alpha_t`` and
  ``sigma = sigma_t / alpha_t = exp(-lambda_t / 2)`` (CDL App. B.3); ``t`` is recovered from
  ``sigma`` through ``sde.t_from_log_snr(-2 log sigma)``.

EDM preconditioning (thesis eq. 4.23 / eq. 1.26 and Table 4.7): a :class:`DenoiserConfig`
bundles ``c_skip, c_out, c_in, c_noise`` with the training noise distribution and loss
weight of one "DM config" (VP, VE, v-prediction, EDM), and :func:`precondition` turns a raw
network ``F(x, c_noise)`` into ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``.

CLD (thesis §2.3.3.2): the mixed score ``s = -ell_t alpha_theta`` with
``alpha_theta = ell_t^{-1} v / Sigma_t^vv + alpha'_theta`` (see :func:`cld_mixed_score`).

All model functions take ``x`` of shape ``(batch, *data)`` and ``t`` (or ``sigma``) scalar or
``(batch,)``; coefficients are broadcast with :func:`diffjax.sde.broadcast_to_data`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from diffjax._validate import as_float, check_int, check_less, check_option, check_sde, concrete_float, is_concrete
from diffjax.sde._base import broadcast_to_data

__all__ = [
    "score_from_eps",
    "eps_from_score",
    "eps_from_x0",
    "x0_from_eps",
    "eps_from_v",
    "v_from_eps",
    "denoiser_from_eps",
    "eps_from_denoiser",
    "DenoiserConfig",
    "vp_config",
    "ve_config",
    "v_prediction_config",
    "edm_config",
    "precondition",
    "raw_target",
    "cld_mixed_score",
    "cld_alpha_prime_from_score",
    "MODEL_KINDS",
    "Model",
    "model",
    "as_kind",
    "adapter",
]

ModelFn = Callable[[Array, Array], Array]


def _coeffs(sde, t: Array, x: Array) -> tuple[Array, Array]:
    alpha, sigma = sde.marginal_coeffs(t)
    return broadcast_to_data(alpha, x), broadcast_to_data(sigma, x)


# --------------------------------------------------------------------------------------------
# Scalar SDEs: converters between model functions of (x, t)
# --------------------------------------------------------------------------------------------


def score_from_eps(sde, eps_fn: ModelFn) -> ModelFn:
    """Score model from a noise-prediction model: ``s(x, t) = -eps(x, t) / sigma_t`` (thesis eq. 1.24).

    Args:
      sde: scalar SDE with ``marginal_coeffs(t) -> (alpha_t, sigma_t)``.
      eps_fn: ``eps_fn(x, t)``, ``x`` of shape ``(batch, *data)``, ``t`` scalar or ``(batch,)``.

    Returns:
      ``score_fn(x, t)`` of the shape of ``x``.
    """

    def score_fn(x, t):
        _, sigma = _coeffs(sde, t, x)
        return -eps_fn(x, t) / sigma

    return score_fn


def eps_from_score(sde, score_fn: ModelFn) -> ModelFn:
    """Noise prediction from a score model: ``eps(x, t) = -sigma_t s(x, t)`` (thesis eq. 1.24)."""

    def eps_fn(x, t):
        _, sigma = _coeffs(sde, t, x)
        return -sigma * score_fn(x, t)

    return eps_fn


def eps_from_x0(sde, x0_fn: ModelFn) -> ModelFn:
    """Noise prediction from a data prediction: ``eps = (x_t - alpha_t x0) / sigma_t`` (thesis eq. 1.25)."""

    def eps_fn(x, t):
        alpha, sigma = _coeffs(sde, t, x)
        return (x - alpha * x0_fn(x, t)) / sigma

    return eps_fn


def x0_from_eps(sde, eps_fn: ModelFn) -> ModelFn:
    """Data prediction from a noise prediction: ``x0 = (x_t - sigma_t eps) / alpha_t`` (thesis eq. 1.25)."""

    def x0_fn(x, t):
        alpha, sigma = _coeffs(sde, t, x)
        return (x - sigma * eps_fn(x, t)) / alpha

    return x0_fn


def eps_from_v(sde, v_fn: ModelFn) -> ModelFn:
    """Noise prediction from a v-prediction ``v = alpha_t eps - sigma_t x0`` (Salimans & Ho, thesis [244]).

    Eliminating ``x0`` with ``x_t = alpha_t x0 + sigma_t eps`` gives
    ``eps = (alpha_t v + sigma_t x_t) / (alpha_t^2 + sigma_t^2)`` (``alpha^2 + sigma^2 = 1`` for VP).
    """

    def eps_fn(x, t):
        alpha, sigma = _coeffs(sde, t, x)
        return (alpha * v_fn(x, t) + sigma * x) / (alpha**2 + sigma**2)

    return eps_fn


def v_from_eps(sde, eps_fn: ModelFn) -> ModelFn:
    """v-prediction from a noise prediction: ``v = alpha_t eps - sigma_t x0 = ((alpha^2 + sigma^2) eps - sigma x_t) / alpha``."""

    def v_fn(x, t):
        alpha, sigma = _coeffs(sde, t, x)
        return ((alpha**2 + sigma**2) * eps_fn(x, t) - sigma * x) / alpha

    return v_fn


def denoiser_from_eps(sde, eps_fn: ModelFn) -> ModelFn:
    """EDM denoiser ``D(x_hat, sigma)`` from a noise prediction of a scalar SDE.

    EDM coordinates (thesis eq. 4.23, CDL App. B.3): ``x_hat = x_t / alpha_t`` and
    ``sigma = sigma_t / alpha_t``, so ``x_hat = x_0 + sigma n``. The time is
    ``t = sde.t_from_log_snr(-2 log sigma)`` and ``D(x_hat, sigma) = x_hat - sigma eps(alpha_t x_hat, t)``.

    Args:
      sde: scalar SDE (``marginal_coeffs``, ``t_from_log_snr``).
      eps_fn: ``eps_fn(x_t, t)``.

    Returns:
      ``denoiser(x_hat, sigma)``: ``x_hat`` of shape ``(batch, *data)``, ``sigma`` scalar or
      ``(batch,)`` with ``sigma`` inside the SDE's range ``[sigma_0/alpha_0, sigma_T/alpha_T]``.
    """

    def denoiser(x_hat, sigma):
        sigma = jnp.asarray(sigma, jnp.result_type(float))
        t = sde.t_from_log_snr(-2.0 * jnp.log(sigma))
        alpha, _ = _coeffs(sde, t, x_hat)
        s = broadcast_to_data(sigma, x_hat)
        return x_hat - s * eps_fn(alpha * x_hat, t)

    return denoiser


def eps_from_denoiser(sde, denoiser: ModelFn) -> ModelFn:
    """Noise prediction of a scalar SDE from an EDM denoiser (inverse of :func:`denoiser_from_eps`).

    ``eps(x_t, t) = (x_hat - D(x_hat, sigma)) / sigma`` with ``x_hat = x_t / alpha_t`` and
    ``sigma = sigma_t / alpha_t``.
    """

    def eps_fn(x, t):
        alpha, sigma_t = sde.marginal_coeffs(t)
        sigma = sigma_t / alpha
        a, s = broadcast_to_data(alpha, x), broadcast_to_data(sigma, x)
        x_hat = x / a
        return (x_hat - denoiser(x_hat, sigma)) / s

    return eps_fn


# --------------------------------------------------------------------------------------------
# EDM preconditioning (thesis Table 4.7, eq. 4.23)
# --------------------------------------------------------------------------------------------


class DenoiserConfig(NamedTuple):
    """One "DM config" of thesis Table 4.7: preconditioning, noise distribution, loss weight.

    Every field is a pure function of the EDM noise level ``sigma`` (scalar or ``(batch,)``),
    except ``sample_sigma``. Build with :func:`vp_config`, :func:`ve_config`,
    :func:`v_prediction_config` or :func:`edm_config`; use with :func:`precondition` and
    :func:`diffjax.losses.edm_loss`. Like an optax ``GradientTransformation`` it holds functions:
    close over it (or mark it static), do not pass it to ``jit`` as a traced argument.

    Attributes:
      c_skip: skip scaling ``c_skip(sigma)``.
      c_out: output scaling ``c_out(sigma)``.
      c_in: input scaling ``c_in(sigma)``.
      c_noise: noise conditioning ``c_noise(sigma)`` fed to the network.
      sample_sigma: ``sample_sigma(key, n) -> (n,)`` training noise levels ``sigma ~ p(sigma)``.
      loss_weight: ``lambda(sigma)``.
      name: config name (``"vp"``, ``"ve"``, ``"v_prediction"``, ``"edm"``).
    """

    c_skip: Callable[[Array], Array]
    c_out: Callable[[Array], Array]
    c_in: Callable[[Array], Array]
    c_noise: Callable[[Array], Array]
    sample_sigma: Callable[[Array, int], Array]
    loss_weight: Callable[[Array], Array]
    name: str


def _f(sigma: Array) -> Array:
    return jnp.asarray(sigma, jnp.result_type(float))


def _positive(name: str, value) -> float:
    """A finite scalar ``> 0`` as a float (a traced value passes unchecked)."""
    return concrete_float(name, value, lo=0.0, lo_open=True, allow_traced=True)


def vp_config(beta_d: float = 19.9, beta_min: float = 0.1, eps_t: float = 1e-5, M: int = 1000) -> DenoiserConfig:
    """The VP config of thesis Table 4.7 (Song et al. 2021, thesis [263]).

    ``c_skip = 1``, ``c_out = -sigma``, ``c_in = 1/sqrt(sigma^2 + 1)``, ``c_noise = (M - 1) t``;
    training ``t ~ U(eps_t, 1)``, ``lambda(sigma) = 1/sigma^2``, with
    ``sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)`` — which is ``sigma_t / alpha_t`` of
    ``VPSDE(beta_min, beta_max=beta_min + beta_d)``. ``F`` thus predicts the noise ``eps``.
    ``t`` is recovered from ``sigma`` in cancellation-free form
    ``t = 2 s / (beta_min + sqrt(beta_min^2 + 2 beta_d s))`` with ``s = log1p(sigma^2)``.

    Raises:
      ValueError: if ``beta_d``, ``beta_min`` or ``M - 1`` is not positive or ``eps_t`` not in ``(0, 1)``.
    """
    beta_d, beta_min = _positive("beta_d", beta_d), _positive("beta_min", beta_min)
    eps_t = as_float("eps_t", eps_t)
    if is_concrete(eps_t) and not 0 < eps_t < 1:
        raise ValueError(f"eps_t must lie in (0, 1), got {eps_t}")
    check_int("M", M, 2)

    def sigma_of_t(t):
        return jnp.sqrt(jnp.expm1(0.5 * beta_d * t**2 + beta_min * t))

    def t_of_sigma(sigma):
        s = jnp.log1p(_f(sigma) ** 2)
        return 2.0 * s / (beta_min + jnp.sqrt(beta_min**2 + 2.0 * beta_d * s))

    def sample_sigma(key, n):
        return sigma_of_t(jax.random.uniform(key, (n,), minval=eps_t, maxval=1.0))

    return DenoiserConfig(
        c_skip=lambda sigma: jnp.ones_like(_f(sigma)),
        c_out=lambda sigma: -_f(sigma),
        c_in=lambda sigma: jax.lax.rsqrt(_f(sigma) ** 2 + 1.0),
        c_noise=lambda sigma: (M - 1) * t_of_sigma(sigma),
        sample_sigma=sample_sigma,
        loss_weight=lambda sigma: 1.0 / _f(sigma) ** 2,
        name="vp",
    )


def ve_config(sigma_min: float = 0.002, sigma_max: float = 80.0) -> DenoiserConfig:
    """The VE config of thesis Table 4.7 (Song et al. 2021, thesis [263]; DPDM's range 0.002..80).

    ``c_skip = 1``, ``c_out = sigma``, ``c_in = 1``, ``c_noise = ln(sigma / 2)``; training
    ``ln sigma ~ U(ln sigma_min, ln sigma_max)``, ``lambda(sigma) = 1/sigma^2``.
    ``F`` thus predicts ``-eps`` (i.e. ``sigma * score``).

    Raises:
      ValueError: unless ``0 < sigma_min < sigma_max``.
    """
    sigma_min, sigma_max = _positive("sigma_min", sigma_min), _positive("sigma_max", sigma_max)
    check_less("sigma_min", sigma_min, "sigma_max", sigma_max)
    lo, hi = math.log(sigma_min), math.log(sigma_max)

    def sample_sigma(key, n):
        return jnp.exp(jax.random.uniform(key, (n,), minval=lo, maxval=hi))

    return DenoiserConfig(
        c_skip=lambda sigma: jnp.ones_like(_f(sigma)),
        c_out=lambda sigma: _f(sigma),
        c_in=lambda sigma: jnp.ones_like(_f(sigma)),
        c_noise=lambda sigma: jnp.log(0.5 * _f(sigma)),
        sample_sigma=sample_sigma,
        loss_weight=lambda sigma: 1.0 / _f(sigma) ** 2,
        name="ve",
    )


def v_prediction_config(log_snr_min: float = -9.0, log_snr_max: float = 13.0) -> DenoiserConfig:
    """The v-prediction config of thesis Table 4.7 (Salimans & Ho 2022, thesis [244]).

    ``c_skip = 1/(sigma^2 + 1)``, ``c_out = sigma / sqrt(1 + sigma^2)``, ``c_in = 1/sqrt(sigma^2 + 1)``,
    ``c_noise = t`` with the cosine schedule ``sigma(t) = sqrt(cos^-2(pi t / 2) - 1) = tan(pi t / 2)``;
    training ``t ~ U(eps_min, eps_max)``, ``lambda(sigma) = (sigma^2 + 1)/sigma^2`` ("SNR+1").
    Table 4.7 gives ``eps_min = 2/pi arccos(1/sqrt(1 + e^-13))`` and
    ``eps_max = 2/pi arccos(1/sqrt(1 + e^9))``, i.e. log-SNR ``-2 ln sigma`` in ``[-9, 13]``; they
    are passed here as ``log_snr_min/max``. With the table's (positive) ``c_out`` the network
    ``F`` predicts ``-v`` where ``v = alpha eps - sigma_vp x0``.

    Raises:
      ValueError: unless ``log_snr_min < log_snr_max`` (both finite).
    """
    lmin, lmax = as_float("log_snr_min", log_snr_min), as_float("log_snr_max", log_snr_max)
    check_less("log_snr_min", lmin, "log_snr_max", lmax)
    # sigma = exp(-lambda/2) = tan(pi t / 2)  =>  t = (2/pi) arctan(exp(-lambda/2)).
    eps_min = 2.0 / math.pi * math.atan(math.exp(-0.5 * lmax))
    eps_max = 2.0 / math.pi * math.atan(math.exp(-0.5 * lmin))

    def sample_sigma(key, n):
        t = jax.random.uniform(key, (n,), minval=eps_min, maxval=eps_max)
        return jnp.tan(0.5 * math.pi * t)

    return DenoiserConfig(
        c_skip=lambda sigma: 1.0 / (_f(sigma) ** 2 + 1.0),
        c_out=lambda sigma: _f(sigma) * jax.lax.rsqrt(_f(sigma) ** 2 + 1.0),
        c_in=lambda sigma: jax.lax.rsqrt(_f(sigma) ** 2 + 1.0),
        c_noise=lambda sigma: 2.0 / math.pi * jnp.arctan(_f(sigma)),
        sample_sigma=sample_sigma,
        loss_weight=lambda sigma: 1.0 + 1.0 / _f(sigma) ** 2,
        name="v_prediction",
    )


def edm_config(sigma_data: float = 0.5, P_mean: float = -1.2, P_std: float = 1.2) -> DenoiserConfig:
    """The EDM config of thesis Table 4.7 (Karras et al. 2022, thesis [141]).

    ``c_skip = sd^2/(sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sd^2 + sigma^2)``,
    ``c_in = 1/sqrt(sigma^2 + sd^2)``, ``c_noise = ln(sigma)/4``; training
    ``ln sigma ~ N(P_mean, P_std^2)``, ``lambda(sigma) = (sigma^2 + sd^2)/(sigma sd)^2``, with
    ``sd = sigma_data``. The default ``sigma_data = 0.5`` is Karras et al.'s; DPDM (Table 4.7) uses
    ``sqrt(1/3)``, the std of ``U(-1, 1)``, to avoid spending privacy on the data std.

    Raises:
      ValueError: if ``sigma_data`` or ``P_std`` is not positive or ``P_mean`` is not finite.
    """
    sd, P_std = _positive("sigma_data", sigma_data), _positive("P_std", P_std)
    P_mean = as_float("P_mean", P_mean)

    def sample_sigma(key, n):
        return jnp.exp(P_mean + P_std * jax.random.normal(key, (n,)))

    return DenoiserConfig(
        c_skip=lambda sigma: sd**2 / (_f(sigma) ** 2 + sd**2),
        c_out=lambda sigma: _f(sigma) * sd * jax.lax.rsqrt(_f(sigma) ** 2 + sd**2),
        c_in=lambda sigma: jax.lax.rsqrt(_f(sigma) ** 2 + sd**2),
        c_noise=lambda sigma: 0.25 * jnp.log(_f(sigma)),
        sample_sigma=sample_sigma,
        loss_weight=lambda sigma: (_f(sigma) ** 2 + sd**2) / (_f(sigma) * sd) ** 2,
        name="edm",
    )


def precondition(config: DenoiserConfig, F: ModelFn) -> ModelFn:
    """Denoiser from a raw network: ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` (thesis eq. 4.23).

    Args:
      config: a :class:`DenoiserConfig`.
      F: raw network ``F(x, c_noise)``; ``x`` of shape ``(batch, *data)``, ``c_noise`` of the shape
        of ``sigma`` (scalar or ``(batch,)``).

    Returns:
      ``denoiser(x, sigma)`` of the shape of ``x`` (``x = x_0 + sigma n``).
    """

    def denoiser(x, sigma):
        sigma = _f(sigma)
        c = lambda fn: broadcast_to_data(fn(sigma), x)  # noqa: E731
        return c(config.c_skip) * x + c(config.c_out) * F(c(config.c_in) * x, config.c_noise(sigma))

    return denoiser


def raw_target(config: DenoiserConfig, x: Array, x0: Array, sigma: Array) -> Array:
    """Effective regression target of the raw network: ``F_target = (x0 - c_skip x) / c_out``.

    ``lambda ||D - x0||^2 = lambda c_out^2 ||F - F_target||^2`` and every config of Table 4.7 has
    ``lambda c_out^2 = 1`` (Karras et al. 2022, eq. 8), so ``edm_loss`` is a plain MSE on ``F``.
    Shapes: ``x, x0`` ``(batch, *data)``; ``sigma`` scalar or ``(batch,)``.
    """
    sigma = _f(sigma)
    return (x0 - broadcast_to_data(config.c_skip(sigma), x) * x) / broadcast_to_data(config.c_out(sigma), x)


# --------------------------------------------------------------------------------------------
# CLD mixed score (thesis §2.3.3.2)
# --------------------------------------------------------------------------------------------


def cld_mixed_score(cld, alpha_prime_fn: Callable) -> Callable:
    """CLD velocity score from the mixed-score network output (thesis §2.3.3.2, eq. 2.12).

    ``s(u, t) = -ell_t alpha_theta(u, t)`` with ``alpha_theta = ell_t^{-1} v / Sigma_t^vv + alpha'_theta``,
    i.e. ``s = -v / Sigma_t^vv - ell_t alpha'_theta``, where ``ell_t`` is the HSM ``ell`` (eq. 2.55) and
    ``-v / Sigma_t^vv`` (``cld.mixed_score_prior_term``) is the velocity score of
    ``p_t(u_t | x_0 = 0)`` under the HSM kernel, taken as if ``v`` were independent of ``x`` (the
    thesis' "Normal with covariance Sigma_t^vv I"; it is exact at ``t = 0``, not the full joint
    velocity score of a point mass, which also couples to ``x``).

    Args:
      cld: a :class:`diffjax.sde.CLD`.
      alpha_prime_fn: ``alpha_prime_fn((x, v), t)`` -> ``(batch, *data)``, the network residual.

    Returns:
      ``score_v_fn((x, v), t)`` -> ``grad_v log p_t(u)``, shape of ``v``; ``t`` scalar or ``(batch,)``.
    """

    def score_v_fn(u, t):
        _, v = u
        ell = broadcast_to_data(cld.ell(t, kernel="hsm"), v)
        return cld.mixed_score_prior_term(v, t) - ell * alpha_prime_fn(u, t)

    return score_v_fn


def cld_alpha_prime_from_score(cld, score_v_fn: Callable) -> Callable:
    """Inverse of :func:`cld_mixed_score`: ``alpha'(u, t) = (-v / Sigma_t^vv - s(u, t)) / ell_t``.

    Turns an exact velocity score (e.g. :func:`diffjax.analytic.cld_score_v_fn`) into the
    residual a perfect mixed-score network would output.
    """

    def alpha_prime_fn(u, t):
        _, v = u
        ell = broadcast_to_data(cld.ell(t, kernel="hsm"), v)
        return (cld.mixed_score_prior_term(v, t) - score_v_fn(u, t)) / ell

    return alpha_prime_fn


# --------------------------------------------------------------------------------------------
# Declared model kinds: what a model predicts, and conversion to what a sampler rule needs
# --------------------------------------------------------------------------------------------

#: What a model function can predict. ``score``, ``eps``, ``x0`` and ``v`` are functions of
#: ``(x_t, t)`` of a scalar SDE and convert into each other (thesis eqs. 1.24-1.25); ``denoiser`` is
#: ``D(x_hat, sigma)`` in EDM coordinates; ``cld_velocity_score`` is ``s((x, v), t)`` of CLD;
#: ``eps_and_derivative`` is a GENIE head's ``(eps, d eps / d gamma)``. The last two convert to nothing.
MODEL_KINDS = ("score", "eps", "x0", "v", "denoiser", "cld_velocity_score", "eps_and_derivative")
_TIME_KINDS = ("score", "eps", "x0", "v")
_TO_EPS = {"eps": None, "score": eps_from_score, "x0": eps_from_x0, "v": eps_from_v, "denoiser": eps_from_denoiser}
_FROM_EPS = {"eps": None, "score": score_from_eps, "x0": x0_from_eps, "v": v_from_eps}


class Model:
    """A model function that declares what it predicts (see :func:`model`).

    A plain callable (not a pytree): it can be closed over inside ``jit`` and passed as a static
    argument (hashed by identity). Calling it calls ``fn``.

    Attributes:
      fn: the model function.
      kind: one of :data:`MODEL_KINDS`.
      sde: the scalar SDE whose time ``fn`` takes (``None``: not declared).
    """

    __slots__ = ("fn", "kind", "sde")

    def __init__(self, fn: Callable, kind: str, sde=None):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        check_option("kind", kind, MODEL_KINDS)
        if sde is not None:
            check_sde(sde, scalar=True)
        self.fn, self.kind, self.sde = fn, kind, sde

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Model({getattr(self.fn, '__name__', type(self.fn).__name__)}, kind={self.kind!r})"


def model(fn: Callable, kind: str, sde=None) -> Model:
    """Declare what ``fn`` predicts, so that every sampler rule can use it.

    A rule states the kind it calls (``StepRule.model_kind``: ``ddpm_rule``/``ddim_rule``/GENIE eps,
    DPM-Solver++/UniPC x0 (``sde`` given) or denoiser (``sde=None``), EM/PC/probability-flow score,
    EDM/ancestral denoiser, SSCS CLD velocity score); the executors convert a declared model to it
    with :func:`as_kind` and the rule's SDE. ``dj.sample(dpmpp_2m_rule(sde), model(eps_fn, "eps"), ...)``
    thus runs on ``x0 = (x - sigma_t eps) / alpha_t``. A bare (undeclared) callable is passed to the
    rule as is and must already be of the rule's kind.

    Args:
      fn: ``fn(x, t)`` (or ``D(x_hat, sigma)`` for ``"denoiser"``, ``s((x, v), t)`` for CLD).
      kind: one of :data:`MODEL_KINDS`.
      sde: the scalar SDE whose time ``fn`` takes; needed only to drive a rule in EDM sigma
        coordinates (``sde=None`` rules: ``edm_heun_rule``, ancestral, DPM-Solver++ without SDE)
        with a model of ``(x, t)``. Rules with their own SDE convert with the rule's SDE.

    Returns:
      A callable :class:`Model`.

    Raises:
      ValueError: unknown ``kind``. TypeError: ``fn`` not callable, ``sde`` not a scalar SDE.
    """
    return Model(fn, kind, sde)


def as_kind(fn: Callable, kind: str, sde=None) -> Callable:
    """``fn`` as a model of ``kind``: a declared :class:`Model` is converted, a bare callable returned as is.

    Conversions (through ``eps``, thesis eqs. 1.24-1.25; ``v``: Salimans & Ho): among ``score``,
    ``eps``, ``x0``, ``v`` and from ``denoiser`` with ``sde`` (the target's time, e.g. the rule's SDE);
    to ``denoiser`` from a time kind with the model's declared SDE (:func:`denoiser_from_eps`). The
    same kind is returned unconverted (``fn.fn``).

    Args:
      fn: a :class:`Model` (or a bare callable). kind: the target, one of :data:`MODEL_KINDS`.
      sde: the scalar SDE whose time the converted model takes (``None``: EDM sigma coordinates).

    Returns:
      A model function of ``kind``.

    Raises:
      TypeError: no conversion from ``fn.kind`` to ``kind`` exists (the message names both).
      ValueError: a conversion that needs an SDE none was given for.
    """
    check_option("kind", kind, MODEL_KINDS)
    if not isinstance(fn, Model):
        return fn
    src = fn.kind
    if src == kind:
        return fn.fn
    if kind in _TIME_KINDS and src in _TO_EPS:
        if sde is None:
            raise ValueError(f"model_fn declares kind {src!r}; converting it to {kind!r} needs the rule's SDE")
        return _from_eps(kind, _to_eps(src, fn.fn, sde), sde)
    if kind == "denoiser" and src in _TIME_KINDS:
        if fn.sde is None:
            raise ValueError(f"model_fn declares kind {src!r} but the rule needs 'denoiser' (EDM sigma coordinates): "
                             f"declare the model's SDE, param.model(fn, {src!r}, sde=...)")
        return denoiser_from_eps(fn.sde, _to_eps(src, fn.fn, fn.sde))
    raise TypeError(f"model_fn declares kind {src!r} but the rule needs {kind!r}; no conversion exists")


def _to_eps(src: str, fn: Callable, sde) -> Callable:
    return fn if _TO_EPS[src] is None else _TO_EPS[src](sde, fn)


def _from_eps(kind: str, eps_fn: Callable, sde) -> Callable:
    return eps_fn if _FROM_EPS[kind] is None else _FROM_EPS[kind](sde, eps_fn)


def adapter(kind: str, sde=None) -> Callable[[Callable], Callable]:
    """``fn -> as_kind(fn, kind, sde)``: a rule's ``StepRule.adapt`` (closes over the rule's SDE, so the
    rule stays hashable by identity even when the SDE holds traced values).

    Raises:
      ValueError: unknown ``kind``.
    """
    check_option("kind", kind, MODEL_KINDS)

    def adapt(fn):
        return as_kind(fn, kind, sde)

    return adapt
