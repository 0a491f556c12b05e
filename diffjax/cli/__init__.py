"""The ``diffjax`` command: ``demo``, ``train``, ``sample``, ``nll``, ``bench``.

Edge code only: flags become keyword arguments of library functions; the run config (a flat
JSON dict) is stored with every checkpoint so ``sample``/``nll`` rebuild the same model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# ----------------------------------------------------------------------------- demo


def _cmd_demo(args) -> int:
    import tempfile

    import jax
    import numpy as np

    from diffjax import metrics, train
    from diffjax.cli import _build

    config = {"sde": "vp", "dataset": args.dataset, "loss": "dsm", "width": args.width, "depth": 3,
              "seed": args.seed, "batch_size": 512}
    data_fn, data_shape = _build.data_fn_for(config)
    _, apply_fn, init_fn = _build.make_network(config, data_shape)
    loss = _build.make_loss(config)
    print(f"diffjax demo: training a {config['depth']}-layer MLP (width {config['width']}) on '{args.dataset}' "
          f"with VP-SDE denoising score matching, {args.steps} steps on {jax.default_backend()}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffjax-demo-") as run_dir:
        state = train.train(loss, apply_fn, init_fn(jax.random.PRNGKey(args.seed)), data_fn,
                            steps=args.steps, out_dir=run_dir, config=config, lr=3e-3, warmup_steps=200,
                            grad_clip=1.0, batch_size=config["batch_size"], seed=args.seed,
                            ckpt_every=args.steps, log_every=max(args.steps // 10, 1), ema_decay=0.995,
                            progress=not args.no_progress)
    print(f"trained in {time.perf_counter() - t0:.1f} s")
    params = jax.device_get(state.ema_params)
    model_fn = _build.model_function(config, apply_fn, params)

    data = np.asarray(_build.toy_batch(args.dataset, args.seed + 1, 0, args.n))
    runs = [("DDIM", "ddim", 20, False), ("DPM-Solver++ 2M", "dpmpp_2m", 10, False),
            ("EDM Heun", "edm_heun", 10, False), ("Euler-Maruyama", "em", 200, False),
            ("DDPM", "ddpm", 200, False), ("DDPM, Picard", "ddpm", 200, True)]
    results, samples, samples_seq = [], {}, None   # the Picard run is compared with the sequential DDPM one
    key = jax.random.PRNGKey(args.seed + 2)
    for label, method, steps, picard in runs:
        t1 = time.perf_counter()
        x, info = _build.draw_samples(config, model_fn, method, key=key, n=args.n, steps=steps,
                                      data_shape=data_shape, picard=picard, window=None)
        x = np.asarray(jax.block_until_ready(x))
        dt = time.perf_counter() - t1
        m = float(metrics.mmd(x, data))
        if picard:
            label = f"{label} ({int(info['iterations'])} it.)"
            diff = np.abs(x - samples_seq).max() / np.abs(samples_seq).max()
            print(f"Picard: {int(info['iterations'])} parallel iterations instead of {steps} sequential steps; "
                  f"max relative difference to sequential DDPM with the same key: {diff:.1e}")
        elif method == "ddpm":
            samples_seq = x
        results.append((label, steps, int(info["nfe"]), m, dt))
        samples[f"{label}\n{int(info['nfe'])} NFE"] = x
    ref = float(metrics.mmd(np.asarray(_build.toy_batch(args.dataset, args.seed + 3, 0, args.n)), data))

    print(f"\n{'sampler':<24}{'steps':>7}{'NFE':>7}{'MMD vs data':>14}{'time [s]':>10}")
    for label, steps, nfe, m, dt in results:
        print(f"{label:<24}{steps:>7}{nfe:>7}{m:>14.4f}{dt:>10.2f}")
    print(f"{'(fresh data)':<24}{'':>7}{'':>7}{ref:>14.4f}{'':>10}   <- the noise floor of the MMD estimate")
    out = Path(args.out).absolute()
    metrics.plot_samples(data, samples, out, title=f"diffjax demo: {args.dataset}")
    print(f"\nwrote {out}")
    return 0


# ----------------------------------------------------------------------------- train


def _cmd_train(args) -> int:
    import jax

    from diffjax import train
    from diffjax.cli import _build

    if args.distill_genie_head:
        return _train_genie_head(args)
    if args.dataset is None:
        raise CliError("--dataset is required")
    if args.sde not in _build.SDES:
        raise CliError(f"unknown --sde {args.sde!r}; choose one of {', '.join(_build.SDES)}")
    config = {"sde": args.sde, "dataset": args.dataset, "loss": args.loss, "width": args.width,
              "depth": args.depth, "seed": args.seed, "batch_size": args.batch_size}
    if args.loss == "dsm+cdl":
        config["cdl_weight"] = args.cdl_weight
    if args.time_scale is not None:
        config["time_scale"] = args.time_scale
    if args.data_dir:
        config["data_dir"] = str(args.data_dir)
    try:
        data_fn, data_shape = _build.data_fn_for(config)
    except ValueError as e:
        raise CliError(str(e)) from None
    _, apply_fn, init_fn = _build.make_network(config, data_shape)
    try:
        loss = _build.make_loss(config)
    except ValueError as e:
        raise CliError(str(e)) from None
    config["data_shape"] = list(data_shape)
    if args.dp:
        return _train_dp(args, config, loss, apply_fn, init_fn)
    if args.steps is None:
        raise CliError("--steps is required (or --dp with --epochs)")
    try:
        train.train(loss, apply_fn, init_fn(jax.random.PRNGKey(args.seed)), data_fn, steps=args.steps,
                    out_dir=args.out, config=config, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                    ckpt_every=args.ckpt_every, resume=args.resume, warmup_steps=args.warmup,
                    grad_clip=args.grad_clip, ema_decay=args.ema_decay, log_every=args.log_every,
                    progress=not args.no_progress)
    except (ValueError, FileExistsError, FileNotFoundError, train.NonFiniteLossError) as e:
        raise CliError(str(e)) from None
    print(f"done: checkpoints in {Path(args.out).absolute() / 'checkpoints'}")
    return 0


def _train_genie_head(args) -> int:
    """Distil a GENIE derivative head on a frozen teacher (thesis §3.3.3.1, Alg. 2)."""
    import jax
    import jax.numpy as jnp

    from diffjax import distill, train
    from diffjax.cli import _build
    from diffjax.nn.apply import init_module

    if not args.teacher or not Path(args.teacher).exists():
        raise CliError(f"--distill-genie-head needs --teacher pointing to a run directory, got {args.teacher!r}")
    if args.steps is None:
        raise CliError("--steps is required")
    config = {"kind": "genie_head", "teacher": str(Path(args.teacher).absolute()), "head_width": args.width,
              "seed": args.seed, "batch_size": args.batch_size}
    try:
        features_apply, head, tconf, tparams = _build.genie_head_model(config)
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    if tconf["sde"] not in ("vp", "subvp", "ve"):
        raise CliError(f"GENIE needs an eps teacher of a scalar SDE, the teacher is {tconf['sde']!r}")
    if (tconf.get("time_scale") or 1000.0) > 100:
        print("note: the teacher embeds time with a large time_scale; its d eps/dt (the head's target) is then "
              "rough. Teachers trained with `--time-scale 10` give much better GENIE samplers.")
    config.update(sde=tconf["sde"], dataset=tconf["dataset"], data_shape=tconf["data_shape"])
    data_fn, shape = _build.data_fn_for(dict(tconf, seed=args.seed, batch_size=args.batch_size))
    x = jnp.zeros((2,) + shape)
    t = jnp.full((2,), 0.5)
    eps, feats = features_apply(tparams, x, t)
    head_params = init_module(head, jax.random.PRNGKey(args.seed), feats, x, t, eps)
    try:
        distill.train_genie_head(_build.make_sde(tconf["sde"]), features_apply, tparams, head.apply, head_params,
                                 data_fn, steps=args.steps, out_dir=args.out, config=config, lr=args.lr,
                                 batch_size=args.batch_size, seed=args.seed, ckpt_every=args.ckpt_every,
                                 resume=args.resume, log_every=args.log_every, progress=not args.no_progress)
    except (ValueError, FileExistsError, FileNotFoundError, train.NonFiniteLossError) as e:
        raise CliError(str(e)) from None
    print(f"done: head checkpoints in {Path(args.out).absolute() / 'checkpoints'}; "
          f"sample with `diffjax sample --ckpt {args.out} --method genie_head`")
    return 0


def _sample_genie_head(args, config) -> int:
    import jax
    import numpy as np

    from diffjax import distill, samplers, train
    from diffjax.cli import _build

    if args.method != "genie_head":
        raise CliError(f"{args.ckpt} holds a GENIE head: use --method genie_head")
    features_apply, head, tconf, tparams = _build.genie_head_model(config)
    sde = _build.make_sde(tconf["sde"])
    params = {"backbone": tparams, "head": train.restore_params(args.ckpt, ema=False)}
    apply = distill.genie_head_apply(sde, features_apply, head.apply)
    rule = distill.genie_head_rule(sde, afs=True, denoise=True)
    grid = samplers.time_grid(sde, args.steps, 1e-3, "quadratic")
    shape = (args.n,) + tuple(tconf["data_shape"])
    x, info = jax.jit(lambda p, k: samplers.sample(rule, lambda y, s: apply(p, y, s), k, shape, grid))(
        params, jax.random.PRNGKey(args.seed))
    return _write_samples(args, np.asarray(x), info)


def _train_dp(args, config, loss, apply_fn, init_fn) -> int:
    """DP-SGD training (thesis ch. 4): sigma_DP from the (epsilon, delta) budget, Poisson batches."""
    import jax

    from diffjax import privacy, train
    from diffjax.cli import _build

    if args.epsilon is None or args.epochs is None:
        raise CliError("--dp needs --epsilon and --epochs")
    data = _build.dataset_array(config, args.dataset_size)
    config.update(dp=True, epsilon=args.epsilon, delta=args.delta, clip=args.clip,
                  noise_multiplicity=args.noise_multiplicity, epochs=args.epochs, dataset_size=int(data.shape[0]))
    try:
        budget = privacy.PrivacyBudget.create(epsilon=args.epsilon, delta=args.delta, dataset_size=int(data.shape[0]),
                                              batch_size=args.batch_size, epochs=args.epochs)
    except ValueError as e:
        raise CliError(f"privacy budget: {e}") from None
    print(f"DP-SGD: sigma_DP = {budget.noise_multiplier:.4g} for (epsilon={args.epsilon}, delta={args.delta}), "
          f"q = {budget.sample_rate:.4g}, {budget.steps} steps")
    try:
        privacy.train_dp(loss, apply_fn, init_fn(jax.random.PRNGKey(args.seed)), data, budget=budget, clip=args.clip,
                         multiplicity=args.noise_multiplicity, out_dir=args.out, config=config, lr=args.lr,
                         seed=args.seed, ckpt_every=args.ckpt_every, resume=args.resume, ema_decay=args.ema_decay,
                         log_every=args.log_every, progress=not args.no_progress)
    except (ValueError, FileExistsError, FileNotFoundError, train.NonFiniteLossError) as e:
        raise CliError(str(e)) from None
    print(f"done: checkpoints in {Path(args.out).absolute() / 'checkpoints'} (privacy log: privacy.json)")
    return 0


# ----------------------------------------------------------------------------- sample / nll


def _load_run(ckpt: str, ema: bool = True):
    from diffjax import train
    from diffjax.cli import _build

    if not Path(ckpt).exists():
        raise CliError(f"checkpoint directory {ckpt} does not exist")
    try:
        config = train.load_config(ckpt)
        params = train.restore_params(ckpt, ema=ema)
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    data_shape = tuple(config["data_shape"])
    _, apply_fn, _ = _build.make_network(config, data_shape)
    return config, apply_fn, params, data_shape


def _cmd_sample(args) -> int:
    import jax
    import numpy as np

    from diffjax.cli import _build

    if not Path(args.ckpt).exists():
        raise CliError(f"checkpoint directory {args.ckpt} does not exist")
    from diffjax import train

    try:
        stored = train.load_config(args.ckpt)
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    if stored.get("kind") == "genie_head":
        return _sample_genie_head(args, stored)
    config, apply_fn, params, data_shape = _load_run(args.ckpt, ema=not args.no_ema)
    model_fn = _build.model_function(config, apply_fn, params)
    try:
        x, info = _build.draw_samples(config, model_fn, args.method, key=jax.random.PRNGKey(args.seed), n=args.n,
                                      steps=args.steps, data_shape=data_shape, picard=args.picard)
    except ValueError as e:
        raise CliError(str(e)) from None
    return _write_samples(args, np.asarray(x), info)


def _write_samples(args, x, info) -> int:
    import numpy as np

    if not np.all(np.isfinite(x)):
        raise CliError("sampling produced non-finite values (NaN/inf); try more steps or another method")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, samples=x, nfe=np.asarray(info["nfe"]))
    os.replace(tmp, out)
    print(f"wrote {x.shape[0]} samples ({int(np.asarray(info['nfe']))} NFE, method {args.method}) to {out}")
    return 0


def _cmd_nll(args) -> int:
    import jax
    import numpy as np

    from diffjax import likelihood, param
    from diffjax.cli import _build

    config, apply_fn, params, data_shape = _load_run(args.ckpt)
    if config["sde"] not in ("vp", "subvp", "ve", "cld"):
        raise CliError(f"nll supports vp, subvp, ve and cld runs, not {config['sde']!r}")
    cfg = dict(config, seed=args.seed + 7919, batch_size=args.n)
    data_fn, _ = _build.data_fn_for(cfg)
    x = data_fn(0)
    model_fn = _build.model_function(config, apply_fn, params)
    sde = _build.make_sde(config["sde"])
    key = jax.random.PRNGKey(args.seed)
    if config["sde"] == "cld":
        nll = likelihood.cld_nll_bound(sde, model_fn, x, key=key)
        what = "NLL upper bound (thesis eq. 2.63)"
    else:
        logp = likelihood.probability_flow_log_likelihood(sde, param.score_from_eps(sde, model_fn), x, key=key)
        nll, what = -logp, "NLL (probability-flow ODE)"
    nll = np.asarray(nll)
    d = int(np.prod(data_shape))
    print(f"{what} on {args.n} held-out points: {nll.mean():.4f} nats "
          f"({nll.mean() / (d * np.log(2)):.4f} bits/dim) +- {nll.std() / np.sqrt(len(nll)):.4f}")
    return 0


# ----------------------------------------------------------------------------- bench


def _bench_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "benchmarks"
    if not here.is_dir():
        raise CliError("benchmarks/ not found: `diffjax bench` needs a source checkout (pip install -e .)")
    return here


def _cmd_bench(args) -> int:
    d = _bench_dir()
    names = sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_"))
    if args.name == "list" or args.name is None:
        print("benchmarks: " + ", ".join(names))
        return 0
    if args.name not in names:
        raise CliError(f"unknown benchmark {args.name!r}; choose one of {', '.join(names)}")
    cmd = [sys.executable, str(d / f"{args.name}.py")] + (["--quick"] if args.quick else []) + args.extra
    return subprocess.call(cmd)


# ----------------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjax", description="diffjax: functional diffusion models in JAX")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="train a small 2-D model, sample it with several samplers, write a PNG")
    d.add_argument("--dataset", default="swiss_roll", help="built-in 2-D set (default: swiss_roll)")
    d.add_argument("--steps", type=int, default=4000, help="training steps (default: 4000)")
    d.add_argument("--width", type=int, default=128, help="MLP width (default: 128)")
    d.add_argument("--n", type=int, default=2000, help="samples per sampler (default: 2000)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="diffjax_demo.png", help="PNG path (default: ./diffjax_demo.png)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train", help="train a model; checkpoints go to OUT/checkpoints/<step>/")
    t.add_argument("--dataset", default=None, help="toy 2-D set or mnist/fashion_mnist/cifar10/celeba")
    t.add_argument("--sde", default="vp", help="vp | subvp | ve | cld | edm (default: vp)")
    t.add_argument("--loss", default="dsm", help="dsm (default) or dsm+cdl (adds the Contrastive Diffusion Loss)")
    t.add_argument("--cdl-weight", type=float, default=0.1, help="weight of the CDL regulariser (default 0.1)")
    t.add_argument("--steps", type=int, default=None, help="training steps (not with --dp: use --epochs)")
    t.add_argument("--batch-size", type=int, default=512)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--ema-decay", type=float, default=0.999)
    t.add_argument("--width", type=int, default=128, help="MLP width / U-Net base channels")
    t.add_argument("--depth", type=int, default=3, help="MLP hidden layers")
    t.add_argument("--time-scale", type=float, default=None,
                   help="multiplier of t in the MLP's time embedding (default 1000; 10 suits GENIE teachers)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--ckpt-every", type=int, default=1000)
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--data-dir", default=None, help="TFDS data_dir for image sets (no download at run time)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    t.add_argument("--no-progress", action="store_true")
    g = t.add_argument_group("GENIE head distillation (thesis §3.3.3.1)")
    g.add_argument("--distill-genie-head", action="store_true",
                   help="train a derivative head on the frozen --teacher (head width: --width)")
    g.add_argument("--teacher", default=None, help="run directory of the teacher (a vp/subvp/ve eps model)")
    dp = t.add_argument_group("differential privacy (DP-SGD, thesis ch. 4)")
    dp.add_argument("--dp", action="store_true", help="train with DP-SGD and Poisson sampling")
    dp.add_argument("--epsilon", type=float, default=None, help="privacy budget epsilon")
    dp.add_argument("--delta", type=float, default=1e-5, help="privacy budget delta (default 1e-5)")
    dp.add_argument("--clip", type=float, default=1.0, help="per-example gradient clip norm C")
    dp.add_argument("--noise-multiplicity", type=int, default=1, help="noise draws K per example (eq. 4.7)")
    dp.add_argument("--epochs", type=float, default=None, help="epochs over the private data set")
    dp.add_argument("--dataset-size", type=int, default=20000, help="size of the private toy data set")
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser("sample", help="draw samples from a trained run into an .npz (key 'samples')")
    s.add_argument("--ckpt", required=True, help="run directory of `diffjax train`")
    s.add_argument("--method", default="ddim", help="ddim | ddpm | em | pc | pf_euler | pf_heun | pf_adaptive | "
                   "edm_heun | edm_euler | genie | ttm3 | dpmpp_2m | dpmpp_3m | unipc | sscs | genie_head (depends on the run)")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output .npz")
    s.add_argument("--picard", action="store_true", help="use the parallel Picard executor (same result)")
    s.add_argument("--no-ema", action="store_true", help="use the raw instead of the EMA parameters")
    s.set_defaults(func=_cmd_sample)

    n = sub.add_parser("nll", help="negative log-likelihood of held-out toy data under a trained run")
    n.add_argument("--ckpt", required=True)
    n.add_argument("--n", type=int, default=500)
    n.add_argument("--seed", type=int, default=0)
    n.set_defaults(func=_cmd_nll)

    b = sub.add_parser("bench", help="run a benchmark script from benchmarks/ ('list' to list them)")
    b.add_argument("name", nargs="?", default="list")
    b.add_argument("--quick", action="store_true")
    b.add_argument("extra", nargs=argparse.REMAINDER, help="further arguments for the script")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    for name in ("steps", "n", "batch_size", "ckpt_every", "log_every"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's per-order RDP warnings
    try:
        return args.func(args)
    except CliError as e:
        print(f"diffjax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
