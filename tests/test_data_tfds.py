"""Tests for diffjax.data.tfds: the array path (no tfds needed) and TFDS mock data (if installed)."""

import numpy as np
import pytest

from diffjax.data.tfds import (
    TfdsMissingError,
    batch_indices,
    epoch_indices,
    examples_to_batch,
    load_source,
    tfds_data_fn,
)


def _fake_source(n, shape=(28, 28, 1), seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": i % 10} for i in range(n)]


def test_examples_to_batch_scaling_and_labels():
    ex = [{"image": np.full((4, 4, 1), 0, np.uint8), "label": 3},
          {"image": np.full((4, 4, 1), 255, np.uint8), "label": 7}]
    x, y = examples_to_batch(ex, with_labels=True)
    assert x.dtype == np.float32 and x.shape == (2, 4, 4, 1)
    np.testing.assert_array_equal(x[0], -1.0)
    np.testing.assert_array_equal(x[1], 1.0)
    np.testing.assert_array_equal(y, [3, 7])
    # grayscale without channel axis gets one
    assert examples_to_batch([{"image": np.zeros((4, 4), np.uint8)}]).shape == (1, 4, 4, 1)
    with pytest.raises(ValueError, match="non-empty"):
        examples_to_batch([])


def test_center_crop_and_resize_celeba_like():
    img = np.zeros((218, 178, 3), np.uint8)
    top, left = (218 - 140) // 2, (178 - 140) // 2
    img[top:top + 140, left:left + 140] = 255  # exactly the crop window is white
    x = examples_to_batch([{"image": img}], crop=140, resolution=64)
    assert x.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(x, 1.0, atol=1e-6)  # nothing from outside the crop leaks in
    # a constant image stays constant under resizing; a smooth ramp keeps its mean
    ramp = np.tile(np.linspace(0, 255, 140).astype(np.uint8)[None, :, None], (140, 1, 3))
    xr = examples_to_batch([{"image": ramp}], resolution=32)
    assert abs(float(xr.mean()) - float(ramp.mean() / 127.5 - 1)) < 1e-2
    assert np.all(np.diff(xr[0, 0, :, 0]) >= -1e-6)  # still monotone
    with pytest.raises(ValueError, match="crop"):
        examples_to_batch([{"image": np.zeros((8, 8, 1), np.uint8)}], crop=10)


def test_step_indexed_batches_are_shuffled_epochs():
    n, b = 10, 4
    idx = np.concatenate([batch_indices(n, 3, s, b) for s in range(5)])  # 20 = two epochs
    np.testing.assert_array_equal(idx[:10], epoch_indices(n, 3, 0))
    np.testing.assert_array_equal(idx[10:], epoch_indices(n, 3, 1))
    assert sorted(idx[:10]) == list(range(10)) and not np.array_equal(idx[:10], idx[10:])
    cache = {}
    for s in (4, 0, 2, 2):  # any order, cached or not: a pure function of (seed, step)
        np.testing.assert_array_equal(batch_indices(n, 3, s, b, _cache=cache), idx[s * b:(s + 1) * b])
    assert not np.array_equal(batch_indices(n, 4, 0, b), idx[:b])


def test_tfds_data_fn_on_local_source_is_deterministic():
    src = _fake_source(12)
    fn = tfds_data_fn("mnist", data_dir="unused", batch_size=5, seed=1, source=src, with_labels=True)
    x3, y3 = fn(3)
    assert x3.shape == (5, 28, 28, 1) and x3.dtype == np.float32
    assert -1.0 <= x3.min() and x3.max() <= 1.0
    fn2 = tfds_data_fn("mnist", data_dir="unused", batch_size=5, seed=1, source=src, with_labels=True)
    np.testing.assert_array_equal(fn2(3)[0], x3)  # a fresh loader (a resumed run) agrees
    ids = batch_indices(12, 1, 3, 5)
    np.testing.assert_array_equal(y3, [src[i]["label"] for i in ids])
    with pytest.raises(ValueError, match="no class labels"):
        tfds_data_fn("celeba", data_dir="unused", batch_size=2, source=src, with_labels=True)
    with pytest.raises(ValueError, match="32 or 64"):
        tfds_data_fn("celeba", data_dir="unused", batch_size=2, source=src, resolution=28)
    with pytest.raises(ValueError, match="name must be"):
        tfds_data_fn("imagenet", data_dir="unused", batch_size=2, source=src)


def test_missing_tfds_gives_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("tensorflow_datasets"):
            raise ImportError("No module named 'tensorflow_datasets'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(TfdsMissingError, match=r"pip install 'diffjax\[data\]'") as e:
        load_source("mnist", data_dir="/nonexistent")
    assert isinstance(e.value, ImportError)


def test_unprepared_data_raises_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets (the 'data' extra) not installed")
    with pytest.raises(FileNotFoundError, match=r"'mnist'.*not prepared.*tfds build mnist"):
        load_source("mnist", data_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was downloaded


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3)), ("celeba", (64, 64, 3))])
def test_tfds_mock_data(tmp_path, name, shape):
    tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets (the 'data' extra) not installed")
    with tfds.testing.mock_data(num_examples=6):
        fn = tfds_data_fn(name, data_dir=tmp_path, batch_size=4, seed=0)
        x0, x1, x0b = fn(0), fn(1), fn(0)
    assert x0.shape == (4, *shape) and x0.dtype == np.float32
    assert -1.0 <= x0.min() and x0.max() <= 1.0 and x0.std() > 0.1
    np.testing.assert_array_equal(x0, x0b)
    assert not np.array_equal(x0, x1)
