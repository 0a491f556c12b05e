"""Knowledge-distillation objectives for diffusion students (thesis §5.3.3, eqs. 5.5-5.14, App. 5.4.2).

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
jitted train step (no host round trip) and receives no gradient (``stop_gradient``). The
``w``-conditioned student network of guided distillation is built with
:func:`diffjax.distill.conditioned_apply`; the GENIE derivative-head loss lives with the head in
:mod:`diffjax.distill`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax import Array, lax

from diffjax._validate import check_option, check_sde, check_t_min, concrete_float
from diffjax.losses._scaffold import (PARAMETERIZATIONS, SCALAR_WEIGHTINGS, add_noise, check_x0, edm_sigma, eps_hat,
                                      finish, level_loss, perturb, sample_t, scalar_weight, uniform_time)
from diffjax.param import DenoiserConfig, precondition
from diffjax.samplers.guidance import classifier_free_guidance
from diffjax.sde._base import batch_sum

__all__ = ["kd_loss", "edm_kd_loss", "guided_kd_loss"]


def _check_alpha(alpha: Any) -> float:
    return concrete_float("alpha (the data weight of mixed training, thesis eq. 5.9)", alpha, lo=0.0, hi=1.0)


def _mixed(student: Array, teacher: Array, target: Array, alpha: float) -> tuple[Array, Array, Array]:
    """Per-example ``(kd, reg, mixed)``: ``||s - t||^2`` (5.6), ``2 a (s - t).(t - x0)`` (5.8) and
    ``(1 - a) ||s - t||^2 + a ||s - x0||^2`` (5.9), all summed over data dims (unweighted)."""
    kd = batch_sum((student - teacher) ** 2)
    reg = 2.0 * alpha * batch_sum((student - teacher) * (teacher - target))
    if alpha == 0.0:
        return kd, reg, kd
    return kd, reg, (1.0 - alpha) * kd + alpha * batch_sum((student - target) ** 2)


def _check_scalar_options(sde: Any, parameterization: str, weighting: str, t_min: float) -> float:
    check_sde(sde, scalar=True)
    check_option("parameterization", parameterization, PARAMETERIZATIONS)
    check_option("weighting", weighting, SCALAR_WEIGHTINGS)
    return check_t_min(t_min, sde.T)


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
    t_min = _check_scalar_options(sde, parameterization, weighting, t_min)
    alpha = _check_alpha(alpha)
    if not callable(teacher_eps_fn):
        raise ValueError(f"teacher_eps_fn must be callable, got {type(teacher_eps_fn).__name__}")

    def per_example(apply_fn, params, key, x0, t):
        p = perturb(sde, key, x0, t)
        teacher = lax.stop_gradient(teacher_eps_fn(p.x_t, t))
        student = eps_hat(parameterization, apply_fn(params, p.x_t, t), p.x_t, p.alpha, p.sigma)
        kd, reg, mixed = _mixed(student, teacher, p.eps, alpha)
        weight = scalar_weight(sde, weighting, t, p.sigma_t)
        return weight * mixed, {"t": t, "x_t": p.x_t, "eps": p.eps, "teacher": teacher, "mse": kd, "reg": reg,
                                "weight": weight}

    return level_loss(uniform_time(t_min, sde.T), per_example)


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

    def per_example(apply_fn, params, key, x0, sigma):
        x = add_noise(key, x0, sigma)
        teacher = lax.stop_gradient(teacher_denoiser(x, sigma))
        student = precondition(config, lambda y, c: apply_fn(params, y, c))(x, sigma)
        kd, reg, mixed = _mixed(student, teacher, x0, alpha)
        weight = config.loss_weight(sigma)
        return weight * mixed, {"sigma": sigma, "x": x, "teacher": teacher, "mse": kd, "reg": reg, "weight": weight}

    return level_loss(edm_sigma(config), per_example)


def _check_w_range(w_min: Any, w_max: Any) -> tuple[float, float]:
    w_min, w_max = concrete_float("w_min", w_min), concrete_float("w_max", w_max)
    if not w_min <= w_max:
        raise ValueError(f"need w_min <= w_max, got w_min={w_min!r}, w_max={w_max!r}")
    return w_min, w_max


def guided_kd_loss(sde: Any, teacher_cond_fn: Callable, teacher_uncond_fn: Callable, *, w_min: float = 0.0,
                   w_max: float = 3.0, parameterization: str = "eps", weighting: str = "simple",
                   t_min: float = 1e-5) -> Callable:
    """Guided distillation (thesis eq. 5.7): a ``w``-conditioned student regressed on the guided teacher.

    The batch is ``(x0, c)`` (``c``: per-example condition, e.g. integer labels ``(batch,)``).
    ``t ~ U[t_min, T]``, ``x_t = alpha_t x_0 + sigma_t eps``, ``w ~ U[w_min, w_max]`` per example, and
    the teacher target is ``eps^w_phi = (1 + w) eps_phi(x_t, t, c) - w eps_phi(x_t, t)`` (eq. 5.5,
    :func:`diffjax.samplers.guidance.classifier_free_guidance` with ``per_example=True``). Per example
    ``weight(t) ||eps_theta(x_t, t, c, w) - eps^w_phi||^2`` with ``eps_theta`` read from
    ``apply_fn(params, x_t, t, c, w)`` in the given parameterisation (see
    :func:`diffjax.distill.conditioned_apply` to feed ``c`` and ``w`` to a plain ``ScoreMLP``).

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
    t_min = _check_scalar_options(sde, parameterization, weighting, t_min)
    w_min, w_max = _check_w_range(w_min, w_max)

    def loss(apply_fn, params, key, batch, *, reduce: bool = True):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"guided_kd_loss expects the batch (x0, c), got {type(batch).__name__}")
        x0, c = batch
        x0 = check_x0(x0)
        k_t, k_eps, k_w = jax.random.split(key, 3)
        n = x0.shape[0]
        t = sample_t(k_t, n, t_min, sde.T)
        w = jax.random.uniform(k_w, (n,), x0.dtype, w_min, w_max)
        p = perturb(sde, k_eps, x0, t)
        guided = classifier_free_guidance(lambda x, tt: teacher_cond_fn(x, tt, c), teacher_uncond_fn, w,
                                          per_example=True)
        target = lax.stop_gradient(guided(p.x_t, t))
        student = eps_hat(parameterization, apply_fn(params, p.x_t, t, c, w), p.x_t, p.alpha, p.sigma)
        mse = batch_sum((student - target) ** 2)
        weight = scalar_weight(sde, weighting, t, p.sigma_t)
        aux = {"t": t, "w": w, "x_t": p.x_t, "teacher": target, "mse": mse, "weight": weight}
        return finish(weight * mse, aux, reduce)

    return loss
