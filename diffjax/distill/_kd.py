"""Knowledge distillation of diffusion models into smaller students (thesis §5.3.3, App. 5.4.2).

A student denoiser ``D_theta`` is regressed on a FROZEN teacher ``D_phi`` instead of the clean data
(thesis eq. 5.6): ``E[lambda_sigma ||D_theta(x_0 + n; sigma) - D_phi(x_0 + n; sigma)||^2]``, with
the noise levels, weighting and preconditioning of standard training (eq. 5.4). Mixed training
(eq. 5.9) adds the data term, ``lambda ((1 - a) ||D_theta - D_phi||^2 + a ||D_theta - x_0||^2)``,
which equals distillation plus the regulariser ``2 a lambda (D_theta - D_phi)^T (D_phi - x_0)``
(eq. 5.8) up to a constant (eqs. 5.10-5.14). Guided distillation (eq. 5.7) regresses a student that
also takes the guidance strength ``w`` on the classifier-free-guided teacher
``D^w_phi = (1 + w) D_phi(x; sigma, c) - w D_phi(x; sigma)`` (eq. 5.5), ``w ~ U[w_min, w_max]``.

Two settings share the math:

* :func:`kd_loss` / :func:`guided_kd_loss`: a scalar SDE with eps-type models, exactly like
  :func:`diffjax.losses.dsm_loss`. Since ``D = x_hat - sigma eps`` (``x_hat = x_t / alpha_t``,
  ``sigma = sigma_t / alpha_t``), ``||D_theta - D_phi||^2 / sigma^2 = ||eps_theta - eps_phi||^2``:
  the ``"simple"`` weighting is eq. (5.6) with ``lambda_sigma = 1 / sigma^2``, and the data term of
  eq. (5.9) is then the DSM loss itself.
* :func:`edm_kd_loss`: the EDM-preconditioned denoiser of a :class:`~diffjax.param.DenoiserConfig`
  (thesis ch. 5 trains students with the teacher's preconditioning, ``p(sigma)`` and ``lambda_sigma``).

The teacher is a plain callable closed over its frozen parameters: it is traced into the student's
jitted train step (no host round trip) and receives no gradient (``stop_gradient``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import Array, lax

from diffjax._loss_parts import check_option as _check_option
from diffjax._loss_parts import check_t_min as _check_t_min
from diffjax._loss_parts import check_x0 as _check_x0
from diffjax._loss_parts import eps_hat as _eps_hat
from diffjax._loss_parts import finish as _finish
from diffjax._loss_parts import sample_t as _sample_t
from diffjax.param import DenoiserConfig, precondition
from diffjax._validate import check_sde
from diffjax.sde._base import batch_sum, broadcast_to_data

__all__ = ["kd_loss", "edm_kd_loss", "guided_kd_loss", "guided_model", "conditioned_apply",
           "conditioned_input_dim"]

_PARAMETERIZATIONS = ("eps", "score", "x0", "v")
_WEIGHTINGS = ("simple", "likelihood")


def _check_alpha(alpha: Any) -> float:
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (the data weight of mixed training, thesis eq. 5.9) must be in [0, 1], got {alpha!r}")
    return float(alpha)


def _mixed(student: Array, teacher: Array, target: Array, alpha: float) -> tuple[Array, Array, Array]:
    """Per-example ``(kd, reg, mixed)``: ``||s - t||^2`` (5.6), ``2 a (s - t).(t - x0)`` (5.8) and
    ``(1 - a) ||s - t||^2 + a ||s - x0||^2`` (5.9), all summed over data dims (unweighted)."""
    kd = batch_sum((student - teacher) ** 2)
    reg = 2.0 * alpha * batch_sum((student - teacher) * (teacher - target))
    if alpha == 0.0:
        return kd, reg, kd
    return kd, reg, (1.0 - alpha) * kd + alpha * batch_sum((student - target) ** 2)


def _weight(sde: Any, weighting: str, t: Array, sigma_t: Array) -> Array:
    return jnp.ones_like(t) if weighting == "simple" else sde.diffusion_sq(t) / sigma_t**2


def kd_loss(sde: Any, teacher_eps_fn: Callable, *, parameterization: str = "eps", weighting: str = "simple",
            t_min: float = 1e-5, alpha: float = 0.0) -> Callable:
    """Knowledge distillation of a scalar-SDE model (thesis eq. 5.6; mixed training eq. 5.9).

    ``t ~ U[t_min, T]``, ``x_t = alpha_t x_0 + sigma_t eps`` exactly as in
    :func:`diffjax.losses.dsm_loss`; the student output ``apply_fn(params, x_t, t)`` (read as an
    ``eps``/``score``/``x0``/``v`` prediction and converted to ``eps_theta``) is regressed on the
    frozen teacher's ``eps_phi = teacher_eps_fn(x_t, t)``. Per example:

    ``w(t) [(1 - alpha) ||eps_theta - eps_phi||^2 + alpha ||eps_theta - eps||^2]``

    with ``w = 1`` ("simple": eq. 5.6 with ``lambda_sigma = 1/sigma^2``, see module docstring) or
    ``g(t)^2 / sigma_t^2`` ("likelihood"). ``alpha = 0`` is pure distillation, ``alpha = 1`` plain DSM.

    Args:
      sde: scalar SDE (``marginal_coeffs``, ``diffusion_sq``, ``T``).
      teacher_eps_fn: frozen teacher ``eps_fn(x, t)`` (closed over its parameters).
      parameterization: how the student's output is read: ``"eps" | "score" | "x0" | "v"``.
      weighting: ``"simple" | "likelihood"``.
      t_min: lower end of the time interval, in ``(0, T)``.
      alpha: data weight of mixed training in ``[0, 1]`` (thesis eq. 5.9).

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``; ``aux`` holds per-example
      ``"t"``, ``"x_t"``, ``"eps"``, ``"teacher"`` (``eps_phi``), ``"mse"`` (``||eps_theta - eps_phi||^2``,
      the distillation term (5.6)), ``"reg"`` (the regulariser (5.8), ``2 alpha (eps_theta - eps_phi).(eps_phi - eps)``)
      and ``"weight"``; ``loss_i = weight_i (mse_i + reg_i + alpha ||eps_phi - eps||^2)`` (eq. 5.13).

    Raises:
      ValueError: unknown ``parameterization``/``weighting``, ``t_min`` outside ``(0, T)`` or
        ``alpha`` outside ``[0, 1]``; the loss raises for malformed ``x0``.
      TypeError: ``sde`` is not a scalar SDE.
    """
    check_sde(sde, scalar=True)
    _check_option("parameterization", parameterization, _PARAMETERIZATIONS)
    _check_option("weighting", weighting, _WEIGHTINGS)
    t_min = _check_t_min(t_min, sde.T)
    alpha = _check_alpha(alpha)
    if not callable(teacher_eps_fn):
        raise ValueError(f"teacher_eps_fn must be callable, got {type(teacher_eps_fn).__name__}")

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        x0 = _check_x0(x0)
        k_t, k_eps = jax.random.split(key)
        t = _sample_t(k_t, x0.shape[0], t_min, sde.T)
        alpha_t, sigma_t = sde.marginal_coeffs(t)
        a, s = broadcast_to_data(alpha_t, x0), broadcast_to_data(sigma_t, x0)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        x_t = a * x0 + s * eps
        teacher = lax.stop_gradient(teacher_eps_fn(x_t, t))
        student = _eps_hat(parameterization, apply_fn(params, x_t, t), x_t, a, s)
        kd, reg, mixed = _mixed(student, teacher, eps, alpha)
        weight = _weight(sde, weighting, t, sigma_t)
        aux = {"t": t, "x_t": x_t, "eps": eps, "teacher": teacher, "mse": kd, "reg": reg, "weight": weight}
        return _finish(weight * mixed, aux, reduce)

    return loss


def edm_kd_loss(config: DenoiserConfig, teacher_denoiser: Callable, *, alpha: float = 0.0) -> Callable:
    """Knowledge distillation of a preconditioned EDM denoiser (thesis eqs. 5.6 and 5.9).

    ``sigma ~ config.sample_sigma``, ``x = x_0 + sigma n``; the student ``D_theta = precondition(config, F)``
    with ``F(y, c_noise) = apply_fn(params, y, c_noise)`` (as :func:`diffjax.losses.edm_loss`) is
    regressed on the frozen ``D_phi = teacher_denoiser(x, sigma)``. Per example
    ``lambda(sigma) [(1 - alpha) ||D_theta - D_phi||^2 + alpha ||D_theta - x_0||^2]``.

    Args:
      config: the student's (= teacher's) :class:`~diffjax.param.DenoiserConfig`.
      teacher_denoiser: frozen ``D_phi(x, sigma)``.
      alpha: data weight in ``[0, 1]`` (eq. 5.9).

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``; ``aux`` holds per-example
      ``"sigma"``, ``"x"``, ``"teacher"``, ``"mse"`` (``||D_theta - D_phi||^2``), ``"reg"`` (eq. 5.8
      without ``lambda``) and ``"weight"`` (``lambda(sigma)``).

    Raises:
      ValueError: ``config`` is not a ``DenoiserConfig`` or ``alpha`` outside ``[0, 1]``.
    """
    if not isinstance(config, DenoiserConfig):
        raise ValueError(f"config must be a DenoiserConfig (e.g. edm_config()), got {type(config).__name__}")
    alpha = _check_alpha(alpha)

    def loss(apply_fn, params, key, x0, *, reduce: bool = True):
        x0 = _check_x0(x0)
        k_sigma, k_n = jax.random.split(key)
        sigma = config.sample_sigma(k_sigma, x0.shape[0]).astype(x0.dtype)
        x = x0 + broadcast_to_data(sigma, x0) * jax.random.normal(k_n, x0.shape, x0.dtype)
        teacher = lax.stop_gradient(teacher_denoiser(x, sigma))
        student = precondition(config, lambda y, c: apply_fn(params, y, c))(x, sigma)
        kd, reg, mixed = _mixed(student, teacher, x0, alpha)
        weight = config.loss_weight(sigma)
        aux = {"sigma": sigma, "x": x, "teacher": teacher, "mse": kd, "reg": reg, "weight": weight}
        return _finish(weight * mixed, aux, reduce)

    return loss


def guided_model(cond_fn: Callable, uncond_fn: Callable, w: Array) -> Callable:
    """Classifier-free guidance with a per-example strength (thesis eq. 5.5).

    ``m_w(x, t) = (1 + w) m(x, t | c) - w m(x, t)``, ``w`` scalar or ``(batch,)``. This is the
    convention of :func:`diffjax.samplers.guidance.classifier_free_guidance` (``w = 0``: conditional,
    ``w = -1``: unconditional); it equals ``(1 - w') m(x, t) + w' m(x, t | c)`` (thesis eq. 4.27) with
    ``w' = 1 + w``. The weights sum to one, so guiding eps, the score or the denoiser
    ``D = x_hat - sigma eps`` gives the same guided model in every parameterisation.

    Args:
      cond_fn, uncond_fn: ``(x, t) -> out`` of the shape of ``x``.
      w: guidance strength, scalar or ``(batch,)`` (may be traced).

    Returns:
      ``model_fn(x, t)`` (two model evaluations per call).
    """

    def guided(x, t):
        c, u = cond_fn(x, t), uncond_fn(x, t)
        ww = broadcast_to_data(jnp.asarray(w, c.dtype), c)
        return c + ww * (c - u)

    return guided


def _check_w_range(w_min: Any, w_max: Any) -> tuple[float, float]:
    for name, v in (("w_min", w_min), ("w_max", w_max)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(float(v)):
            raise ValueError(f"{name} must be a finite real number, got {v!r}")
    if not float(w_min) <= float(w_max):
        raise ValueError(f"need w_min <= w_max, got w_min={w_min!r}, w_max={w_max!r}")
    return float(w_min), float(w_max)


def guided_kd_loss(sde: Any, teacher_cond_fn: Callable, teacher_uncond_fn: Callable, *, w_min: float = 0.0,
                   w_max: float = 3.0, parameterization: str = "eps", weighting: str = "simple",
                   t_min: float = 1e-5) -> Callable:
    """Guided distillation (thesis eq. 5.7): a ``w``-conditioned student regressed on the guided teacher.

    The batch is ``(x0, c)`` (``c``: per-example condition, e.g. integer labels ``(batch,)``).
    ``t ~ U[t_min, T]``, ``x_t = alpha_t x_0 + sigma_t eps``, ``w ~ U[w_min, w_max]`` per example, and
    the teacher target is ``eps^w_phi = (1 + w) eps_phi(x_t, t, c) - w eps_phi(x_t, t)`` (eq. 5.5,
    :func:`guided_model`). Per example ``weight(t) ||eps_theta(x_t, t, c, w) - eps^w_phi||^2`` with
    ``eps_theta`` read from ``apply_fn(params, x_t, t, c, w)`` in the given parameterisation
    (see :func:`conditioned_apply` to feed ``c`` and ``w`` to a plain ``ScoreMLP``).

    Args:
      sde: scalar SDE.
      teacher_cond_fn: frozen ``eps_fn(x, t, c)`` of the conditional teacher.
      teacher_uncond_fn: frozen ``eps_fn(x, t)`` of the unconditional teacher (e.g. the same
        network with the null label).
      w_min, w_max: guidance interval (thesis §5.3.4: ``[0, 3]``).
      parameterization, weighting, t_min: as in :func:`kd_loss`.

    Returns:
      ``loss(apply_fn, params, key, batch, *, reduce=True) -> (loss, aux)`` with ``batch = (x0, c)``
      and ``apply_fn(params, x, t, c, w)``; ``aux`` holds per-example ``"t"``, ``"w"``, ``"x_t"``,
      ``"teacher"`` (``eps^w_phi``), ``"mse"`` and ``"weight"``.

    Raises:
      ValueError: bad options, ``t_min`` or ``w`` interval; the loss raises for a batch that is not
        ``(x0, c)``.
      TypeError: ``sde`` is not a scalar SDE.
    """
    check_sde(sde, scalar=True)
    _check_option("parameterization", parameterization, _PARAMETERIZATIONS)
    _check_option("weighting", weighting, _WEIGHTINGS)
    t_min = _check_t_min(t_min, sde.T)
    w_min, w_max = _check_w_range(w_min, w_max)

    def loss(apply_fn, params, key, batch, *, reduce: bool = True):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"guided_kd_loss expects the batch (x0, c), got {type(batch).__name__}")
        x0, c = batch
        x0 = _check_x0(x0)
        k_t, k_eps, k_w = jax.random.split(key, 3)
        n = x0.shape[0]
        t = _sample_t(k_t, n, t_min, sde.T)
        w = jax.random.uniform(k_w, (n,), x0.dtype, w_min, w_max)
        alpha_t, sigma_t = sde.marginal_coeffs(t)
        a, s = broadcast_to_data(alpha_t, x0), broadcast_to_data(sigma_t, x0)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        x_t = a * x0 + s * eps
        target = guided_model(lambda x, tt: teacher_cond_fn(x, tt, c), teacher_uncond_fn, w)(x_t, t)
        target = lax.stop_gradient(target)
        student = _eps_hat(parameterization, apply_fn(params, x_t, t, c, w), x_t, a, s)
        mse = batch_sum((student - target) ** 2)
        weight = _weight(sde, weighting, t, sigma_t)
        aux = {"t": t, "w": w, "x_t": x_t, "teacher": target, "mse": mse, "weight": weight}
        return _finish(weight * mse, aux, reduce)

    return loss


def _w_features(w: Array, n: int) -> Array:
    """``[w, sin(f_k w), cos(f_k w)]`` with ``f_k = 2^k / 2``, ``k < (n - 1) // 2``; shape ``(batch, n)``."""
    m = (n - 1) // 2
    freqs = 0.5 * 2.0 ** jnp.arange(m, dtype=w.dtype)
    ang = w[:, None] * freqs
    out = jnp.concatenate([w[:, None], jnp.sin(ang), jnp.cos(ang)], axis=-1)
    return jnp.pad(out, ((0, 0), (0, n - out.shape[1])))


def conditioned_input_dim(data_dim: int, *, num_classes: int | None = None, w_features: int = 7) -> int:
    """Input width of the network wrapped by :func:`conditioned_apply` (for ``init_params``)."""
    return int(data_dim) + (int(num_classes) if num_classes else 0) + int(w_features)


def conditioned_apply(apply_fn: Callable, *, num_classes: int | None = None, w_features: int = 7) -> Callable:
    """Feed a condition ``c`` and guidance strength ``w`` to a vector network by concatenation.

    ``apply(params, x, t, c, w) = apply_fn(params, [x, one_hot(c), phi(w)], t)`` with
    ``phi(w) = [w, sin(f_k w), cos(f_k w)]`` (``w_features`` columns). The wrapped network must
    output the data dimension (``ScoreMLP(out_dim=d)``) and be initialised for inputs of width
    :func:`conditioned_input_dim`. Used for the ``w``-conditioned student of guided distillation
    (thesis eq. 5.7).

    Args:
      apply_fn: ``apply_fn(params, x, t)`` of a vector network.
      num_classes: number of integer labels ``c`` (one-hot encoded); ``None`` ignores ``c``.
      w_features: size of the ``w`` embedding (``>= 1``).

    Returns:
      ``apply(params, x, t, c, w)``, ``x`` of shape ``(batch, d)``, ``c`` ``(batch,)`` integers,
      ``w`` scalar or ``(batch,)``.

    Raises:
      ValueError: ``num_classes < 1`` or ``w_features < 1``; at trace time, ``x`` not 2-D.
    """
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    if not isinstance(w_features, int) or isinstance(w_features, bool) or w_features < 1:
        raise ValueError(f"w_features must be a positive int, got {w_features!r}")

    def apply(params, x, t, c, w):
        if x.ndim != 2:
            raise ValueError(f"conditioned_apply expects x of shape (batch, d), got {x.shape}")
        n = x.shape[0]
        parts = [x]
        if num_classes is not None:
            parts.append(jax.nn.one_hot(jnp.asarray(c), num_classes, dtype=x.dtype))
        parts.append(_w_features(jnp.broadcast_to(jnp.asarray(w, x.dtype), (n,)), w_features))
        return apply_fn(params, jnp.concatenate(parts, axis=-1), t)

    return apply
