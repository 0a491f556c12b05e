"""UCI digits from the scikit-learn wheel: shapes, range, labels, the fixed stratified split,
step-indexed batches, no network access, and the error when scikit-learn is missing."""

import socket
import sys

import numpy as np
import pytest

from diffjax.data import digits as G
from diffjax.data.tfds import batch_indices


@pytest.fixture(scope="module")
def sk():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    b = load_digits()
    return b.images, b.target


def test_shapes_range_levels_and_labels(sk):
    raw, target = sk
    x8, y = G.load_digits("all", resolution=8)
    assert x8.shape == (1797, 8, 8, 1) and x8.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    np.testing.assert_array_equal(x8[..., 0], raw / 8.0 - 1.0)  # v in 0..16 -> v/8 - 1, exact
    np.testing.assert_array_equal(y, target)
    assert x8.min() == -1.0 and x8.max() == 1.0
    assert set(np.unique(x8).tolist()) <= {v / 8 - 1 for v in range(17)}
    assert set(y.tolist()) == set(range(10))
    # default 16x16: nearest 2x upsampling, each pixel a constant 2x2 block
    x16, _ = G.load_digits("all")
    assert x16.shape == (1797, 16, 16, 1) and G.DIGITS_RESOLUTION == 16
    for di in (0, 1):
        for dj in (0, 1):
            np.testing.assert_array_equal(x16[:, di::2, dj::2], x8)
    x32, _ = G.load_digits("test", resolution=32)
    assert x32.shape == (300, 32, 32, 1)


def test_fixed_stratified_split(sk):
    _, target = sk
    tr, te = G.digits_split(target)
    tr2, te2 = G.digits_split(target)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    assert len(tr) == G.DIGITS_SPLIT_SIZES["train"] == 1497 and len(te) == G.DIGITS_SPLIT_SIZES["test"] == 300
    assert np.intersect1d(tr, te).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(1797))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)
    np.testing.assert_array_equal(np.bincount(target[te]), np.full(10, 30))
    np.testing.assert_array_equal(np.bincount(target[tr]), np.bincount(target) - 30)
    assert not np.array_equal(G.digits_split(target, seed=1)[1], te)  # the seed matters
    # load_digits uses exactly this split
    x_all, y_all = G.load_digits("all")
    x_tr, y_tr = G.load_digits("train")
    x_te, y_te = G.load_digits("test")
    np.testing.assert_array_equal(x_tr, x_all[tr])
    np.testing.assert_array_equal(y_te, y_all[te])
    assert x_te.shape == (300, 16, 16, 1) and y_tr.shape == (1497,)


def test_data_fn_is_pure_in_seed_and_step(sk):
    x_tr, y_tr = G.load_digits("train")
    f = G.digits_data_fn(batch_size=64, seed=3, with_labels=True)
    b3 = f(3)
    assert b3[0].shape == (64, 16, 16, 1) and b3[0].dtype == np.float32 and b3[1].dtype == np.int32
    idx = batch_indices(1497, 3, 3, 64)
    np.testing.assert_array_equal(b3[0], x_tr[idx])
    np.testing.assert_array_equal(b3[1], y_tr[idx])
    f(0)
    np.testing.assert_array_equal(f(3)[0], b3[0])  # any call order
    np.testing.assert_array_equal(G.digits_data_fn(batch_size=64, seed=3)(3), b3[0])  # a fresh data_fn
    assert not np.array_equal(G.digits_data_fn(batch_size=64, seed=4)(3), b3[0])
    # one epoch (3 steps of 499) visits every training image once
    g = G.digits_data_fn(batch_size=499, seed=0, with_labels=True)
    labels = np.concatenate([g(s)[1] for s in range(3)])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(y_tr))


def test_no_network_access(sk, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    x, y = G.load_digits("all")
    assert x.shape[0] == 1797
    assert G.digits_data_fn(batch_size=8)(0).shape == (8, 16, 16, 1)


def test_missing_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[data\]'") as info:
        G.load_digits()
    assert "\n" not in str(info.value)


def test_errors(sk):
    with pytest.raises(ValueError, match="split"):
        G.load_digits("validation")
    for bad in (12, 0, 16.0):
        with pytest.raises(ValueError, match="resolution"):
            G.load_digits(resolution=bad)
    with pytest.raises(ValueError, match="batch_size"):
        G.digits_data_fn(batch_size=0)
    with pytest.raises(ValueError, match="test_per_class"):
        G.digits_split(np.repeat(np.arange(3), 5), test_per_class=5)
    with pytest.raises(ValueError, match="labels"):
        G.digits_split(np.zeros((3, 3), int))
