"""Differentially private diffusion models (thesis ch. 4, DPDM).

* :mod:`._dpsgd`: per-example clipped gradients with noise multiplicity, Gaussian noise
  (eqs. 4.7, 4.10-4.11) — :func:`private_grad` feeds any optax optimiser.
* :mod:`._poisson`: Poisson-sampled padded batches (Alg. 5).
* :mod:`._accounting`: RDP / PLD accounting (``dp-accounting``, optional extra ``privacy``).
* :mod:`._budget`: :class:`PrivacyBudget` (``sigma_DP`` from ``(epsilon, delta)``, N, B, epochs).
* :mod:`._train`: the jitted DP step and :func:`train_dp`, a builder on the one training driver
  (:func:`diffjax.train.train_loop`) that takes any optax transformation (default Adam).
"""

from diffjax.privacy._accounting import ACCOUNTANTS, calibrate_noise, epsilon, steps_for_epochs
from diffjax.privacy._budget import PrivacyBudget
from diffjax.privacy._dpsgd import METHODS, add_noise, clipped_grad_sum, per_example_loss_fn, private_grad
from diffjax.privacy._poisson import poisson_batch, poisson_capacity, poisson_indices
from diffjax.privacy._train import make_dp_train_step, sampling_key, train_dp

__all__ = [
    "epsilon", "calibrate_noise", "steps_for_epochs", "ACCOUNTANTS", "PrivacyBudget",
    "per_example_loss_fn", "clipped_grad_sum", "add_noise", "private_grad", "METHODS",
    "poisson_capacity", "poisson_indices", "poisson_batch",
    "make_dp_train_step", "train_dp", "sampling_key",
]
