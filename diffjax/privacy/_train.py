"""DP training: a jitted DP-SGD step on padded Poisson batches and a small resumable driver.

Thesis Alg. 4: Poisson-sample a batch (Alg. 5), average ``K`` noise draws per example
(eq. 4.7), clip, sum, noise, divide by ``B`` (eqs. 4.10-4.11), Adam, EMA. The driver reuses
:mod:`diffjax.train`'s :class:`~diffjax.train.TrainState`, optimiser and orbax checkpoints;
the privacy plan (a :class:`PrivacyBudget`) is stored in the checkpoint config (identity:
a resume must use the same plan) together with ``privacy_spent`` (steps taken, epsilon
spent; not identity), and mirrored to ``<out_dir>/privacy.json``.
"""

from __future__ import annotations

import json
import math
import time
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
                       multiplicity: int = 1, ema_decay: float = 0.999, method: str = "auto",
                       donate: bool = False) -> Callable:
    """Build the jitted DP step ``step(state, batch, mask) -> (state, metrics)`` (thesis Alg. 4).

    Mirrors :func:`diffjax.train.make_train_step`: the key is ``fold_in(state.key, state.step)``,
    the gradient is :func:`private_grad` (clip ``C``, noise ``sigma_DP C``, divisor ``B``,
    noise multiplicity ``K``), then the optimiser and the EMA update. ``batch`` is a padded
    ``(capacity, *data)`` array and ``mask`` its ``(capacity,)`` real-row mask; the number of
    real rows never triggers a recompile (only a new capacity does).

    Returns:
      ``step``; ``metrics``: ``loss`` (mean ``l~_i`` over real rows), ``grad_norm`` (of the noisy
      gradient), ``clip_fraction`` (real rows with ``||g_i|| > C``), ``batch_size`` (real rows),
      ``finite``.

    Raises:
      ValueError: invalid ``clip``, ``noise_multiplier``, ``expected_batch_size``,
        ``multiplicity``, ``method`` or ``ema_decay``.
    """
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
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
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree_util.tree_map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
                                     state.ema_params, params)
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
        return _train.TrainState(params, ema, opt_state, state.step + 1, state.key), metrics

    return jax.jit(step, donate_argnums=(0,) if donate else ())


_fold_in = jax.jit(jax.random.fold_in)


def sampling_key(seed: int) -> jax.Array:
    """Base key of the Poisson sampler; step ``s`` uses ``fold_in(sampling_key(seed), s)``."""
    return jax.random.split(jax.random.PRNGKey(seed))[1]


def _write_privacy(out: Path, budget: PrivacyBudget, steps_taken: int, eps: float, overflows: int) -> dict:
    rec = {"steps_taken": int(steps_taken), "epsilon_spent": float(eps), "overflows": int(overflows)}
    if jax.process_index() == 0:
        (out / "privacy.json").write_text(json.dumps(dict(budget.to_dict(), **rec), indent=1) + "\n")
    return rec


def train_dp(loss: Callable, apply_fn: Callable, params, data, *, budget: PrivacyBudget, clip: float,
             out_dir, config: Mapping, multiplicity: int = 1, lr: float = 3e-4, seed: int = 0,
             steps: int | None = None, ckpt_every: int = 1000, resume: bool = False,
             ema_decay: float = 0.999, log_every: int = 100, capacity: int | None = None,
             method: str = "auto", max_to_keep: int = 3, progress: bool = False,
             log: Callable[[str], None] = print) -> _train.TrainState:
    """Train a diffusion model with DP-SGD within ``budget`` (thesis Alg. 4), resumably.

    Step ``s`` uses the Poisson batch drawn with ``fold_in(sampling_key(seed), s)`` and the
    step key ``fold_in(PRNGKey(seed), s)``; Adam (:func:`diffjax.train.make_optimizer`) with
    EMA. Checkpoints (``save_checkpoint``) hold the state and the run config, which includes
    ``privacy`` (the plan) and ``privacy_spent`` (``steps_taken``, ``epsilon_spent``,
    ``overflows``); ``<out_dir>/privacy.json`` mirrors the latest. A Poisson draw larger than
    ``capacity`` (probability ``<= 1e-9`` per step by default) is re-padded to a multiple of
    ``capacity`` — exact, one extra compile — and counted in ``overflows``.

    Args:
      data: the whole private data set ``(N, *shape)``, ``N == budget.dataset_size``.
      budget: a :class:`PrivacyBudget` (gives ``sigma_DP``, ``q``, ``B`` and the step count).
      clip: clipping norm ``C``.
      steps: total steps (default ``budget.steps``); more than ``budget.steps`` is refused.
      capacity: padded batch size (default :func:`poisson_capacity` of ``budget.batch_size``).
      resume: continue from the latest checkpoint in ``out_dir`` (must match the plan).
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
    run_config = dict(config)
    run_config.update(lr=lr, seed=int(seed), ema_decay=ema_decay, clip=float(clip),
                      multiplicity=int(multiplicity), capacity=capacity, method=method, steps=steps,
                      ckpt_every=int(ckpt_every), log_every=int(log_every), privacy=budget.to_dict())
    ignore = _train.NON_IDENTITY_KEYS | _EXTRA_NON_IDENTITY

    optimizer = _train.make_optimizer(lr)
    state = _train.create_train_state(params, optimizer, jax.random.PRNGKey(seed))
    out = Path(out_dir)
    overflows = 0
    if _train.latest_step(out) is not None:
        if not resume:
            raise FileExistsError(f"{out} already holds checkpoints; pass resume=True or choose a new out_dir")
        state = _train.restore_checkpoint(out, state, run_config, ignore=ignore)
        overflows = int(_train.load_config(out).get("privacy_spent", {}).get("overflows", 0))
        log(f"resumed at step {int(state.step)}")
    out.mkdir(parents=True, exist_ok=True)
    start = int(state.step)

    step_fn = make_dp_train_step(loss, apply_fn, optimizer, clip=clip, noise_multiplier=budget.noise_multiplier,
                                 expected_batch_size=budget.batch_size, multiplicity=multiplicity,
                                 ema_decay=ema_decay, method=method)
    data = jnp.asarray(data)
    dkey = sampling_key(seed)
    mngr = _train.checkpoint_manager(out, max_to_keep=max_to_keep)

    def checkpoint(st):
        done = int(st.step)
        rec = _write_privacy(out, budget, done, budget.spent(done), overflows)
        _train.save_checkpoint(mngr, st, dict(run_config, privacy_spent=rec))

    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415
        bar = tqdm(total=steps, initial=start, desc="train-dp", unit="step", dynamic_ncols=True)
    window, t0 = [], time.perf_counter()
    try:
        for s in range(start, steps):
            k = _fold_in(dkey, s)
            batch, mask, count = poisson_batch(k, data, budget.sample_rate, capacity=capacity)
            count = int(count)
            if count > capacity:  # exact: same draw, larger padding
                overflows += 1
                big = capacity * math.ceil(count / capacity)
                batch, mask, _ = poisson_batch(k, data, budget.sample_rate, capacity=big)
            state, m = step_fn(state, batch, mask)
            window.append(m)
            done = s + 1
            if bar is not None:
                bar.update(1)
            if done % log_every == 0 or done == steps:
                ms = jax.device_get(window)
                if not all(bool(x["finite"]) for x in ms):
                    raise _train.NonFiniteLossError(f"non-finite loss or gradient before step {done}")
                rec = {"step": done, **{key: float(np.mean([x[key] for x in ms]))
                                        for key in ("loss", "grad_norm", "clip_fraction", "batch_size")}}
                rec["steps_per_sec"] = len(ms) / max(time.perf_counter() - t0, 1e-9)
                if jax.process_index() == 0:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(rec) + "\n")
                window, t0 = [], time.perf_counter()
            if done % ckpt_every == 0 or done == steps:
                checkpoint(state)
        if start == steps and _train.latest_step(out) is None:
            checkpoint(state)
    finally:
        if bar is not None:
            bar.close()
        mngr.close()
    log(f"DP training done: {steps} steps, epsilon spent {budget.spent(steps):.4g} "
        f"(target {budget.epsilon}, delta {budget.delta}), overflows {overflows}")
    return state
