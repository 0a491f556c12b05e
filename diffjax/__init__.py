"""diffjax: a functional JAX toolkit for diffusion models.

Everything is a pure function of arrays and pytrees: SDEs are data, samplers are step rules
plus executors, losses are ``loss(apply_fn, params, key, x0) -> (scalar, aux)``.
"""

__version__ = "0.1.0"

from diffjax import analytic, samplers, schedules, sde
from diffjax.analytic import GaussianMixture
from diffjax.samplers import StepRule, sample
from diffjax.sde import CLD, VESDE, SubVPSDE, VPSDE

__all__ = [
    "__version__",
    "sde", "schedules", "analytic", "samplers",
    "VPSDE", "SubVPSDE", "VESDE", "CLD",
    "GaussianMixture",
    "StepRule", "sample",
]
