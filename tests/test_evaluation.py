"""diffjax.evaluation: the digits classifier protocol (DPDM, thesis §4.3.5): accuracy, FD, downstream.

One classifier is trained on the real digits train split (module fixture, 200 Adam steps); the
other tests reuse its compiled step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn")

from diffjax import evaluation as ev  # noqa: E402
from diffjax.data.digits import load_digits  # noqa: E402
from diffjax.metrics import feature_statistics, frechet_distance  # noqa: E402
from diffjax.nn.apply import init_module  # noqa: E402

STEPS = 200


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


@pytest.fixture(scope="module")
def real_params(digits):
    (x, y), _ = digits
    return ev.train_classifier(x, y, key=jax.random.PRNGKey(0), steps=STEPS)


def test_classifier_shapes_and_trace_time_errors():
    module = ev.DigitClassifier(width=4, feature_dim=8)
    x = jnp.zeros((3, 16, 16, 1))
    params = init_module(module, jax.random.PRNGKey(0), x)
    logits, feats = jax.jit(lambda p, x: module.apply(p, x, return_features=True))(params, x)
    assert logits.shape == (3, 10) and feats.shape == (3, 8)
    assert bool(jnp.all(feats >= 0))  # after the ReLU
    with pytest.raises(ValueError, match="divisible by 4"):
        jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((3, 16, 18, 1)))


def test_real_classifier_test_accuracy(digits, real_params):
    # Seen: 0.957 after 200 steps (0.963 after 300); train accuracy ~1.0.
    acc = ev.classifier_accuracy(real_params, *digits[1])
    assert acc >= 0.9, acc
    # The accuracy is the arg-max agreement of the logits: recompute it by hand.
    logits = ev.classifier_logits(real_params, digits[1][0], batch_size=64)
    assert logits.shape == (300, 10)
    assert acc == pytest.approx(np.mean(np.argmax(logits, 1) == digits[1][1]))


def test_fd_is_the_frechet_distance_of_the_features(digits, real_params):
    (x_tr, _), (x_te, _) = digits
    fd = ev.classifier_fd(real_params, x_tr[:500], x_te, batch_size=128)
    f1 = ev.classifier_features(real_params, x_tr[:500])
    f2 = ev.classifier_features(real_params, x_te, batch_size=77)  # batching must not matter
    assert f1.shape == (500, 64)
    assert fd == pytest.approx(frechet_distance(*feature_statistics(f1), *feature_statistics(f2)), rel=1e-4)


def test_fd_floor_and_gaussian_baseline(digits, real_params):
    (x_tr, y_tr), (x_te, _) = digits
    assert ev.classifier_fd(real_params, x_te, x_te) < 1e-6          # identical sets: 0 up to round-off
    halves = [ev.classifier_fd(real_params, half, x_te) for half in (x_te[::2], x_te[1::2])]
    # Unconditional per-pixel Gaussian fit (one class): blurry noise, far from every digit.
    g, _ = ev.per_pixel_gaussian(jax.random.PRNGKey(1), x_tr, np.zeros_like(y_tr), 300, num_classes=1)
    fd_gauss = ev.classifier_fd(real_params, g, x_te)
    # Seen: halves 13-14, Gaussian ~560 (train vs test: ~6).
    assert max(halves) < 40.0, halves
    assert fd_gauss > 10.0 * max(halves), (fd_gauss, halves)


def test_downstream_accuracy_of_real_data_is_the_test_accuracy(digits, real_params):
    (x_tr, y_tr), (x_te, y_te) = digits
    acc = ev.downstream_accuracy(x_tr, y_tr, x_te, y_te, key=jax.random.PRNGKey(0), steps=STEPS)
    assert acc == ev.classifier_accuracy(real_params, x_te, y_te)


def test_downstream_accuracy_of_shuffled_labels_is_chance(digits):
    (x_tr, y_tr), (x_te, y_te) = digits
    y_rand = np.random.default_rng(0).permutation(y_tr)  # labels independent of the images
    acc = ev.downstream_accuracy(x_tr, y_rand, x_te, y_te, key=jax.random.PRNGKey(1), steps=50)
    # Chance is 0.1; the binomial std over 300 test images is 0.017.
    assert acc < 0.2, acc


def test_per_pixel_gaussian_moments(digits):
    (x, y), _ = digits
    s, labels = ev.per_pixel_gaussian(jax.random.PRNGKey(0), x, y, 1000)
    assert s.shape == (10000, 16, 16, 1) and s.dtype == np.float32
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 1000))
    for c in (0, 7):
        real, fake = x[y == c], s[labels == c]
        # Monte Carlo over 1000 draws (sd <= 1): standard errors <= 0.032 (mean), 0.023 (sd); 5 sigma.
        np.testing.assert_allclose(fake.mean(0), real.mean(0), atol=0.16)
        np.testing.assert_allclose(fake.std(0), real.std(0), atol=0.12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(labels=np.zeros(5, np.int32)), "labels must have shape"),
    (dict(labels=np.zeros(10, np.float32)), "integer"),
    (dict(labels=np.full(10, 10, np.int32)), "labels must lie"),
    (dict(images=np.zeros((10, 16, 16))), "images must have shape"),
    (dict(images=np.full((10, 16, 16, 1), np.nan, np.float32)), "images"),
    (dict(steps=0), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(module="cnn"), "DigitClassifier"),
])
def test_train_classifier_rejects_bad_arguments(kwargs, match):
    args = dict(images=np.zeros((10, 16, 16, 1), np.float32), labels=np.arange(10, dtype=np.int32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ev.train_classifier(args.pop("images"), args.pop("labels"), key=jax.random.PRNGKey(0), **args)


def test_protocol_functions_reject_bad_arguments(digits, real_params):
    (x, y), _ = digits
    with pytest.raises(ValueError, match="test_labels must have shape"):
        ev.downstream_accuracy(x, y, x[:5], y[:4], key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="at least 2"):
        ev.classifier_fd(real_params, x[:1], x)
    with pytest.raises(ValueError, match="missing"):
        ev.per_pixel_gaussian(jax.random.PRNGKey(0), x[y < 9], y[y < 9], 3)
    with pytest.raises(ValueError, match="n_per_class"):
        ev.per_pixel_gaussian(jax.random.PRNGKey(0), x, y, 0)
