"""Single-step error of DDIM vs GENIE vs step size (thesis Fig. 3.2 top, §3.3.3, App. 3.4.5).

Setting: VPSDE (beta 0.1 -> 20), the 64-component mixture (thesis eqs. 3.80-3.81) with its exact
eps; starting points x_t drawn exactly from the diffused marginal p_t for t in {0.1, 0.2, 0.5}
(the marginal of the exact PF-ODE trajectories); the "ground truth" is a 10k-step DDIM solve from
t down to t - dt_max (uniform in t), read off at every t - dt. One DDIM step (Euler on the DDIM
ODE) and one GENIE step (2nd TTM, exact derivative by JVP) from t to t - dt are compared with it
by the mean L2 distance over samples. Step sizes dt = t * {0.009, ..., 0.9}.

Prints a table, then one JSON line:
{"0.1": {"steps": [...], "ddim": [...], "genie": [...]}, "0.2": {...}, "0.5": {...}}
(errors ordered by increasing step size).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from diffjax.analytic._mixture import sixty_four_gaussians
from diffjax.samplers.genie import genie_rule
from diffjax.samplers.ode_rules import ddim_rule
from diffjax.samplers.sequential import sample
from diffjax.sde._scalar import VPSDE

FRACTIONS = [0.009, 0.018, 0.045, 0.09, 0.18, 0.45, 0.9]  # of t; multiples of 0.9 t / 10_000
N_REF = 10_000


def run(n_samples: int, seed: int = 0) -> dict:
    sde, mix = VPSDE(), sixty_four_gaussians()
    eps_fn = mix.eps_fn(sde)
    ddim, gen = ddim_rule(sde), genie_rule(sde)

    @jax.jit
    def reference(x, grid):
        _, info = sample(ddim, eps_fn, jax.random.PRNGKey(0), x.shape, grid, x_init=x, return_trajectory=True)
        idx = jnp.array([round(f / FRACTIONS[-1] * N_REF) - 1 for f in FRACTIONS])
        return info["trajectory"][idx]

    @jax.jit
    def single_steps(x, t, t_next):
        return (jax.vmap(lambda s: ddim.step(eps_fn, x, t, s, None))(t_next),
                jax.vmap(lambda s: gen.step(eps_fn, x, t, s, None))(t_next))

    out = {}
    for i, t in enumerate([0.1, 0.2, 0.5]):
        x = mix.marginal(sde, t).sample(jax.random.PRNGKey(seed + i), n_samples)
        grid = jnp.linspace(t, t - FRACTIONS[-1] * t, N_REF + 1)
        ref = reference(x, grid)
        steps = jnp.array([f * t for f in FRACTIONS])
        xd, xg = single_steps(x, jnp.float32(t), grid[0] - steps)
        err = lambda y: [float(e) for e in jnp.mean(jnp.linalg.norm(y - ref, axis=-1), axis=-1)]
        out[str(t)] = {"steps": [float(s) for s in steps], "ddim": err(xd), "genie": err(xg)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer samples (< 2 min on 2 CPU cores)")
    p.add_argument("--samples", type=int, default=None)
    args = p.parse_args()
    n = args.samples or (256 if args.quick else 1000)
    t0 = time.time()
    res = run(n)
    print(f"Single-step error (mean L2 to a {N_REF}-step DDIM reference), {n} samples, {time.time() - t0:.1f}s")
    for t, r in res.items():
        print(f"\nstart t = {t}")
        print(f"{'dt':>10} {'DDIM':>12} {'GENIE':>12} {'ratio':>8}")
        for s, d, g in zip(r["steps"], r["ddim"], r["genie"]):
            print(f"{s:10.5f} {d:12.3e} {g:12.3e} {d / g:8.1f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
