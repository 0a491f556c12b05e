"""Image data sets (MNIST, Fashion-MNIST, CIFAR-10, CelebA) from tensorflow-datasets, step-indexed.

``tfds_data_fn(name, data_dir=..., batch_size=..., seed=...)`` returns ``data_fn(step) -> batch``
for :func:`diffjax.train.train`: the batch of step ``s`` is a pure function of ``(seed, s)``
(epoch ``e`` is shuffled by the permutation ``numpy.random.default_rng([seed, e])``; step ``s``
takes positions ``s*B ... s*B + B - 1`` of the concatenated epochs), so a resumed run sees the
same batches. Images come out NHWC float32 scaled to ``[-1, 1]``; CelebA is center-cropped
(140x140, as in DDIM/score-SDE) and resized to 32 or 64.

Reading uses ``tfds.data_source`` (random access, no TensorFlow needed) with ``download=False``:
nothing is downloaded at run time. Prepare data beforehand, in array_record format, e.g.
``tfds build mnist --data_dir DIR --file_format=array_record``. tensorflow-datasets is the
optional ``data`` extra (``pip install diffjax[data]``) and is imported lazily.

The array part (:func:`examples_to_batch`, :func:`epoch_indices`) does not need tfds and works on
any sequence of ``{"image": uint8 HWC, ...}`` dicts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "TFDS_DATASETS", "TfdsMissingError", "load_source", "examples_to_batch", "epoch_indices",
    "batch_indices", "tfds_data_fn",
]

# name -> (tfds name, native (H, W, C), default output resolution, center crop or None, has labels)
TFDS_DATASETS: Mapping[str, tuple[str, tuple[int, int, int], int, int | None, bool]] = {
    "mnist": ("mnist", (28, 28, 1), 28, None, True),
    "fashion_mnist": ("fashion_mnist", (28, 28, 1), 28, None, True),
    "cifar10": ("cifar10", (32, 32, 3), 32, None, True),
    "celeba": ("celeb_a", (218, 178, 3), 64, 140, False),
}


class TfdsMissingError(ImportError):
    """tensorflow-datasets is not installed."""


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise TfdsMissingError(
            "image data sets need tensorflow-datasets: pip install 'diffjax[data]' "
            f"(import failed: {e})") from e
    return tfds


def _check_name(name: str) -> tuple:
    if name not in TFDS_DATASETS:
        raise ValueError(f"name must be one of {sorted(TFDS_DATASETS)}, got {name!r}")
    return TFDS_DATASETS[name]


def load_source(name: str, *, data_dir: str | os.PathLike, split: str = "train"):
    """Open a prepared TFDS split for random access (``len(src)``, ``src[i] -> dict``); no download.

    Raises:
      TfdsMissingError: tensorflow-datasets is not installed.
      ValueError: unknown ``name``.
      FileNotFoundError: the data set is not prepared in ``data_dir`` (or not in array_record
        format, which random access needs).
    """
    tfds_name = _check_name(name)[0]
    tfds = _import_tfds()
    data_dir = str(Path(data_dir).expanduser())
    build_cmd = f"tfds build {tfds_name} --data_dir {data_dir} --file_format=array_record"
    try:
        return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises assorted types (AssertionError, NotImplementedError, ...)
        try:
            prepared = tfds.builder(tfds_name, data_dir=data_dir).is_prepared()
        except Exception:
            prepared = False
        if not prepared:
            raise FileNotFoundError(
                f"data set {tfds_name!r} (split {split!r}) is not prepared in data_dir={data_dir!r}; "
                f"diffjax never downloads at run time. Prepare it first: {build_cmd}") from e
        raise FileNotFoundError(
            f"data set {tfds_name!r} in data_dir={data_dir!r} cannot be opened for random access "
            f"({type(e).__name__}: {e}); it must be prepared in array_record format: {build_cmd}") from e


def _center_crop(images: np.ndarray, size: int) -> np.ndarray:
    h, w = images.shape[1:3]
    if size > min(h, w):
        raise ValueError(f"crop size {size} exceeds image size {(h, w)}")
    top, left = (h - size) // 2, (w - size) // 2
    return images[:, top:top + size, left:left + size]


def examples_to_batch(examples: Sequence[Mapping[str, Any]], *, resolution: int | None = None,
                      crop: int | None = None, with_labels: bool = False):
    """Stack ``{"image": uint8 (H, W, C)[, "label": int]}`` examples into a float32 NHWC batch in [-1, 1].

    ``x = image / 127.5 - 1``; optionally center-crop to ``crop x crop`` first, then resize
    (bilinear, antialiased) to ``resolution x resolution``.

    Args:
      examples: non-empty sequence of example dicts with equal image shapes.
      resolution: output side length (``None``: keep the (cropped) size).
      crop: center-crop side length (``None``: no crop).
      with_labels: also return ``int32`` labels from ``example["label"]``.

    Returns:
      ``images`` of shape ``(n, R, R, C)`` float32, or ``(images, labels)``.

    Raises:
      ValueError: empty input, non-uint8-range images, or mismatched shapes.
    """
    if len(examples) == 0:
        raise ValueError("examples must be non-empty")
    images = np.stack([np.asarray(ex["image"]) for ex in examples])
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be (H, W[, C]), got stacked shape {images.shape}")
    if crop is not None:
        images = _center_crop(images, int(crop))
    x = images.astype(np.float32) / 127.5 - 1.0
    if resolution is not None and x.shape[1:3] != (resolution, resolution):
        x = np.asarray(jax.image.resize(jnp.asarray(x), (x.shape[0], resolution, resolution, x.shape[3]),
                                        method="linear", antialias=True))
        x = np.clip(x, -1.0, 1.0)
    if not with_labels:
        return x
    return x, np.asarray([int(ex["label"]) for ex in examples], np.int32)


def epoch_indices(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a permutation of ``range(n)`` from ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def batch_indices(n: int, seed: int, step: int, batch_size: int, *, _cache: dict | None = None) -> np.ndarray:
    """Example indices of step ``step``: positions ``step*B .. step*B+B-1`` of the shuffled epochs."""
    pos = int(step) * batch_size + np.arange(batch_size)
    epochs, within = pos // n, pos % n
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        if _cache is not None:
            if _cache.get("epoch") != e:
                _cache.update(epoch=e, perm=epoch_indices(n, seed, e))
            perm = _cache["perm"]
        else:
            perm = epoch_indices(n, seed, e)
        sel = epochs == e
        out[sel] = perm[within[sel]]
    return out


def tfds_data_fn(name: str, *, data_dir: str | os.PathLike, batch_size: int, seed: int = 0,
                 split: str = "train", resolution: int | None = None, with_labels: bool = False,
                 source=None) -> Callable[[int], Any]:
    """Step-indexed batches of an image data set: ``data_fn(step) -> (B, R, R, C)`` float32 in [-1, 1].

    Args:
      name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` or ``"celeba"``.
      data_dir: TFDS data directory holding the prepared data (never downloaded).
      batch_size: batch size ``B``.
      seed: shuffling seed.
      split: TFDS split.
      resolution: output size (default: 28 for MNIST-like, 32 for CIFAR-10, 64 for CelebA;
        CelebA allows 32 or 64).
      with_labels: return ``(images, labels)``.
      source: an already opened random-access source (for tests); default :func:`load_source`.

    Returns:
      ``data_fn(step)``; deterministic in ``(seed, step)``.

    Raises:
      ValueError / TfdsMissingError / FileNotFoundError: see :func:`load_source`; also for
        labels on CelebA or a bad ``batch_size``.
    """
    _, native, default_res, crop, has_labels = _check_name(name)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if with_labels and not has_labels:
        raise ValueError(f"data set {name!r} has no class labels")
    res = default_res if resolution is None else int(resolution)
    if name == "celeba" and res not in (32, 64):
        raise ValueError(f"resolution for celeba must be 32 or 64, got {resolution!r}")
    src = load_source(name, data_dir=data_dir, split=split) if source is None else source
    n = len(src)
    if n == 0:
        raise ValueError(f"data set {name!r} split {split!r} is empty")
    cache: dict = {}

    def data_fn(step: int):
        idx = batch_indices(n, seed, step, batch_size, _cache=cache)
        return examples_to_batch([src[int(i)] for i in idx], resolution=res, crop=crop,
                                 with_labels=with_labels)

    return data_fn
