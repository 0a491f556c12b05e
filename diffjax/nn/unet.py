"""A small DDPM++-style U-Net for 28x28 / 32x32 images (NHWC).

Structure (Ho et al. 2020; Song et al. 2021 "DDPM++"): a time embedding (sinusoidal or Gaussian
Fourier, then a SiLU MLP) is added inside every residual block; residual blocks use GroupNorm,
SiLU and 3x3 convolutions and rescale the skip sum by ``1/sqrt(2)`` (DDPM++ ``skip_rescale``);
self-attention is optional per resolution level (and always in the middle); downsampling is a
strided 3x3 convolution, upsampling nearest-neighbour x2 followed by a 3x3 convolution.

Optional class conditioning: a label embedding with ``num_classes + 1`` rows (the last row is the
*null token* used for classifier-free guidance, thesis eq. (4.27)) is added to the time
embedding. Label dropout happens in training (see :func:`diffjax.losses.drop_labels` and
:func:`diffjax.losses.class_conditional_loss`), not in the module.
No dropout layers: ``apply(params, x, t)`` stays a deterministic pure function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffjax.nn.embeddings import TimeEmbedding, as_batch_times

__all__ = ["UNet", "ResBlock", "AttentionBlock"]


def _groups(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups: the largest divisor of ``channels`` <= min(32, channels // 4)."""
    g = max(1, min(max_groups, channels // 4))
    while channels % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    """DDPM++ residual block ``(x + conv(silu(gn(conv(silu(gn(x))) + dense(temb))))) / sqrt(2)``."""

    out_channels: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, temb: jnp.ndarray) -> jnp.ndarray:
        h = nn.silu(nn.GroupNorm(num_groups=_groups(x.shape[-1]))(x))
        h = nn.Conv(self.out_channels, (3, 3))(h)
        h = h + nn.Dense(self.out_channels)(nn.silu(temb))[:, None, None, :]
        h = nn.silu(nn.GroupNorm(num_groups=_groups(self.out_channels))(h))
        h = nn.Conv(self.out_channels, (3, 3))(h)
        if x.shape[-1] != self.out_channels:
            x = nn.Conv(self.out_channels, (1, 1), name="skip")(x)
        return (x + h) / math.sqrt(2.0)


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention with a residual, rescaled by ``1/sqrt(2)``."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, hh, ww, c = x.shape
        h = nn.GroupNorm(num_groups=_groups(c))(x).reshape(b, hh * ww, c)
        q, k, v = (nn.Dense(c, name=n)(h) for n in ("q", "k", "v"))
        w = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) / math.sqrt(c), axis=-1)
        h = nn.Dense(c, name="proj")(jnp.einsum("bij,bjc->bic", w, v))
        return (x + h.reshape(b, hh, ww, c)) / math.sqrt(2.0)


class UNet(nn.Module):
    """Small DDPM++-style U-Net ``f(x, t[, y])`` with output shaped like ``x`` (or ``out_channels``).

    Attributes:
      channels: base channel count.
      channel_mult: channel multiplier per resolution level (``len`` = number of levels).
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attention_levels: indices of levels (0 = full resolution) with self-attention after
        each residual block; the middle block always has attention when ``mid_attention``.
      mid_attention: attention in the middle block.
      num_classes: if set, class-conditional with a null token at index ``num_classes``.
      time_embedding: ``"sinusoidal"`` or ``"fourier"``.
      time_scale: scale of the time embedding (multiplier for sinusoidal, std for Fourier).
      out_channels: output channels (default: input channels).
    """

    channels: int = 32
    channel_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: Sequence[int] = (1,)
    mid_attention: bool = True
    num_classes: int | None = None
    time_embedding: str = "sinusoidal"
    time_scale: float = 1000.0
    out_channels: int | None = None

    def _check(self, x):
        if self.channels < 1 or self.num_res_blocks < 1 or not self.channel_mult:
            raise ValueError(
                f"channels and num_res_blocks must be >= 1 and channel_mult non-empty, got "
                f"channels={self.channels}, num_res_blocks={self.num_res_blocks}, "
                f"channel_mult={self.channel_mult}")
        if x.ndim != 4:
            raise ValueError(f"UNet expects x of shape (batch, H, W, C), got {x.shape}")
        f = 2 ** (len(self.channel_mult) - 1)
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(
                f"spatial size {x.shape[1:3]} must be divisible by 2**(levels-1) = {f} "
                f"for channel_mult={tuple(self.channel_mult)}")
        bad = [lv for lv in self.attention_levels if not 0 <= lv < len(self.channel_mult)]
        if bad:
            raise ValueError(f"attention_levels {tuple(bad)} out of range for {len(self.channel_mult)} levels")

    @nn.compact
    def __call__(self, x: jnp.ndarray, t, y=None, *, return_features: bool = False):
        """Evaluate the U-Net.

        Args:
          x: images, shape ``(batch, H, W, C)``.
          t: scalar or ``(batch,)`` noise level (time, ``c_noise`` or log-SNR).
          y: integer labels ``(batch,)`` for a class-conditional net; ``None`` (or the value
            ``num_classes``) means the null token. Ignored if ``num_classes`` is None.
          return_features: also return the last feature layer and the time embedding.

        Returns:
          ``out`` of shape ``(batch, H, W, out_channels or C)``; with ``return_features`` the
          pair ``(out, (features, temb))``, ``features`` of shape ``(batch, H, W, channels *
          channel_mult[0])``, ``temb`` of shape ``(batch, 4 * channels)``.

        Raises:
          ValueError: (at trace time) on bad shapes or hyper-parameters.
        """
        self._check(x)
        b = x.shape[0]
        temb_dim = 4 * self.channels
        temb = TimeEmbedding(temb_dim, kind=self.time_embedding, scale=self.time_scale,
                             base_dim=self.channels, name="time")(as_batch_times(t, b))
        if self.num_classes is not None:
            if y is None:
                y = jnp.full((b,), self.num_classes, jnp.int32)
            y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (b,))
            temb = temb + nn.Embed(self.num_classes + 1, temb_dim, name="label")(y)

        attn = set(self.attention_levels)
        h = nn.Conv(self.channels, (3, 3), name="conv_in")(x)
        hs = [h]
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.channels * mult)(h, temb)
                if level in attn:
                    h = AttentionBlock()(h)
                hs.append(h)
            if level != len(self.channel_mult) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
                hs.append(h)

        h = ResBlock(h.shape[-1])(h, temb)
        if self.mid_attention:
            h = AttentionBlock()(h)
        h = ResBlock(h.shape[-1])(h, temb)

        for level in reversed(range(len(self.channel_mult))):
            mult = self.channel_mult[level]
            for _ in range(self.num_res_blocks + 1):
                h = ResBlock(self.channels * mult)(jnp.concatenate([h, hs.pop()], axis=-1), temb)
                if level in attn:
                    h = AttentionBlock()(h)
            if level != 0:
                h = jax.image.resize(h, (b, 2 * h.shape[1], 2 * h.shape[2], h.shape[3]), "nearest")
                h = nn.Conv(h.shape[-1], (3, 3))(h)

        feats = nn.silu(nn.GroupNorm(num_groups=_groups(h.shape[-1]), name="norm_out")(h))
        out = nn.Conv(self.out_channels or x.shape[-1], (3, 3), name="conv_out")(feats)
        if return_features:
            return out, (feats, temb)
        return out
