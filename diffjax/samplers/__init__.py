"""Samplers = step rules (pure functions, as data) + executors (sequential scan, Picard).

Rule builders end in ``_rule`` and return a :class:`StepRule`; run one with
:func:`sample` (``lax.scan``) or :func:`picard_sample` (parallel in time, same result for the
same key). The one-call conveniences (``ddim``, ``edm_heun``, ``sscs``, ``genie``, ...) pick a
grid and run the sequential executor.
"""

from diffjax.samplers._rule import StepRule, gaussian_noise, no_noise, prepare
from diffjax.samplers.adaptive import solve_probability_flow
from diffjax.samplers.ancestral import (ancestral_split, dpm2_ancestral_rule, dpmpp_2s_ancestral_rule,
                                        euler_ancestral_rule)
from diffjax.samplers.api import ddim, ddpm, edm_euler, edm_heun, euler_maruyama, pc, probability_flow, time_grid
from diffjax.samplers.dpm_solver import (DPMState, dpmpp_2m_rule, dpmpp_2m_sde_rule, dpmpp_2s_rule, dpmpp_3m_rule,
                                         dpmpp_3m_sde_rule)
from diffjax.samplers.edm_rules import edm_euler_rule, edm_heun_rule
from diffjax.samplers.genie import genie, genie_derivative, genie_rule, genie_second_derivative, ttm3, ttm3_rule
from diffjax.samplers.guidance import classifier_free_guidance
from diffjax.samplers.inpainting import inpaint_rule
from diffjax.samplers.inversion import ddim_invert, ddim_reconstruct
from diffjax.samplers.ode_rules import ddim_rule, probability_flow_euler_rule, probability_flow_heun_rule
from diffjax.samplers.picard import picard_sample
from diffjax.samplers.sde_rules import ddpm_rule, euler_maruyama_rule, predictor_corrector_rule
from diffjax.samplers.sequential import sample
from diffjax.samplers.sscs import sscs, sscs_rule
from diffjax.samplers.tuning import WindowCache, auto_window
from diffjax.samplers.unipc import UniPCState, unipc_rule

__all__ = [
    # interface and executors
    "StepRule", "prepare", "gaussian_noise", "no_noise", "sample", "picard_sample", "auto_window", "WindowCache",
    # rules
    "euler_maruyama_rule", "predictor_corrector_rule", "ddpm_rule", "ddim_rule",
    "probability_flow_euler_rule", "probability_flow_heun_rule", "edm_heun_rule", "edm_euler_rule",
    "sscs_rule", "genie_rule", "ttm3_rule",
    "dpmpp_2m_rule", "dpmpp_3m_rule", "dpmpp_2m_sde_rule", "dpmpp_3m_sde_rule", "dpmpp_2s_rule", "DPMState",
    "unipc_rule", "UniPCState",
    "euler_ancestral_rule", "dpm2_ancestral_rule", "dpmpp_2s_ancestral_rule", "ancestral_split",
    # wrappers: inpainting, inversion
    "inpaint_rule", "ddim_invert", "ddim_reconstruct",
    # GENIE derivatives, guidance, adaptive ODE
    "genie_derivative", "genie_second_derivative", "classifier_free_guidance", "solve_probability_flow",
    # conveniences
    "ddim", "ddpm", "euler_maruyama", "pc", "probability_flow", "edm_heun", "edm_euler", "sscs", "genie", "ttm3",
    "time_grid",
]
