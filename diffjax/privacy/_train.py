"""DP training: a jitted DP-SGD step on padded Poisson batches, and :func:`train_dp` on the one driver.

Thesis Alg. 4: Poisson-sample a batch (Alg. 5), average ``K`` noise draws per example
(eq. 4.7), clip, sum, noise, divide by ``B`` (eqs. 4.10-4.11), optimiser (Adam by default),
EMA. :func:`train_dp` is a thin builder on :func:`diffjax.train.train_loop` (resume,
checkpoints, ``metrics.jsonl``, prefetch, progress bar); the privacy plan (a
:class:`PrivacyBudget`) is stored in the checkpoint config (identity: a resume must use the
same plan) together with ``privacy_spent`` (steps taken, epsilon spent, overflows; not
identity), and mirrored to ``<out_dir>/privacy.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffjax import train as _train
from diffjax.privacy._budget import PrivacyBudget
from diffjax.privacy._dpsgd import METHODS, _check_multiplicity, _check_positive, private_grad
from diffjax.privacy._poisson import poisson_batch, poisson_capacity

__all__ = ["make_dp_train_step", "train_dp", "sampling_key"]

_EXTRA_NON_IDENTITY = frozenset({"privacy_spent"})


def make_dp_train_step(loss: Callable, apply_fn: Callable, optimizer: optax.GradientTransformation, *,
                       clip: float, noise_multiplier: float, expected_batch_size: float,
                       multiplicity: int = 1, ema_decay: float = 0.999, ema_warmup: bool = False,
                       method: str = "auto", donate: bool = False) -> Callable:
    """Build the jitted DP step ``step(state, batch, mask) -> (state, metrics)`` (thesis Alg. 4).

    Mirrors :func:`diffjax.train.make_train_step`: the key is ``fold_in(state.key, state.step)``,
    the gradient is :func:`private_grad` (clip ``C``, noise ``sigma_DP C``, divisor ``B``,
    noise multiplicity ``K``), then :func:`diffjax.train.apply_gradients` (optimiser and EMA,
    EMA decay :func:`diffjax.train.ema_schedule`, warmed up when ``ema_warmup``). ``batch`` is a
    padded ``(capacity, *data)`` array and ``mask`` its ``(capacity,)`` real-row mask; the number
    of real rows never triggers a recompile (only a new capacity does).

    Returns:
      ``step``; ``metrics``: ``loss`` (mean ``l~_i`` over real rows), ``grad_norm`` (of the noisy
      gradient), ``clip_fraction`` (real rows with ``||g_i|| > C``), ``batch_size`` (real rows),
      ``finite``.

    Raises:
      ValueError: invalid ``clip``, ``noise_multiplier``, ``expected_batch_size``,
        ``multiplicity``, ``method`` or ``ema_decay``.
    """
    ema = _train.ema_schedule(ema_decay, warmup=ema_warmup)
    clip = _check_positive("clip", clip)
    expected_batch_size = _check_positive("expected_batch_size", expected_batch_size)
    if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    multiplicity = _check_multiplicity(multiplicity)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")

    def step(state: _train.TrainState, batch, mask):
        key = jax.random.fold_in(state.key, state.step)
        grads, aux = private_grad(loss, apply_fn, state.params, key, batch, mask, clip=clip,
                                  noise_multiplier=float(noise_multiplier),
                                  expected_batch_size=expected_batch_size,
                                  multiplicity=multiplicity, method=method)
        m = jnp.asarray(mask, bool)
        n = jnp.sum(m)
        value = jnp.sum(aux["loss"]) / jnp.maximum(n, 1)
        grad_norm = optax.tree.norm(grads)
        metrics = {
            "loss": value,
            "grad_norm": grad_norm,
            "clip_fraction": jnp.sum(m & (aux["grad_norm"] > clip)) / jnp.maximum(n, 1),
            "batch_size": n,
            "finite": jnp.isfinite(value) & jnp.isfinite(grad_norm),
        }
        return _train.apply_gradients(state, grads, optimizer, ema), metrics

    return jax.jit(step, donate_argnums=(0,) if donate else ())


_fold_in = jax.jit(jax.random.fold_in)


def sampling_key(seed: int) -> jax.Array:
    """Base key of the Poisson sampler; step ``s`` uses ``fold_in(sampling_key(seed), s)``."""
    return jax.random.split(jax.random.PRNGKey(seed))[1]


def _poisson_data_fn(data, sample_rate: float, capacity: int, seed: int, overflow_steps: list) -> Callable:
    """``data_fn(s) -> (batch, mask)``: the Poisson batch of step ``s`` (Alg. 5), padded to ``capacity``.

    A draw larger than ``capacity`` is re-padded to a multiple of ``capacity`` (the same draw:
    exact; one extra compile) and ``s`` is appended to ``overflow_steps``.
    """
    dkey = sampling_key(seed)

    def data_fn(s):
        k = _fold_in(dkey, s)
        batch, mask, count = poisson_batch(k, data, sample_rate, capacity=capacity)
        count = int(count)
        if count > capacity:
            overflow_steps.append(s)
            batch, mask, _ = poisson_batch(k, data, sample_rate, capacity=capacity * math.ceil(count / capacity))
        return batch, mask

    return data_fn


class _PrivacyLog:
    """``log(done, stored) -> {"privacy_spent": ...}`` for the driver; also writes ``privacy.json``.

    Overflows = those stored in the checkpoint the run resumed from plus the overflow steps
    ``< done`` seen since (the prefetcher may already have drawn later ones).
    """

    def __init__(self, out: Path, budget: PrivacyBudget, overflow_steps: list):
        self.out, self.budget, self.overflow_steps = out, budget, overflow_steps
        self.last = {"overflows": 0}

    def __call__(self, done: int, stored) -> dict:
        base = int(((stored or {}).get("privacy_spent") or {}).get("overflows", 0))
        rec = {"steps_taken": int(done), "epsilon_spent": float(self.budget.spent(done)),
               "overflows": base + sum(1 for s in list(self.overflow_steps) if s < done)}
        if jax.process_index() == 0:
            text = json.dumps(dict(self.budget.to_dict(), **rec), indent=1) + "\n"
            (self.out / "privacy.json").write_text(text)
        self.last = rec
        return {"privacy_spent": rec}


def train_dp(loss: Callable, apply_fn: Callable, params, data, *, budget: PrivacyBudget, clip: float,
             out_dir, config: Mapping, multiplicity: int = 1, lr: float = 3e-4, seed: int = 0,
             steps: int | None = None, ckpt_every: int = 1000, resume=False, ema_decay: float = 0.999,
             ema_warmup: bool = True, log_every: int = 100, capacity: int | None = None, method: str = "auto",
             max_to_keep: int = 3, progress: bool = False, prefetch: int = 2,
             optimizer: optax.GradientTransformation | None = None,
             log: Callable[[str], None] = print) -> _train.TrainState:
    """Train a diffusion model with DP-SGD within ``budget`` (thesis Alg. 4), resumably.

    Step ``s`` uses the Poisson batch drawn with ``fold_in(sampling_key(seed), s)`` and the
    step key ``fold_in(train_key(seed), s)`` (:func:`diffjax.train.train_key`, as in
    :func:`diffjax.train.train`); the step is :func:`make_dp_train_step` with ``optimizer``
    (default Adam, :func:`diffjax.train.make_optimizer` with ``lr``) and the EMA of
    :func:`diffjax.train.ema_schedule`; the loop is :func:`diffjax.train.train_loop`.
    Checkpoints hold the state and the run config, which includes ``privacy`` (the plan) and
    ``privacy_spent`` (``steps_taken``, ``epsilon_spent``, ``overflows``);
    ``<out_dir>/privacy.json`` mirrors the latest. A Poisson draw larger than ``capacity``
    (probability ``<= 1e-9`` per step by default) is re-padded to a multiple of ``capacity`` —
    exact, one extra compile — and counted in ``overflows``.

    Args:
      data: the whole private data set ``(N, *shape)``, ``N == budget.dataset_size``.
      budget: a :class:`PrivacyBudget` (gives ``sigma_DP``, ``q``, ``B`` and the step count).
      clip: clipping norm ``C``.
      steps: total steps (default ``budget.steps``); more than ``budget.steps`` is refused.
      capacity: padded batch size (default :func:`poisson_capacity` of ``budget.batch_size``).
      resume: ``False``, ``True`` or a run directory (:func:`diffjax.train.train_loop`); the
        checkpoint must come from the same plan.
      optimizer: any optax transformation (then ``lr`` is unused; the config records
        ``optimizer: "custom"`` — describe it in ``config``).
      others: as :func:`diffjax.train.train`.

    Returns:
      The final :class:`~diffjax.train.TrainState`.

    Raises:
      ValueError: a plan that exceeds the budget (before any step), ``data`` of the wrong size,
        or a checkpoint from a different plan.
      FileExistsError: ``resume=False`` and ``out_dir`` already holds checkpoints.
      diffjax.train.NonFiniteLossError: NaN/inf loss or gradient.
    """
    steps = budget.steps if steps is None else int(steps)
    budget.check_steps(steps)  # refuse before anything runs
    if int(np.shape(data)[0]) != budget.dataset_size:
        raise ValueError(f"data has {np.shape(data)[0]} examples but budget.dataset_size={budget.dataset_size}")
    capacity = poisson_capacity(budget.batch_size) if capacity is None else int(capacity)
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}")
    settings = dict(seed=int(seed), ema_decay=ema_decay, ema_warmup=bool(ema_warmup), clip=float(clip),
                    multiplicity=int(multiplicity), capacity=capacity, method=method, steps=steps,
                    ckpt_every=int(ckpt_every), log_every=int(log_every), privacy=budget.to_dict())
    if optimizer is None:
        optimizer = _train.make_optimizer(lr)
        settings.update(lr=lr)
    else:
        settings.update(optimizer="custom")
    run_config = _train.run_config(config, settings)
    dp_step = make_dp_train_step(loss, apply_fn, optimizer, clip=clip, noise_multiplier=budget.noise_multiplier,
                                 expected_batch_size=budget.batch_size, multiplicity=multiplicity,
                                 ema_decay=ema_decay, ema_warmup=ema_warmup, method=method)
    out, overflow_steps = Path(out_dir), []
    privacy_log = _PrivacyLog(out, budget, overflow_steps)
    state = _train.train_loop(
        lambda st, b: dp_step(st, *b), optimizer, params,
        _poisson_data_fn(jnp.asarray(data), budget.sample_rate, capacity, int(seed), overflow_steps),
        key=_train.train_key(seed), steps=steps, out_dir=out, config=run_config, resume=resume,
        ckpt_every=ckpt_every, log_every=log_every, max_to_keep=max_to_keep, prefetch=prefetch,
        progress=progress, desc="train-dp", ignore=_train.NON_IDENTITY_KEYS | _EXTRA_NON_IDENTITY,
        checkpoint_extra=privacy_log, log=log)
    overflows = privacy_log.last["overflows"]
    log(f"DP training done: {steps} steps, epsilon spent {budget.spent(steps):.4g} "
        f"(target {budget.epsilon}, delta {budget.delta}), overflows {overflows}")
    return state
