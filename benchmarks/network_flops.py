"""Parameters and forward FLOPs of the papers' DDPM++ networks vs thesis Tables 4.8 and 5.1.

For every preset of :data:`diffjax.nn.PRESETS` (batch 1, float32):

- ``params``: parameter count from ``jax.eval_shape(module.init, ...)`` (no memory used);
- ``2xMAC``: :func:`diffjax.nn.matmul_flops`, 2 x the multiply-accumulates of every convolution and
  matrix product, every kernel tap counted (also the taps over the zero padding);
- ``XLA lowered``: ``jax.jit(apply).lower(...).cost_analysis()["flops"]`` on the un-optimised HLO;
- ``XLA compiled`` (full run only): ``.compile().cost_analysis()["flops"]`` after XLA's passes.

How they count: XLA also counts a multiply-add as 2 FLOPs, but skips kernel taps that fall on the
padding (a 3x3 "SAME" convolution on ``n x n`` costs ``((3n - 2) / (3n))^2`` of the full count,
0.959 at ``n = 32``, 0.918 at 16, 0.840 at 8) and adds element-wise work (norms, activations,
softmax). Table 5.1's "G flops" match ``2xMAC`` to 0.1% (teacher 42.38 vs 42.42), i.e. the table
counts FLOPs = 2 x MACs with full kernels (a profiler convention), not MACs; XLA's numbers are
about 5% lower. Prints a table, then one JSON line (last line of stdout).

Usage: ``python benchmarks/network_flops.py [--quick]`` (``--quick``: no XLA compile, < 1 min).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from diffjax.nn import PRESETS, matmul_flops, param_count, unet_preset


def _cost_flops(stage) -> float:
    """``flops`` from a lowered or compiled stage's ``cost_analysis()`` (dict, or list of dicts)."""
    cost = stage.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


def measure(name: str, *, compile_: bool) -> dict:
    """Parameter count and forward FLOPs (batch 1) of one preset, with the paper's numbers."""
    preset = PRESETS[name]
    module = unet_preset(name)
    x = jax.ShapeDtypeStruct((1, *preset.image_shape), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), x, t)
    apply = lambda p, x, t: module.apply(p, x, t)  # noqa: E731
    lowered = jax.jit(apply).lower(params, x, t)
    row = {
        "params": param_count(params),
        "paper_params": preset.paper_params,
        "gflops_2mac": matmul_flops(apply, params, x, t) / 1e9,
        "paper_gflops": preset.paper_gflops,
        "xla_gflops_lowered": _cost_flops(lowered) / 1e9,
        "xla_gflops_compiled": None,
    }
    if compile_:
        start = time.perf_counter()
        row["xla_gflops_compiled"] = _cost_flops(lowered.compile()) / 1e9
        row["compile_s"] = round(time.perf_counter() - start, 2)
    return row


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="lowered cost analysis only (no XLA compile)")
    args = parser.parse_args(argv)
    rows = {name: measure(name, compile_=not args.quick) for name in PRESETS}

    print(f"backend={jax.default_backend()} batch=1 float32; GFLOPs = 1e9 FLOPs; 2xMAC counts every kernel tap")
    print(f"{'preset':<22}{'image':>9}{'params':>12}{'paper':>8}{'ratio':>7}{'2xMAC':>8}{'paper':>8}"
          f"{'paper/2xMAC':>12}{'XLA low':>9}{'XLA comp':>9}{'paper/XLA':>10}")
    for name, r in rows.items():
        h, w, c = PRESETS[name].image_shape
        pg = r["paper_gflops"]
        xla = r["xla_gflops_compiled"] or r["xla_gflops_lowered"]
        print(f"{name:<22}{f'{h}x{w}x{c}':>9}{r['params']:>12,d}{r['paper_params'] / 1e6:>7.2f}M"
              f"{r['params'] / r['paper_params']:>7.3f}{r['gflops_2mac']:>8.2f}{_fmt(pg, '.2f'):>8}"
              f"{_fmt(pg and pg / r['gflops_2mac'], '.4f'):>12}{r['xla_gflops_lowered']:>9.2f}"
              f"{_fmt(r['xla_gflops_compiled'], '.2f'):>9}{_fmt(pg and pg / xla, '.4f'):>10}")
    with_table = [r for r in rows.values() if r["paper_gflops"]]
    summary = {
        "max_params_rel_err": max(abs(r["params"] / r["paper_params"] - 1) for r in rows.values()),
        "paper_over_2mac": [round(r["paper_gflops"] / r["gflops_2mac"], 4) for r in with_table],
        "paper_over_xla": [round(r["paper_gflops"] / (r["xla_gflops_compiled"] or r["xla_gflops_lowered"]), 4)
                           for r in with_table],
    }
    print("counting: the paper's GFLOPs = 2 x MACs with full kernels; XLA = 2 per multiply-add, padding taps "
          "skipped, plus element-wise ops")
    print(f"max |params/paper - 1| = {summary['max_params_rel_err']:.4f}; paper/2xMAC = {summary['paper_over_2mac']}; "
          f"paper/XLA = {summary['paper_over_xla']}")
    print(json.dumps({"benchmark": "network_flops", "quick": args.quick, "backend": jax.default_backend(),
                      **summary, "presets": rows}))


if __name__ == "__main__":
    main()
