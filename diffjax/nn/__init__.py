"""Flax networks for diffjax (the only place Flax is used) and ``apply_fn`` bridges."""

from diffjax.nn.apply import init_module, init_params, make_apply, make_cld_apply, param_count
from diffjax.nn.ddpmpp import BigGANBlock, DDPMpp, SelfAttention
from diffjax.nn.embeddings import GaussianFourierEmbedding, TimeEmbedding, as_batch_times, sinusoidal_embedding
from diffjax.nn.flops import matmul_flops
from diffjax.nn.heads import GenieHead
from diffjax.nn.mlp import ScoreMLP
from diffjax.nn.presets import PRESETS, Preset, unet_preset
from diffjax.nn.unet import AttentionBlock, ResBlock, UNet

__all__ = [
    "ScoreMLP", "UNet", "GenieHead", "ResBlock", "AttentionBlock",
    "sinusoidal_embedding", "GaussianFourierEmbedding", "TimeEmbedding", "as_batch_times",
    "make_apply", "make_cld_apply", "init_params", "init_module", "param_count",
    "DDPMpp", "BigGANBlock", "SelfAttention", "unet_preset", "PRESETS", "Preset", "matmul_flops",
]
