"""Training-driver overhead: ``diffjax.train.train`` against a bare jitted loop of the same step.

Setting of the demo (issue 16): ``ScoreMLP`` width 128, depth 3, batch 512, swiss roll
(``toy_batch`` jitted), VP-SDE DSM loss (eps), Adam, EMA 0.999 with warm-up. All in one
process, repeated and interleaved (machine load hits every variant alike); per variant the
median over repeats of the wall time per step, compile excluded:

- ``bare``: ``for s: state, m = step(state, data_fn(s))`` with ``step = make_train_step(...)``,
  blocked at the end; timed after a warm-up call.
- ``driver``: :func:`diffjax.train.train` (progress bar, metrics every ``log_every`` steps, no
  checkpoint but the last); the time per step is taken from the wall-clock stamps of its
  ``metrics.jsonl`` between the first log point (after compile) and the last one.
- ``slow data``: the driver with ``data_fn`` sleeping 2 ms per batch, with the default
  background prefetch (``prefetch=2``) and without (``prefetch=0``).
- ``driver_scan``: the driver with ``steps_per_call=50`` (50 steps per jitted ``lax.scan``: one
  dispatch per chunk instead of per step).

Prints a table, then one JSON line (last line of stdout) with ``driver_vs_bare``,
``slow_data_vs_bare``, ``slow_data_no_prefetch_vs_bare`` and ``driver_scan_vs_bare`` (ratios of
time per step) and the
steps/s of every variant. Usage: ``python benchmarks/train_overhead.py [--quick] [--steps N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax

from diffjax import losses, train
from diffjax.data import toy_batch
from diffjax.nn import ScoreMLP, init_params, make_apply
from diffjax.sde import VPSDE

BATCH, WIDTH, SLEEP_S = 512, 128, 0.002


def _setup():
    net = ScoreMLP(width=WIDTH, depth=3)
    apply_fn = make_apply(net)
    params = init_params(net, jax.random.PRNGKey(0), (2, 2))
    loss = losses.dsm_loss(VPSDE(), parameterization="eps")
    data_fn = jax.jit(lambda s: toy_batch("swiss_roll", 0, s, BATCH))
    return loss, apply_fn, params, data_fn


def _bare(loss, apply_fn, params, data_fn, steps: int) -> float:
    """Seconds per step of the bare loop (compile and first step excluded)."""
    opt = train.make_optimizer(1e-3)
    step = train.make_train_step(loss, apply_fn, opt, ema_decay=0.999, ema_warmup=True)
    state = train.create_train_state(params, opt, train.train_key(0))
    state, _ = step(state, data_fn(0))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        state, _ = step(state, data_fn(s))
    jax.block_until_ready(state)
    return (time.perf_counter() - t0) / steps


def _driver(loss, apply_fn, params, data_fn, steps: int, log_every: int, prefetch: int, progress: bool,
            steps_per_call: int = 1) -> float:
    """Seconds per step of ``train.train`` between its first and last log point."""
    with tempfile.TemporaryDirectory(prefix="diffjax-bench-") as d:
        train.train(loss, apply_fn, params, data_fn, steps=steps, out_dir=d, config={}, lr=1e-3,
                    batch_size=BATCH, ckpt_every=10 * steps, log_every=log_every, prefetch=prefetch,
                    progress=progress, log=lambda msg: None, steps_per_call=steps_per_call)
        recs = [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    first, last = recs[0], recs[-1]
    return (last["time"] - first["time"]) / (last["step"] - first["step"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="steps per driver run")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true", help="run the driver without its progress bar")
    args = ap.parse_args()
    steps = args.steps or (500 if args.quick else 2000)
    repeats = args.repeats or (3 if args.quick else 5)
    log_every = max(steps // 5, 1)
    loss, apply_fn, params, fast = _setup()

    def slow(s):
        time.sleep(SLEEP_S)
        return fast(s)

    progress = not args.no_progress
    variants = {
        "bare": lambda: _bare(loss, apply_fn, params, fast, steps - log_every),
        "driver": lambda: _driver(loss, apply_fn, params, fast, steps, log_every, 2, progress),
        "slow_data": lambda: _driver(loss, apply_fn, params, slow, steps, log_every, 2, progress),
        "slow_data_no_prefetch": lambda: _driver(loss, apply_fn, params, slow, steps, log_every, 0, progress),
        "driver_scan": lambda: _driver(loss, apply_fn, params, fast, steps, log_every, 2, progress, 50),
    }
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, f in variants.items():
            times[k].append(f())
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "driver_vs_bare": med["driver"] / med["bare"],
        "slow_data_vs_bare": med["slow_data"] / med["bare"],
        "slow_data_no_prefetch_vs_bare": med["slow_data_no_prefetch"] / med["bare"],
        "driver_scan_vs_bare": med["driver_scan"] / med["bare"],
        "steps_per_sec": {k: 1.0 / v for k, v in med.items()},
        "ratios_per_repeat": {k: [t / b for t, b in zip(times[k], times["bare"])] for k in variants if k != "bare"},
        "steps": steps, "repeats": repeats, "batch": BATCH, "width": WIDTH, "data_sleep_ms": SLEEP_S * 1e3,
        "progress": progress, "backend": jax.default_backend(),
    }
    print(f"training-driver overhead: ScoreMLP width {WIDTH} depth 3, batch {BATCH}, swiss roll, DSM, Adam; "
          f"{steps} steps x {repeats} interleaved repeats, backend {jax.default_backend()}")
    print(f"{'variant':<26}{'ms/step':>10}{'steps/s':>10}{'vs bare':>10}")
    for k, v in med.items():
        print(f"{k:<26}{v * 1e3:10.3f}{1 / v:10.1f}{v / med['bare']:10.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
