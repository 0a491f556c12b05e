"""Real images without a download: the UCI handwritten digits shipped inside scikit-learn.

``sklearn.datasets.load_digits`` reads a file inside the scikit-learn wheel (1,797 real 8x8
images, grey levels ``0..16``, 10 classes, 174-183 images per class; Alpaydin & Kaynak, UCI
"Optical Recognition of Handwritten Digits", test part); no network is used. scikit-learn is
part of the optional ``data`` extra and is imported lazily.

Conventions (as :mod:`diffjax.data.tfds`):

- images are NHWC float32 in ``[-1, 1]``: ``x = v / 8 - 1`` for a grey level ``v`` in ``0..16``
  (17 exact levels, ``-1`` is the background);
- the default size is **16x16**, the 8x8 image upsampled 2x by nearest neighbour (each pixel a
  2x2 block, so grey levels stay exact and 2x2 mean-pooling gives the original back). 16x16
  divides by 4, so the default :class:`diffjax.nn.UNet` (``channel_mult=(1, 2, 2)``) and a DDPM++
  downsample it twice (16 -> 8 -> 4). ``resolution`` may be any multiple of 8 (8 keeps the
  native size; 32 upsamples 4x);
- labels are ``(n,)`` int32 digits ``0..9``.

The train/test split is fixed and stratified: :data:`DIGITS_TEST_PER_CLASS` = 30 images of each
class go to the test split (300 images), the other 1,497 to the train split, chosen by
:func:`digits_split` with ``seed=DIGITS_SPLIT_SEED`` (0).

``digits_data_fn(batch_size=..., seed=...)`` returns ``data_fn(step)`` for
:func:`diffjax.train.train`; the batch of step ``s`` is a pure function of ``(seed, s)``: shuffled
epochs exactly as :func:`diffjax.data.tfds.batch_indices`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from diffjax._validate import check_int, check_option
from diffjax.data.tfds import batch_indices

__all__ = [
    "DIGITS_NATIVE_SIZE", "DIGITS_RESOLUTION", "DIGITS_TEST_PER_CLASS", "DIGITS_SPLIT_SEED",
    "DIGITS_SPLIT_SIZES", "digits_split", "load_digits", "digits_data_fn",
]

DIGITS_NATIVE_SIZE: int = 8
DIGITS_RESOLUTION: int = 16      # default output size: 8x8 upsampled 2x (nearest)
DIGITS_TEST_PER_CLASS: int = 30
DIGITS_SPLIT_SEED: int = 0
DIGITS_SPLIT_SIZES: dict[str, int] = {"train": 1497, "test": 300, "all": 1797}
_SPLITS = ("train", "test", "all")
_MAX_LEVEL = 16.0


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8) float64 in 0..16, labels (1797,) int)`` from the scikit-learn wheel."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise ImportError(f"diffjax.data.digits needs scikit-learn: pip install -e '.[data]' ({e})") from e
    bunch = sk_load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target)


def digits_split(labels: np.ndarray, *, seed: int = DIGITS_SPLIT_SEED,
                 test_per_class: int = DIGITS_TEST_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train/test split: ``test_per_class`` random examples of every class are test.

    For each class ``c`` in increasing order, the class's indices are permuted by one
    ``numpy.random.default_rng(seed)`` stream and the first ``test_per_class`` go to the test set.

    Args:
      labels: ``(n,)`` integer class labels.
      seed: split seed (non-negative int).
      test_per_class: test examples per class (positive int, below every class's count).

    Returns:
      ``(train_idx, test_idx)``: sorted, disjoint int64 index arrays covering ``range(n)``.

    Raises:
      ValueError: ``labels`` not 1-D, a bad ``seed``/``test_per_class``, or a class too small.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    check_int("seed", seed, lo=0)
    check_int("test_per_class", test_per_class)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.size and counts.min() <= test_per_class:
        raise ValueError(f"test_per_class={test_per_class} leaves no training example of class "
                         f"{classes[np.argmin(counts)]!r} ({counts.min()} examples)")
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:test_per_class] for c in classes])
    is_test = np.zeros(labels.shape[0], bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _to_images(levels: np.ndarray, resolution: int) -> np.ndarray:
    """Grey levels ``(n, 8, 8)`` in ``0..16`` -> float32 ``(n, R, R, 1)`` in ``[-1, 1]``, nearest upsampling."""
    x = (levels / (_MAX_LEVEL / 2) - 1.0).astype(np.float32)
    f = resolution // DIGITS_NATIVE_SIZE
    return np.repeat(np.repeat(x, f, axis=1), f, axis=2)[..., None]


def _check_resolution(resolution: Any) -> int:
    check_int("resolution", resolution)
    if resolution % DIGITS_NATIVE_SIZE:
        raise ValueError(f"resolution must be a multiple of {DIGITS_NATIVE_SIZE}, got {resolution!r}")
    return int(resolution)


def load_digits(split: str = "train", *, resolution: int = DIGITS_RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """The digits images and labels of one split of the fixed stratified split.

    Args:
      split: ``"train"`` (1,497 images), ``"test"`` (300) or ``"all"`` (1,797, in file order).
      resolution: output side ``R``, a multiple of 8 (nearest upsampling by ``R / 8``); default 16.

    Returns:
      ``(images, labels)``: ``(n, R, R, 1)`` float32 in ``[-1, 1]`` and ``(n,)`` int32.

    Raises:
      ImportError: scikit-learn is missing (the message names ``pip install -e '.[data]'``).
      ValueError: unknown ``split`` or a bad ``resolution``.
    """
    check_option("split", split, _SPLITS)
    resolution = _check_resolution(resolution)
    levels, labels = _sklearn_digits()
    if split != "all":
        train_idx, test_idx = digits_split(labels)
        idx = train_idx if split == "train" else test_idx
        levels, labels = levels[idx], labels[idx]
    return _to_images(levels, resolution), labels.astype(np.int32)


def digits_data_fn(*, batch_size: int, seed: int = 0, split: str = "train",
                   resolution: int = DIGITS_RESOLUTION, with_labels: bool = False) -> Callable[[int], Any]:
    """Step-indexed digits batches for :func:`diffjax.train.train`: ``data_fn(step) -> (B, R, R, 1)``.

    The data are loaded once here; the batch of step ``s`` takes positions ``s*B .. s*B+B-1`` of the
    concatenated epochs, epoch ``e`` shuffled by ``numpy.random.default_rng([seed, e])``
    (:func:`diffjax.data.tfds.batch_indices`), so a resumed run sees the same batches.

    Args:
      batch_size: batch size ``B`` (positive int).
      seed: shuffling seed (non-negative int).
      split: ``"train"``, ``"test"`` or ``"all"`` (see :func:`load_digits`).
      resolution: output side (multiple of 8), default 16.
      with_labels: return ``(images, labels)`` with ``(B,)`` int32 labels.

    Returns:
      ``data_fn(step)`` returning float32 NumPy images in ``[-1, 1]`` (and labels).

    Raises:
      ImportError: scikit-learn is missing.
      ValueError: a bad ``batch_size``, ``seed``, ``split`` or ``resolution``.
    """
    check_int("batch_size", batch_size)
    check_int("seed", seed, lo=0)
    images, labels = load_digits(split, resolution=resolution)
    n = images.shape[0]
    cache: dict = {}

    def data_fn(step: int):
        idx = batch_indices(n, seed, step, batch_size, _cache=cache)
        return (images[idx], labels[idx]) if with_labels else images[idx]

    return data_fn
