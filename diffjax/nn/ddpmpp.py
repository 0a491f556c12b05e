"""DDPM++ (Song et al. 2021, "Score-based generative modeling through SDEs") at the papers' sizes.

The architecture of EDM's ``SongUNet`` in its DDPM++ configuration (Karras et al. 2022), which is
the CIFAR-10 teacher of thesis ch. 5 and the DPDM backbone of thesis Table 4.8 (NHWC layout):

* noise-level branch: sinusoidal (or Gaussian Fourier) embedding of width ``channels``, then a
  two-layer SiLU MLP to ``4 * channels`` (:class:`~diffjax.nn.embeddings.TimeEmbedding`); an
  optional learned class embedding with a null token is added to it (thesis §4.4.3: "we add a
  learned class-embedding to the sigma-embedding");
* encoder: a 3x3 input convolution, then per resolution level a BigGAN-style *down* residual block
  (not at the first level) and ``num_res_blocks`` residual blocks; self-attention after every block
  whose resolution is in ``attn_resolutions``;
* middle: a residual block with attention and a plain residual block;
* decoder: per level (coarse to fine) a BigGAN-style *up* residual block (not at the coarsest
  level) and ``num_res_blocks + 1`` residual blocks fed ``concat(h, skip)``; attention after the
  last block of a level in ``attn_resolutions``;
* output: GroupNorm, SiLU, 3x3 convolution.

Residual block (:class:`BigGANBlock`): ``h = conv3(resample(silu(gn(x))))``,
``h = conv3(dropout(silu(gn(h + dense(silu(temb))))))`` and ``out = (skip(resample(x)) + h) /
sqrt(2)``; ``resample`` is 2x2 average pooling (down) or nearest-neighbour x2 (up), the DDPM++
resampling filter ``[1, 1]``; ``skip`` is a 1x1 convolution when the channels change or the block
resamples. Attention (:class:`SelfAttention`): single head, ``(x + proj(softmax(q k^T /
sqrt(c)) v)) / sqrt(2)``. GroupNorm uses ``min(32, c // 4)`` groups (EDM), eps ``1e-6``. The last
convolution of each residual branch, the attention projection and the output convolution start at
zero (EDM ``init_zero``), the other kernels are Xavier-uniform (EDM ``init``).

Mixed precision: parameters are stored in ``param_dtype`` (float32), the image path computes in
``dtype`` (e.g. ``jnp.bfloat16``); GroupNorm statistics and the attention softmax are computed in
float32 (Flax upcasts the statistics), the noise-level embedding stays float32 (it reads ``t``
directly; its two dense layers are a negligible fraction of the FLOPs), and the output is cast back
to the input's dtype so samplers keep float32 state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffjax.nn.embeddings import TimeEmbedding, as_batch_times
from diffjax.nn.unet import _groups  # min(32, c // 4) groups, as EDM, made a divisor of c

__all__ = ["DDPMpp", "BigGANBlock", "SelfAttention"]

_SKIP_SCALE = 1.0 / math.sqrt(2.0)
_XAVIER = nn.initializers.xavier_uniform()
_ZERO = nn.initializers.zeros


def _resample(x: jnp.ndarray, kind: str | None) -> jnp.ndarray:
    """2x2 average pooling (``"down"``), nearest-neighbour x2 (``"up"``) or identity (``None``)."""
    if kind == "down":
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    if kind == "up":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return x


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with residual ``(x + a) / sqrt(2)`` (DDPM++).

    ``a = proj(softmax(q k^T / sqrt(c)) v)`` with ``q, k, v`` 1x1 projections of ``gn(x)``; the
    logits and softmax are computed in float32 whatever ``dtype`` is.
    """

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, hh, ww, c = x.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.GroupNorm(_groups(c), epsilon=1e-6, name="norm", **kw)(x).reshape(b, hh * ww, c)
        q, k, v = jnp.split(nn.Dense(3 * c, kernel_init=_XAVIER, name="qkv", **kw)(h), 3, axis=-1)
        logits = jnp.einsum("bic,bjc->bij", q, k, preferred_element_type=jnp.float32)
        w = jax.nn.softmax(logits / math.sqrt(c), axis=-1).astype(v.dtype)
        a = nn.Dense(c, kernel_init=_ZERO, name="proj", **kw)(jnp.einsum("bij,bjc->bic", w, v))
        return (x + a.reshape(b, hh, ww, c)) * _SKIP_SCALE


class BigGANBlock(nn.Module):
    """DDPM++ residual block, optionally resampling (BigGAN up/down block) and with attention.

    Attributes:
      out_channels: output channels.
      resample: ``None``, ``"up"`` (x2 nearest) or ``"down"`` (2x2 average pool), applied to both
        the residual branch (before its first convolution) and the skip path.
      attention: apply :class:`SelfAttention` after the residual sum.
      dropout: dropout rate before the second convolution (active only with ``train=True``).
      dtype, param_dtype: compute and parameter dtypes.
    """

    out_channels: int
    resample: str | None = None
    attention: bool = False
    dropout: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, temb: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        c = self.out_channels
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(nn.GroupNorm(_groups(x.shape[-1]), epsilon=1e-6, name="norm0", **kw)(x))
        h = nn.Conv(c, (3, 3), kernel_init=_XAVIER, name="conv0", **kw)(_resample(h, self.resample))
        h = h + nn.Dense(c, kernel_init=_XAVIER, name="temb", **kw)(nn.silu(temb))[:, None, None, :]
        h = nn.silu(nn.GroupNorm(_groups(c), epsilon=1e-6, name="norm1", **kw)(h))
        if self.dropout > 0.0:
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Conv(c, (3, 3), kernel_init=_ZERO, name="conv1", **kw)(h)
        skip = _resample(x, self.resample)
        if x.shape[-1] != c or self.resample is not None:
            skip = nn.Conv(c, (1, 1), kernel_init=_XAVIER, name="skip", **kw)(skip)
        out = (skip + h) * _SKIP_SCALE
        if self.attention:
            out = SelfAttention(name="attn", **kw)(out)
        return out


class DDPMpp(nn.Module):
    """DDPM++ U-Net ``f(x, t[, y])`` (EDM ``SongUNet``, DDPM++ config); output shaped like ``x``.

    Use :func:`diffjax.nn.unet_preset` for the papers' configurations.

    Attributes:
      channels: base channel count (``model_channels``).
      channel_mult: channel multiplier per resolution level; level ``i`` has resolution
        ``H / 2**i``.
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attn_resolutions: spatial sizes (e.g. ``(16,)``) whose blocks get self-attention; each must
        be a resolution of the network for the input size (checked at trace time).
      dropout: dropout rate in every residual block (only with ``train=True``; then pass
        ``rngs={"dropout": key}`` to ``apply``).
      num_classes: if set, class-conditional with a null token at index ``num_classes``
        (classifier-free guidance, thesis eq. (4.27)).
      time_embedding: ``"sinusoidal"`` (DDPM++ positional) or ``"fourier"``.
      time_scale: multiplier of the input noise level (sinusoidal) or Fourier std; 1000 for
        ``t`` in ``[0, 1]``, 1 for EDM's ``c_noise = log(sigma) / 4``.
      out_channels: output channels (default: input channels).
      dtype: compute dtype of the image path (``jnp.bfloat16`` for mixed precision).
      param_dtype: parameter dtype (keep float32 so the optimiser state is float32).
    """

    channels: int = 128
    channel_mult: Sequence[int] = (2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.0
    num_classes: int | None = None
    time_embedding: str = "sinusoidal"
    time_scale: float = 1000.0
    out_channels: int | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _check(self, x):
        if self.channels < 1 or self.num_res_blocks < 1 or not self.channel_mult:
            raise ValueError(
                f"channels and num_res_blocks must be >= 1 and channel_mult non-empty, got channels="
                f"{self.channels}, num_res_blocks={self.num_res_blocks}, channel_mult={self.channel_mult}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("dtype", "param_dtype"):
            value = getattr(self, name)
            if value is None or not jnp.issubdtype(jnp.dtype(value), jnp.floating):
                raise ValueError(f"{name} must be a floating dtype, got {value}")
        if x.ndim != 4:
            raise ValueError(f"DDPMpp expects x of shape (batch, H, W, C), got {x.shape}")
        f = 2 ** (len(self.channel_mult) - 1)
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"spatial size {x.shape[1:3]} must be divisible by 2**(levels-1) = {f} "
                             f"for channel_mult={tuple(self.channel_mult)}")
        res = {x.shape[1] >> lv for lv in range(len(self.channel_mult))}
        bad = sorted(set(self.attn_resolutions) - res)
        if bad:
            raise ValueError(f"attn_resolutions {tuple(bad)} are not resolutions of this network "
                             f"(input {x.shape[1]}x{x.shape[2]}: {tuple(sorted(res, reverse=True))})")

    def _embed(self, t, y, batch: int) -> jnp.ndarray:
        """Noise-level (+ class) embedding ``(batch, 4 * channels)`` in float32."""
        dim = 4 * self.channels
        temb = TimeEmbedding(dim, kind=self.time_embedding, scale=self.time_scale,
                             base_dim=self.channels, name="time")(as_batch_times(t, batch))
        if self.num_classes is not None:
            if y is None:
                y = jnp.full((batch,), self.num_classes, jnp.int32)
            y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (batch,))
            temb = temb + nn.Embed(self.num_classes + 1, dim, param_dtype=self.param_dtype, name="label")(y)
        return temb

    @nn.compact
    def __call__(self, x: jnp.ndarray, t, y=None, *, train: bool = False) -> jnp.ndarray:
        """Evaluate the network.

        Args:
          x: images ``(batch, H, W, C)``.
          t: scalar or ``(batch,)`` noise level (time, ``c_noise`` or log-SNR).
          y: integer labels ``(batch,)`` for a class-conditional net; ``None`` (or the value
            ``num_classes``) means the null token. Ignored if ``num_classes`` is None.
          train: enable dropout (needs ``rngs={"dropout": key}``).

        Returns:
          ``(batch, H, W, out_channels or C)`` in ``x``'s dtype (float32 for float32 input, also
          when ``dtype`` is bfloat16).

        Raises:
          ValueError: (at trace time) on bad shapes or hyper-parameters.
        """
        self._check(x)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def block(c, name, **a):
            return BigGANBlock(c, dropout=self.dropout, name=name, **a, **kw)

        temb = self._embed(t, y, x.shape[0]).astype(self.dtype)
        attn, levels = set(self.attn_resolutions), len(self.channel_mult)
        h = nn.Conv(self.channels, (3, 3), kernel_init=_XAVIER, name="conv_in", **kw)(x.astype(self.dtype))
        skips = [h]
        for lv, mult in enumerate(self.channel_mult):
            res = x.shape[1] >> lv
            if lv > 0:
                h = block(h.shape[-1], f"enc{res}_down", resample="down")(h, temb, train=train)
                skips.append(h)
            for i in range(self.num_res_blocks):
                h = block(self.channels * mult, f"enc{res}_block{i}", attention=res in attn)(h, temb, train=train)
                skips.append(h)
        h = block(h.shape[-1], "mid0", attention=True)(h, temb, train=train)
        h = block(h.shape[-1], "mid1")(h, temb, train=train)
        for lv in reversed(range(levels)):
            res, mult = x.shape[1] >> lv, self.channel_mult[lv]
            if lv < levels - 1:
                h = block(h.shape[-1], f"dec{res}_up", resample="up")(h, temb, train=train)
            for i in range(self.num_res_blocks + 1):
                a = i == self.num_res_blocks and res in attn
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = block(self.channels * mult, f"dec{res}_block{i}", attention=a)(h, temb, train=train)
        h = nn.silu(nn.GroupNorm(_groups(h.shape[-1]), epsilon=1e-6, name="norm_out", **kw)(h))
        out = nn.Conv(self.out_channels or x.shape[-1], (3, 3), kernel_init=_ZERO, name="conv_out", **kw)(h)
        return out.astype(x.dtype)
