"""Training: train state, jitted/sharded step with EMA, orbax checkpoints, one resumable driver.

Everything here takes plain callables: a loss built by :mod:`diffjax.losses`
(``loss(apply_fn, params, key, x0, *, reduce=True) -> (scalar, aux)``), a pure
``apply_fn(params, x, t)`` (e.g. :func:`diffjax.nn.make_apply`) and a step-indexed data function
``data_fn(step) -> batch``. The step's PRNG key is ``fold_in(state.key, state.step)``, so a run is
a pure function of ``(params0, seed, data_fn)`` and resuming from a checkpoint is bit-exact.

* :mod:`._state`: :class:`TrainState`, :func:`make_optimizer`, the EMA (:func:`ema_schedule`,
  :func:`apply_gradients`) and :func:`make_train_step`.
* :mod:`._mesh`: data parallelism with :mod:`jax.sharding`: a 1-D :class:`~jax.sharding.Mesh`
  named ``"data"`` over all devices, the batch sharded along its leading axis, the state
  replicated; XLA inserts the gradient all-reduce. Multi-host: call
  ``jax.distributed.initialize()`` in every process before anything else; :func:`make_mesh`
  then spans all global devices, each process's ``data_fn`` returns its *process-local* slice
  of the global batch, and :func:`shard_batch` assembles the global array with
  ``jax.make_array_from_process_local_data``.
* :mod:`._checkpoint`: orbax checkpoints ``<out_dir>/checkpoints/<step>/`` (``state`` + the JSON
  run ``config`` + per-leaf SHA-256 ``checksums`` verified on every restore), run identity for
  resume, :func:`restore_params` for sampling, :func:`validate_config` for stored configs;
  a missing, incomplete, corrupt or edited checkpoint raises :class:`CheckpointError`.
* :mod:`._prefetch`, :mod:`._loop`: :func:`train_loop`, the one driver (resume, background
  batch prefetch, on-device metric accumulation, ``metrics.jsonl``, progress bar, checkpoints)
  over any step function and optax transformation.
* :mod:`._train`: :func:`train`, the plain run; :func:`diffjax.privacy.train_dp` is the DP one.
"""

from diffjax.train._checkpoint import (NON_IDENTITY_KEYS, checkpoint_dir, checkpoint_manager, latest_step,
                                       load_config, restore_checkpoint, restore_params, run_config, run_identity,
                                       save_checkpoint)
from diffjax.train._integrity import SDE_NAMES, CheckpointError, validate_config
from diffjax.train._loop import NonFiniteLossError, train_loop
from diffjax.train._mesh import make_mesh, replicate, shard_batch
from diffjax.train._prefetch import Prefetcher
from diffjax.train._state import (TrainState, apply_gradients, create_train_state, ema_schedule, make_optimizer,
                                  make_train_step, train_key)
from diffjax.train._train import train

__all__ = [
    "TrainState", "create_train_state", "make_optimizer", "ema_schedule", "apply_gradients", "make_train_step",
    "train_key", "make_mesh", "shard_batch", "replicate",
    "NON_IDENTITY_KEYS", "run_identity", "run_config", "checkpoint_dir", "checkpoint_manager", "save_checkpoint",
    "restore_checkpoint", "restore_params", "load_config", "latest_step",
    "CheckpointError", "validate_config", "SDE_NAMES",
    "NonFiniteLossError", "Prefetcher", "train_loop", "train",
]
