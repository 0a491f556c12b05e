"""Embeddings of a scalar noise level (``t``, EDM ``c_noise(sigma)`` or log-SNR) for networks.

Two standard maps from a scalar per example to a feature vector:

* :func:`sinusoidal_embedding` — the Transformer positional encoding used by DDPM for the
  discrete/continuous time ``t`` (Vaswani et al. 2017; Ho et al. 2020),
  ``[sin(s t w_k), cos(s t w_k)]`` with ``w_k = max_period^(-k / (dim/2))``.
* :class:`GaussianFourierEmbedding` — random Fourier features ``[sin(2 pi W t), cos(2 pi W t)]``
  with fixed ``W ~ N(0, scale^2)`` (Tancik et al. 2020), used by NCSN++/DDPM++ for
  ``log sigma`` inputs.

Which scalar to feed is the caller's choice: ``t`` for VP/CLD models, ``c_noise = log(sigma) / 4``
for EDM preconditioning, or the log-SNR ``lambda`` (CDL App. B.3: ``sigma = exp(-lambda / 2)``).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["as_batch_times", "sinusoidal_embedding", "GaussianFourierEmbedding", "TimeEmbedding"]


def as_batch_times(t, batch: int) -> jnp.ndarray:
    """Broadcast a scalar or ``(batch,)`` noise level to shape ``(batch,)`` float32.

    Raises:
      ValueError: (at trace time) if ``t`` is neither a scalar nor of shape ``(batch,)``.
    """
    t = jnp.asarray(t, jnp.float32)
    if t.ndim == 0:
        return jnp.broadcast_to(t, (batch,))
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape ({batch},), got shape {t.shape}")
    return t


def sinusoidal_embedding(t, dim: int, *, scale: float = 1.0, max_period: float = 10_000.0) -> jnp.ndarray:
    """Sinusoidal positional embedding of a scalar per example.

    ``emb = [sin(scale t w_0..w_{h-1}), cos(scale t w_0..w_{h-1})]``, ``w_k = max_period^(-k/h)``,
    ``h = dim // 2`` (zero-padded by one column if ``dim`` is odd).

    Args:
      t: noise level, any shape (usually ``(batch,)``; see :func:`as_batch_times`).
      dim: embedding dimension (>= 2).
      scale: multiplies ``t`` first (e.g. 1000 for ``t`` in ``[0, 1]``, as DDPM's integer steps).
      max_period: the longest wavelength.

    Returns:
      Array of shape ``(*t.shape, dim)``, float32.

    Raises:
      ValueError: if ``dim < 2``.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    half = dim // 2
    t = jnp.asarray(t, jnp.float32) * scale
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t[..., None] * freqs
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return emb


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features ``[sin(2 pi W t), cos(2 pi W t)]`` with fixed ``W ~ N(0, scale^2)``.

    ``W`` is stored as a parameter (so it is checkpointed) but receives no gradient.

    Attributes:
      dim: output dimension (even).
      scale: standard deviation of the frequencies (16 as in NCSN++).
    """

    dim: int = 128
    scale: float = 16.0

    @nn.compact
    def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
        """Map ``t`` of shape ``(batch,)`` to ``(batch, dim)``."""
        if self.dim < 2 or self.dim % 2:
            raise ValueError(f"dim must be a positive even integer, got {self.dim}")
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.dim // 2,))
        w = jax.lax.stop_gradient(w)
        args = 2.0 * jnp.pi * jnp.asarray(t, jnp.float32)[..., None] * w
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class TimeEmbedding(nn.Module):
    """Noise-level embedding followed by a two-layer SiLU MLP (the DDPM/DDPM++ time branch).

    Attributes:
      dim: output dimension.
      kind: ``"sinusoidal"`` or ``"fourier"``.
      scale: for ``"sinusoidal"`` multiplies ``t``; for ``"fourier"`` the frequency std.
      base_dim: dimension of the raw embedding before the MLP (default ``dim // 4``, >= 2).
    """

    dim: int
    kind: str = "sinusoidal"
    scale: float = 1000.0
    base_dim: int | None = None

    @nn.compact
    def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
        """Map ``t`` of shape ``(batch,)`` to ``(batch, dim)``."""
        base = self.base_dim or max(2, 2 * (self.dim // 8))
        if self.kind == "sinusoidal":
            emb = sinusoidal_embedding(t, base, scale=self.scale)
        elif self.kind == "fourier":
            emb = GaussianFourierEmbedding(base, self.scale, name="fourier")(t)
        else:
            raise ValueError(f"kind must be 'sinusoidal' or 'fourier', got {self.kind!r}")
        emb = nn.Dense(self.dim, name="dense_0")(emb)
        emb = nn.Dense(self.dim, name="dense_1")(nn.silu(emb))
        return emb
