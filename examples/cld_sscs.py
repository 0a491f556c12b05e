"""CLD with exact scores: SSCS vs Euler-Maruyama on the thesis' 9-Gaussian toy (Table 2.8).

    python examples/cld_sscs.py [--quick]
"""

import argparse

import jax

import diffjax as dj
from diffjax.analytic import cld_score_v_fn, nine_gaussians

p = argparse.ArgumentParser()
p.add_argument("--quick", action="store_true")
args = p.parse_args()
n_samples = 500 if args.quick else 5000

cld = dj.CLD()                                 # beta = 4, M^-1 = 4 (Gamma = 1), gamma = 0.04
target = nine_gaussians()                      # thesis eq. (2.100)
score_v = cld_score_v_fn(target, cld)          # the exact velocity score: a "perfect network"
grid = dj.schedules.uniform_grid(50, t_min=1e-3)

for name, rule in [("SSCS", dj.samplers.sscs_rule(cld)), ("EM", dj.samplers.euler_maruyama_rule(cld))]:
    out, info = jax.jit(lambda k, r=rule: dj.sample(r, score_v, k, (n_samples, 2), grid))(jax.random.PRNGKey(0))
    x = out[0] if isinstance(out, tuple) else out
    print(f"{name:5s} 50 steps: E[-log p_data(x)] = {float(-target.log_prob(x).mean()):7.3f}")
print(f"(the target's own entropy: {float(-target.log_prob(target.sample(jax.random.PRNGKey(1), 20000)).mean()):.3f})")
