"""``diffjax demo``: train a small 2-D model, sample it with several samplers, print a table, write a PNG."""

from __future__ import annotations

import time
from pathlib import Path

# Training recipe (measured in benchmarks/RESULTS.md, demo section). What makes the samples crisp is
# the number of optimizer steps, not the batch: 9,000 steps of batch 256, run 100 per jitted call
# (``steps_per_call``: the step of this small MLP is shorter than a dispatch), cost about as much as
# 4,000 of batch 512 one per call and cut the blur of the deterministic samplers by ~1 nat of KDE-NLL.
# Adam with warm-up, then cosine decay of the learning rate to 1 % (the fine spiral arms need the
# small late steps), and an EMA of 0.999.
RECIPE = {"steps": 9000, "batch_size": 256, "steps_per_call": 100, "lr": 3e-3, "warmup_steps": 200,
          "decay_to": 0.01, "ema_decay": 0.999, "time_scale": 1000.0}
# (panel label, method, steps, Picard?): deterministic solvers at 20-50 steps (at 10 their own
# discretisation error blurs the arms), the stochastic ones at 200.
RUNS = (("DDIM", "ddim", 50, False), ("DPM-Solver++ 2M", "dpmpp_2m", 20, False),
        ("EDM Heun", "edm_heun", 20, False), ("Euler-Maruyama", "em", 200, False),
        ("DDPM", "ddpm", 200, False), ("DDPM, Picard", "ddpm", 200, True))
KDE_BANDWIDTH = 0.05   # of the KDE-NLL metric (data units; swiss roll arms are ~0.1 apart)


def _optimizer(steps: int, recipe: dict):
    import optax

    warmup = min(recipe["warmup_steps"], steps // 2)
    sched = optax.warmup_cosine_decay_schedule(0.0, recipe["lr"], warmup, max(steps, warmup + 1),
                                               recipe["lr"] * recipe["decay_to"])
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))


def _train(args, recipe: dict):
    import tempfile

    import jax

    from diffjax import train
    from diffjax.cli import _build

    config = {"sde": "vp", "dataset": args.dataset, "loss": "dsm", "width": args.width, "depth": 3,
              "seed": args.seed, "batch_size": recipe["batch_size"], "time_scale": recipe["time_scale"]}
    data_fn, data_shape = _build.data_fn_for(config)
    _, apply_fn, init_fn = _build.make_network(config, data_shape)
    print(f"diffjax demo: training a {config['depth']}-layer MLP (width {config['width']}) on '{args.dataset}' "
          f"with VP-SDE denoising score matching, {args.steps} steps of batch {config['batch_size']} "
          f"on {jax.default_backend()} "
          f"(lr {recipe['lr']:g} cosine-decayed, EMA {recipe['ema_decay']})")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffjax-demo-") as run_dir:
        state = train.train(_build.make_loss(config), apply_fn, init_fn(jax.random.PRNGKey(args.seed)), data_fn,
                            steps=args.steps, out_dir=run_dir, config=config, lr=recipe["lr"],
                            optimizer=_optimizer(args.steps, recipe), batch_size=config["batch_size"],
                            seed=args.seed, ckpt_every=args.steps, log_every=max(args.steps // 10, 1),
                            ema_decay=recipe["ema_decay"], progress=not args.no_progress,
                            steps_per_call=recipe["steps_per_call"])
    print(f"trained in {time.perf_counter() - t0:.1f} s")
    return config, apply_fn, jax.device_get(state.ema_params), data_shape


def _sample_all(args, config, model_fn, data_shape, data):
    import jax
    import numpy as np

    from diffjax import metrics
    from diffjax.cli import _build

    results, samples, seq = [], {}, None   # the Picard run is compared with the sequential DDPM one
    key = jax.random.PRNGKey(args.seed + 2)
    print(f"sampling {args.n} points with {len(RUNS)} samplers (compile + run each):")
    for label, method, steps, picard in RUNS:
        t1 = time.perf_counter()
        x, info = _build.draw_samples(config, model_fn, method, key=key, n=args.n, steps=steps,
                                      data_shape=data_shape, picard=picard, window=20 if picard else None)
        x = np.asarray(jax.block_until_ready(x))
        dt = time.perf_counter() - t1
        row = (label, steps, int(info["nfe"]), float(metrics.mmd(data, x)),
               float(metrics.kde_nll(data, x, KDE_BANDWIDTH)), dt)
        print(f"  {label:<18} {dt:6.1f} s   KDE-NLL {row[4]:.3f}")
        if picard:
            it = int(info["iterations"])
            diff = np.abs(x - seq).max() / np.abs(seq).max()
            print(f"  Picard: {it} parallel rounds instead of {steps} sequential steps (same result as DDPM, "
                  f"max rel. difference {diff:.1e}), but each round evaluates the network on a whole window of "
                  f"steps at once: {int(info['nfe'])} NFE. It pays off only on parallel hardware (a GPU); "
                  f"on {jax.default_backend()} with few cores it is slower than the sequential scan.")
        elif method == "ddpm":
            seq = x
        results.append(row)
        samples[label] = x
    return results, samples


def cmd_demo(args) -> int:
    import numpy as np

    from diffjax import metrics
    from diffjax.cli import _build

    config, apply_fn, params, data_shape = _train(args, RECIPE)
    model_fn = _build.model_function(config, apply_fn, params)
    data = np.asarray(_build.toy_batch(args.dataset, args.seed + 1, 0, args.n))
    results, samples = _sample_all(args, config, model_fn, data_shape, data)
    fresh = np.asarray(_build.toy_batch(args.dataset, args.seed + 3, 0, args.n))
    ref_mmd, ref_kde = float(metrics.mmd(data, fresh)), float(metrics.kde_nll(data, fresh, KDE_BANDWIDTH))
    print(f"\n{'sampler':<24}{'steps':>7}{'NFE':>7}{'MMD':>9}{'KDE-NLL':>10}{'time [s]':>10}")
    for label, steps, nfe, m, k, dt in results:
        print(f"{label:<24}{steps:>7}{nfe:>7}{m:>9.4f}{k:>10.3f}{dt:>10.2f}")
    print(f"{'(fresh data)':<24}{'':>7}{'':>7}{ref_mmd:>9.4f}{ref_kde:>10.3f}{'':>10}   <- the noise floor")
    print(f"MMD: Gaussian kernel, CDL bandwidth rule (wide: sees the overall shape). KDE-NLL: nats per sample "
          f"under a h={KDE_BANDWIDTH} kernel density of the data (sees blur off the thin arms); lower is better.")
    notes = {label: f"MMD {m:.3f}  KDE-NLL {k:.2f}  NFE {nfe}" for label, _, nfe, m, k, _ in results}
    out = Path(args.out).absolute()
    metrics.plot_sample_panels(data, samples, out, notes=notes, ncols=3,
                               title=f"diffjax demo: {args.dataset} (grey: data; fresh data KDE-NLL {ref_kde:.2f})")
    print(f"\nwrote {out}")
    return 0
