"""DP-SGD step cost and noise-multiplicity variance (thesis §4.3.3, Theorem 1).

Model: ``ScoreMLP`` (width 128, depth 3) on 2-D data (nine-Gaussians mixture), EDM config
loss (thesis Table 4.7), batch 256 (a full padded batch: all rows real).

- ``ratio_vs_nondp[K]``: time of one jitted DP step (:func:`diffjax.privacy.make_dp_train_step`,
  clip + noise + Adam + EMA, noise multiplicity ``K``, ghost clipping) / time of one jitted
  non-DP step (:func:`diffjax.train.make_train_step`, same model, batch and optimiser).
  Medians over interleaved repeats (the two steps alternate, so machine load hits both).
  ``K > 1`` does ``K`` times the network work, so ratios grow roughly like ``K``.
- ``grad_var_ratio_k[K]``: variance of the ``K``-sample per-example objective ``l~_i``
  (eq. 4.7) over fresh noise draws, averaged over examples, divided by the ``K = 1`` variance;
  Theorem 1 predicts ``1/K``. (Also reported: the same ratio for the per-example gradient
  variance summed over parameters.)

Prints a table, then one JSON line (last line of stdout).
Usage: ``python benchmarks/dp_step.py [--quick] [--batch 256] [--width 128]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from diffjax import train
from diffjax.analytic import nine_gaussians
from diffjax.losses import edm_loss
from diffjax.nn import ScoreMLP, init_params, make_apply
from diffjax.param import edm_config
from diffjax.privacy import make_dp_train_step, per_example_loss_fn


def _time_interleaved(fns, repeats):
    """Median seconds per call of each ``fn()`` (already compiled), calls interleaved."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (10 if args.quick else 50)
    n_ex, n_draws = (32, 512) if args.quick else (64, 4096)

    B = args.batch
    module = ScoreMLP(width=args.width, depth=3)
    apply_fn = make_apply(module)
    params = init_params(module, jax.random.PRNGKey(0), (B, 2))
    loss = edm_loss(edm_config())
    data = nine_gaussians().sample(jax.random.PRNGKey(1), B)
    mask = jnp.ones((B,), bool)
    opt = train.make_optimizer(3e-4)
    state = train.create_train_state(params, opt, jax.random.PRNGKey(2))

    nondp = train.make_train_step(loss, apply_fn, opt)
    fns = {"nondp": lambda: nondp(state, data)}
    for K in (1, 4, 16):
        dp = make_dp_train_step(loss, apply_fn, opt, clip=1.0, noise_multiplier=1.0,
                                expected_batch_size=float(B), multiplicity=K)
        fns[K] = (lambda dp=dp: dp(state, data, mask))
    for f in fns.values():  # compile + warm up
        jax.block_until_ready(f())
        jax.block_until_ready(f())
    med = _time_interleaved(fns, repeats)
    ratio = {str(K): med[K] / med["nondp"] for K in (1, 4, 16)}

    # Theorem 1: Var[l~_i] ~ 1/K at fixed model and example
    xs = data[:n_ex]
    keys = jax.random.split(jax.random.PRNGKey(3), n_draws)
    var_obj, var_grad = {}, {}
    for K in (1, 4, 16):
        f = per_example_loss_fn(loss, apply_fn, K)
        vals = jax.jit(jax.vmap(jax.vmap(f, (None, None, 0)), (None, 0, None)))(params, keys, xs)
        var_obj[K] = float(jnp.mean(jnp.var(vals, axis=0, ddof=1)))
        gk = keys[: n_draws // 4]
        g = jax.jit(jax.vmap(jax.grad(f), (None, 0, None)))(params, gk, xs[0])
        var_grad[K] = float(sum(jnp.sum(jnp.var(leaf, axis=0, ddof=1)) for leaf in jax.tree_util.tree_leaves(g)))
    var_ratio = {str(K): var_obj[K] / var_obj[1] for K in (4, 16)}
    grad_ratio = {str(K): var_grad[K] / var_grad[1] for K in (4, 16)}

    print(f"DP step vs non-DP step: ScoreMLP width {args.width}, batch {B}, EDM loss, "
          f"{repeats} interleaved repeats, backend {jax.default_backend()}")
    print(f"{'K':>4} {'step ms':>10} {'ratio':>8} {'Var ratio':>10} {'1/K':>8} {'grad Var ratio':>15}")
    print(f"{'-':>4} {med['nondp'] * 1e3:10.3f} {'(non-DP)':>8}")
    for K in (1, 4, 16):
        vr = var_ratio.get(str(K), 1.0)
        gr = grad_ratio.get(str(K), 1.0)
        print(f"{K:>4} {med[K] * 1e3:10.3f} {ratio[str(K)]:8.2f} {vr:10.4f} {1 / K:8.4f} {gr:15.4f}")
    print(json.dumps({"ratio_vs_nondp": ratio, "grad_var_ratio_k": var_ratio,
                      "param_grad_var_ratio_k": grad_ratio,
                      "nondp_step_ms": med["nondp"] * 1e3, "batch": B, "width": args.width}))


if __name__ == "__main__":
    main()
