"""Orbax checkpoints of a :class:`TrainState` plus the JSON run configuration, with checksums.

Checkpoints live in ``<out_dir>/checkpoints/<step>/`` with items ``state`` (orbax
``StandardSave``), ``config`` (``JsonSave``, the JSON run configuration) and ``checksums`` (the
per-leaf SHA-256 manifest of :mod:`._integrity`); orbax writes to a temporary directory and
renames it when complete, and keeps the last ``max_to_keep``. No pickle. Checkpoints are written
collectively (every process must call :func:`save_checkpoint`). Every restore verifies the
checksums; a missing, incomplete, corrupt or edited checkpoint raises :class:`CheckpointError`.

Which checkpoint is "latest": the newest *complete* step directory (:func:`latest_step`). Asking
for the latest (``step=None``) raises :class:`CheckpointError` instead of falling back to it when a
newer step directory exists but is incomplete, or when ``checkpoints/LATEST.json`` (written after
every save) records a newer step that is gone: an older model is never used silently. Orbax's own
temporary directories of an interrupted save (``<step>.orbax-checkpoint-tmp-*``) do not count,
so resuming after a kill during a save continues from the last finished checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from diffjax.train._integrity import (CHECKSUM_ITEM, LATEST_FILE, CheckpointError, check_manifest, check_structure,
                                      leaf_name, make_manifest, missing_parts, read_latest, step_dirs,
                                      validate_config, verify_config, verify_leaves, write_latest)
from diffjax.train._state import TrainState

__all__ = ["CheckpointError", "validate_config", "has_checkpoints", "NON_IDENTITY_KEYS", "run_identity",
           "run_config", "checkpoint_dir", "checkpoint_manager", "save_checkpoint", "restore_checkpoint",
           "restore_params", "load_config", "latest_step"]

# Config keys that may change between a run and its resumption (everything else identifies
# the run: model, loss, data, optimiser and seed must match for resume to be meaningful).
NON_IDENTITY_KEYS = frozenset({
    "steps", "resume", "ckpt_every", "log_every", "progress", "out_dir", "max_to_keep",
    "command", "demo", "prefetch",
})


def checkpoint_dir(path) -> Path:
    """``<out_dir>/checkpoints`` (a path already named ``checkpoints`` is taken as is)."""
    p = Path(path).absolute()
    return p if p.name == "checkpoints" else p / "checkpoints"


def _normalise_config(config: Mapping) -> dict:
    try:
        return json.loads(json.dumps(dict(config), sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"config must be a JSON-serialisable dict: {e}") from None


def run_config(config: Mapping, settings: Mapping) -> dict:
    """The config stored with a run's checkpoints: ``config`` plus the driver's ``settings``.

    Raises:
      ValueError: ``config`` is not JSON-serialisable, or one of its keys names a setting with a
        different value.
    """
    cfg, extra = _normalise_config(config), _normalise_config(settings)
    clash = sorted(k for k, v in extra.items() if k in cfg and cfg[k] != v)
    if clash:
        raise ValueError(f"config keys {clash} disagree with the train() arguments of the same name")
    cfg.update(extra)
    return cfg


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
    return ocp.CheckpointManager(checkpoint_dir(out_dir), options=options)


def latest_step(out_dir) -> int | None:
    """Newest complete checkpoint step in ``<out_dir>/checkpoints``, or ``None`` if there is none.

    A pure directory scan (no orbax manager, no cross-process sync), so every process of a
    multi-host run gets the same answer without collective calls. It never raises for damage:
    restoring "latest" (``step=None``) does, when a newer step is incomplete or missing.
    """
    complete = [s for s, p in step_dirs(checkpoint_dir(out_dir)).items() if not missing_parts(p)]
    return max(complete) if complete else None


def has_checkpoints(out_dir) -> bool:
    """Whether ``<out_dir>/checkpoints`` holds any step directory or a ``LATEST.json`` record."""
    d = checkpoint_dir(out_dir)
    return bool(step_dirs(d)) or read_latest(d) is not None


def save_checkpoint(manager_or_dir, state: TrainState, config: Mapping, *, max_to_keep: int | None = 3) -> int:
    """Save ``state``, the JSON ``config`` and their checksums as checkpoint ``int(state.step)``.

    The checksums (SHA-256 of every state leaf's bytes, dtype and shape, and of the config) are
    computed on the host from the arrays being saved and written in the same orbax save; after it
    completes, process 0 records the step in ``checkpoints/LATEST.json``.

    Args:
      manager_or_dir: a manager from :func:`checkpoint_manager` or an ``out_dir``.
      state: the train state (must be finite — :func:`train` guarantees it).
      config: JSON-serialisable run configuration.
      max_to_keep: only used when a directory is given.

    Returns:
      The step saved.
    """
    cfg = _normalise_config(config)
    own = not isinstance(manager_or_dir, ocp.CheckpointManager)
    mngr = checkpoint_manager(manager_or_dir, max_to_keep=max_to_keep) if own else manager_or_dir
    step = int(jax.device_get(state.step))
    manifest = make_manifest(state, cfg)
    try:
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(cfg),
            **{CHECKSUM_ITEM: ocp.args.JsonSave(manifest)}), force=True)
        mngr.wait_until_finished()
        write_latest(Path(mngr.directory), step)
    finally:
        if own:
            mngr.close()
    return step


def _resolve_step(out_dir, step: int | None) -> tuple[int, Path]:
    """``(step, path)`` of the requested (or latest) complete checkpoint; see the module docstring.

    Raises:
      FileNotFoundError: ``<out_dir>/checkpoints`` holds no checkpoint at all.
      CheckpointError: the requested step is missing or incomplete, or the latest is (see above).
    """
    d = checkpoint_dir(out_dir)
    dirs = step_dirs(d)
    complete = sorted(s for s, p in dirs.items() if not missing_parts(p))
    if step is not None:
        if step not in dirs:
            raise CheckpointError(f"checkpoint step {step} not found in {d} (complete steps: {complete})")
        if step not in complete:
            raise CheckpointError(f"checkpoint {dirs[step]} is incomplete: it lacks {missing_parts(dirs[step])}")
        return step, dirs[step]
    recorded = read_latest(d)
    if not dirs and recorded is None:
        raise FileNotFoundError(f"no checkpoint found in {d}")
    newest = complete[-1] if complete else None
    newer = sorted(s for s in dirs if newest is None or s > newest)
    fallback = "there is no older complete one" if newest is None else f"refusing to fall back to step {newest}"
    if newer:
        bad = dirs[newer[-1]]
        raise CheckpointError(f"the latest checkpoint {bad} is incomplete (it lacks {missing_parts(bad)}); "
                              f"{fallback}: delete that directory to use older checkpoints, or pass a step")
    if recorded is not None and (newest is None or recorded > newest):
        raise CheckpointError(f"checkpoint step {recorded}, recorded as the latest in {d / LATEST_FILE}, is missing "
                              f"from {d}; {fallback}: delete {LATEST_FILE} to use older checkpoints, or pass a step")
    return newest, dirs[newest]


def _restore(mngr: ocp.CheckpointManager, step: int, where: Path, **items):
    """``mngr.restore`` of ``items``; any read/decode failure becomes a :class:`CheckpointError`."""
    try:
        return mngr.restore(step, args=ocp.args.Composite(**items))
    except CheckpointError:
        raise
    except Exception as e:  # orbax/tensorstore/JSON/OS errors of a truncated, corrupt or edited checkpoint
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"checkpoint {where} cannot be read (truncated, corrupt or edited): "
                              f"{type(e).__name__}: {first}") from e


def _meta(mngr: ocp.CheckpointManager, step: int, where: Path) -> tuple[dict, dict]:
    """``(config, manifest)`` of a checkpoint, the config verified against its checksum."""
    has_sums = (where / CHECKSUM_ITEM).is_dir()
    items = {"config": ocp.args.JsonRestore(), **({CHECKSUM_ITEM: ocp.args.JsonRestore()} if has_sums else {})}
    got = _restore(mngr, step, where, **items)
    manifest = check_manifest(got[CHECKSUM_ITEM] if has_sums else None, where)
    verify_config(got.config, manifest, where)
    return dict(got.config), manifest


def _named_shapes(tree, prefix: str = "") -> list:
    return [(prefix + leaf_name(p), np.shape(x), np.dtype(x.dtype).name)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def load_config(out_dir, step: int | None = None, *, required_keys=()) -> dict:
    """The run config stored with a checkpoint (default: the latest), checksum- and value-checked.

    Args:
      out_dir: run directory (or its ``checkpoints`` subdirectory).
      step: checkpoint step (default: the latest, as in the module docstring).
      required_keys: keys the caller needs; checked by :func:`validate_config`.

    Raises:
      FileNotFoundError: no checkpoint at all.
      CheckpointError: missing/incomplete step, no or bad checksums, an edited config, a missing
        key or an invalid ``sde``/``data_shape`` (the message names the checkpoint path).
    """
    s, where = _resolve_step(out_dir, step)
    mngr = checkpoint_manager(out_dir, read_only=True, max_to_keep=None)
    try:
        config, _ = _meta(mngr, s, where)
    finally:
        mngr.close()
    return validate_config(config, required_keys, where=where)


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

    The template's leaf names, shapes and dtypes are compared with the stored manifest before
    anything is read, and every restored leaf's SHA-256 is verified.

    Args:
      out_dir: run directory (or its ``checkpoints`` subdirectory).
      state_template: a state with the right structure, shapes, dtypes and shardings (e.g.
        ``replicate(create_train_state(params, optimizer, key), mesh)``).
      config: the current run config, compared with the stored one on all keys except
        ``ignore`` (:data:`NON_IDENTITY_KEYS`); ``None`` skips the check.
      step: checkpoint step (default: latest, as in the module docstring).

    Returns:
      The restored :class:`TrainState` (same tree structure and shardings as the template).

    Raises:
      FileNotFoundError: no checkpoint at all in ``out_dir``.
      CheckpointError: missing/incomplete step, a checksum mismatch, unreadable data, or a
        template whose structure differs (names the path and the leaf).
      ValueError: config mismatch (the message names the differing keys).
    """
    s, where = _resolve_step(out_dir, step)
    mngr = checkpoint_manager(out_dir, read_only=True, max_to_keep=None)
    try:
        stored, manifest = _meta(mngr, s, where)
        if config is not None:
            _check_config(stored, config, ignore)
        check_structure(_named_shapes(state_template), manifest, where)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_template)
        restored = _restore(mngr, s, where, state=ocp.args.StandardRestore(abstract)).state
    finally:
        mngr.close()
    treedef = jax.tree_util.tree_structure(state_template)
    state = jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(restored))
    verify_leaves(state, manifest, where)
    return state


def restore_params(out_dir, *, ema: bool = True, step: int | None = None, template=None):
    """Restore only the (EMA) parameters of a checkpoint as host numpy arrays, checksum-verified.

    Useful for sampling/evaluation, where the optimiser state is not needed.

    Args:
      out_dir: run directory (or its ``checkpoints`` subdirectory).
      ema: the EMA parameters (default) or the raw ones.
      step: checkpoint step (default: latest, as in the module docstring).
      template: optional parameter pytree of the model built from the stored config (arrays or
        ``ShapeDtypeStruct``); its leaf names, shapes and dtypes must match the checkpoint's.

    Returns:
      The parameter pytree (nested dicts of ``np.ndarray``).

    Raises:
      FileNotFoundError: no checkpoint at all in ``out_dir``.
      CheckpointError: missing/incomplete step, a checksum mismatch, unreadable data, or a
        ``template`` of a different structure (names the path and the leaf).
    """
    field = "ema_params" if ema else "params"
    s, where = _resolve_step(out_dir, step)
    mngr = checkpoint_manager(out_dir, read_only=True, max_to_keep=None)
    try:
        _, manifest = _meta(mngr, s, where)
        if template is not None:
            check_structure(_named_shapes(template, field + "/"), manifest, where, field + "/")
        tree = _restore(mngr, s, where, state=ocp.args.StandardRestore()).state
    finally:
        mngr.close()
    verify_leaves(tree, manifest, where)
    sub = tree[field] if isinstance(tree, Mapping) else getattr(tree, field)
    return jax.tree_util.tree_map(np.asarray, sub)
