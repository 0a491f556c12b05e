"""Data: 2-D toy sets (pure JAX samplers) and TFDS image loaders (optional ``data`` extra).

Both give step-indexed batches, so training runs resume bit-exactly:
``toy_batch(name, seed, step, batch_size)`` and ``tfds_data_fn(name, ...)(step)``.
"""

from diffjax.data.tfds import (
    TFDS_DATASETS,
    TfdsMissingError,
    batch_indices,
    epoch_indices,
    examples_to_batch,
    load_source,
    tfds_data_fn,
)
from diffjax.data.toy import (
    TOY_NAMES,
    checkerboard,
    mixture_9,
    mixture_64,
    moons,
    rings,
    swiss_roll,
    toy_batch,
    toy_sampler,
)

__all__ = [
    "swiss_roll", "checkerboard", "rings", "moons", "mixture_9", "mixture_64",
    "toy_sampler", "toy_batch", "TOY_NAMES",
    "TFDS_DATASETS", "TfdsMissingError", "load_source", "examples_to_batch", "epoch_indices",
    "batch_indices", "tfds_data_fn",
]
