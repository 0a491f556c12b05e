"""Log-likelihoods of diffusion models.

* ``probability_flow``: exact ``log p(x)`` through the probability-flow ODE (thesis eqs. 1.21-1.22;
  diffrax, imported on first use) and the CLD bound (thesis eqs. 2.62-2.63), with exact or
  Hutchinson divergences;
* ``noise_classifier``: the log-SNR (information-theoretic) estimators of a denoiser: NLL with an
  exact constant, NLL of noised densities, the log-likelihood ratio and the noise-level classifier
  (CDL eqs. 2-8, App. A.2), importance-sampled with the proposal of :mod:`diffjax.log_snr`.
"""

from diffjax.likelihood.noise_classifier import (classify_noise_level, eps_fn_in_log_snr, log_likelihood_ratio,
                                                 log_snr_nll, noised_log_snr, noised_nll)
from diffjax.likelihood.probability_flow import (cld_nll_bound, divergence_exact, divergence_hutchinson,
                                                 probability_flow_log_likelihood)

__all__ = [
    "probability_flow_log_likelihood", "cld_nll_bound", "divergence_exact", "divergence_hutchinson",
    "eps_fn_in_log_snr", "noised_log_snr", "log_snr_nll", "noised_nll", "log_likelihood_ratio",
    "classify_noise_level",
]
