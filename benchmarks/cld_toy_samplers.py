"""CLD toy sampler comparison with analytic scores (thesis Table 2.8, App. 2.4.6.1).

Data: the 9-component mixture (thesis eq. 2.100, std 0.04). Scores are exact: the CLD velocity
score of the CLD-diffused mixture (HSM initial velocity, gamma = 0.04, beta = 4, M^-1 = 4) and the
VPSDE (beta 0.1 -> 20) score. Samplers: CLD with Euler-Maruyama, CLD with SSCS, VPSDE with
Euler-Maruyama, uniform time grids from T = 1 to the cut-off eps = 1e-3 followed by the
denoising step of thesis App. 2.4.5.2.4 (eqs. 2.110-2.112). n counts score evaluations (NFE):
CLD samplers take n steps and the CLD denoising step updates only x (no score call, eq. 2.112);
VP-EM takes n - 1 steps plus the denoising step (eq. 2.111, one score call), as in the CLD-SGM code.
Metric: E_samples[-log p_data(x)] (nats, 2-D), lower is better.

Prints a table, then one JSON line:
{"cld_em": {"20": v, "50": v, "100": v, "200": v}, "cld_sscs": {...}, "vp_em": {...}}
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from diffjax.analytic._cld import cld_score_v_fn
from diffjax.analytic._mixture import nine_gaussians
from diffjax.samplers.sde_rules import euler_maruyama_rule
from diffjax.samplers.sequential import sample
from diffjax.samplers.sscs import sscs_rule
from diffjax.schedules import uniform_grid
from diffjax.sde._cld import CLD
from diffjax.sde._scalar import VPSDE

NS = (20, 50, 100, 200)
EPS = 1e-3
PAPER = {"cld_em": (60.6, 9.71, 0.72, -1.04), "cld_sscs": (10.5, 1.55, -1.25, -1.54),
         "vp_em": (14.2, 4.68, -0.35, -1.11)}


def run(n_samples: int, seed: int = 0) -> dict:
    mix, cld, vp = nine_gaussians(), CLD(), VPSDE()
    score_v, score_vp = cld_score_v_fn(mix, cld), mix.score_fn(vp)
    shape = (n_samples, 2)

    def cld_denoise(u):                      # eq. (2.112): x_0 = x_eps - eps beta M^-1 v_eps
        x, v = u
        return x - EPS * cld.beta * cld.m_inv * v

    def vp_denoise(x):                       # eq. (2.111): x_0 = x_eps - eps f + eps g^2 s
        return x - EPS * vp.reverse_drift(x, EPS, score_vp(x, EPS))

    @jax.jit
    def cld_em(key, grid):
        u, _ = sample(euler_maruyama_rule(cld), score_v, key, shape, grid)
        return cld_denoise(u)

    @jax.jit
    def cld_sscs(key, grid):
        return sample(sscs_rule(cld), score_v, key, shape, grid)[0]

    @jax.jit
    def vp_em(key, grid):
        return vp_denoise(sample(euler_maruyama_rule(vp), score_vp, key, shape, grid)[0])

    res = {"cld_em": {}, "cld_sscs": {}, "vp_em": {}}
    key = jax.random.PRNGKey(seed)
    for n in NS:
        for name, fn, steps in [("cld_em", cld_em, n), ("cld_sscs", cld_sscs, n), ("vp_em", vp_em, n - 1)]:
            x = fn(key, uniform_grid(steps, EPS, 1.0))
            nll = -mix.log_prob(x)
            res[name][str(n)] = float(jnp.mean(nll)) if bool(jnp.all(jnp.isfinite(nll))) else float("inf")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer samples (< 2 min on 2 CPU cores)")
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    n = args.samples or (5_000 if args.quick else 50_000)
    t0 = time.time()
    res = run(n, args.seed)
    print(f"E[-log p_data(sample)] on the 9-Gaussian mixture, exact scores, {n} samples, {time.time() - t0:.1f}s")
    print(f"{'sampler':>10} " + " ".join(f"{'n=' + str(k):>16}" for k in NS))
    for name in res:
        cells = [f"{res[name][str(k)]:7.2f} ({PAPER[name][i]:6.2f})" for i, k in enumerate(NS)]
        print(f"{name:>10} " + " ".join(f"{c:>16}" for c in cells))
    print("(thesis Table 2.8 values in parentheses)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
