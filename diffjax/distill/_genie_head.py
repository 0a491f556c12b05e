"""GENIE with a distilled derivative head (thesis §3.3.3.1, App. 3.4.3.2, Algs. 2-3, App. 3.4.6.2).

GENIE's second-order step needs the total derivative ``d eps / d gamma_t`` (thesis eq. 3.19). The
exact value is one JVP (:func:`diffjax.samplers.genie.genie_derivative`), which roughly doubles the
cost of a step. Instead a small head ``k_psi`` on top of the frozen backbone's last features
predicts it (Fig. 3.4), in the mixed parameterisation (eqs. 3.21 / 3.73)

    k_psi = -1/gamma k^(1) + gamma/(1 + gamma^2) k^(2) + 1/(gamma (1 + gamma^2)) k^(3),

trained by Alg. 2 on the loss (3.22) ``gamma_t^2 ||k_psi(x_t, t) - d_gamma eps_theta(x_t, t)||^2``
with exact forward-mode targets. Sampling (Alg. 3) is the TTM-2 step
``xbar' = xbar + h eps + h^2/2 k_psi`` with ``h = gamma_{n+1} - gamma_n``, where ONE call of the
combined model returns ``(eps, k_psi)`` (backbone with features, then the head), optionally with the
analytical first step (AFS, eqs. 3.82-3.85) and a final denoising step.

Interfaces (plain callables, no Flax here):

* ``features_apply(backbone_params, x, t) -> (eps, features)``: the backbone returning its last
  features too, e.g. :func:`with_features` of ``make_apply(ScoreMLP(...))``.
* ``head_apply(head_params, features, x, t, eps) -> (k1, k2, k3)``: e.g. ``GenieHead(num_outputs=3).apply``.
* the combined model ``apply(params, x, t) -> (eps, d_eps)`` with ``params = {"backbone": ..., "head": ...}``
  (:func:`genie_head_apply`), or as a closed model function ``model_fn(x, t) -> (eps, d_eps)``.

Cost (``nfe_per_step = 1``): one backbone pass plus the head per step, the head overhead being
reported separately (thesis Table 3.5 "Add. comp. overhead"); the AFS step costs no evaluation and
the final denoising step costs one.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax import Array, lax

from diffjax._validate import check_t_min as _check_t_min
from diffjax.losses._scaffold import check_x0 as _check_x0
from diffjax.losses._scaffold import finish as _finish
from diffjax.losses._scaffold import sample_t as _sample_t
from diffjax._validate import check_sde
from diffjax.samplers._rule import StepRule, no_noise
from diffjax.samplers.genie import ddim_gamma_coords, genie_derivative
from diffjax.samplers.sequential import sample
from diffjax.schedules import time_grid
from diffjax.sde._base import batch_sum, broadcast_to_data

__all__ = ["with_features", "mixed_derivative", "genie_head_apply", "genie_head_model",
           "exact_derivative_model", "genie_head_loss", "train_genie_head", "genie_head_rule",
           "genie_head_sample"]


def with_features(apply_fn: Callable) -> Callable:
    """``features_apply(params, x, t) = apply_fn(params, x, t, return_features=True)`` -> ``(eps, features)``.

    For the diffjax backbones (``ScoreMLP``, ``UNet``) wrapped by :func:`diffjax.nn.make_apply`.
    """

    def features_apply(params, x, t):
        return apply_fn(params, x, t, return_features=True)

    return features_apply


def mixed_derivative(sde: Any, k: tuple[Array, Array, Array], x: Array, t: Array) -> Array:
    """The mixed parameterisation of ``d eps / d gamma`` (thesis eqs. 3.21 / 3.73).

    ``k = -k1 / gamma + gamma / (1 + gamma^2) k2 + k3 / (gamma (1 + gamma^2))`` with
    ``gamma_t = sigma_t / alpha_t``; the three channels correspond to the three terms of eq. (3.19)
    (derived from a single-point data assumption, eqs. 3.70-3.72).

    Args:
      sde: scalar SDE (``marginal_coeffs``, ``log_snr``).
      k: the head's three outputs, each shaped like ``x``.
      x: ``(batch, *data)`` (only its shape is used, for broadcasting).
      t: scalar or ``(batch,)``.

    Returns:
      ``(batch, *data)`` derivative estimate.

    Raises:
      ValueError: (at trace time) if ``k`` is not three arrays of the shape of ``x``.
    """
    if not isinstance(k, (tuple, list)) or len(k) != 3:
        raise ValueError(f"the head must return three outputs (k1, k2, k3), got {type(k).__name__}")
    for i, ki in enumerate(k):
        if jnp.shape(ki) != jnp.shape(x):
            raise ValueError(f"head output k{i + 1} has shape {jnp.shape(ki)}, expected {jnp.shape(x)}")
    _, gamma = ddim_gamma_coords(sde, jnp.asarray(t))
    g = broadcast_to_data(gamma, x).astype(x.dtype)
    one_g2 = 1.0 + g**2
    return -k[0] / g + (g / one_g2) * k[1] + k[2] / (g * one_g2)


def genie_head_apply(sde: Any, features_apply: Callable, head_apply: Callable) -> Callable:
    """Combined model ``apply(params, x, t) -> (eps, d_eps)``: backbone + head in ONE call (thesis Fig. 3.4).

    ``(eps, h) = features_apply(params["backbone"], x, t)``, ``k = head_apply(params["head"], h, x, t, eps)``
    and ``d_eps = mixed_derivative(sde, k, x, t)`` (eq. 3.73).

    Args:
      sde: scalar SDE.
      features_apply: ``(backbone_params, x, t) -> (eps, features)``.
      head_apply: ``(head_params, features, x, t, eps) -> (k1, k2, k3)``.

    Returns:
      ``apply(params, x, t)`` with ``params = {"backbone": ..., "head": ...}``, returning two
      ``(batch, *data)`` arrays.
    """
    check_sde(sde, scalar=True)

    def apply(params, x, t):
        eps, feats = features_apply(params["backbone"], x, t)
        k = head_apply(params["head"], feats, x, t, eps)
        return eps, mixed_derivative(sde, k, x, t)

    return apply


def genie_head_model(sde: Any, features_apply: Callable, backbone_params: Any, head_apply: Callable,
                     head_params: Any) -> Callable:
    """``model_fn(x, t) -> (eps, d_eps)`` of :func:`genie_head_apply` closed over both parameter sets.

    To compile once for changing parameters, jit a function taking the parameters and build the
    model function inside it (``lambda x, t: genie_head_apply(...)(params, x, t)``).
    """
    apply = genie_head_apply(sde, features_apply, head_apply)
    params = {"backbone": backbone_params, "head": head_params}
    return lambda x, t: apply(params, x, t)


def exact_derivative_model(eps_fn: Callable, sde: Any) -> Callable:
    """``model_fn(x, t) -> (eps, d_gamma eps)`` with the exact derivative (one JVP, thesis eq. 3.19).

    The "perfect head": :func:`genie_head_rule` with this model is GENIE with exact derivatives
    (:func:`diffjax.samplers.genie.genie_rule`).
    """
    check_sde(sde, scalar=True)

    def model_fn(x, t):
        return eps_fn(x, t), genie_derivative(eps_fn, sde, x, t)

    return model_fn


def genie_head_loss(sde: Any, features_apply: Callable, backbone_params: Any, *, t_min: float = 1e-3) -> Callable:
    """Head distillation loss (thesis eq. 3.22, Alg. 2) with the standard loss signature.

    ``t ~ U[t_min, T]``, ``x_t = alpha_t x_0 + sigma_t eps``; the frozen backbone gives
    ``(eps_theta, features)`` and the exact target ``d_gamma eps_theta(x_t, t)`` by forward-mode
    autodiff (:func:`diffjax.samplers.genie.genie_derivative`, no gradient flows into it); the head's
    mixed output ``k_psi`` (eq. 3.73) is regressed on it with weight ``g_d(t) = gamma_t^2``. Per
    example (summed over data): ``gamma_t^2 ||k_psi - d_gamma eps_theta||^2``.

    The backbone parameters are closed over (constants of the jitted train step); the trained
    ``params`` are the head's.

    Args:
      sde: scalar SDE (``marginal_coeffs``, ``log_snr``, ``T``).
      features_apply: ``(backbone_params, x, t) -> (eps, features)`` of the eps-prediction backbone.
      backbone_params: frozen backbone parameters.
      t_min: ``t_cutoff`` of Alg. 2, in ``(0, T)`` (thesis Table 3.5: ``1e-3``).

    Returns:
      ``loss(head_apply, head_params, key, x0, *, reduce=True) -> (loss, aux)`` where
      ``head_apply(head_params, features, x, t, eps) -> (k1, k2, k3)``; ``aux`` holds per-example
      ``"t"``, ``"x_t"``, ``"target"`` (``d_gamma eps_theta``), ``"mse"`` and ``"weight"`` (``gamma_t^2``).

    Raises:
      ValueError: ``t_min`` outside ``(0, T)``; the loss raises for ``x0`` not ``(batch, *data)``.
      TypeError: ``sde`` is not a scalar SDE.
    """
    check_sde(sde, scalar=True)
    t_min = _check_t_min(t_min, sde.T)

    def eps_fn(x, t):
        return features_apply(backbone_params, x, t)[0]

    def loss(head_apply, head_params, key, x0, *, reduce: bool = True):
        x0 = _check_x0(x0)
        k_t, k_eps = jax.random.split(key)
        t = _sample_t(k_t, x0.shape[0], t_min, sde.T)
        alpha_t, sigma_t = sde.marginal_coeffs(t)
        noise = jax.random.normal(k_eps, x0.shape, x0.dtype)
        x_t = broadcast_to_data(alpha_t, x0) * x0 + broadcast_to_data(sigma_t, x0) * noise
        eps, feats = lax.stop_gradient(features_apply(backbone_params, x_t, t))
        target = lax.stop_gradient(genie_derivative(eps_fn, sde, x_t, t))
        k = mixed_derivative(sde, head_apply(head_params, feats, x_t, t, eps), x_t, t)
        mse = batch_sum((k - target) ** 2)
        weight = jnp.exp(-sde.log_snr(t))  # gamma_t^2
        aux = {"t": t, "x_t": x_t, "target": target, "mse": mse, "weight": weight}
        return _finish(weight * mse, aux, reduce)

    return loss


def train_genie_head(sde: Any, features_apply: Callable, backbone_params: Any, head_apply: Callable,
                     head_params: Any, data_fn: Callable[[int], Any], *, steps: int, out_dir,
                     config: Mapping, t_min: float = 1e-3, lr: float = 1e-4, batch_size: int,
                     seed: int = 0, ema_decay: float = 0.0, grad_clip: float | None = 1.0,
                     **train_kwargs) -> Any:
    """Distil a GENIE head from a frozen backbone (thesis Alg. 2) with :func:`diffjax.train.train`.

    Checkpoints (``<out_dir>/checkpoints``) hold the HEAD's train state only; restore it with
    :func:`diffjax.train.restore_params` and combine with the backbone's parameters in
    :func:`genie_head_apply`. Defaults follow thesis Table 3.5 (Adam, lr ``1e-4``, gradient
    clipping 1.0, no EMA, ``t_cutoff = 1e-3``); ``config`` should name the teacher checkpoint.

    Args:
      sde: scalar SDE of the backbone.
      features_apply: ``(backbone_params, x, t) -> (eps, features)``.
      backbone_params: frozen backbone parameters.
      head_apply: ``(head_params, features, x, t, eps) -> (k1, k2, k3)``.
      head_params: initial head parameters.
      data_fn: ``data_fn(step) -> x0`` batch.
      steps, out_dir, config, lr, batch_size, seed, ema_decay, grad_clip, **train_kwargs: as in
        :func:`diffjax.train.train`.
      t_min: ``t_cutoff`` of the loss.

    Returns:
      The final head :class:`~diffjax.train.TrainState`.

    Raises:
      ValueError: as :func:`genie_head_loss` and :func:`diffjax.train.train`.
    """
    from diffjax.train import train  # the edge that owns I/O; imported lazily (orbax)

    loss = genie_head_loss(sde, features_apply, backbone_params, t_min=t_min)
    return train(loss, head_apply, head_params, data_fn, steps=steps, out_dir=out_dir, config=config,
                 lr=lr, batch_size=batch_size, seed=seed, ema_decay=ema_decay, grad_clip=grad_clip,
                 **train_kwargs)


def _afs_model(sde: Any, x: Array) -> tuple[Array, Array]:
    """AFS (thesis eqs. 3.82-3.85): the eps and d_gamma eps of the Normal prior ``N(0, s^2 I)``.

    ``eps = -sigma_T score = sigma_T x / s^2`` (VP: ``sigma_T x``, Alg. 3's ``x`` to ``2e-5``, eq. 3.82) and ``d_gamma eps = 0``
    (eq. 3.85; also exact for VE, where ``eps = x / sigma`` is constant along the ODE).
    """
    _, sigma_T = sde.marginal_coeffs(jnp.asarray(sde.T, x.dtype))
    s = jnp.asarray(sde.prior_std, x.dtype)
    return (sigma_T / s**2).astype(x.dtype) * x, jnp.zeros_like(x)


def genie_head_rule(sde: Any, *, afs: bool = False, denoise: bool = False) -> StepRule:
    """GENIE sampling with a derivative model (thesis Alg. 3): TTM-2 on the DDIM ODE.

    ``xbar_{n+1} = xbar_n + h eps(x_n, t_n) + h^2/2 k(x_n, t_n)``, ``h = gamma_{n+1} - gamma_n``,
    ``xbar = x / alpha_t`` (``= sqrt(1 + gamma^2) x`` for VP), where ``(eps, k) = model_fn(x_n, t_n)``
    comes from ONE call (backbone + head, :func:`genie_head_apply`; or the exact derivative,
    :func:`exact_derivative_model`, which makes this rule :func:`~diffjax.samplers.genie.genie_rule`).

    AFS (App. 3.4.6.2): a step starting at ``t = T`` uses the prior's eps and zero derivative
    (:func:`_afs_model`) instead of the model; for VP it is Alg. 3's
    ``xbar_1 = xbar_0 + (gamma_1 - gamma_0) x_0`` (with ``sigma_T x_0``, the prior's exact eps). The choice is a ``lax.cond`` on ``t >= T``, so
    the rule is one pure function (sequential and Picard executors alike); a grid that does not
    start at ``T`` takes no AFS step.
    Denoising: ``finalize`` returns ``(x_N - sigma_N eps(x_N, t_N)) / alpha_N`` (one more evaluation).

    Args:
      sde: scalar SDE (VP, sub-VP, VE).
      afs: use the analytical first step.
      denoise: finish with the denoising step.

    Returns:
      A deterministic :class:`StepRule`; ``model_fn(x, t) -> (eps, d_eps)``. ``nfe_per_step = 1``
      (backbone pass + head; the head overhead is separate) and ``nfe_final = denoise - afs``, so
      that ``info["nfe"] = n_steps - afs + denoise`` of the sequential executor counts the model
      evaluations honestly for a grid starting at ``T``.

    Raises:
      TypeError: ``sde`` is not a scalar SDE; ``afs`` or ``denoise`` not a bool.
    """
    check_sde(sde, scalar=True)
    for name, v in (("afs", afs), ("denoise", denoise)):
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be a bool, got {v!r}")

    def step(model_fn, x, t, t_next, z):
        alpha, gamma = ddim_gamma_coords(sde, t)
        alpha_n, gamma_n = ddim_gamma_coords(sde, t_next)
        h = gamma_n - gamma
        if afs:
            eps, d = lax.cond(t >= sde.T, functools.partial(_afs_model, sde), lambda y: model_fn(y, t), x)
        else:
            eps, d = model_fn(x, t)
        xbar_n = x / alpha + h * eps + 0.5 * h**2 * d
        return (alpha_n * xbar_n).astype(x.dtype)

    def finalize(model_fn, x, t):
        if not denoise:
            return x
        alpha, sigma = sde.marginal_coeffs(t)
        eps, _ = model_fn(x, t)
        return ((x - sigma * eps) / alpha).astype(x.dtype)

    return StepRule(step=step, prior=sde.prior_sample, noise=no_noise, finalize=finalize,
                    nfe_per_step=1, nfe_final=int(denoise) - int(afs), **StepRule.declare("eps_and_derivative", sde))


def genie_head_sample(model_fn: Callable, sde: Any, *, key: Array, shape: tuple[int, ...], n_steps: int,
                      t_min: float = 1e-3, grid: str = "uniform", afs: bool = False,
                      denoise: bool = False) -> tuple[Array, dict]:
    """Sample with :func:`genie_head_rule` from ``T`` to ``t_min`` (sequential executor; thesis Alg. 3).

    Args:
      model_fn: ``model_fn(x, t) -> (eps, d_eps)`` (e.g. :func:`genie_head_model`).
      sde: scalar SDE.
      key: PRNG key (prior draw).
      shape: ``(batch, *data)``.
      n_steps: number of steps (static int).
      t_min: last time of the grid (``t_cutoff``).
      grid: ``"uniform"`` or ``"quadratic"`` striding (thesis §3.4.3.2.4).
      afs, denoise: see :func:`genie_head_rule`.

    Returns:
      ``(samples, info)``; ``info["nfe"] = n_steps - afs + denoise`` backbone(+head) evaluations.

    Raises:
      ValueError: unknown ``grid``, bad ``n_steps`` or ``t_min``.
    """
    rule = genie_head_rule(sde, afs=afs, denoise=denoise)
    return sample(rule, model_fn, key, shape, time_grid(n_steps, grid, t_min, sde.T, sde=sde))
