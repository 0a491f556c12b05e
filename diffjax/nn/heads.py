"""GENIE prediction head: a small network on top of a score backbone's last features.

GENIE distils the total derivative ``d eps / d gamma_t`` (thesis eq. (3.19)) into a small head
``k_psi(x_t, t)`` that receives "the last feature layer from the eps_theta network together with
its time embedding as well as x_t and the output eps_theta(x_t, t)" (thesis §3.3.3, Fig. 3.4,
§3.4.3.2). The head is a single (BigGAN-style) residual block (thesis §3.4.3.2.1). With
``num_outputs = 3`` it returns the three channels ``k^(1), k^(2), k^(3)`` of the mixed
parameterisation (thesis eq. (3.21)); this module only maps inputs to outputs, the mixing and
the loss (3.22) live in the distillation code.

The output layer is zero-initialised, so an untrained head predicts zero derivative and GENIE
reduces to DDIM.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from diffjax.nn.embeddings import as_batch_times, sinusoidal_embedding
from diffjax.nn.unet import ResBlock, _groups

__all__ = ["GenieHead"]


class GenieHead(nn.Module):
    """Prediction head ``k(features, x, t[, eps])`` with output(s) shaped like ``x``.

    Works for vector data (``x`` of shape ``(batch, d)``, dense layers) and images
    (``(batch, H, W, C)``, one residual conv block).

    Attributes:
      hidden: hidden width / channels.
      num_outputs: number of ``x``-shaped outputs (3 for the mixed parameterisation (3.21)).
      time_dim: sinusoidal embedding size used when the backbone gives no time embedding.
      time_scale: multiplier of ``t`` in that embedding.
    """

    hidden: int = 64
    num_outputs: int = 1
    time_dim: int = 32
    time_scale: float = 1000.0

    @nn.compact
    def __call__(self, features, x: jnp.ndarray, t, eps: jnp.ndarray | None = None):
        """Apply the head.

        Args:
          features: the backbone's last features — ``(batch, F)`` for vectors or
            ``(batch, H, W, F)`` for images — or the pair ``(features, temb)`` that
            ``UNet(..., return_features=True)`` returns (``temb`` of shape ``(batch, E)``).
          x: the network input ``x_t``, shape ``(batch, d)`` or ``(batch, H, W, C)``.
          t: scalar or ``(batch,)``.
          eps: optional backbone output, shaped like ``x``.

        Returns:
          An array shaped like ``x`` if ``num_outputs == 1``, else a tuple of ``num_outputs``
          such arrays.

        Raises:
          ValueError: on inconsistent shapes or ``num_outputs < 1``.
        """
        if self.num_outputs < 1 or self.hidden < 1:
            raise ValueError(f"num_outputs and hidden must be >= 1, got {self.num_outputs}, {self.hidden}")
        temb = None
        if isinstance(features, (tuple, list)):
            features, temb = features
        b = x.shape[0]
        if features.shape[0] != b or features.shape[1:-1] != x.shape[1:-1]:
            raise ValueError(f"features shape {features.shape} does not match x shape {x.shape}")
        if temb is None:
            temb = sinusoidal_embedding(as_batch_times(t, b), self.time_dim, scale=self.time_scale)
        parts = [features, x] + ([eps] if eps is not None else [])
        h = jnp.concatenate(parts, axis=-1)
        c = x.shape[-1]
        zeros = nn.initializers.zeros
        if x.ndim == 2:
            h = nn.silu(nn.Dense(self.hidden)(h) + nn.Dense(self.hidden)(temb))
            h = nn.silu(nn.Dense(self.hidden)(h))
            out = nn.Dense(self.num_outputs * c, kernel_init=zeros, name="out")(h)
        else:
            h = nn.Conv(self.hidden, (3, 3))(h)
            h = ResBlock(self.hidden)(h, temb)
            h = nn.silu(nn.GroupNorm(num_groups=_groups(self.hidden))(h))
            out = nn.Conv(self.num_outputs * c, (3, 3), kernel_init=zeros, name="out")(h)
        if self.num_outputs == 1:
            return out
        return tuple(jnp.split(out, self.num_outputs, axis=-1))
