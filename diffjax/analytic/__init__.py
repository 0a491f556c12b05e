"""Exact ground truth: Gaussian mixtures with closed-form diffused densities and scores.

Scalar SDEs keep a mixture a mixture (:class:`GaussianMixture`); under CLD the joint
``(x, v)`` marginal is a mixture of 2x2-per-dimension Gaussians (``cld_*`` functions).
"""

from diffjax.analytic._cld import cld_kernel_score, cld_log_prob, cld_sample, cld_score, cld_score_v_fn
from diffjax.analytic._mixture import GaussianMixture, nine_gaussians, sixty_four_gaussians

__all__ = [
    "GaussianMixture", "nine_gaussians", "sixty_four_gaussians",
    "cld_log_prob", "cld_score", "cld_score_v_fn", "cld_sample", "cld_kernel_score",
]
