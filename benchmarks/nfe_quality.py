"""NFE vs quality of deterministic samplers on the 64-component mixture (thesis eqs. 3.80-3.81).

Setting: VPSDE (beta 0.1 -> 20), the 64-Gaussian 2-D mixture (std 1e-2) with its EXACT eps
(``GaussianMixture.eps_fn``) / denoiser, so every error is solver error. One batch of prior draws
``x_T ~ N(0, I)`` at ``T = 1`` is shared by all methods. The reference is the probability-flow ODE
solved from the same ``x_T`` to ``sigma = 0`` in float64: Dopri8 (rtol = atol = 1e-10) on
``dx_hat/d log(sigma) = x_hat - D(x_hat, sigma)`` (EDM coordinates ``x_hat = x / alpha_t``,
``sigma = sigma_t / alpha_t``; thesis eq. 4.24) from ``sigma_T`` down to ``1e-5``, then
``D(x_hat, 1e-5)``. Error = mean Euclidean distance of the final samples to the reference.

Every method ends at ``sigma = 0`` with the same last positive level ``sigma_min = 0.002`` (EDM's),
``t_min = t(sigma_min)``, and spends at most the NFE budget (``nfe_used`` in the JSON):

* ``ddim``: deterministic DDIM (thesis eq. 3.6) on the quadratic grid (thesis §3.4.3.2.4) of
  ``NFE - 1`` steps to ``t_min``, plus the step to ``t = 0`` (``x0_hat``): NFE.
  (Measured with 256 samples: quadratic is DDIM's best grid among quadratic, log-SNR-uniform and
  Karras-in-t, at every NFE.)
* ``edm_heun``: Karras et al.'s Heun (thesis Alg. 7, no churn) on ``K = (NFE + 1) // 2`` Karras levels
  (rho = 7) from ``sigma_T`` to ``sigma_min``; ``finalize = D``: ``2K - 1`` NFE.
* ``genie``: GENIE (thesis eq. 3.16, exact JVP derivative, counted as 2 NFE per step as
  :mod:`diffjax.samplers.genie` does) on the quadratic grid with ``k = (NFE - 1) // 2`` steps to
  ``t_min``, then the ``x0_hat`` step (1 NFE): ``2k + 1``.
* ``dpmpp_2m`` / ``dpmpp_3m``: DPM-Solver++ (Lu et al. 2022) on DDIM's quadratic grid (the same-grid
  comparison) of ``NFE - 1`` steps to ``t_min`` plus the first-order step to ``t = 0``, with
  ``lower_order_final`` (the default; diffusers' order schedule, ``N = NFE`` steps read from the grid)
  and ``euler_at_final`` (that grid's last positive step is 2-4x longer in lambda than the others): NFE.
* ``unipc``: UniPC-2 bh2 (UniP-2 predictor + UniC-2 corrector, 1 NFE per step), same grid and options.
* ``*_logsnr``: the same four methods (``ddim``, ``dpmpp_2m``, ``dpmpp_3m``, ``unipc``) on the log-SNR-
  uniform grid (``diffjax.grids.log_snr_uniform_grid(..., append_zero=True)``), DPM-Solver's default.

Prints a table, then one JSON line (errors ordered as ``nfe``):
{"nfe": [5, 10, 15, 20], "ddim": [...], "edm_heun": [...], "genie": [...], "dpmpp_2m": [...], "dpmpp_3m": [...],
 "unipc": [...], "ddim_logsnr": [...], "dpmpp_2m_logsnr": [...], "dpmpp_3m_logsnr": [...], "unipc_logsnr": [...],
 "nfe_used": {...}, "paired_se": {"ddim-dpmpp_2m": [...], "ddim_logsnr-dpmpp_2m_logsnr": [...],
 "ddim-dpmpp_2m_logsnr": [...]}, "n_samples": N}
``paired_se`` is the standard error of the mean per-sample error difference (same ``x_T``).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.analytic._mixture import sixty_four_gaussians
from diffjax.grids import karras_sigmas, log_snr_uniform_grid
from diffjax.param import x0_from_eps
from diffjax.samplers.dpm_solver import dpmpp_2m_rule, dpmpp_3m_rule
from diffjax.samplers.edm_rules import edm_heun_rule
from diffjax.samplers.genie import genie_rule
from diffjax.samplers.ode_rules import ddim_rule
from diffjax.samplers.sequential import sample
from diffjax.samplers.unipc import unipc_rule
from diffjax.schedules import quadratic_grid, sigma_from_t, t_from_sigma
from diffjax.sde._scalar import VPSDE

NFES = (5, 10, 15, 20)
SIGMA_MIN = 0.002
METHODS = ("ddim", "edm_heun", "genie", "dpmpp_2m", "dpmpp_3m", "unipc",
           "ddim_logsnr", "dpmpp_2m_logsnr", "dpmpp_3m_logsnr", "unipc_logsnr")
PAIRS = (("ddim", "dpmpp_2m"), ("ddim_logsnr", "dpmpp_2m_logsnr"), ("ddim", "dpmpp_2m_logsnr"))


def _reference(gm, x_hat, sigma_T):
    import diffrax

    with jax.enable_x64(True):
        x = jnp.asarray(np.asarray(x_hat), jnp.float64)
        term = diffrax.ODETerm(lambda u, y, _: y - gm.denoiser(y, jnp.exp(u)))
        sol = diffrax.diffeqsolve(term, diffrax.Dopri8(), t0=float(np.log(sigma_T)), t1=float(np.log(1e-5)),
                                  dt0=-0.05, y0=x, max_steps=100_000,
                                  stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10))
        return np.asarray(gm.denoiser(sol.ys[-1], 1e-5))


def _runners(sde, gm, nfe, t_min):
    eps = gm.eps_fn(sde)
    x0_fn = x0_from_eps(sde, eps)
    alpha_T, _ = sde.marginal_coeffs(sde.T)
    sigma_T = float(sigma_from_t(sde, sde.T))
    key = jax.random.PRNGKey(0)          # deterministic rules: the key is unused (x_init given)

    quadratic = jnp.concatenate([quadratic_grid(nfe - 1, t_min), jnp.zeros(1)])
    log_snr = log_snr_uniform_grid(sde, nfe - 1, t_min, append_zero=True)

    def ddim(x_T):
        return sample(ddim_rule(sde), eps, key, x_T.shape, quadratic, x_init=x_T)

    def ddim_logsnr(x_T):
        return sample(ddim_rule(sde), eps, key, x_T.shape, log_snr, x_init=x_T)

    def edm_heun(x_T):
        k = (nfe + 1) // 2
        rule, grid = edm_heun_rule(sigma_max=sigma_T), karras_sigmas(k, SIGMA_MIN, sigma_T, append_zero=False)
        return sample(rule, gm.denoiser, key, x_T.shape, grid, x_init=x_T / alpha_T)

    def genie(x_T):
        k = (nfe - 1) // 2
        x, info = sample(genie_rule(sde), eps, key, x_T.shape, quadratic_grid(k, t_min), x_init=x_T)
        return x0_fn(x, jnp.asarray(t_min, jnp.float32)), {"nfe": info["nfe"] + 1}

    def exp_integrator(build, grid, **options):       # the order schedule reads the grid (last step to 0)
        def run(x_T):
            return sample(build(sde, **options), x0_fn, key, x_T.shape, grid, x_init=x_T)

        return run

    return {"ddim": ddim, "ddim_logsnr": ddim_logsnr, "edm_heun": edm_heun, "genie": genie,
            "dpmpp_2m": exp_integrator(dpmpp_2m_rule, quadratic, euler_at_final=True),
            "dpmpp_3m": exp_integrator(dpmpp_3m_rule, quadratic, euler_at_final=True),
            "unipc": exp_integrator(unipc_rule, quadratic, euler_at_final=True),
            "dpmpp_2m_logsnr": exp_integrator(dpmpp_2m_rule, log_snr),
            "dpmpp_3m_logsnr": exp_integrator(dpmpp_3m_rule, log_snr),
            "unipc_logsnr": exp_integrator(unipc_rule, log_snr)}


def run(n_samples: int, seed: int = 0) -> dict:
    sde, gm = VPSDE(), sixty_four_gaussians()
    t_min = float(t_from_sigma(sde, SIGMA_MIN))
    alpha_T, _ = sde.marginal_coeffs(sde.T)
    sigma_T = float(sigma_from_t(sde, sde.T))
    x_T = jax.random.normal(jax.random.PRNGKey(seed), (n_samples, 2))
    ref = _reference(gm, x_T / alpha_T, sigma_T)
    res = {"nfe": list(NFES), **{m: [] for m in METHODS}, "nfe_used": {m: [] for m in METHODS},
           "paired_se": {f"{a}-{b}": [] for a, b in PAIRS}, "n_samples": n_samples}
    for nfe in NFES:
        per_sample = {}
        for name, fn in _runners(sde, gm, nfe, t_min).items():
            x, info = jax.jit(fn)(x_T)
            per_sample[name] = np.linalg.norm(np.asarray(x, np.float64) - ref, axis=-1)
            res[name].append(float(np.mean(per_sample[name])))
            res["nfe_used"][name].append(int(info["nfe"]))
        for a, b in PAIRS:
            d = per_sample[a] - per_sample[b]
            res["paired_se"][f"{a}-{b}"].append(float(np.std(d, ddof=1) / np.sqrt(d.size)))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="256 samples (< 2 min on 2 CPU cores)")
    p.add_argument("--samples", type=int, default=None)
    args = p.parse_args()
    n = args.samples or (256 if args.quick else 2000)
    t0 = time.time()
    res = run(n)
    print(f"NFE vs mean L2 error to a float64 Dopri8 PF-ODE solution, 64-Gaussian mixture, exact eps, "
          f"{n} samples, {time.time() - t0:.1f}s")
    width = max(map(len, METHODS)) + 1
    print(f"{'method':<{width}}" + "".join(f"{'NFE ' + str(n):>11}" for n in res["nfe"]) + "  NFE used")
    for m in METHODS:
        print(f"{m:<{width}}" + "".join(f"{v:11.3e}" for v in res[m]) + f"  {res['nfe_used'][m]}")
    print("2M vs DDIM, error difference (DDIM - 2M) in paired standard errors:")
    for a, b in PAIRS:
        z = [(res[a][i] - res[b][i]) / se for i, se in enumerate(res["paired_se"][f"{a}-{b}"])]
        print(f"  {a} - {b}: " + " ".join(f"{v:+7.1f}" for v in z))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
