"""``ScoreMLP``: the MLP-with-positional-time-encoding network used for 2-D toy data.

The CDL paper's synthetic experiments use "a simple MLP architecture with positional encoding
for timesteps" (CDL §3, footnote 3). Here: ``h_0 = [x, sinusoidal(t)]``, then ``depth`` layers
``h_{l+1} = SiLU(Dense(h_l) + Dense_t(emb_t))`` (the time embedding is re-injected at every
layer, which helps small MLPs), and a linear read-out ``Dense(h_depth)`` with the shape of ``x``.

Optional class conditioning (``num_classes=K``): a label embedding ``Embed(K + 1, time_dim)`` is
added to the time embedding before it enters the network; row ``K`` is the *null token* of
classifier-free guidance (thesis eq. (4.27); ``y=None`` means the null token), the same
convention as :class:`diffjax.nn.unet.UNet`. Label dropout happens in training
(:func:`diffjax.conditioning.class_conditional_loss`). With ``num_classes=None`` the parameter
tree is that of the unconditional network.

The last hidden layer ``h_depth`` is exposed (``return_features=True``) so that a GENIE
prediction head (:mod:`diffjax.nn.heads`, thesis §3.3.3 / Fig. 3.4) can sit on top.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from diffjax._validate import is_concrete
from diffjax.nn.embeddings import as_batch_times, sinusoidal_embedding

__all__ = ["ScoreMLP"]


class ScoreMLP(nn.Module):
    """MLP ``f(x, t[, y])`` for vector data; output has the shape of ``x``.

    Attributes:
      width: hidden width.
      depth: number of hidden layers (>= 1).
      time_dim: dimension of the sinusoidal time embedding.
      time_scale: ``t`` is multiplied by this before the embedding (1000 for ``t`` in [0, 1]).
      out_dim: output dimension (default: ``x.shape[-1]``).
      num_classes: if set, class-conditional with a null token at index ``num_classes``.
    """

    width: int = 128
    depth: int = 3
    time_dim: int = 32
    time_scale: float = 1000.0
    out_dim: int | None = None
    num_classes: int | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, t, y=None, *, return_features: bool = False):
        """Evaluate the network.

        Args:
          x: shape ``(batch, d)``.
          t: scalar or shape ``(batch,)`` (time, ``c_noise`` or log-SNR; see ``time_scale``).
          y: integer labels, scalar or ``(batch,)``, in ``[0, num_classes]`` for a
            class-conditional net; ``None`` (or the value ``num_classes``) is the null token.
            Must be ``None`` when ``num_classes`` is None.
          return_features: also return the last hidden layer.

        Returns:
          ``out`` of shape ``(batch, out_dim or d)``; with ``return_features`` the pair
          ``(out, features)`` with ``features`` of shape ``(batch, width)``.

        Raises:
          ValueError: if ``x`` is not 2-D, hyper-parameters are invalid, ``y`` is given to an
            unconditional net, or ``y`` is not integer, has the wrong shape or (when concrete)
            lies outside ``[0, num_classes]``.
        """
        if self.width < 1 or self.depth < 1 or self.time_dim < 2:
            raise ValueError(
                f"width, depth must be >= 1 and time_dim >= 2, got width={self.width}, "
                f"depth={self.depth}, time_dim={self.time_dim}")
        if x.ndim != 2:
            raise ValueError(f"ScoreMLP expects x of shape (batch, d), got {x.shape}")
        t = as_batch_times(t, x.shape[0])
        emb = sinusoidal_embedding(t, self.time_dim, scale=self.time_scale)
        if self.num_classes is not None:
            emb = emb + nn.Embed(self.num_classes + 1, self.time_dim, name="label")(self._labels(y, x.shape[0]))
        elif y is not None:
            raise ValueError("ScoreMLP got labels y but num_classes is None; build it with "
                             "ScoreMLP(num_classes=K) for a class-conditional network")
        h = jnp.concatenate([x, emb], axis=-1)
        for i in range(self.depth):
            h = nn.Dense(self.width, name=f"dense_{i}")(h) + nn.Dense(self.width, name=f"time_{i}")(emb)
            h = nn.silu(h)
        out = nn.Dense(self.out_dim or x.shape[-1], name="out")(h)
        if return_features:
            return out, h
        return out

    def _labels(self, y, batch: int) -> jnp.ndarray:
        """Labels ``(batch,)`` int32; ``None`` -> null token ``num_classes``."""
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"num_classes must be an integer >= 1 or None, got {k!r}")
        if y is None:
            return jnp.full((batch,), k, jnp.int32)
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
        if y.ndim > 1 or (y.ndim == 1 and y.shape[0] != batch):
            raise ValueError(f"y must be a scalar or have shape ({batch},), got shape {y.shape}")
        if is_concrete(y) and y.size:
            lo, hi = int(np.min(np.asarray(y))), int(np.max(np.asarray(y)))
            if lo < 0 or hi > k:
                raise ValueError(f"y must lie in [0, num_classes={k}] (num_classes is the null token), "
                                 f"got values in [{lo}, {hi}]")
        return jnp.broadcast_to(y.astype(jnp.int32), (batch,))
