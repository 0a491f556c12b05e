"""A privacy budget for a DP training run: ``(epsilon, delta)``, data set size, batch size, epochs.

Computes ``q = B / N``, ``steps = ceil(epochs N / B)`` and, by calibration, the smallest
``sigma_DP`` that keeps ``epochs`` of Poisson-sampled DP-SGD within ``(epsilon, delta)``
(thesis §4.3.3, Table 4.9); reports the epsilon spent after ``s`` steps; refuses
(``ValueError``) a plan that would exceed the budget before any training happens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from diffjax.privacy._accounting import ACCOUNTANTS, calibrate_noise, epsilon as _epsilon, steps_for_epochs

__all__ = ["PrivacyBudget"]

_TOL = 1e-9  # relative slack for float round-off when comparing spent and target epsilon


@dataclasses.dataclass(frozen=True)
class PrivacyBudget:
    """A checked DP-SGD plan. Build it with :meth:`PrivacyBudget.create`.

    Attributes:
      epsilon, delta: the ``(epsilon, delta)``-DP target.
      dataset_size: ``N``.
      batch_size: expected batch size ``B``.
      epochs: training length in epochs.
      noise_multiplier: ``sigma_DP``.
      accountant: ``"rdp"`` (thesis) or ``"pld"``.
      sample_rate: ``q = B / N``.
      steps: ``ceil(epochs N / B)``.
      planned_epsilon: epsilon after ``steps`` steps (``<= epsilon``).
    """

    epsilon: float
    delta: float
    dataset_size: int
    batch_size: int
    epochs: float
    noise_multiplier: float
    accountant: str
    sample_rate: float
    steps: int
    planned_epsilon: float

    @classmethod
    def create(cls, *, epsilon: float, delta: float, dataset_size: int, batch_size: int,
               epochs: float, noise_multiplier: float | None = None,
               accountant: str = "rdp") -> "PrivacyBudget":
        """Plan a run; calibrate ``sigma_DP`` if ``noise_multiplier`` is ``None``.

        Raises:
          ValueError: invalid arguments, or a given ``noise_multiplier`` whose ``epochs`` would
            spend more than ``epsilon`` (the message states the epsilon it would spend and the
            smallest sufficient ``sigma_DP``).
        """
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}")
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
        steps = steps_for_epochs(epochs, dataset_size, batch_size)
        q = batch_size / dataset_size
        if noise_multiplier is None:
            sigma = calibrate_noise(epsilon, q, steps, delta, accountant=accountant)
        else:
            sigma = float(noise_multiplier)
            if not sigma > 0:
                raise ValueError(f"noise_multiplier must be positive, got {noise_multiplier!r}")
        planned = _epsilon(sigma, q, steps, delta, accountant=accountant)
        if planned > epsilon * (1 + _TOL):
            need = calibrate_noise(epsilon, q, steps, delta, accountant=accountant)
            raise ValueError(
                f"privacy budget exceeded before training: {steps} steps ({epochs} epochs, N={dataset_size}, "
                f"B={batch_size}) at noise_multiplier={sigma} spend epsilon={planned:.4g} > epsilon={epsilon} "
                f"(delta={delta}, {accountant}); use noise_multiplier >= {need:.4g}, fewer epochs or a "
                "larger epsilon")
        return cls(float(epsilon), float(delta), int(dataset_size), int(batch_size), float(epochs),
                   float(sigma), accountant, float(q), int(steps), float(planned))

    def spent(self, steps: int) -> float:
        """Epsilon spent after ``steps`` DP-SGD steps (at ``delta``)."""
        return _epsilon(self.noise_multiplier, self.sample_rate, int(steps), self.delta,
                        accountant=self.accountant)

    def check_steps(self, steps: int) -> None:
        """Raise ``ValueError`` if running ``steps`` steps would exceed the budget."""
        if steps > self.steps:
            raise ValueError(
                f"privacy budget exceeded: {steps} steps requested but the budget (epsilon={self.epsilon}, "
                f"delta={self.delta}) allows {self.steps} at noise_multiplier={self.noise_multiplier} "
                f"(epsilon after {steps} steps: {self.spent(steps):.4g})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (stored with checkpoints)."""
        return dataclasses.asdict(self)
