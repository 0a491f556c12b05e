"""Moved: the log-SNR estimators live in :mod:`diffjax.likelihood`, the proposal in :mod:`diffjax.log_snr`."""

from diffjax.likelihood.noise_classifier import (classify_noise_level, eps_fn_in_log_snr, log_likelihood_ratio,
                                                 log_snr_nll, noised_log_snr, noised_nll)
from diffjax.log_snr import sample_log_snr

__all__ = ["eps_fn_in_log_snr", "sample_log_snr", "noised_log_snr", "log_snr_nll", "noised_nll",
           "log_likelihood_ratio", "classify_noise_level"]
