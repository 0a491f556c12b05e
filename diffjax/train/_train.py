"""``train``: the plain (non-private) training run, a thin builder on :func:`train_loop`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from diffjax._validate import check_int
from diffjax.train._checkpoint import run_config
from diffjax.train._loop import train_loop
from diffjax.train._mesh import make_mesh
from diffjax.train._state import TrainState, make_optimizer, make_train_step, train_key

__all__ = ["train"]


def _checked_data_fn(data_fn: Callable[[int], Any], batch_size: int) -> Callable[[int], Any]:
    """``data_fn`` that raises ``ValueError`` when a batch's leading dimension is not ``batch_size``."""
    if jax.process_count() > 1:  # each process returns its local slice
        return data_fn

    def checked(s):
        batch = data_fn(s)
        lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(batch)}
        if lead != {batch_size}:
            raise ValueError(f"data_fn({s}) returned leading dimension(s) {sorted(lead, key=str)}, "
                             f"expected batch_size={batch_size}")
        return batch

    return checked


def train(loss: Callable, apply_fn: Callable, params, data_fn: Callable[[int], Any], *,
          steps: int, out_dir, config: Mapping, lr: float = 2e-4, batch_size: int, seed: int = 0,
          ckpt_every: int = 1000, resume: bool | str | os.PathLike = False, ema_decay: float = 0.999,
          ema_warmup: bool = True, log_every: int = 100, progress: bool = True, warmup_steps: int = 0,
          grad_clip: float | None = None, weight_decay: float = 0.0, max_to_keep: int = 3,
          mesh: Mesh | None = None, donate: bool | None = None, prefetch: int = 2, steps_per_call: int = 1,
          optimizer: optax.GradientTransformation | None = None,
          log: Callable[[str], None] = print) -> TrainState:
    """Train with checkpoints, JSON-lines metrics and bit-exact resume (:func:`train_loop`).

    Step ``s`` (0-based) uses the batch ``data_fn(s)`` and the key ``fold_in(train_key(seed), s)``.
    The training stream :func:`train_key` is independent of ``PRNGKey(seed)``, the key a
    step-indexed data set such as :func:`diffjax.data.toy_batch` folds the step into: were they
    equal, the loss's noise would be the very draws that generated the batch (a leak). The step
    is :func:`make_train_step` (Adam from :func:`make_optimizer` unless ``optimizer`` is given;
    EMA with the warm-up of :func:`ema_schedule` unless ``ema_warmup=False``). Every
    ``log_every`` steps a line ``{"step", "loss", "grad_norm", ...scalar aux (window means),
    "steps_per_sec", "time"}`` is appended to ``<out_dir>/metrics.jsonl``; a checkpoint (state +
    run config) is written every ``ckpt_every`` steps and at the end.

    The stored run config is ``config`` plus the driver's own settings (``lr``, ``batch_size``,
    ``seed``, ``ema_decay``, ``ema_warmup``, ``warmup_steps``, ``grad_clip``, ``weight_decay``,
    ``steps``, ``ckpt_every``, ``log_every``; ``optimizer: "custom"`` instead of the four
    optimiser settings when ``optimizer`` is given — describe it in ``config``); on resume all
    keys outside :data:`NON_IDENTITY_KEYS` must match (so ``steps`` may be raised to continue).

    Args:
      loss: ``loss(apply_fn, params, key, batch) -> (scalar, aux)``.
      apply_fn: ``apply_fn(params, x, t)``.
      params: initial parameters (ignored when resuming from a checkpoint, except as template).
      data_fn: ``data_fn(step) -> batch`` (global batch, leading dim ``batch_size``; per-process
        slice in multi-host runs), deterministic in ``step``; run ``prefetch`` steps ahead in a
        background thread (``prefetch=0``: inline).
      steps: total number of steps of the run.
      out_dir: run directory (``checkpoints/``, ``metrics.jsonl``).
      config: JSON-serialisable description of the run (model, loss, data...).
      resume: ``False``, ``True`` or a run directory, as in :func:`train_loop`.
      ema_decay, ema_warmup: EMA target decay and its warm-up (:func:`ema_schedule`).
      mesh: device mesh (default: all devices, :func:`make_mesh`).
      donate: donate state buffers to the step (default: on unless the backend is CPU, where
        XLA cannot use donated buffers).
      steps_per_call: steps per jitted call (a ``lax.scan`` over stacked batches), for small
        models whose step is shorter than the host's dispatch overhead; see :func:`train_loop`.
      optimizer: an optax transformation replacing :func:`make_optimizer`'s Adam (then ``lr``,
        ``warmup_steps``, ``grad_clip`` and ``weight_decay`` are unused).
      log: where to print human-readable messages.

    Returns:
      The final :class:`TrainState`.

    Raises:
      ValueError: bad arguments, a batch of the wrong size, or a config mismatch on resume.
      FileExistsError: ``resume=False`` but ``out_dir`` already has checkpoints.
      FileNotFoundError: ``resume`` is a path without a checkpoint.
      NonFiniteLossError: the loss/gradient became NaN or inf (no checkpoint is written after
        the last good one, which stays untouched).
    """
    steps, ckpt_every, log_every, batch_size = (check_int(name, v) for name, v in (
        ("steps", steps), ("ckpt_every", ckpt_every), ("log_every", log_every), ("batch_size", batch_size)))
    settings = dict(batch_size=batch_size, seed=int(seed), ema_decay=ema_decay, ema_warmup=bool(ema_warmup),
                    steps=steps, ckpt_every=ckpt_every, log_every=log_every)
    if optimizer is None:
        optimizer = make_optimizer(lr, warmup_steps=warmup_steps, grad_clip=grad_clip, weight_decay=weight_decay)
        settings.update(lr=lr, warmup_steps=int(warmup_steps), grad_clip=grad_clip, weight_decay=weight_decay)
    else:
        settings.update(optimizer="custom")
    cfg = run_config(config, settings)
    mesh = make_mesh() if mesh is None else mesh
    if batch_size % mesh.devices.size:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of devices ({mesh.devices.size})")
    step = make_train_step(loss, apply_fn, optimizer, ema_decay=ema_decay, ema_warmup=ema_warmup)
    return train_loop(step, optimizer, params, _checked_data_fn(data_fn, batch_size), key=train_key(seed),
                      steps=steps, out_dir=out_dir, config=cfg, resume=resume, ckpt_every=ckpt_every,
                      log_every=log_every, max_to_keep=max_to_keep, mesh=mesh, donate=donate, prefetch=prefetch,
                      steps_per_call=steps_per_call, progress=progress, log=log)
