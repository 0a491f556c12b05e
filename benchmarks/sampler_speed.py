"""Sampler speed: diffjax samplers vs the network floor, diffrax, and a PyTorch CPU loop.

For a 3-layer MLP (width 256, SiLU, random init) on 2-D data, batch 4096, 100 steps:

- ``overhead_vs_floor``: max over DDIM, Euler-Maruyama and EDM Heun of
  ``time(sampler) / (NFE x time(one jitted network call))``: 1.0 means the sampler costs
  nothing beyond its network evaluations. The denominator is measured as NFE separate jitted
  calls on the same batch, interleaved with the sampler runs (median of per-pair ratios), so
  load drift on a shared machine hits both alike.
- ``time_vs_diffrax``: diffjax probability-flow Euler / the same fixed-step Euler PF-ODE solved by
  ``diffrax.diffeqsolve`` (Euler, ConstantStepSize, save at the end only).
- ``time_vs_torch``: diffjax DDIM / a ``torch.no_grad`` DDIM loop with the same MLP weights and NFE
  on the CPU, at the faster of 1 thread and torch's default (``null`` when torch is not installed).

Times are medians over repeats of jitted, warmed-up calls ended by ``block_until_ready``;
compile time is measured separately (lower + compile) and excluded from the ratios.
Prints a table, then one JSON line (last line of stdout).

Usage: ``python benchmarks/sampler_speed.py [--batch 4096] [--steps 100] [--repeats 7] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.samplers import api
from diffjax.sde import VPSDE

WIDTH = 256
DIM = 2


# -- the network --------------------------------------------------------------------------------------


def init_mlp(key, width=WIDTH, dim=DIM):
    """Three dense layers ``(dim + 1) -> width -> width -> dim`` (input: x and the time/sigma)."""
    sizes = [(dim + 1, width), (width, width), (width, dim)]
    params = []
    for k, (fan_in, fan_out) in zip(jax.random.split(key, len(sizes)), sizes):
        params.append((jax.random.normal(k, (fan_in, fan_out)) / math.sqrt(fan_in), jnp.zeros(fan_out)))
    return params


def mlp(params, x, t):
    """``(batch, 2), scalar t -> (batch, 2)``; used as eps, score and denoiser alike."""
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])[:, None]
    h = jnp.concatenate([x, t], axis=1)
    for w, b in params[:-1]:
        h = jax.nn.silu(h @ w + b)
    w, b = params[-1]
    return h @ w + b


# -- timing helpers ------------------------------------------------------------------------------------


def _median_time(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _paired_ratios(fn_a, fn_b, repeats):
    """Median of ``time(fn_a) / time(fn_b)`` over interleaved pairs (robust to load drift), and the
    median times of each. Both are warmed up first."""
    jax.block_until_ready(fn_a())
    jax.block_until_ready(fn_b())
    ta, tb = [], []
    for r in range(repeats):
        for fn, out in ((fn_a, ta), (fn_b, tb)) if r % 2 == 0 else ((fn_b, tb), (fn_a, ta)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            out.append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(ta, tb)]
    return statistics.median(ratios), statistics.median(ta), statistics.median(tb)


def _compile(fn, *args):
    """``(compiled, seconds)`` of lowering + compiling a jitted function for these arguments."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


# -- samplers -------------------------------------------------------------------------------------------


def diffjax_samplers(sde, shape, steps):
    """name -> (fn(params, key) -> (samples, info))."""
    return {
        "ddim": lambda p, k: api.ddim(partial(mlp, p), sde, key=k, shape=shape, n_steps=steps),
        "euler_maruyama": lambda p, k: api.euler_maruyama(partial(mlp, p), sde, key=k, shape=shape, n_steps=steps),
        "edm_heun": lambda p, k: api.edm_heun(partial(mlp, p), key=k, shape=shape, n_steps=steps),
        "ddpm": lambda p, k: api.ddpm(partial(mlp, p), sde, key=k, shape=shape, n_steps=steps),
        "pf_euler": lambda p, k: api.probability_flow(partial(mlp, p), sde, key=k, shape=shape, n_steps=steps,
                                                      method="euler"),
        "pf_heun": lambda p, k: api.probability_flow(partial(mlp, p), sde, key=k, shape=shape, n_steps=steps,
                                                     method="heun"),
    }


def diffrax_pf_euler(sde, shape, steps, t_min=1e-3):
    """The same fixed-step Euler probability-flow solve through diffrax."""
    import diffrax

    def solve(params, key):
        x_T = sde.prior_sample(jax.random.split(key)[0], shape)
        term = diffrax.ODETerm(lambda t, x, a: sde.reverse_drift(x, t, mlp(params, x, t), probability_flow=True))
        sol = diffrax.diffeqsolve(term, diffrax.Euler(), sde.T, t_min, (t_min - sde.T) / steps, x_T,
                                  saveat=diffrax.SaveAt(t1=True), stepsize_controller=diffrax.ConstantStepSize(),
                                  max_steps=steps)
        return sol.ys[-1]

    return solve


def torch_ddim_time(params, sde, batch, steps, repeats, t_min=1e-3):
    """Median time of a torch.no_grad DDIM loop with the same weights; None without torch."""
    try:
        import torch
    except ImportError:
        return None, None
    tp = [(torch.tensor(np.array(w)), torch.tensor(np.array(b))) for w, b in params]
    grid = np.linspace(sde.T, t_min, steps + 1)
    alpha, sigma = (np.asarray(c, np.float64) for c in sde.marginal_coeffs(jnp.asarray(grid)))

    def net(x, t):
        h = torch.cat([x, torch.full((x.shape[0], 1), float(t))], dim=1)
        for w, b in tp[:-1]:
            h = torch.nn.functional.silu(h @ w + b)
        return h @ tp[-1][0] + tp[-1][1]

    def run():
        with torch.no_grad():
            x = torch.randn(batch, DIM)
            for i in range(steps):
                eps = net(x, grid[i])
                x0 = (x - float(sigma[i]) * eps) / float(alpha[i])
                x = float(alpha[i + 1]) * x0 + float(sigma[i + 1]) * eps
        return x

    best = None
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):  # the faster setting: conservative for the ratio
        torch.set_num_threads(threads)
        run()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        if best is None or t < best[0]:
            best = (t, threads)
    torch.set_num_threads(default_threads)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="batch 1024, 3 repeats (< 2 min on 2 cores)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = min(args.batch, 1024), 3
    batch, steps, repeats = args.batch, args.steps, args.repeats
    shape = (batch, DIM)
    sde = VPSDE()
    params = init_mlp(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    x = jax.random.normal(jax.random.PRNGKey(2), shape)

    # network floor: one jitted call on the same batch (and, for reference, `steps` calls chained in a scan)
    net_call, _ = _compile(mlp, params, x, jnp.float32(0.5))
    floor = _median_time(net_call, params, x, jnp.float32(0.5), repeats=max(repeats, 20))

    def chained(params, x):
        return jax.lax.scan(lambda x, t: (mlp(params, x, t), None), x, jnp.linspace(1.0, 1e-3, steps))[0]

    chained_c, _ = _compile(chained, params, x)
    floor_scan = _median_time(chained_c, params, x, repeats=repeats) / steps

    def floor_loop(n):
        """``n`` separate jitted network calls on the same batch: n x (one jitted call)."""
        def run():
            y = None
            for i in range(n):
                y = net_call(params, x, jnp.float32(1.0 - i / n))
            return y
        return run

    rows, details, compile_s = [], {}, {}
    for name, fn in diffjax_samplers(sde, shape, steps).items():
        compiled, c_s = _compile(fn, params, key)
        nfe = int(compiled(params, key)[1]["nfe"])
        ratio, t, t_floor = _paired_ratios(lambda: compiled(params, key)[0], floor_loop(nfe), repeats)
        details[name] = {"time_s": t, "nfe": nfe, "per_nfe_vs_floor": ratio, "floor_loop_s": t_floor,
                         "per_nfe_vs_scan_floor": t / (nfe * floor_scan), "compile_s": c_s}
        compile_s[name] = c_s
        rows.append((name, nfe, t, ratio, c_s))

    dfx, c_dfx = _compile(diffrax_pf_euler(sde, shape, steps), params, key)
    pf_euler = jax.jit(diffjax_samplers(sde, shape, steps)["pf_euler"])
    time_vs_diffrax, _, t_dfx = _paired_ratios(lambda: pf_euler(params, key)[0], lambda: dfx(params, key), repeats)
    compile_s["diffrax_pf_euler"] = c_dfx
    rows.append(("diffrax pf_euler", steps, t_dfx, t_dfx / (steps * floor), c_dfx))

    t_torch, torch_threads = torch_ddim_time(params, sde, batch, steps, repeats)
    if t_torch is not None:
        rows.append(("torch ddim loop", steps, t_torch, t_torch / (steps * floor), 0.0))

    overhead = max(details[n]["per_nfe_vs_floor"] for n in ("ddim", "euler_maruyama", "edm_heun"))
    time_vs_torch = None if t_torch is None else details["ddim"]["time_s"] / t_torch

    print(f"backend={jax.default_backend()} devices={jax.device_count()} batch={batch} steps={steps} repeats={repeats}")
    print(f"network floor: one jitted call {floor * 1e3:.3f} ms; chained in a scan {floor_scan * 1e3:.3f} ms/call")
    print("ratio column: sampler time / time of NFE separate jitted network calls (interleaved pairs, median);")
    print("rows below the diffjax samplers are divided by NFE x the single-call floor above.")
    print(f"{'sampler':<18}{'NFE':>6}{'time [ms]':>12}{'/(NFE*floor)':>14}{'compile [s]':>13}")
    for name, nfe, t, ratio, c_s in rows:
        print(f"{name:<18}{nfe:>6}{t * 1e3:>12.2f}{ratio:>14.3f}{c_s:>13.2f}")
    print(f"overhead_vs_floor={overhead:.3f}  time_vs_diffrax={time_vs_diffrax:.3f}  "
          f"time_vs_torch={'n/a (torch missing: pip install -e .[bench])' if time_vs_torch is None else f'{time_vs_torch:.3f}'}")
    result = {
        "overhead_vs_floor": overhead,
        "time_vs_diffrax": time_vs_diffrax,
        "time_vs_torch": time_vs_torch,
        "compile_s": compile_s,
        "floor_ms": floor * 1e3,
        "floor_scan_ms": floor_scan * 1e3,
        "diffrax_pf_euler_ms": t_dfx * 1e3,
        "torch_ddim_ms": None if t_torch is None else t_torch * 1e3,
        "torch_threads": torch_threads,
        "samplers": details,
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "backend": jax.default_backend(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
