"""Flax networks for diffjax (the only place Flax is used) and ``apply_fn`` bridges."""

from diffjax.nn.apply import init_module, init_params, make_apply, make_cld_apply, param_count
from diffjax.nn.embeddings import GaussianFourierEmbedding, TimeEmbedding, as_batch_times, sinusoidal_embedding
from diffjax.nn.heads import GenieHead
from diffjax.nn.mlp import ScoreMLP
from diffjax.conditioning import drop_labels
from diffjax.nn.unet import AttentionBlock, ResBlock, UNet

__all__ = [
    "ScoreMLP", "UNet", "GenieHead", "ResBlock", "AttentionBlock", "drop_labels",
    "sinusoidal_embedding", "GaussianFourierEmbedding", "TimeEmbedding", "as_batch_times",
    "make_apply", "make_cld_apply", "init_params", "init_module", "param_count",
]
