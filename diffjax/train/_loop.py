"""The one training driver: resume, prefetched batches, on-device metrics, logs, checkpoints.

:func:`train_loop` runs any pure step ``step(state, batch) -> (state, metrics)`` over the
batches ``data_fn(s)`` and owns everything around it; :func:`diffjax.train.train` and
:func:`diffjax.privacy.train_dp` are thin builders on top of it.

The host never waits on the device between log points: the step is fused with the metric
accumulation (window sums of every scalar metric, the first non-finite step) into one jitted
call per step, batches come from a bounded background thread (:class:`Prefetcher`), at most
``_MAX_INFLIGHT`` steps are queued ahead of the device, and the accumulators are read only
every ``log_every`` steps and before every checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from diffjax._validate import check_int
from diffjax.train._checkpoint import (NON_IDENTITY_KEYS, checkpoint_dir, checkpoint_manager, has_checkpoints,
                                       latest_step, load_config, restore_checkpoint, save_checkpoint)
from diffjax.train._mesh import replicate, shard_batch
from diffjax.train._prefetch import Prefetcher
from diffjax.train._state import TrainState, create_train_state

__all__ = ["NonFiniteLossError", "train_loop"]

_MAX_INFLIGHT = 4  # steps dispatched ahead of the device (bounds the memory held by queued batches)


class NonFiniteLossError(FloatingPointError):
    """Raised by the training driver when the loss or gradient norm becomes NaN/inf."""


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


def _to_device(batch):
    """Host leaves of ``batch`` to the default device (device arrays are left where they are)."""
    return jax.tree_util.tree_map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x), batch)


def _initial_state(state: TrainState, out: Path, resume, config: Mapping, ignore, log):
    """``(state, source, stored_config)``: the fresh state, or the one restored per ``resume``.

    The decision reads only the file system (no orbax manager, no collective), and every process
    takes it before any of them creates ``out``'s checkpoint directory (see :func:`train_loop`).
    A damaged newest checkpoint makes the restore raise rather than resume from an older one.
    """
    source = None
    if resume is True:
        if not has_checkpoints(out):
            log(f"resume: no checkpoint in {checkpoint_dir(out)}; starting fresh")
        else:
            source = out
    elif resume is False or resume is None:
        if has_checkpoints(out):
            raise FileExistsError(
                f"{checkpoint_dir(out)} already holds checkpoints (latest complete step {latest_step(out)}); pass "
                "resume=True to continue that run or choose a new out_dir")
    else:
        source = Path(resume)
        if not source.exists() or not has_checkpoints(source):
            raise FileNotFoundError(f"resume path {source} does not exist or holds no checkpoint")
    if source is None:
        return state, None, None
    state = restore_checkpoint(source, state, config, ignore=ignore)
    log(f"resumed from {checkpoint_dir(source)} at step {int(state.step)}")
    return state, source, load_config(source, step=int(state.step))


def _fuse(step: Callable, state: TrainState, batch, mesh: Mesh | None, donate: bool):
    """``(call, acc0)``: ``call(k)`` is the jitted ``(state, acc, batches) -> (state, acc)`` running ``k`` steps.

    ``acc`` holds float32 window sums of the step's scalar metrics (``finite`` excepted), the
    window's step count ``n`` and ``first_bad``, the first step whose ``finite`` was false (-1).
    ``call(1)`` takes one batch; ``call(k > 1)`` takes the ``k`` batches stacked on a new leading
    axis and runs the steps in one ``lax.scan`` (one dispatch for ``k`` steps). Compiled once per ``k``.
    """
    shapes = jax.eval_shape(step, state, batch)[1]
    if not isinstance(shapes, Mapping) or "loss" not in shapes or "finite" not in shapes:
        raise ValueError("the step's metrics must be a dict holding 'loss' and 'finite'")
    acc0 = {"sums": {k: jnp.zeros((), jnp.float32) for k, v in shapes.items() if k != "finite" and v.shape == ()},
            "n": jnp.zeros((), jnp.int32), "first_bad": jnp.full((), -1, jnp.int32)}

    def fused(state, acc, batch):
        t = state.step
        state, m = step(state, batch)
        bad = (acc["first_bad"] < 0) & ~jnp.asarray(m["finite"], bool)
        sums = {k: v + jnp.asarray(m[k], jnp.float32) for k, v in acc["sums"].items()}
        return state, {"sums": sums, "n": acc["n"] + 1, "first_bad": jnp.where(bad, t, acc["first_bad"])}

    def scanned(state, acc, batches):
        return jax.lax.scan(lambda c, b: (fused(*c, b), None), (state, acc), batches)[0]

    donate_argnums = (0,) if donate else ()
    repl = None if mesh is None else NamedSharding(mesh, P())
    cache = {}

    def call(k: int):
        if k not in cache:
            fn = fused if k == 1 else scanned
            if mesh is None:
                cache[k] = jax.jit(fn, donate_argnums=donate_argnums)
            else:
                data = NamedSharding(mesh, P("data") if k == 1 else P(None, "data"))
                cache[k] = jax.jit(fn, in_shardings=(repl, repl, data), out_shardings=(repl, repl),
                                   donate_argnums=donate_argnums)
        return cache[k]

    return call, (acc0 if mesh is None else replicate(acc0, mesh))


def _chunk_end(s: int, steps: int, periods: tuple[int, ...]) -> int:
    """The first step after ``s`` that is a multiple of one of ``periods`` (or ``steps``): chunks never
    cross a log or checkpoint point, and depend only on the absolute step (so a resumed run repeats them)."""
    return min([steps] + [(s // p + 1) * p for p in periods])


class _Outputs:
    """The loop's host side: metrics log, progress bar, the non-finite check and checkpoints."""

    def __init__(self, out: Path, config: Mapping, *, max_to_keep: int, extra, stored, last_saved,
                 bar, log):
        self.out, self.config, self.extra, self.stored = out, config, extra, stored
        self.last_saved, self.bar, self.log = last_saved, bar, log
        self.mngr = checkpoint_manager(out, max_to_keep=max_to_keep)
        self.t_window = time.perf_counter()

    def check(self, first_bad) -> None:
        fb = int(first_bad)
        if fb >= 0:
            raise NonFiniteLossError(
                f"non-finite loss or gradient at step {fb} (0-based); training stopped. The last good "
                f"checkpoint (step {self.last_saved}) in {checkpoint_dir(self.out)} is untouched. Try a lower "
                "lr, grad_clip or warmup_steps.")

    def record(self, done: int, window) -> None:
        """Append ``{"step", window means of the metrics, "steps_per_sec", "time"}`` to metrics.jsonl."""
        now, n = time.perf_counter(), int(window["n"])
        sums = window["sums"]
        rec = {"step": done, "loss": float(sums["loss"]) / n,
               **{k: float(v) / n for k, v in sums.items() if k != "loss"},
               "steps_per_sec": n / max(now - self.t_window, 1e-9), "time": time.time()}
        self.t_window = now
        if jax.process_index() == 0:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{rec['loss']:.4g}", steps_per_sec=f"{rec['steps_per_sec']:.1f}")

    def save(self, state: TrainState) -> None:
        done = int(jax.device_get(state.step))
        cfg = self.config if self.extra is None else dict(self.config, **self.extra(done, self.stored))
        save_checkpoint(self.mngr, state, cfg)
        self.last_saved = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.mngr.close()


def _run(step: Callable, state: TrainState, feed: Prefetcher, io: _Outputs, *, start: int, steps: int,
         log_every: int, ckpt_every: int, steps_per_call: int, mesh: Mesh | None, donate: bool) -> TrainState:
    """Steps ``start .. steps - 1``; reads the device only at log and checkpoint points."""
    call = acc = acc0 = None
    inflight = deque()
    s = start
    while s < steps:
        done = _chunk_end(s, steps, (steps_per_call, log_every, ckpt_every))
        batches = [feed.get(i) for i in range(s, done)]
        if call is None:
            call, acc0 = _fuse(step, state, batches[0], mesh, donate)
            acc = acc0
        if done - s == 1:
            state, acc = call(1)(state, acc, batches[0])
        else:
            state, acc = call(done - s)(state, acc, jax.tree_util.tree_map(lambda *b: jnp.stack(b), *batches))
        inflight.append(acc["n"])
        if len(inflight) > _MAX_INFLIGHT:
            inflight.popleft().block_until_ready()
        if io.bar is not None:
            io.bar.update(done - s)
        s = done
        log_now, ckpt_now = done % log_every == 0 or done == steps, done % ckpt_every == 0 or done == steps
        if log_now or ckpt_now:
            window = jax.device_get(acc)
            io.check(window["first_bad"])  # never log or checkpoint past a non-finite step
            if log_now:
                io.record(done, window)
                acc = acc0
            if ckpt_now:
                io.save(state)
    if start == steps and io.last_saved is None:
        io.save(state)
    return state


def train_loop(step: Callable, optimizer: optax.GradientTransformation, params, data_fn: Callable[[int], Any], *,
               key: jax.Array, steps: int, out_dir, config: Mapping, resume: bool | str | os.PathLike = False,
               ckpt_every: int = 1000, log_every: int = 100, max_to_keep: int = 3, mesh: Mesh | None = None,
               donate: bool | None = None, prefetch: int = 2, steps_per_call: int = 1, progress: bool = True,
               desc: str = "train", ignore=NON_IDENTITY_KEYS,
               checkpoint_extra: Callable[[int, Mapping | None], Mapping] | None = None,
               log: Callable[[str], None] = print) -> TrainState:
    """Run ``step`` from ``create_train_state(params, optimizer, key)`` (or a checkpoint) to ``steps``.

    Step ``s`` (0-based) feeds ``data_fn(s)`` to ``step``; ``data_fn`` runs up to ``prefetch``
    steps ahead in a background thread, so a slow ``data_fn`` hides behind the device. Every
    ``log_every`` steps (and at the end) a line ``{"step", <window mean of every scalar metric>,
    "steps_per_sec", "time"}`` is appended to ``<out_dir>/metrics.jsonl``; every ``ckpt_every``
    steps (and at the end) a checkpoint ``(state, config)`` is written. A non-finite step stops
    the run at the next log or checkpoint point, before anything is written for it.

    Args:
      step: pure ``step(state, batch) -> (state, metrics)`` (jitted or not); ``metrics`` is a dict
        with at least ``loss`` and the bool ``finite``; its other scalar entries are logged.
      optimizer: the optax transformation ``step`` applies (it makes the initial ``opt_state``).
      params: initial parameters (ignored when resuming, except as template).
      data_fn: ``data_fn(step) -> batch``, a pure function of the step.
      key: base PRNG key of the state (step ``s`` uses ``fold_in(key, s)``).
      steps: total number of steps of the run.
      out_dir: run directory (``checkpoints/``, ``metrics.jsonl``).
      config: JSON-serialisable run config stored with every checkpoint; on resume all keys
        outside ``ignore`` must match the stored ones.
      resume: ``False`` (``out_dir`` must hold no checkpoint), ``True`` (continue from the latest
        checkpoint in ``out_dir``; start fresh, with a message, if there is none) or a path to a
        run directory whose latest checkpoint to start from (must exist).
      ckpt_every, log_every, max_to_keep: checkpoint period, log period, checkpoints kept.
      mesh: if given, the state is replicated and batches sharded along ``"data"``
        (:func:`shard_batch`); otherwise batches are put on the default device.
      donate: donate the state's buffers to the step (default: on unless the backend is CPU).
      prefetch: batches produced ahead by the background thread; 0 calls ``data_fn`` inline.
      steps_per_call: run up to this many steps in one jitted ``lax.scan`` over stacked batches
        (one dispatch per chunk: for small models whose step is shorter than the host's dispatch
        overhead). Chunks end at every log and checkpoint point and at multiples of
        ``steps_per_call``, so a resumed run is still bit-exact; against ``steps_per_call=1`` the
        result agrees to float rounding (XLA may fuse a scanned step differently).
      progress, desc: show a tqdm progress bar with this label.
      ignore: config keys allowed to differ on resume.
      checkpoint_extra: ``extra(done, stored_config) -> dict`` merged into the config of the
        checkpoint written after ``done`` steps (``stored_config``: that of the checkpoint the run
        resumed from, or ``None``), e.g. privacy spent so far.
      log: where to print human-readable messages.

    Returns:
      The final :class:`TrainState`.

    Raises:
      ValueError: bad arguments, a checkpoint beyond ``steps``, or a config mismatch on resume.
      FileExistsError: ``resume=False`` but ``out_dir`` already has checkpoints.
      FileNotFoundError: ``resume`` is a path without a checkpoint.
      CheckpointError: the checkpoint to resume from is incomplete, missing, corrupt or edited
        (never a silent fall-back to an older one).
      NonFiniteLossError: the loss/gradient became NaN or inf (the last good checkpoint stays).
    """
    for name, v in (("steps", steps), ("ckpt_every", ckpt_every), ("log_every", log_every),
                    ("max_to_keep", max_to_keep), ("steps_per_call", steps_per_call)):
        check_int(name, v)
    check_int("prefetch", prefetch, lo=0)
    out = Path(out_dir)
    state = create_train_state(params, optimizer, key)
    state = state if mesh is None else replicate(state, mesh)
    state, source, stored = _initial_state(state, out, resume, config, ignore, log)
    start = int(jax.device_get(state.step))
    if start > steps:
        raise ValueError(f"checkpoint is at step {start} > steps={steps}")
    if jax.process_count() > 1:  # every process has decided fresh/resume before any creates files in out
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices("diffjax.train_loop:start")
    out.mkdir(parents=True, exist_ok=True)
    _filter_metrics_log(out / "metrics.jsonl", start)  # fresh: keeps nothing beyond step 0; resume: no duplicates
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=steps, initial=start, desc=desc, unit="step", dynamic_ncols=True)
    io = _Outputs(out, config, max_to_keep=max_to_keep, extra=checkpoint_extra, stored=stored,
                  last_saved=start if source is not None and source == out else None, bar=bar, log=log)
    put = _to_device if mesh is None else partial(shard_batch, mesh=mesh)
    feed = Prefetcher(lambda s: put(data_fn(s)), start, steps, prefetch)
    try:
        return _run(step, state, feed, io, start=start, steps=steps, log_every=log_every, ckpt_every=ckpt_every,
                    steps_per_call=steps_per_call, mesh=mesh,
                    donate=jax.default_backend() != "cpu" if donate is None else bool(donate))
    finally:
        feed.close()
        io.close()
