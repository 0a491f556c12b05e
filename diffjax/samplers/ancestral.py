"""Ancestral samplers on EDM denoisers (k-diffusion style): Euler, DPM-2 and DPM-Solver++(2S) ancestral.

State and time are EDM coordinates (``x = x_0 + sigma n``, ``denoiser(x, sigma)``, grid of sigmas
descending, normally ending in ``0``: :func:`diffjax.schedules.karras_sigmas`). A step from ``sigma`` to
``sigma_next`` splits the target level into a deterministic and a fresh-noise part,

    sigma_up   = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)),
    sigma_down = sqrt(sigma_next^2 - sigma_up^2),

moves deterministically along the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``
(thesis eq. 4.24) from ``sigma`` to ``sigma_down``, then adds ``sigma_up z``. With ``eta = 1`` and an
Euler move this is exactly the DDPM posterior ``q(x_next | x, x0 = D)`` in EDM coordinates (variance
``sigma_next^2 (1 - sigma_next^2 / sigma^2)``, as in thesis Alg. 6 with ``eta = 1``); ``eta = 0`` is the
deterministic ODE solver. A move to ``sigma_down = 0`` (a step to ``sigma_next = 0``) is the Euler
step, which returns ``D(x, sigma)`` (no noise): the two-evaluation moves (DPM-2, DPM-Solver++(2S))
select it with ``lax.cond`` and make one evaluation there, as k-diffusion does (``nfe_fn`` counts
it; ``nfe_per_step`` is the most a step costs, what a ``vmap`` over grids pays).

References: Karras et al. 2022 (thesis App. 4.4.3.3); the ancestral split follows Song et al.'s
DDIM ``eta`` and Crowson's k-diffusion samplers (``get_ancestral_step``, ``sample_euler_ancestral``,
``sample_dpm_2_ancestral``, ``sample_dpmpp_2s_ancestral``); DPM-2 is Lu et al.'s DPM-Solver-2
(midpoint in ``log sigma``) and DPM-Solver++(2S) Lu et al. 2022's Alg. 1 (``r = 1/2``), applied to
the ODE part.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffjax._validate import concrete_float
from diffjax.samplers._rule import StepRule, gaussian_noise, no_noise

__all__ = ["ancestral_split", "euler_ancestral_rule", "dpm2_ancestral_rule", "dpmpp_2s_ancestral_rule"]


def ancestral_split(sigma, sigma_next, eta=1.0):
    """``(sigma_down, sigma_up)`` with ``sigma_down^2 + sigma_up^2 = sigma_next^2`` (module docstring).

    NaN-free for ``sigma_next = 0`` (both ``0``) and ``sigma_next = sigma``.
    """
    ratio = jnp.clip(1.0 - (sigma_next / sigma) ** 2, 0.0, 1.0)
    up = jnp.minimum(sigma_next, eta * sigma_next * jnp.sqrt(ratio))
    down = jnp.sqrt(jnp.maximum(sigma_next**2 - up**2, 0.0))
    return down, up


def _second_stage(kind: str, denoiser, x, d0, sigma, down):
    """The deterministic move from ``sigma`` to ``sigma_down > 0`` with one more evaluation.

    ``"dpm2"``: DPM-Solver-2, ``sigma_mid = sqrt(sigma sigma_down)``, ``x_mid = x + (sigma_mid - sigma) d``,
    ``x' = x + (sigma_down - sigma) d(x_mid, sigma_mid)``. ``"dpmpp_2s"``: DPM-Solver++(2S) in
    ``lambda = -log sigma`` with ``h = log(sigma / sigma_down)``: ``x_mid = e^{-h/2} x + (1 - e^{-h/2}) D``,
    ``x' = e^{-h} x + (1 - e^{-h}) D(x_mid, sigma e^{-h/2})``.
    """
    if kind == "dpm2":
        mid = jnp.sqrt(sigma * down)
        x_mid = x + (mid - sigma) * ((x - d0) / sigma)
        d_mid = (x_mid - denoiser(x_mid.astype(x.dtype), mid)) / mid
        return x + (down - sigma) * d_mid
    h = jnp.log(sigma) - jnp.log(down)
    x_mid = jnp.exp(-0.5 * h) * x - jnp.expm1(-0.5 * h) * d0
    d_mid = denoiser(x_mid.astype(x.dtype), sigma * jnp.exp(-0.5 * h))
    return jnp.exp(-h) * x - jnp.expm1(-h) * d_mid


def _build(kind: str, eta, s_noise, sigma_max) -> StepRule:
    eta = concrete_float("eta", eta, lo=0.0, allow_traced=True, poison_traced=True)
    s_noise = concrete_float("s_noise", s_noise, lo=0.0, allow_traced=True, poison_traced=True)
    sigma_max = concrete_float("sigma_max", sigma_max, lo=0.0, lo_open=True, allow_traced=True, poison_traced=True)
    stochastic = not (isinstance(eta, float) and eta == 0.0)

    def step(denoiser, x, sigma, sigma_next, z):
        down, up = ancestral_split(sigma, sigma_next, eta)
        d0 = denoiser(x, sigma)
        euler = (d0 + (down / sigma) * (x - d0)).astype(x.dtype)    # x + (down - sigma) (x - D) / sigma
        out = euler
        if kind != "euler":
            safe = jnp.where(down > 0, down, sigma)    # only used under vmap (cond -> select)
            move = lambda _: _second_stage(kind, denoiser, x, d0, sigma, safe).astype(x.dtype)  # noqa: E731
            out = jax.lax.cond(down > 0, move, lambda _: euler, None)
        if stochastic:
            out = out + (s_noise * up) * z
        return out.astype(x.dtype)

    def prior(key, shape):
        return sigma_max * jax.random.normal(key, shape)

    def nfe_fn(grid):
        down, _ = ancestral_split(grid[:-1], grid[1:], eta)
        return jnp.where(down > 0, 2, 1), jnp.zeros((), jnp.int32)

    two = kind != "euler"
    return StepRule(step=step, prior=prior, noise=gaussian_noise if stochastic else no_noise,
                    nfe_per_step=2 if two else 1, nfe_fn=nfe_fn if two else None, **StepRule.declare("denoiser"))


def euler_ancestral_rule(eta: float = 1.0, s_noise: float = 1.0, *, sigma_max: float = 80.0) -> StepRule:
    """Euler ancestral: ``x' = D + (sigma_down / sigma) (x - D) + s_noise sigma_up z``, ``D = D(x, sigma)``.

    The Euler step of the probability-flow ODE to ``sigma_down`` followed by fresh noise (module
    docstring). ``eta = 1``: DDPM ancestral sampling in EDM coordinates; ``eta = 0``: deterministic
    DDIM (thesis Alg. 6). 1 NFE per step. k-diffusion's ``sample_euler_ancestral``.

    Args:
      eta: ancestral noise fraction ``>= 0`` (may be traced; then noise is always drawn).
      s_noise: noise inflation ``>= 0``.
      sigma_max: prior std ``N(0, sigma_max^2 I)``; must equal the grid's first level.

    Returns:
      A :class:`StepRule` on ``denoiser(x, sigma)``; grid of sigmas (descending, may end in ``0``).

    Raises:
      ValueError: on negative/non-finite ``eta``, ``s_noise`` or ``sigma_max <= 0``.
    """
    return _build("euler", eta, s_noise, sigma_max)


def dpm2_ancestral_rule(eta: float = 1.0, s_noise: float = 1.0, *, sigma_max: float = 80.0) -> StepRule:
    """DPM-2 ancestral: a DPM-Solver-2 (midpoint) move from ``sigma`` to ``sigma_down``, then noise.

    ``sigma_mid = sqrt(sigma sigma_down)``, ``x_mid = x + (sigma_mid - sigma) d``,
    ``x' = x + (sigma_down - sigma) d(x_mid, sigma_mid) + s_noise sigma_up z`` with
    ``d(x, s) = (x - D(x, s)) / s``; when ``sigma_down = 0`` (last step to ``0``) the move is the
    Euler step ``D(x, sigma)`` with one evaluation (``lax.cond``). 2 NFE per step, 1 on that step
    (``nfe_fn``). k-diffusion's ``sample_dpm_2_ancestral`` (which, for ``eta > 1``, also skips the
    noise of a move to ``sigma_down = 0`` at ``sigma_next > 0``; this rule adds it).

    Args, Returns, Raises: as :func:`euler_ancestral_rule`.
    """
    return _build("dpm2", eta, s_noise, sigma_max)


def dpmpp_2s_ancestral_rule(eta: float = 1.0, s_noise: float = 1.0, *, sigma_max: float = 80.0) -> StepRule:
    """DPM-Solver++(2S) ancestral, k-diffusion's ``sample_dpmpp_2s_ancestral``.

    A DPM-Solver++(2S) move (Lu et al. 2022 Alg. 1, ``r = 1/2``, data prediction, ``lambda = -log
    sigma``) from ``sigma`` to ``sigma_down``, then ``s_noise sigma_up z`` (module docstring): with
    ``h = log(sigma / sigma_down)``, ``x_mid = e^{-h/2} x + (1 - e^{-h/2}) D(x, sigma)`` and
    ``x' = e^{-h} x + (1 - e^{-h}) D(x_mid, sigma e^{-h/2}) + s_noise sigma_up z``. When
    ``sigma_down = 0`` (a step to ``sigma_next = 0``) the move is the Euler step ``D(x, sigma)``
    with one evaluation (``lax.cond``). 2 NFE per step, 1 on that step (``nfe_fn``). ``eta = 0`` is
    the deterministic :func:`~diffjax.samplers.dpm_solver.dpmpp_2s_rule` with ``sde=None``.

    Args:
      eta: ancestral noise fraction ``>= 0`` (may be traced; then noise is always drawn).
      s_noise: noise inflation ``>= 0`` (may be traced).
      sigma_max: prior std ``N(0, sigma_max^2 I)``; must equal the grid's first level.

    Returns:
      A :class:`StepRule` on ``denoiser(x, sigma)``, one standard normal draw per step (pre-drawn);
      grid of sigmas (descending, normally ending in ``0``).

    Raises:
      ValueError: on negative/non-finite ``eta``, ``s_noise`` or ``sigma_max <= 0``.
    """
    return _build("dpmpp_2s", eta, s_noise, sigma_max)
