"""UniPC (Zhao et al. 2023) in data prediction, variant bh2, order 2: predictor UniP-2 + corrector UniC-2.

Coordinates as in :mod:`diffjax.samplers.dpm_solver`: ``lambda = log(alpha / sigma)``, ``m = x0(x, t)``
the data prediction, ``h = lambda_u - lambda_t``, ``g(h) = 1 - e^{-h}`` and ``B(h) = g(h)`` (bh2).

Predictor (UniP-p) from ``x_t`` with ``m_0 = m(x_t, t)`` and earlier outputs ``m_k`` at ``lambda_k``
(``r_k = (lambda_k - lambda_t) / h < 0``, ``D_k = (m_k - m_0) / r_k``)::

    x_u = (sigma_u / sigma_t) x_t + alpha_u g(h) m_0 + alpha_u B(h) sum_k rho_k D_k,

with ``rho = 1/2`` for ``p = 2`` (UniP-2 is then exactly DPM-Solver++(2M)).

Corrector (UniC-p): once ``m_u = m(x_u, u)`` is known it re-does the same step with the new point
added (``r = 1``, ``D_u = m_u - m_0``)::

    x_u^c = (sigma_u / sigma_t) x_t + alpha_u g(h) m_0 + alpha_u B(h) (sum_k rho^c_k D_k + rho^c_u D_u),

where ``rho^c`` solves ``R rho^c = b`` with ``R_{ij} = r_j^{i-1}`` (``r = (r_1, ..., 1)``) and
``b_i = i! h phi_{i+1}(h) / B(h)`` in the ``e^{-h}`` form: ``b_1 = (h - g) / (h g)``,
``b_2 = 2 (h^2/2 - h + g) / (h^2 g)`` (Zhao et al. 2023, Thm. 3.1 / Alg. 2; for ``p = 1`` they use
``rho^c = 1/2``). The corrector raises the order by one: UniPC-2 is third order, at one model
evaluation per step, because ``m_u`` is evaluated at the PREDICTED ``x_u`` and reused as the next
step's ``m_0`` (from the corrected ``x_u^c``). The last step is not corrected (that would need one
more evaluation), and a step to ``sigma = 0`` is the first-order denoising step ``x = alpha x0``.

As a :class:`~diffjax.samplers._rule.StepRule` the corrector of step ``i - 1`` runs at the start of
step ``i``, right after its model evaluation, so the state carries the predicted ``x`` (where the
model is evaluated next), the corrected point the previous step started from, the last two model
outputs with their ``lambda``s, the previous time and the grid's step counts (written by the
executor, ``StepRule.on_grid``): :class:`UniPCState`. Order schedule, as diffusers'
``UniPCMultistepScheduler``: the predictor of step ``i`` has order ``min(2, i + 1, N - i)`` with
``lower_order_final`` (``N`` the grid's steps, no threshold on ``N``), the corrector of step ``i``
the order its predictor had. Works with both executors (sequential and Picard) and in EDM
coordinates (``sde=None``).

Reference: Zhao, Bai, Rao, Zhou, Lu, "UniPC: A Unified Predictor-Corrector Framework for Fast
Sampling of Diffusion Models" (NeurIPS 2023).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from diffjax.samplers._exponential import check_rule_args, coords, effective_order, grid_counts, phis, prior
from diffjax.samplers._rule import StepRule, no_noise

__all__ = ["UniPCState", "unipc_rule"]


class UniPCState(NamedTuple):
    """State of :func:`unipc_rule` (``x`` first, as :func:`inpaint_rule` expects).

    Attributes:
      x: predicted sample at the current time ``(batch, *data)`` (the model is evaluated here next).
      x_prev: corrected sample at the previous time (the start of the step that produced ``x``).
      m_hist: the last two data predictions ``(m_{i-1}, m_{i-2})``, newest first.
      lam_hist: their ``lambda`` values (scalars), newest first.
      t_prev: the previous time (scalar).
      step: int32 number of steps taken.
      n_steps: int32 number of steps of the grid (zero-length padding excluded), set from the grid
        by the executor (``StepRule.on_grid``); ``-1`` if unknown.
      n_positive: int32 number of those steps that end at a positive noise level; ``-1`` if unknown.
    """

    x: Array
    x_prev: Array
    m_hist: tuple
    lam_hist: tuple
    t_prev: Array
    step: Array
    n_steps: Array
    n_positive: Array


def _corrector_b(h: Array) -> tuple[Array, Array]:
    """``(b_1, b_2)`` of UniC with ``B(h) = 1 - e^{-h}`` (bh2); both tend to ``(1/2, 1/3)`` as ``h -> 0``."""
    g, p2, p3 = phis(h)
    return p2 / (h * g), 2.0 * p3 / (h * h * g)


def unipc_rule(sde: Any = None, *, use_corrector: bool = True, lower_order_final: bool = True,
               euler_at_final: bool = False, sigma_max: float = 80.0) -> StepRule:
    """UniPC-2 (bh2): the UniP-2 predictor (= DPM-Solver++(2M)) plus the UniC-2 corrector; 1 NFE per step.

    See the module docstring for the update formulas. Warm-up: the first step is UniP-1/UniC-1.
    With the defaults this is diffusers' ``UniPCMultistepScheduler()`` (``solver_order=2``,
    ``predict_x0=True``, ``solver_type="bh2"``, ``lower_order_final=True``, no corrector after the
    last step; ``final_sigmas_type="zero"`` is a grid ending in ``0``).

    Args:
      sde: a scalar SDE (VP, sub-VP, VE; grid in ``t``, ``model_fn = x0_fn(x, t)``, e.g.
        :func:`diffjax.param.x0_from_eps`), or ``None`` for EDM coordinates (grid of sigmas,
        ``model_fn = denoiser(x, sigma)``, ``alpha = 1``). A BARE CALLABLE IS USED AS IS AND MUST
        PREDICT x0 (a denoiser for ``sde=None``): an eps model passed bare gives garbage without an
        error. Declare any other kind, ``diffjax.param.model(eps_fn, "eps")``, to have it converted.
      use_corrector: apply UniC (``False`` gives the UniP-2 predictor alone, which is
        :func:`dpmpp_2m_rule` up to their ``lower_order_final`` thresholds).
      lower_order_final: the last step of the grid is first order, whatever the number of steps
        (diffusers' UniPC has no 15-step threshold; on a grid ending in ``0`` that step is the
        first-order denoising step anyway). The number of steps is read from the grid.
      euler_at_final: the last step to a POSITIVE noise level is first order (diffjax's option; on a
        grid ending in ``0`` it is the step before the final denoising step).
      sigma_max: prior std in EDM coordinates (``sde=None``): must equal the grid's first sigma.

    Returns:
      A deterministic :class:`StepRule` with state :class:`UniPCState`; ``finalize`` returns ``state.x``.

    Raises:
      TypeError: if ``sde`` is neither ``None`` nor a scalar SDE.
      ValueError: on ``sigma_max <= 0``.
    """
    sigma_max = check_rule_args(sde, sigma_max)
    use_corrector = bool(use_corrector)

    def order_at(state, i, final):
        return effective_order(2, i, final, state.n_steps, state.n_positive, lower_order_final=lower_order_final,
                               euler_at_final=euler_at_final, below=None)

    def init(model_fn, x, t0):
        t0 = jnp.asarray(t0)
        zero_lam = jnp.zeros_like(coords(sde, t0)[2])
        unknown = jnp.full((), -1, jnp.int32)
        return UniPCState(x, jnp.zeros_like(x), (jnp.zeros_like(x), jnp.zeros_like(x)), (zero_lam, zero_lam),
                          t0, jnp.zeros((), jnp.int32), unknown, unknown)

    def on_grid(state, grid):
        n_steps, n_positive = grid_counts(sde, grid)
        return state._replace(n_steps=n_steps, n_positive=n_positive)

    def correct(state, m, a_t, s_t, l_t):
        """UniC for the step ``t_prev -> t`` that produced ``state.x``, now that ``m = m(state.x, t)`` is known."""
        _, s_p, l_p = coords(sde, state.t_prev)
        (m_p, m_pp), (_, l_pp) = state.m_hist, state.lam_hist
        h = l_t - l_p
        h = jnp.where(h == 0, 1.0, h)                        # step 0 has no predecessor (result unused)
        g = -jnp.expm1(-h)
        k = order_at(state, state.step - 1, jnp.zeros((), bool))   # the order the predictor used there
        d_u = m - m_p
        b1, b2 = _corrector_b(h)
        r1 = jnp.where(k >= 2, (l_pp - l_p) / h, -1.0)      # < 0; a safe value when unused
        d_1 = (m_pp - m_p) / r1
        rho_1 = (b1 - b2) / (1.0 - r1)                       # R = [[1, 1], [r1, 1]], R rho = (b1, b2)
        rho_u = b1 - rho_1
        corr = jnp.where(k >= 2, rho_1 * d_1 + rho_u * d_u, 0.5 * d_u)
        return (s_t / s_p) * state.x_prev + (a_t * g) * (m_p + corr)

    def step(model_fn, state, t, t_next, z):
        x, i = state.x, state.step
        a_t, s_t, l_t = coords(sde, t)
        a_n, s_n, l_n = coords(sde, t_next)
        m = model_fn(x, t)
        x_c = x
        if use_corrector:
            x_c = jnp.where(i >= 1, correct(state, m, a_t, s_t, l_t), x)
        h = l_n - l_t
        final = ~jnp.isfinite(l_n)
        k = order_at(state, i, final)
        h1 = jnp.where(k >= 2, l_t - state.lam_hist[0], 1.0)
        g = -jnp.expm1(-h)                                   # 1 at h = inf: x_u = alpha_u m
        second = jnp.where(k >= 2, (0.5 * jnp.where(final, 1.0, h) / h1) * (m - state.m_hist[0]), 0.0)
        out = (s_n / s_t) * x_c + (a_n * g) * (m + second)
        new = state._replace(x=out.astype(x.dtype), x_prev=x_c.astype(x.dtype), m_hist=(m, state.m_hist[0]),
                             lam_hist=(l_t, state.lam_hist[0]), t_prev=jnp.asarray(t, state.t_prev.dtype), step=i + 1)
        # A zero-length step (repeated time, e.g. a padded grid) is a no-op that keeps the whole state.
        return jax.tree_util.tree_map(lambda a, b: jnp.where(h == 0, a, b), state, new)

    def finalize(model_fn, state, t_last):
        return state.x

    return StepRule(step=step, prior=prior(sde, sigma_max), noise=no_noise, init=init, finalize=finalize,
                    nfe_per_step=1, on_grid=on_grid, **StepRule.declare("x0" if sde else "denoiser", sde))
