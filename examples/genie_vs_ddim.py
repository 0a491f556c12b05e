"""GENIE (second-order Taylor with exact jvp derivatives) vs DDIM at few steps, exact model.

    python examples/genie_vs_ddim.py [--quick]
"""

import argparse

import jax
import jax.numpy as jnp

import diffjax as dj
from diffjax.analytic import sixty_four_gaussians

p = argparse.ArgumentParser()
p.add_argument("--quick", action="store_true")
args = p.parse_args()
n = 256 if args.quick else 2000

sde = dj.VPSDE()
target = sixty_four_gaussians()                # thesis eqs. (3.80)-(3.81)
eps_fn = target.eps_fn(sde)
key = jax.random.PRNGKey(0)
ref, _ = dj.samplers.ddim(eps_fn, sde, key=key, shape=(n, 2), n_steps=1000, grid="quadratic")
for steps in (5, 10, 20):
    for name, run in [("DDIM", dj.samplers.ddim), ("GENIE", dj.samplers.genie)]:
        x, info = run(eps_fn, sde, key=key, shape=(n, 2), n_steps=steps, grid="quadratic")
        err = float(jnp.mean(jnp.linalg.norm(x - ref, axis=-1)))
        print(f"{name:5s} {steps:3d} steps ({int(info['nfe']):3d} NFE): distance to the 1000-step ODE solution {err:.4f}")
