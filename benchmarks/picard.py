"""Picard (parallel-in-time) sampling vs the sequential scan: rounds, NFE, accuracy, wall time.

1000-step ancestral DDPM (VP SDE) on the 2-D nine-Gaussian target (thesis eq. 2.100) with the exact
eps model (or a random-init 3-layer width-256 MLP eps, ``--model mlp``), and the same for SSCS on
CLD (thesis App. 2.4.4) with the exact CLD velocity score of the mixture. Both executors use the
same rule, grid and key, so the Picard fixed point is the sequential trajectory (CDL §4 eqs.
12-13; Shih et al. 2023); the benchmark reports how many parallel rounds it takes and how far the
tolerance-stopped result is from the sequential one.

Keys of the JSON line (last line of stdout): ``n_steps``, ``iterations`` (Picard rounds), ``nfe``
(model evaluations per sample summed over rounds), ``devices``, ``max_rel_diff_vs_sequential``
(``max |x_picard - x_seq| / max |x_seq|`` over the final samples, same key),
``time_ratio_vs_sequential`` (Picard wall time / sequential wall time, compile excluded), and the
same under ``"sscs"``. On 8 forced CPU host devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)
the devices share the same cores, so the time ratio measures the extra work (~NFE ratio), not a
speed-up; on accelerators the window is one batch per round.

Usage: ``python benchmarks/picard.py [--quick] [--window P] [--batch B] [--model exact|mlp]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp

from diffjax.analytic import nine_gaussians
from diffjax.samplers.picard import picard_sample
from diffjax.samplers.sde_rules import ddpm_rule
from diffjax.samplers.sequential import sample
from diffjax.samplers.sscs import sscs_rule
from diffjax.schedules import uniform_grid
from diffjax.sde._cld import CLD
from diffjax.sde._scalar import VPSDE


def cld_mixture_score(cld, gm):
    """Exact ``grad_v log p_t(x, v)`` of the mixture x ``N(0, gamma M)`` under CLD (thesis eqs. 2.31-2.36)."""

    def score_v(state, t):
        x, v = state
        mx, mv = cld.marginal_mean(gm.means, 0.0, t)
        a0 = gm.stds**2
        sxx, sxv, svv = cld.marginal_cov(t, a0, cld.gamma * cld.M)
        det = cld.marginal_det(t, a0, cld.gamma * cld.M)
        dx, dv = x[:, None, :] - mx[None], v[:, None, :] - mv[None]
        quad = (svv[:, None] * dx**2 - 2 * sxv[:, None] * dx * dv + sxx[:, None] * dv**2) / det[:, None]
        logits = jnp.log(gm.weights) - 0.5 * jnp.sum(quad, -1) - 0.5 * gm.dim * jnp.log(det)
        resp = jax.nn.softmax(logits, axis=-1)
        return jnp.sum(resp[..., None] * (-(sxx[:, None] * dv - sxv[:, None] * dx) / det[:, None]), axis=1)

    return score_v


def random_mlp(key, d_in, d_out, width=256, depth=3):
    """A random-init ``depth``-layer MLP on ``(inputs, sinusoidal t features)`` (a network-cost model)."""
    sizes = [d_in + 16] + [width] * (depth - 1) + [d_out]
    keys = jax.random.split(key, len(sizes) - 1)
    params = [(jax.random.normal(k, (a, b)) / math.sqrt(a), jnp.zeros((b,))) for k, a, b in zip(keys, sizes, sizes[1:])]
    freqs = jnp.exp(jnp.linspace(0.0, math.log(1000.0), 8))

    def apply(inputs, t):
        tt = jnp.broadcast_to(jnp.asarray(t) * freqs, (inputs.shape[0], 8))
        h = jnp.concatenate([inputs, jnp.sin(tt), jnp.cos(tt)], axis=-1)
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.silu(h)
        return h

    return apply


def _best_time(fn, reps):
    jax.block_until_ready(fn())                    # compile + warm-up (excluded)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def run(name, rule, model, grid, shape, window, tol, devices, reps):
    key = jax.random.PRNGKey(0)
    seq = jax.jit(lambda k: sample(rule, model, k, shape, grid))
    x_seq, seq_info = seq(key)
    x_par, info = picard_sample(rule, model, key, shape, grid, window=window, tol=tol, devices=devices)
    t_seq = _best_time(lambda: seq(key)[0], reps)
    t_par = _best_time(lambda: picard_sample(rule, model, key, shape, grid, window=window, tol=tol,
                                             devices=devices)[0], reps)
    rel = float(jnp.max(jnp.abs(x_par - x_seq)) / jnp.max(jnp.abs(x_seq)))
    n = grid.shape[0] - 1
    return {
        "n_steps": n,
        "iterations": int(info["iterations"]),
        "nfe": int(info["nfe"]),
        "devices": len(devices),
        "max_rel_diff_vs_sequential": rel,
        "time_ratio_vs_sequential": t_par / t_seq,
        "window": int(info["window"]),
        "converged": bool(info["converged"]),
        "sequential_nfe": int(seq_info["nfe"]),
        "sequential_s": t_seq,
        "picard_s": t_par,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small batch, one timing repeat (< 2 min on 2 cores)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--window", type=int, default=None, help="Picard window (default: all steps)")
    ap.add_argument("--batch", type=int, default=None, help="samples (default 256, --quick 32)")
    ap.add_argument("--model", choices=("exact", "mlp"), default="exact")
    ap.add_argument("--tol", type=float, default=0.02)
    args = ap.parse_args()
    batch = args.batch or (32 if args.quick else 256)
    reps = 1 if args.quick else 3
    devices = jax.devices()
    window = args.window if args.window is not None else args.steps
    if window % len(devices):
        raise SystemExit(f"--window {window} must be a multiple of the device count {len(devices)}")

    gm = nine_gaussians()
    sde, cld = VPSDE(), CLD()
    if args.model == "exact":
        eps, score_v = gm.eps_fn(sde), cld_mixture_score(cld, gm)
    else:
        k1, k2 = jax.random.split(jax.random.PRNGKey(1))
        eps = random_mlp(k1, 2, 2)
        mlp_v = random_mlp(k2, 4, 2)
        score_v = lambda u, t: mlp_v(jnp.concatenate(u, axis=-1), t)  # noqa: E731
    grid = uniform_grid(args.steps)
    shape = (batch, gm.dim)
    res = run("ddpm", ddpm_rule(sde), eps, grid, shape, window, args.tol, devices, reps)
    res["sscs"] = run("sscs", sscs_rule(cld), score_v, grid, shape, window, args.tol, devices, reps)
    res.update(batch=batch, model=args.model, tol=args.tol, backend=jax.default_backend())

    print(f"Picard vs sequential: {args.steps} steps, batch {batch}, model {args.model}, window {window}, "
          f"tol {args.tol}, {len(devices)} {jax.default_backend()} device(s)")
    print(f"{'sampler':<8}{'iters':>8}{'NFE':>10}{'seq NFE':>9}{'seq s':>9}{'picard s':>10}{'ratio':>8}"
          f"{'max rel diff':>14}{'conv':>6}")
    for name, r in (("ddpm", res), ("sscs", res["sscs"])):
        print(f"{name:<8}{r['iterations']:>8}{r['nfe']:>10}{r['sequential_nfe']:>9}{r['sequential_s']:>9.3f}"
              f"{r['picard_s']:>10.3f}{r['time_ratio_vs_sequential']:>8.2f}{r['max_rel_diff_vs_sequential']:>14.2e}"
              f"{str(r['converged']):>6}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
