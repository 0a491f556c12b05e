"""The train state, the optimiser, the EMA with warm-up and the jitted step.

A step is a pure function ``step(state, batch) -> (state, metrics)``: it draws its randomness
from ``fold_in(state.key, state.step)``, computes a gradient (plain, or DP-SGD in
:mod:`diffjax.privacy`) and hands it to :func:`apply_gradients`, the one place where the
optimiser and the EMA update the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from diffjax._validate import concrete_float

__all__ = ["TrainState", "create_train_state", "make_optimizer", "ema_schedule", "apply_gradients",
           "make_train_step", "train_key"]


class TrainState(NamedTuple):
    """Everything a training run needs to continue bit-exactly.

    Attributes:
      params: model parameters (pytree).
      ema_params: exponential moving average of ``params`` (same structure).
      opt_state: optax optimiser state.
      step: number of completed steps, int32 scalar.
      key: base PRNG key (raw ``uint32[2]``); step ``s`` uses ``fold_in(key, s)``.
    """

    params: Any
    ema_params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def train_key(seed: int) -> jax.Array:
    """The base key of a run's training randomness (loss noise, times), independent of data keys.

    ``fold_in(PRNGKey(seed), 0x7472616E)`` (ASCII "tran"); data sets use ``PRNGKey(seed)`` itself.
    """
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0x7472616E)


def create_train_state(params, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """Initial state: ``ema_params = params``, fresh optimiser state, ``step = 0``.

    Args:
      params: parameter pytree.
      optimizer: an optax transformation (e.g. from :func:`make_optimizer`).
      key: PRNG key (raw ``uint32[2]`` or typed; stored raw so checkpoints are plain arrays).
    """
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return TrainState(
        params=params,
        ema_params=jax.tree_util.tree_map(lambda p: jnp.array(p, copy=True), params),
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=key,
    )


def make_optimizer(lr: float, *, warmup_steps: int = 0, grad_clip: float | None = None,
                   weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam(W) with optional global-norm clipping and linear warm-up.

    ``chain(clip_by_global_norm(grad_clip), adam(w)(schedule))`` with
    ``schedule(s) = lr * min(s / warmup_steps, 1)`` (constant ``lr`` if ``warmup_steps == 0``);
    AdamW (decoupled weight decay) when ``weight_decay > 0``.

    Raises:
      ValueError: for ``lr <= 0``, ``warmup_steps < 0``, ``grad_clip <= 0`` or ``weight_decay < 0``.
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    schedule = optax.linear_schedule(0.0, lr, int(warmup_steps)) if warmup_steps > 0 else lr
    if weight_decay > 0:
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    else:
        opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    if grad_clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    return opt


def ema_schedule(decay: float = 0.999, *, warmup: bool = True) -> Callable[[Any], Any]:
    """The EMA decay schedule ``d(t)`` used for the update after ``t`` completed steps.

    With warm-up, ``d(t) = min(decay, (1 + t) / (10 + t))`` (the ``num_updates`` rule of
    TensorFlow's ``tf.train.ExponentialMovingAverage``): early averages forget the initial
    weights quickly (``d(0) = 0.1``, ``d(90) = 0.91``, ``d(990) = 0.991``) and the decay reaches
    ``decay`` after ``t = (10 decay - 1) / (1 - decay)`` steps (8 991 for ``0.999``), so a short
    run's EMA is not dominated by its initialisation. Without warm-up, ``d(t) = decay``.

    Args:
      decay: target decay in ``[0, 1)`` (``0``: the EMA is the parameters themselves).
      warmup: apply the warm-up.

    Returns:
      ``d(t)`` for an int or int32 (possibly traced) ``t``: a float32 scalar with warm-up,
      ``decay`` itself (a Python float) without.

    Raises:
      ValueError: if ``decay`` is not a real number in ``[0, 1)``.
    """
    d = concrete_float("ema_decay", decay, lo=0.0, hi=1.0)
    if d == 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay!r}")
    if not warmup:
        return lambda t: d

    def schedule(t):
        t = jnp.asarray(t, jnp.float32)
        return jnp.minimum(jnp.float32(d), (1.0 + t) / (10.0 + t))

    return schedule


def apply_gradients(state: TrainState, grads, optimizer: optax.GradientTransformation,
                    ema: Callable[[Any], Any]) -> TrainState:
    """One optimiser update plus the EMA: the state after step ``state.step``.

    ``params' = params + optimizer.update(grads)``, ``ema' = d ema + (1 - d) params'`` with
    ``d = ema(state.step)`` (an :func:`ema_schedule`), ``step' = step + 1``.
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    d = ema(state.step)
    new_ema = jax.tree_util.tree_map(lambda e, p: (d * e + (1.0 - d) * p).astype(p.dtype), state.ema_params, params)
    return TrainState(params, new_ema, opt_state, state.step + 1, state.key)


def make_train_step(loss: Callable, apply_fn: Callable, optimizer: optax.GradientTransformation, *,
                    ema_decay: float = 0.999, ema_warmup: bool = False, mesh: Mesh | None = None,
                    donate: bool = False) -> Callable:
    """Build the jitted pure step ``step(state, batch) -> (state, metrics)``.

    The step draws its randomness from ``key = fold_in(state.key, state.step)``, computes
    ``(loss, aux), grads = value_and_grad(loss)(params)`` with
    ``loss(apply_fn, params, key, batch)``, and updates the state with :func:`apply_gradients`
    (optimiser, then ``ema <- d(t) ema + (1 - d(t)) params`` with ``d`` the :func:`ema_schedule`).

    Args:
      loss: ``loss(apply_fn, params, key, x0) -> (scalar, aux)``.
      apply_fn: ``apply_fn(params, x, t)``.
      optimizer: optax transformation.
      ema_decay: EMA decay ``d`` in ``[0, 1)``.
      ema_warmup: warm the decay up as ``min(d, (1 + t) / (10 + t))`` (off here, the raw
        building block; :func:`diffjax.train.train` turns it on by default).
      mesh: if given, the step is compiled for a replicated state and a batch sharded along
        ``"data"`` (see :func:`replicate`, :func:`shard_batch`); otherwise plain ``jit``.
      donate: donate the input state's buffers (saves memory; the input state is invalidated).

    Returns:
      ``step``; ``metrics`` holds ``loss``, ``grad_norm``, ``finite`` (bool: loss and gradient
      norm are finite — the update is applied regardless, the caller decides) and every scalar
      entry of ``aux``.

    Raises:
      ValueError: if ``ema_decay`` is outside ``[0, 1)``.
    """
    ema = ema_schedule(ema_decay, warmup=ema_warmup)

    def step(state: TrainState, batch):
        key = jax.random.fold_in(state.key, state.step)
        (value, aux), grads = jax.value_and_grad(
            lambda p: loss(apply_fn, p, key, batch), has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        metrics = {"loss": value, "grad_norm": grad_norm,
                   "finite": jnp.isfinite(value) & jnp.isfinite(grad_norm)}
        if isinstance(aux, Mapping):
            metrics.update({k: v for k, v in aux.items()
                            if k not in metrics and hasattr(v, "shape") and jnp.shape(v) == ()})
        return apply_gradients(state, grads, optimizer, ema), metrics

    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    repl = NamedSharding(mesh, P())
    return jax.jit(step, in_shardings=(repl, NamedSharding(mesh, P("data"))),
                   out_shardings=(repl, repl), donate_argnums=donate_argnums)
