"""diffjax: a functional JAX toolkit for diffusion models.

Everything is a pure function of arrays and pytrees: SDEs are data, samplers are step rules
plus executors, losses are ``loss(apply_fn, params, key, x0) -> (loss, aux)``. Flax lives in
``diffjax.nn`` only; ``diffjax.train`` (orbax), ``diffjax.data``, ``diffjax.privacy`` and the
other heavy modules are imported on first use, so ``import diffjax`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from diffjax import analytic, likelihood, log_snr, losses, metrics, param, samplers, schedules, sde
from diffjax.analytic import GaussianMixture
from diffjax.samplers import StepRule, picard_sample, sample
from diffjax.sde import CLD, VESDE, SubVPSDE, VPSDE

_LAZY = ("nn", "train", "data", "privacy", "distill", "cdl", "noise_classifier", "grids", "conditioning",
         "evaluation")

__all__ = [
    "__version__",
    # modules
    "sde", "schedules", "analytic", "samplers", "param", "losses", "likelihood", "log_snr", "metrics", *_LAZY,
    # the most used names
    "VPSDE", "SubVPSDE", "VESDE", "CLD", "GaussianMixture", "StepRule", "sample", "picard_sample",
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"diffjax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'diffjax' has no attribute {name!r}")
