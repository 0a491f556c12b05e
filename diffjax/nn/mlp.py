"""``ScoreMLP``: the MLP-with-positional-time-encoding network used for 2-D toy data.

The CDL paper's synthetic experiments use "a simple MLP architecture with positional encoding
for timesteps" (CDL §3, footnote 3). Here: ``h_0 = [x, sinusoidal(t)]``, then ``depth`` layers
``h_{l+1} = SiLU(Dense(h_l) + Dense_t(emb_t))`` (the time embedding is re-injected at every
layer, which helps small MLPs), and a linear read-out ``Dense(h_depth)`` with the shape of ``x``.

The last hidden layer ``h_depth`` is exposed (``return_features=True``) so that a GENIE
prediction head (:mod:`diffjax.nn.heads`, thesis §3.3.3 / Fig. 3.4) can sit on top.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from diffjax.nn.embeddings import as_batch_times, sinusoidal_embedding

__all__ = ["ScoreMLP"]


class ScoreMLP(nn.Module):
    """MLP ``f(x, t)`` for vector data; output has the shape of ``x``.

    Attributes:
      width: hidden width.
      depth: number of hidden layers (>= 1).
      time_dim: dimension of the sinusoidal time embedding.
      time_scale: ``t`` is multiplied by this before the embedding (1000 for ``t`` in [0, 1]).
      out_dim: output dimension (default: ``x.shape[-1]``).
    """

    width: int = 128
    depth: int = 3
    time_dim: int = 32
    time_scale: float = 1000.0
    out_dim: int | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, t, *, return_features: bool = False):
        """Evaluate the network.

        Args:
          x: shape ``(batch, d)``.
          t: scalar or shape ``(batch,)`` (time, ``c_noise`` or log-SNR; see ``time_scale``).
          return_features: also return the last hidden layer.

        Returns:
          ``out`` of shape ``(batch, out_dim or d)``; with ``return_features`` the pair
          ``(out, features)`` with ``features`` of shape ``(batch, width)``.

        Raises:
          ValueError: if ``x`` is not 2-D or hyper-parameters are invalid.
        """
        if self.width < 1 or self.depth < 1 or self.time_dim < 2:
            raise ValueError(
                f"width, depth must be >= 1 and time_dim >= 2, got width={self.width}, "
                f"depth={self.depth}, time_dim={self.time_dim}")
        if x.ndim != 2:
            raise ValueError(f"ScoreMLP expects x of shape (batch, d), got {x.shape}")
        t = as_batch_times(t, x.shape[0])
        emb = sinusoidal_embedding(t, self.time_dim, scale=self.time_scale)
        h = jnp.concatenate([x, emb], axis=-1)
        for i in range(self.depth):
            h = nn.Dense(self.width, name=f"dense_{i}")(h) + nn.Dense(self.width, name=f"time_{i}")(emb)
            h = nn.silu(h)
        out = nn.Dense(self.out_dim or x.shape[-1], name="out")(h)
        if return_features:
            return out, h
        return out
