"""Checkpoint integrity: per-leaf SHA-256 manifest, complete-step scan, stored-config validation.

Every checkpoint ``<out_dir>/checkpoints/<step>/`` holds, beside ``state`` and ``config``, a JSON
item ``checksums`` written in the same atomic orbax save::

    {"format": 1, "algorithm": "sha256", "config_sha256": <hex>,
     "leaves": {"params/params/dense_0/kernel": {"sha256": <hex>, "dtype": "float32", "shape": [34, 8]}, ...}}

A leaf's digest is ``sha256(b"<dtype>:<shape>" + raw C-order bytes)`` of the host copy of the
saved array; leaf names join the pytree path entries (dict keys, attribute names, sequence
indices) with ``/``, so a :class:`TrainState` and orbax's template-free restore (dicts and
lists) give the same names. ``config_sha256`` digests the canonical JSON of the config.
Restores recompute and compare them: a flipped bit, a truncated or replaced data file, an
edited config or a different model structure raise :class:`CheckpointError` naming the
checkpoint and the leaf, never a silently different model. Checkpoints written without a
``checksums`` item (diffjax before this format) are refused: there are no released users, and
accepting them would be exactly the silent path this module closes.

Complete steps: a directory named by the step number (orbax renames its temporary directory to
that name only once the save has finished) holding ``_CHECKPOINT_METADATA``, ``state`` and
``config``. After every save process 0 also records the step in ``checkpoints/LATEST.json``
(after the orbax commit, so a crash can leave it one save *behind*, never ahead).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import jax
import numpy as np

__all__ = ["CheckpointError", "SDE_NAMES", "CHECKSUM_ITEM", "LATEST_FILE", "validate_config", "make_manifest",
           "check_manifest", "verify_config", "verify_leaves", "check_structure", "step_dirs", "missing_parts",
           "read_latest", "write_latest"]

CHECKSUM_ITEM = "checksums"
LATEST_FILE = "LATEST.json"
SDE_NAMES = ("vp", "subvp", "ve", "cld", "edm")
_FORMAT = 1
_PARTS = ("_CHECKPOINT_METADATA", "state", "config")


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt, edited or does not fit the model.

    The message names the checkpoint path and, for data errors, the offending leaf or key.
    """

    __module__ = "diffjax.train"


def leaf_name(path) -> str:
    """``"params/dense_0/kernel"`` for a pytree key path (dict keys, attributes, sequence indices)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _host(x) -> np.ndarray:
    """Host copy of a leaf; a replicated multi-host array is read from this process's shard."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils  # noqa: PLC0415

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _digest(x) -> dict:
    a = np.asarray(_host(x), order="C")  # (ascontiguousarray would make a scalar 1-d)
    h = hashlib.sha256(f"{a.dtype.name}:{tuple(a.shape)}".encode())
    h.update(a.tobytes())
    return {"sha256": h.hexdigest(), "dtype": a.dtype.name, "shape": list(a.shape)}


def _config_digest(config: Mapping) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _leaves(tree, prefix: str = "") -> list:
    return [(prefix + leaf_name(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def make_manifest(state, config: Mapping) -> dict:
    """The ``checksums`` item of a checkpoint of ``state`` with the (normalised) ``config``."""
    return {"format": _FORMAT, "algorithm": "sha256", "config_sha256": _config_digest(config),
            "leaves": {name: _digest(x) for name, x in _leaves(state)}}


def check_manifest(manifest, where) -> dict:
    """``manifest`` (the restored ``checksums`` item) if well formed, else :class:`CheckpointError`."""
    if manifest is None:
        raise CheckpointError(f"checkpoint {where} has no '{CHECKSUM_ITEM}' item: it was written by an older "
                              "diffjax without checksums (refused: its integrity cannot be checked) or the item "
                              "was deleted; retrain or restore it from a backup")
    ok = (isinstance(manifest, Mapping) and manifest.get("format") == _FORMAT
          and isinstance(manifest.get("config_sha256"), str) and isinstance(manifest.get("leaves"), Mapping)
          and all(isinstance(v, Mapping) and {"sha256", "dtype", "shape"} <= set(v)
                  for v in manifest["leaves"].values()))
    if not ok:
        raise CheckpointError(f"checkpoint {where}: the '{CHECKSUM_ITEM}' item is malformed (edited or damaged)")
    return dict(manifest)


def verify_config(config, manifest: Mapping, where) -> None:
    """:class:`CheckpointError` unless ``config`` is a dict whose digest is the stored one."""
    if not isinstance(config, Mapping):
        raise CheckpointError(f"checkpoint {where}: the config item is not a JSON object (edited or damaged)")
    if _config_digest(dict(config)) != manifest["config_sha256"]:
        raise CheckpointError(f"checkpoint {where}: the config item does not match its stored SHA-256 checksum "
                              "(it was edited or corrupted after saving)")


def check_structure(named_shapes: Iterable, manifest: Mapping, where, prefix: str = "") -> None:
    """Compare ``(name, shape, dtype)`` of a template with the manifest's leaves under ``prefix``.

    Raises:
      CheckpointError: naming the missing/unexpected leaves or the first shape/dtype mismatch.
    """
    want = {n: (tuple(s), str(d)) for n, s, d in named_shapes}
    have = {n: (tuple(v["shape"]), v["dtype"]) for n, v in manifest["leaves"].items() if n.startswith(prefix)}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {where} holds a different parameter structure than the model built from its config: "
            f"leaves missing in the checkpoint {missing[:5]}, unexpected leaves {extra[:5]}")
    for n in sorted(want):
        if want[n] != have[n]:
            raise CheckpointError(f"checkpoint {where}: leaf {n} has shape/dtype {have[n]} but the model expects "
                                  f"{want[n]}")


def verify_leaves(tree, manifest: Mapping, where, prefix: str = "") -> None:
    """Recompute every leaf's digest of a restored ``tree`` and compare with the manifest.

    Raises:
      CheckpointError: a leaf is missing from the manifest or its digest differs (names the leaf).
    """
    stored = {n: v for n, v in manifest["leaves"].items() if n.startswith(prefix)}
    got = _leaves(tree, prefix)
    missing, extra = sorted(set(stored) - {n for n, _ in got}), sorted({n for n, _ in got} - set(stored))
    if missing or extra:
        raise CheckpointError(f"checkpoint {where}: restored leaves differ from the stored checksums: missing "
                              f"{missing[:5]}, unexpected {extra[:5]} (edited or damaged)")
    for name, x in got:
        if _digest(x)["sha256"] != stored[name]["sha256"]:
            raise CheckpointError(f"checkpoint {where}: leaf {name} does not match its stored SHA-256 checksum "
                                  "(the data was corrupted or edited after saving)")


def validate_config(config, required_keys: Iterable[str] = (), *, where="config") -> dict:
    """Check a stored run config before anything is built from it; returns it as a dict.

    Checks that ``config`` is a JSON object holding every key of ``required_keys``; that ``sde``,
    when present, is one of :data:`SDE_NAMES`; and that ``data_shape``, when present, is a
    non-empty list of positive ints.

    Args:
      config: the stored config (e.g. from :func:`load_config`).
      required_keys: keys the caller needs (the CLI passes those it reads).
      where: the checkpoint path, for the message.

    Raises:
      CheckpointError: naming ``where`` and the missing key or the invalid value.
    """
    if not isinstance(config, Mapping):
        raise CheckpointError(f"checkpoint {where}: the stored config is not a JSON object")
    missing = [k for k in required_keys if k not in config]
    if missing:
        raise CheckpointError(f"checkpoint {where}: the stored config lacks the key(s) {missing}")
    if "sde" in config and config["sde"] not in SDE_NAMES:
        raise CheckpointError(f"checkpoint {where}: stored config has unknown sde {config['sde']!r}; expected one "
                              f"of {', '.join(SDE_NAMES)}")
    shape = config.get("data_shape", [1])
    if not (isinstance(shape, list) and shape and all(type(n) is int and n > 0 for n in shape)):
        raise CheckpointError(f"checkpoint {where}: stored config has invalid data_shape {shape!r}; expected a "
                              "non-empty list of positive ints")
    return dict(config)


def step_dirs(ckpt_dir: Path) -> dict[int, Path]:
    """``{step: path}`` of the directories named by a step number (orbax temp directories excluded)."""
    if not ckpt_dir.is_dir():
        return {}
    return {int(p.name): p for p in ckpt_dir.iterdir() if p.name.isdigit() and p.is_dir()}


def missing_parts(step_path: Path) -> list[str]:
    """The parts of a complete checkpoint (``_CHECKPOINT_METADATA``, ``state``, ``config``) it lacks."""
    return [part for part in _PARTS if not (step_path / part).exists()]


def read_latest(ckpt_dir: Path) -> int | None:
    """The step recorded in ``LATEST.json`` (``None`` if absent or unreadable)."""
    try:
        step = json.loads((ckpt_dir / LATEST_FILE).read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if type(step) is int else None


def write_latest(ckpt_dir: Path, step: int) -> None:
    """Atomically record ``step`` as the newest saved checkpoint (process 0 only)."""
    if jax.process_index() != 0:
        return
    tmp = ckpt_dir / f".{LATEST_FILE}.tmp"
    tmp.write_text(json.dumps({"step": int(step)}))
    os.replace(tmp, ckpt_dir / LATEST_FILE)
