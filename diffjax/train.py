"""Training: train state, jit/sharded train step with EMA, orbax checkpoints, a resumable driver.

Everything here takes plain callables: a loss built by :mod:`diffjax.losses`
(``loss(apply_fn, params, key, x0, *, reduce=True) -> (scalar, aux)``), a pure
``apply_fn(params, x, t)`` (e.g. :func:`diffjax.nn.make_apply`) and a step-indexed data function
``data_fn(step) -> batch``. The step's PRNG key is ``fold_in(state.key, state.step)``, so a run is
a pure function of ``(params0, seed, data_fn)`` and resuming from a checkpoint is bit-exact.

Data parallelism uses :mod:`jax.sharding`: a 1-D :class:`~jax.sharding.Mesh` named ``"data"``
over all devices, the batch sharded along its leading axis, the state replicated; XLA inserts
the gradient all-reduce. Multi-host: call ``jax.distributed.initialize()`` in every process
before anything else; :func:`make_mesh` then spans all global devices, each process's
``data_fn`` returns its *process-local* slice of the global batch, and :func:`shard_batch`
assembles the global array with ``jax.make_array_from_process_local_data``. Checkpoints are
written collectively by orbax (every process must call :func:`save_checkpoint`).

Checkpoints live in ``<out_dir>/checkpoints/<step>/`` with items ``state`` (orbax
``StandardSave``) and ``config`` (``JsonSave``, the JSON run configuration); orbax writes to a
temporary directory and renames it when complete, and keeps the last ``max_to_keep``. No pickle.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
    "TrainState", "create_train_state", "make_optimizer", "make_train_step",
    "make_mesh", "shard_batch", "replicate",
    "NON_IDENTITY_KEYS", "run_identity", "checkpoint_manager", "save_checkpoint",
    "restore_checkpoint", "restore_params", "load_config", "latest_step",
    "NonFiniteLossError", "train",
]

# Config keys that may change between a run and its resumption (everything else identifies
# the run: model, loss, data, optimiser and seed must match for resume to be meaningful).
NON_IDENTITY_KEYS = frozenset({
    "steps", "resume", "ckpt_every", "log_every", "progress", "out_dir", "max_to_keep",
    "command", "demo",
})


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


class NonFiniteLossError(FloatingPointError):
    """Raised by :func:`train` when the loss or gradient norm becomes NaN/inf."""


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


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all global devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def replicate(tree, mesh: Mesh):
    """Place a pytree (e.g. a :class:`TrainState`) replicated on every device of ``mesh``.

    Multi-host: every process must pass identical values (true for a state built from the same
    seed or restored from the same checkpoint).
    """
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch, mesh: Mesh):
    """Shard a batch pytree along its leading axis over the mesh axis ``"data"``.

    Single process: ``batch`` is the global batch. Multi-host: ``batch`` is this process's
    slice; the global batch is assembled with ``jax.make_array_from_process_local_data``.

    Raises:
      ValueError: if a leading dimension is not divisible by the number of (local) devices.
    """
    sharding = NamedSharding(mesh, P("data"))
    n_local = len(mesh.local_devices)

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0 or x.shape[0] % n_local:
            raise ValueError(
                f"batch leading dimension {x.shape[:1]} must be divisible by the number of "
                f"local devices ({n_local})")
        if jax.process_count() > 1:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map(put, batch)


def make_train_step(loss: Callable, apply_fn: Callable, optimizer: optax.GradientTransformation, *,
                    ema_decay: float = 0.999, mesh: Mesh | None = None,
                    donate: bool = False) -> Callable:
    """Build the jitted pure step ``step(state, batch) -> (state, metrics)``.

    The step draws its randomness from ``key = fold_in(state.key, state.step)``, computes
    ``(loss, aux), grads = value_and_grad(loss)(params)`` with
    ``loss(apply_fn, params, key, batch)``, applies the optimiser, and updates the EMA
    ``ema <- d * ema + (1 - d) * params``.

    Args:
      loss: ``loss(apply_fn, params, key, x0) -> (scalar, aux)``.
      apply_fn: ``apply_fn(params, x, t)``.
      optimizer: optax transformation.
      ema_decay: EMA decay ``d`` in ``[0, 1)``.
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
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")

    def step(state: TrainState, batch):
        key = jax.random.fold_in(state.key, state.step)

        def objective(params):
            return loss(apply_fn, params, key, batch)

        (value, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree_util.tree_map(
            lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
        grad_norm = optax.tree.norm(grads)
        metrics = {
            "loss": value,
            "grad_norm": grad_norm,
            "finite": jnp.isfinite(value) & jnp.isfinite(grad_norm),
        }
        if isinstance(aux, Mapping):
            for k, v in aux.items():
                if k not in metrics and hasattr(v, "shape") and jnp.shape(v) == ():
                    metrics[k] = v
        new_state = TrainState(params, ema, opt_state, state.step + 1, state.key)
        return new_state, metrics

    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    repl = NamedSharding(mesh, P())
    return jax.jit(step, in_shardings=(repl, NamedSharding(mesh, P("data"))),
                   out_shardings=(repl, repl), donate_argnums=donate_argnums)


# ----------------------------------------------------------------------------- checkpoints


def _ckpt_dir(path) -> Path:
    """``<out_dir>/checkpoints`` (a path already named ``checkpoints`` is taken as is)."""
    p = Path(path).absolute()
    return p if p.name == "checkpoints" else p / "checkpoints"


def _normalise_config(config: Mapping) -> dict:
    try:
        return json.loads(json.dumps(dict(config), sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"config must be a JSON-serialisable dict: {e}") from None


def run_identity(config: Mapping, ignore=NON_IDENTITY_KEYS) -> dict:
    """The part of a run config that must match for a resume: all keys except ``ignore``."""
    return {k: v for k, v in _normalise_config(config).items() if k not in ignore}


def checkpoint_manager(out_dir, *, max_to_keep: int | None = 3, read_only: bool = False) -> ocp.CheckpointManager:
    """An orbax ``CheckpointManager`` for ``<out_dir>/checkpoints`` (synchronous, keep-last-N).

    ``read_only=True`` does not create the directory (used by the restore helpers, which never save).
    """
    if max_to_keep is not None and max_to_keep < 1:
        raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep!r}")
    # Readers open the directory without creating it (orbax's own read_only mode only logs warnings).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, enable_async_checkpointing=False)
    return ocp.CheckpointManager(_ckpt_dir(out_dir), options=options)


def latest_step(out_dir) -> int | None:
    """Latest complete checkpoint step in ``<out_dir>/checkpoints``, or ``None`` if there is none."""
    d = _ckpt_dir(out_dir)
    if not d.is_dir():
        return None
    mngr = checkpoint_manager(out_dir, read_only=True, max_to_keep=None)
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def save_checkpoint(manager_or_dir, state: TrainState, config: Mapping, *, max_to_keep: int | None = 3) -> int:
    """Save ``state`` and the JSON ``config`` as checkpoint ``int(state.step)``; returns the step.

    Args:
      manager_or_dir: a manager from :func:`checkpoint_manager` or an ``out_dir``.
      state: the train state (must be finite — :func:`train` guarantees it).
      config: JSON-serialisable run configuration.
      max_to_keep: only used when a directory is given.
    """
    cfg = _normalise_config(config)
    own = not isinstance(manager_or_dir, ocp.CheckpointManager)
    mngr = checkpoint_manager(manager_or_dir, max_to_keep=max_to_keep) if own else manager_or_dir
    step = int(jax.device_get(state.step))
    try:
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(cfg)), force=True)
        mngr.wait_until_finished()
    finally:
        if own:
            mngr.close()
    return step


def _resolve_step(out_dir, step: int | None) -> int:
    d = _ckpt_dir(out_dir)
    s = latest_step(out_dir) if step is None else step
    if s is None:
        raise FileNotFoundError(f"no checkpoint found in {d}")
    if not (d / str(s)).is_dir():
        raise FileNotFoundError(f"checkpoint step {s} not found in {d}")
    return s


def load_config(out_dir, step: int | None = None) -> dict:
    """The run config stored with a checkpoint (default: the latest)."""
    s = _resolve_step(out_dir, step)
    mngr = checkpoint_manager(out_dir, read_only=True, max_to_keep=None)
    try:
        return dict(mngr.restore(s, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config)
    finally:
        mngr.close()


def _check_config(stored: Mapping, given: Mapping, ignore) -> None:
    a, b = run_identity(stored, ignore), run_identity(given, ignore)
    diff = sorted(k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>"))
    if diff:
        details = ", ".join(f"{k}: checkpoint={a.get(k, '<missing>')!r} vs given={b.get(k, '<missing>')!r}"
                            for k in diff)
        raise ValueError(f"checkpoint config differs from the given config in run-identity keys "
                         f"{diff} ({details}); use a new out_dir or the original settings")


def restore_checkpoint(out_dir, state_template: TrainState, config: Mapping | None, *,
                       step: int | None = None, ignore=NON_IDENTITY_KEYS) -> TrainState:
    """Restore a train state, refusing a checkpoint whose config differs in run-identity keys.

    Args:
      out_dir: run directory (or its ``checkpoints`` subdirectory).
      state_template: a state with the right structure, shapes, dtypes and shardings (e.g.
        ``replicate(create_train_state(params, optimizer, key), mesh)``).
      config: the current run config, compared with the stored one on all keys except
        ``ignore`` (:data:`NON_IDENTITY_KEYS`); ``None`` skips the check.
      step: checkpoint step (default: latest).

    Returns:
      The restored :class:`TrainState` (same tree structure and shardings as the template).

    Raises:
      FileNotFoundError: no such checkpoint.
      ValueError: config mismatch (the message names the differing keys).
    """
    s = _resolve_step(out_dir, step)
    mngr = checkpoint_manager(out_dir, read_only=True, max_to_keep=None)
    try:
        if config is not None:
            stored = mngr.restore(s, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
            _check_config(stored, config, ignore)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_template)
        restored = mngr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
    finally:
        mngr.close()
    treedef = jax.tree_util.tree_structure(state_template)
    return jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(restored))


def restore_params(out_dir, *, ema: bool = True, step: int | None = None):
    """Restore only the (EMA) parameters of a checkpoint as host numpy arrays, without a template.

    Useful for sampling/evaluation, where the optimiser state is not needed.
    """
    s = _resolve_step(out_dir, step)
    mngr = checkpoint_manager(out_dir, read_only=True, max_to_keep=None)
    try:
        tree = mngr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    finally:
        mngr.close()
    field = "ema_params" if ema else "params"
    sub = tree[field] if isinstance(tree, Mapping) else getattr(tree, field)
    return jax.tree_util.tree_map(np.asarray, sub)


# ----------------------------------------------------------------------------- driver


def _filter_metrics_log(path: Path, keep_upto: int) -> None:
    """Drop log lines with ``step > keep_upto`` (they are about to be recomputed)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if rec.get("step", 0) <= keep_upto:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def train_key(seed: int) -> jax.Array:
    """The base key of a run's training randomness (loss noise, times), independent of data keys.

    ``fold_in(PRNGKey(seed), 0x7472616E)`` (ASCII "tran"); data sets use ``PRNGKey(seed)`` itself.
    """
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0x7472616E)


def train(loss: Callable, apply_fn: Callable, params, data_fn: Callable[[int], Any], *,
          steps: int, out_dir, config: Mapping, lr: float = 2e-4, batch_size: int, seed: int = 0,
          ckpt_every: int = 1000, resume: bool | str | os.PathLike = False, ema_decay: float = 0.999,
          log_every: int = 100, progress: bool = True, warmup_steps: int = 0,
          grad_clip: float | None = None, weight_decay: float = 0.0, max_to_keep: int = 3,
          mesh: Mesh | None = None, donate: bool | None = None, log: Callable[[str], None] = print) -> TrainState:
    """Train with checkpoints, JSON-lines metrics and bit-exact resume.

    Step ``s`` (0-based) uses the batch ``data_fn(s)`` and the key ``fold_in(train_key(seed), s)``.
    The training stream :func:`train_key` is independent of ``PRNGKey(seed)``, the key a
    step-indexed data set such as :func:`diffjax.data.toy_batch` folds the step into: were they
    equal, the loss's noise would be the very draws that generated the batch (a leak).
    Every ``log_every`` steps a line ``{"step", "loss" (mean over the window), "grad_norm",
    "steps_per_sec", "time", ...scalar aux}`` is appended to ``<out_dir>/metrics.jsonl``; a
    checkpoint (state + run config) is written every ``ckpt_every`` steps and at the end.

    The stored run config is ``config`` plus the driver's own settings (``lr``, ``batch_size``,
    ``seed``, ``ema_decay``, ``warmup_steps``, ``grad_clip``, ``weight_decay``, ``steps``,
    ``ckpt_every``, ``log_every``); on resume all keys outside :data:`NON_IDENTITY_KEYS` must
    match (so ``steps`` may be raised to continue a run).

    Args:
      loss: ``loss(apply_fn, params, key, batch) -> (scalar, aux)``.
      apply_fn: ``apply_fn(params, x, t)``.
      params: initial parameters (ignored when resuming from a checkpoint, except as template).
      data_fn: ``data_fn(step) -> batch`` (global batch, leading dim ``batch_size``; per-process
        slice in multi-host runs), deterministic in ``step``.
      steps: total number of steps of the run.
      out_dir: run directory (``checkpoints/``, ``metrics.jsonl``).
      config: JSON-serialisable description of the run (model, loss, data...).
      resume: ``False`` (``out_dir`` must hold no checkpoint), ``True`` (continue from the latest
        checkpoint in ``out_dir``; start fresh, with a message, if there is none) or a path to a
        run directory whose latest checkpoint to start from (must exist).
      mesh: device mesh (default: all devices, :func:`make_mesh`).
      donate: donate state buffers to the step (default: on unless the backend is CPU, where
        XLA cannot use donated buffers).
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
    for name, v in (("steps", steps), ("batch_size", batch_size), ("ckpt_every", ckpt_every),
                    ("log_every", log_every), ("max_to_keep", max_to_keep)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    out = Path(out_dir)
    run_config = _normalise_config(config)
    driver = dict(lr=lr, batch_size=int(batch_size), seed=int(seed), ema_decay=ema_decay,
                  warmup_steps=int(warmup_steps), grad_clip=grad_clip, weight_decay=weight_decay,
                  steps=int(steps), ckpt_every=int(ckpt_every), log_every=int(log_every))
    clash = sorted(k for k, v in _normalise_config(driver).items() if k in run_config and run_config[k] != v)
    if clash:
        raise ValueError(f"config keys {clash} disagree with the train() arguments of the same name")
    run_config.update(_normalise_config(driver))

    optimizer = make_optimizer(lr, warmup_steps=warmup_steps, grad_clip=grad_clip, weight_decay=weight_decay)
    mesh = make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of devices ({n_dev})")
    state = replicate(create_train_state(params, optimizer, train_key(seed)), mesh)

    # ---- where to start
    have = latest_step(out)
    start_from = None
    if resume is True:
        if have is None:
            log(f"resume: no checkpoint in {_ckpt_dir(out)}; starting fresh")
        else:
            start_from = out
    elif resume is False or resume is None:
        if have is not None:
            raise FileExistsError(
                f"{_ckpt_dir(out)} already holds checkpoints (latest step {have}); pass resume=True "
                "to continue that run or choose a new out_dir")
    else:
        src = Path(resume)
        if not src.exists() or latest_step(src) is None:
            raise FileNotFoundError(f"resume path {src} does not exist or holds no checkpoint")
        start_from = src
    if start_from is not None:
        state = restore_checkpoint(start_from, state, run_config)
        log(f"resumed from {_ckpt_dir(start_from)} at step {int(state.step)}")
    start = int(jax.device_get(state.step))
    if start > steps:
        raise ValueError(f"checkpoint is at step {start} > steps={steps}")

    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    _filter_metrics_log(metrics_path, start)  # fresh: keeps nothing beyond step 0; resume: no duplicates

    if donate is None:
        donate = jax.default_backend() != "cpu"
    step_fn = make_train_step(loss, apply_fn, optimizer, ema_decay=ema_decay, mesh=mesh, donate=donate)
    mngr = checkpoint_manager(out, max_to_keep=max_to_keep)
    last_saved = latest_step(out) if start_from == out else None

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def check(first_bad):
        fb = int(jax.device_get(first_bad))
        if fb >= 0:
            raise NonFiniteLossError(
                f"non-finite loss or gradient at step {fb} (0-based); training stopped. The last good "
                f"checkpoint (step {last_saved}) in {_ckpt_dir(out)} is untouched. Try a lower lr, "
                "grad_clip or warmup_steps.")

    first_bad = jnp.asarray(-1, jnp.int32)
    window_loss, window_n, t_window, last_m = jnp.zeros(()), 0, time.perf_counter(), None
    try:
        for s in range(start, steps):
            batch = data_fn(s)
            lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(batch)}
            if jax.process_count() == 1 and lead != {batch_size}:
                raise ValueError(f"data_fn({s}) returned leading dimension(s) {sorted(lead, key=str)}, "
                                 f"expected batch_size={batch_size}")
            state, m = step_fn(state, shard_batch(batch, mesh))
            first_bad = jnp.where((first_bad < 0) & ~m["finite"], s, first_bad)
            window_loss, window_n, last_m = window_loss + m["loss"], window_n + 1, m
            done = s + 1
            if bar is not None:
                bar.update(1)
            if done % log_every == 0 or done == steps:
                check(first_bad)
                now = time.perf_counter()
                rec = {"step": done, "loss": float(window_loss) / window_n}
                rec.update({k: float(v) for k, v in jax.device_get(last_m).items()
                            if k not in ("loss", "finite")})
                rec["steps_per_sec"] = window_n / max(now - t_window, 1e-9)
                rec["time"] = time.time()
                if jax.process_index() == 0:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", steps_per_sec=f"{rec['steps_per_sec']:.1f}")
                window_loss, window_n, t_window = jnp.zeros(()), 0, now
            if done % ckpt_every == 0 or done == steps:
                check(first_bad)
                save_checkpoint(mngr, state, run_config)
                last_saved = done
        if start == steps and last_saved is None:
            save_checkpoint(mngr, state, run_config)
    finally:
        if bar is not None:
            bar.close()
        mngr.close()
    return state
