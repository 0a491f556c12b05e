"""A small CNN image classifier: the feature network of the digits evaluation protocol.

DPDM (thesis §4.3.5, App. 4.4.6.1) judges class-labelled samples by classifiers: a CNN trained
on real data gives the features of a Frechet distance (as LeNet-FID does for MNIST), and a CNN
trained on *synthetic* labelled samples, tested on real data, gives the downstream accuracy.
:class:`DigitClassifier` is that CNN for small grey-scale images (16x16 digits by default); the
training loop and both protocols live in :mod:`diffjax.evaluation`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["DigitClassifier"]


class DigitClassifier(nn.Module):
    """CNN ``x -> logits`` with a ``feature_dim`` penultimate layer (NHWC input, sides divisible by 4).

    Layers: ``conv(w) - pool - conv(2w) - conv(2w) - pool - conv(4w) - flatten - dense(feature_dim)
    - dense(num_classes)``; 3x3 convolutions, ReLU after every layer but the last, 2x2 average
    pooling. Deterministic (no dropout, no batch statistics), so ``apply`` is a pure function.

    Attributes:
      num_classes: number of classes (output logits).
      width: channels ``w`` of the first convolution.
      feature_dim: size of the penultimate (feature) layer, the space of the Frechet distance.
    """

    num_classes: int = 10
    width: int = 16
    feature_dim: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, return_features: bool = False):
        """Classify a batch of images.

        Args:
          x: ``(batch, H, W, C)`` images, ``H`` and ``W`` divisible by 4.
          return_features: also return the penultimate-layer activations.

        Returns:
          ``logits`` of shape ``(batch, num_classes)``; with ``return_features`` the pair
          ``(logits, features)``, ``features`` of shape ``(batch, feature_dim)`` (after the ReLU).

        Raises:
          ValueError: (at trace time) ``x`` not 4-D, sides not divisible by 4, or a hyper-parameter
            below 1.
        """
        if min(self.num_classes, self.width, self.feature_dim) < 1:
            raise ValueError(f"num_classes, width and feature_dim must be >= 1, got {self.num_classes}, "
                             f"{self.width}, {self.feature_dim}")
        if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"DigitClassifier expects x of shape (batch, H, W, C) with H, W divisible by 4, "
                             f"got {x.shape}")
        h = nn.relu(nn.Conv(self.width, (3, 3))(x))
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(nn.Conv(2 * self.width, (3, 3))(h))
        h = nn.relu(nn.Conv(2 * self.width, (3, 3))(h))
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(nn.Conv(4 * self.width, (3, 3))(h))
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(h.reshape(h.shape[0], -1)))
        logits = nn.Dense(self.num_classes, name="logits")(features)
        return (logits, features) if return_features else logits
