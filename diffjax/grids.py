"""Sigma and time grids: re-exported from :mod:`diffjax.schedules`, the one module of grids.

``diffjax.grids`` stays importable (it is a public module of :mod:`diffjax`); every name here is the
very object defined in :mod:`diffjax.schedules` (``karras_sigmas`` is ``edm_sigma_grid``).
"""

from diffjax.schedules import (
    append_zero,
    exponential_sigmas,
    karras_sigmas,
    log_snr_uniform_grid,
    polyexponential_sigmas,
    sigmas_to_times,
)

__all__ = ["karras_sigmas", "exponential_sigmas", "polyexponential_sigmas", "log_snr_uniform_grid",
           "sigmas_to_times", "append_zero"]
