"""Data parallelism with :mod:`jax.sharding`: a 1-D mesh ``"data"``, replicated state, sharded batches."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["make_mesh", "replicate", "shard_batch"]


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

    An array already laid out as requested is returned as is.

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
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return x  # already in place (e.g. a jitted data_fn on a 1-device mesh): skip a ~0.1 ms put
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map(put, batch)
