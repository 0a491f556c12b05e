"""``diffjax sample`` / ``nll`` / ``bench``: load a run, draw samples (.npz + PNG), likelihoods, benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from diffjax.cli._errors import CliError, read_error


def load_run(ckpt: str, ema: bool = True):
    """``(config, apply_fn, params, data_shape, step)`` of a run directory; one-line errors naming the path."""
    import jax

    from diffjax import train
    from diffjax.cli import _build

    if not Path(ckpt).exists():
        raise CliError(f"checkpoint directory {ckpt} does not exist")
    try:  # config validated (checksum, known sde, data shape) before anything is built from it
        config = train.load_config(ckpt, required_keys=("sde", "data_shape"))
        step = train.latest_step(ckpt)
        data_shape = tuple(config["data_shape"])
        _, apply_fn, init_fn = _build.make_network(config, data_shape)
        template = init_fn(jax.random.PRNGKey(0))   # the stored leaves must fit this model
        params = train.restore_params(ckpt, ema=ema, template=template)
    except Exception as e:  # orbax/tensorstore/JSON/OS errors of a damaged checkpoint: one line, path named
        raise read_error(ckpt, e) from None
    return config, apply_fn, params, data_shape, step


def _labels(config, n):
    import numpy as np

    k = config.get("num_classes")
    return None if not k else np.arange(n) % k


def cmd_sample(args) -> int:
    import jax
    import numpy as np

    from diffjax import train
    from diffjax.cli import _build

    if not Path(args.ckpt).exists():
        raise CliError(f"checkpoint directory {args.ckpt} does not exist")
    try:
        stored = train.load_config(args.ckpt)
    except Exception as e:
        raise read_error(args.ckpt, e) from None
    if stored.get("kind") == "genie_head":
        return _sample_genie_head(args, stored)
    config, apply_fn, params, data_shape, step = load_run(args.ckpt, ema=not args.no_ema)
    method = args.method or _build.DEFAULT_METHOD[config["sde"]]
    print(f"sampling {args.n} x {data_shape} with {method} ({args.steps} steps"
          f"{', Picard' if args.picard else ''}) from {'raw' if args.no_ema else 'EMA'} weights of checkpoint "
          f"step {step} in {args.ckpt}")
    labels = _labels(config, args.n)
    if labels is not None:
        print(f"class-conditional run: labels 0..{config['num_classes'] - 1} in turn (column k of the grid is class k)")
    model_fn = _build.model_function(config, apply_fn, params, labels=labels)
    try:
        x, info = _build.draw_samples(config, model_fn, method, key=jax.random.PRNGKey(args.seed), n=args.n,
                                      steps=args.steps, data_shape=data_shape, picard=args.picard)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.picard:
        _report_picard(info, args.steps)
    return write_samples(args, np.asarray(x), info, method, config, labels)


def _report_picard(info, steps: int) -> None:
    """One line: Picard rounds, window, convergence, or that the sequential executor ran instead."""
    import numpy as np

    window = info.get("window")
    window = None if window is None else int(np.asarray(window))
    if window == 1:
        print(f"Picard: the auto-tuned window is 1 on this device, so the sequential executor ran instead "
              f"({steps} steps; no parallel speed-up here)")
        return
    conv = bool(np.asarray(info.get("converged", True)))
    print(f"Picard: {int(np.asarray(info['iterations']))} parallel rounds for {steps} steps, window "
          f"{window if window is not None else steps}, "
          + ("converged (same samples as the sequential executor up to the tolerance)" if conv else
             "NOT converged within max_iters: the samples are NOT the sequential ones"))


def _sample_genie_head(args, config) -> int:
    import jax
    import numpy as np

    from diffjax import distill, samplers, train
    from diffjax.cli import _build

    if args.method not in (None, "genie_head"):
        raise CliError(f"{args.ckpt} holds a GENIE head: use --method genie_head")
    features_apply, head, tconf, tparams = _build.genie_head_model(config)
    sde = _build.make_sde(tconf["sde"])
    try:
        params = {"backbone": tparams, "head": train.restore_params(args.ckpt, ema=False)}
    except Exception as e:
        raise read_error(args.ckpt, e) from None
    print(f"sampling with the GENIE head of {args.ckpt} (raw head weights) on teacher {tconf.get('dataset')}")
    apply = distill.genie_head_apply(sde, features_apply, head.apply)
    rule = distill.genie_head_rule(sde, afs=True, denoise=True)
    grid = samplers.time_grid(sde, args.steps, 1e-3, "quadratic")
    shape = (args.n,) + tuple(tconf["data_shape"])
    x, info = jax.jit(lambda p, k: samplers.sample(rule, lambda y, s: apply(p, y, s), k, shape, grid))(
        params, jax.random.PRNGKey(args.seed))
    return write_samples(args, np.asarray(x), info, "genie_head", tconf, None)


def _png_2d(x, config, png, method, nfe) -> None:
    import numpy as np

    from diffjax import metrics
    from diffjax.cli import _build

    data = np.asarray(_build.toy_batch(config["dataset"], config.get("seed", 0) + 1, 0, max(len(x), 2)))
    m = float(metrics.mmd(data, x)) if len(x) >= 2 else float("nan")
    metrics.plot_sample_panels(data, {method: x}, png, notes={method: f"MMD {m:.4f}  NFE {nfe}"}, ncols=1,
                               title=f"{config['dataset']} (grey: data)")


def write_samples(args, x, info, method, config, labels) -> int:
    """Write ``samples`` (+ ``labels``, ``nfe``) to ``--out`` and a PNG beside it; print both paths."""
    import numpy as np

    from diffjax import metrics

    if not np.all(np.isfinite(x)):
        raise CliError("sampling produced non-finite values (NaN/inf); try more steps or another method")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    extra = {} if labels is None else {"labels": np.asarray(labels)}
    np.savez(tmp, samples=x, nfe=np.asarray(info["nfe"]), **extra)
    os.replace(tmp, out)
    nfe = int(np.asarray(info["nfe"]))
    print(f"wrote {x.shape[0]} samples ({nfe} NFE, method {method}) to {out}")
    png = out.with_suffix(".png")
    if x.ndim == 2 and config.get("dataset") and x.shape[1] == 2:
        _png_2d(x, config, png, method, nfe)
    elif x.ndim == 4:
        metrics.plot_image_grid(x[:100], png, ncols=10, title=f"{config.get('dataset')}: {method}, {nfe} NFE")
    else:
        return 0
    print(f"wrote {png}")
    return 0


def preview_images(ckpt: str, png, *, n: int, steps: int) -> None:
    """A few DDIM/EDM-Heun samples of a finished image run as a PNG grid (cheap: ``steps`` steps)."""
    import jax
    import numpy as np

    from diffjax import metrics
    from diffjax.cli import _build

    config, apply_fn, params, data_shape, _ = load_run(ckpt)
    labels = _labels(config, n)
    method = _build.DEFAULT_METHOD[config["sde"]]
    model_fn = _build.model_function(config, apply_fn, params, labels=labels)
    x, _ = _build.draw_samples(config, model_fn, method, key=jax.random.PRNGKey(0), n=n, steps=steps,
                               data_shape=data_shape)
    metrics.plot_image_grid(np.asarray(x), png, ncols=10 if labels is not None else 8,
                            title=f"{config['dataset']}: {method}, {steps} steps")


def cmd_nll(args) -> int:
    import jax
    import numpy as np

    from diffjax import likelihood, param
    from diffjax.cli import _build

    config, apply_fn, params, data_shape, step = load_run(args.ckpt, ema=not args.no_ema)
    if config["sde"] not in ("vp", "subvp", "ve", "cld") or config.get("num_classes"):
        raise CliError(f"nll supports unconditional vp, subvp, ve and cld runs, not this {config['sde']!r} run")
    data_fn, _ = _build.data_fn_for(dict(config, seed=args.seed + 7919, batch_size=args.n))
    x = data_fn(0)
    model_fn = _build.model_function(config, apply_fn, params)
    sde = _build.make_sde(config["sde"])
    key = jax.random.PRNGKey(args.seed)
    print(f"computing the NLL of {args.n} held-out points with the {'raw' if args.no_ema else 'EMA'} weights of "
          f"checkpoint step {step} ({'CLD bound' if config['sde'] == 'cld' else 'adaptive ODE solve'}; "
          "this takes a while) ...", flush=True)
    if config["sde"] == "cld":
        nll = likelihood.cld_nll_bound(sde, model_fn, x, key=key)
        what = "NLL upper bound (thesis eq. 2.63)"
    else:
        logp = likelihood.probability_flow_log_likelihood(sde, param.score_from_eps(sde, model_fn), x, key=key)
        nll, what = -logp, "NLL (probability-flow ODE)"
    nll = np.asarray(nll)
    d = int(np.prod(data_shape))
    se = nll.std() / np.sqrt(len(nll))
    print(f"{what} on {args.n} held-out points: {nll.mean():.4f} ± {se:.4f} nats "
          f"({nll.mean() / (d * np.log(2)):.4f} bits/dim); ± = standard error over N={len(nll)} points")
    return 0


def _bench_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "benchmarks"
    if not here.is_dir():
        raise CliError("benchmarks/ not found: `diffjax bench` needs a source checkout (pip install -e .)")
    return here


def _summary(path: Path) -> str:
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError, ValueError):
        return ""
    return (doc or "").strip().splitlines()[0] if doc else ""


def cmd_bench(args) -> int:
    d = _bench_dir()
    scripts = sorted(p for p in d.glob("*.py") if not p.stem.startswith("_"))
    names = [p.stem for p in scripts]
    if args.name == "list" or args.name is None:
        print("benchmarks (run: diffjax bench NAME [--quick]):")
        for p in scripts:
            print(f"  {p.stem:<22}{_summary(p)}")
        return 0
    if args.name not in names:
        raise CliError(f"unknown benchmark {args.name!r}; choose one of {', '.join(names)}")
    cmd = [sys.executable, str(d / f"{args.name}.py")] + (["--quick"] if args.quick else []) + args.extra
    return subprocess.call(cmd)
