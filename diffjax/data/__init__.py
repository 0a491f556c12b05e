"""Data: 2-D toy sets and the Datasaurus dino (pure JAX samplers), the UCI digits from scikit-learn,
and TFDS image loaders (scikit-learn and tensorflow-datasets are the optional ``data`` extra).

All give step-indexed batches, so training runs resume bit-exactly:
``toy_batch(name, seed, step, batch_size)``, ``digits_data_fn(...)(step)`` and
``tfds_data_fn(name, ...)(step)``.

The dino sampler is ``diffjax.data.dino.dino(key, n)`` (the module keeps its name: the function is
not re-exported here, so ``diffjax.data.dino`` stays the module).
"""

from diffjax.data.digits import (
    DIGITS_RESOLUTION,
    DIGITS_SPLIT_SIZES,
    digits_data_fn,
    digits_split,
    load_digits,
)
from diffjax.data.dino import (
    DINO_SET_SIZE,
    dino_raw_points,
    dino_recipe,
    dino_set,
)
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
    "dino_raw_points", "dino_recipe", "dino_set", "DINO_SET_SIZE",
    "load_digits", "digits_split", "digits_data_fn", "DIGITS_RESOLUTION", "DIGITS_SPLIT_SIZES",
    "TFDS_DATASETS", "TfdsMissingError", "load_source", "examples_to_batch", "epoch_indices",
    "batch_indices", "tfds_data_fn",
]
