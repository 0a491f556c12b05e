"""The preconditioned denoiser loss of an EDM-style config (thesis eqs. 1.27, 4.23; Table 4.7)."""

from __future__ import annotations

from diffjax.losses._scaffold import LossFn, add_noise, edm_sigma, level_loss
from diffjax.param import DenoiserConfig, precondition
from diffjax.sde._base import batch_sum

__all__ = ["edm_loss"]


def edm_loss(config: DenoiserConfig) -> LossFn:
    """Preconditioned denoiser loss of a thesis Table 4.7 config (thesis eqs. 1.27, 4.23).

    ``sigma ~ config.sample_sigma``, ``x = x_0 + sigma n`` with ``n ~ N(0, I)``, and per example
    ``lambda(sigma) ||D(x, sigma) - x_0||^2`` where ``D = precondition(config, F)`` and the raw
    network is ``F(y, c_noise) = apply_fn(params, y, c_noise)``.

    Args:
      config: a :class:`diffjax.param.DenoiserConfig` (``vp_config()``, ``edm_config()``, ...).

    Returns:
      ``loss(apply_fn, params, key, x0, *, reduce=True) -> (loss, aux)``; ``aux`` holds per-example
      ``"sigma"``, ``"x"`` (the noisy input), ``"mse"`` (``||D - x_0||^2``) and ``"weight"``
      (``lambda(sigma)``).

    Raises:
      ValueError: if ``config`` is not a ``DenoiserConfig``; the returned loss raises on malformed or
        (concrete) non-finite ``x0``.
    """
    if not isinstance(config, DenoiserConfig):
        raise ValueError(f"config must be a DenoiserConfig (e.g. edm_config()), got {type(config).__name__}")

    def per_example(apply_fn, params, key, x0, sigma):
        x = add_noise(key, x0, sigma)
        denoiser = precondition(config, lambda y, c: apply_fn(params, y, c))
        mse = batch_sum((denoiser(x, sigma) - x0) ** 2)
        weight = config.loss_weight(sigma)
        return weight * mse, {"sigma": sigma, "x": x, "mse": mse, "weight": weight}

    return level_loss(edm_sigma(config), per_example)
