"""``diffjax train``: flags -> a run config -> :func:`diffjax.train.train` (or DP-SGD / a GENIE head)."""

from __future__ import annotations

from pathlib import Path

from diffjax.cli._errors import CliError, check_flag

_TRAIN_ERRORS = (ValueError, FileNotFoundError)


def _validate(args) -> None:
    """Numeric flags up front: finite, positive where needed (exit 2 naming the flag)."""
    for name in ("lr", "grad_clip", "time_scale", "clip", "epsilon", "epochs"):
        check_flag(name, getattr(args, name, None))
    check_flag("cdl_weight", args.cdl_weight, lo=0.0, lo_open=False)
    check_flag("ema_decay", args.ema_decay, lo=0.0, lo_open=False, hi=1.0)
    check_flag("delta", args.delta, hi=1.0)
    if args.warmup < 0:
        raise CliError(f"--warmup must be >= 0, got {args.warmup}")
    if args.dp and args.steps is not None:
        raise CliError("--dp runs are sized by --epochs (the privacy accountant needs the number of passes), "
                       "not --steps: drop --steps")


def _config(args) -> dict:
    from diffjax.cli import _build

    if args.dataset is None:
        raise CliError("--dataset is required")
    if args.sde not in _build.SDES:
        raise CliError(f"unknown --sde {args.sde!r}; choose one of {', '.join(_build.SDES)}")
    config = {"sde": args.sde, "dataset": args.dataset, "loss": args.loss, "width": args.width,
              "depth": args.depth, "seed": args.seed, "batch_size": args.batch_size}
    if args.loss.endswith("+cdl"):
        config["cdl_weight"] = args.cdl_weight
    if args.time_scale is not None:
        config["time_scale"] = args.time_scale
    if args.data_dir:
        config["data_dir"] = str(args.data_dir)
    if args.dataset == "digits":
        config["num_classes"] = _build.DIGITS_CLASSES
    if args.net != "unet" or args.dtype != "float32":
        config.update(net=args.net, dtype=args.dtype)
    return config


def _header(args, config, data_shape, params) -> None:
    import jax
    import numpy as np

    size = sum(int(np.prod(np.shape(p))) for p in jax.tree_util.tree_leaves(params))
    net = ("MLP" if len(data_shape) == 1 else config.get("net", "unet").replace("unet", "U-Net")
           .replace("ddpmpp", "DDPM++"))
    cond = f", class-conditional ({config['num_classes']} classes)" if config.get("num_classes") else ""
    what = f"{args.epochs:g} epochs (DP-SGD)" if args.dp else f"{args.steps} steps"
    print(f"diffjax train: {config['dataset']} {tuple(data_shape)}{cond}, sde {config['sde']}, loss {config['loss']}"
          f"{' (weight %g)' % config['cdl_weight'] if 'cdl_weight' in config else ''}, {net} "
          f"{size / 1e6:.3g}M parameters ({config.get('dtype', 'float32')}), {what}, batch {config['batch_size']}, "
          f"out {Path(args.out).absolute()}")


def cmd_train(args) -> int:
    import jax

    from diffjax import train
    from diffjax.cli import _build

    if args.distill_genie_head:
        return _train_genie_head(args)
    _validate(args)
    config = _config(args)
    try:
        data_fn, data_shape = _build.data_fn_for(config)
        _, apply_fn, init_fn = _build.make_network(config, data_shape)
        loss = _build.make_loss(config)
    except ValueError as e:
        raise CliError(str(e)) from None
    config["data_shape"] = list(data_shape)
    params = init_fn(jax.random.PRNGKey(args.seed))
    if not args.dp and args.steps is None:
        raise CliError("--steps is required (or --dp with --epochs)")
    _header(args, config, data_shape, params)
    if args.dp:
        return _train_dp(args, config, loss, apply_fn, params)
    with _train_errors(args):
        train.train(loss, apply_fn, params, data_fn, steps=args.steps,
                    out_dir=args.out, config=config, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                    ckpt_every=args.ckpt_every, resume=args.resume, warmup_steps=args.warmup,
                    grad_clip=args.grad_clip, ema_decay=args.ema_decay, log_every=args.log_every,
                    progress=not args.no_progress)
    _finish(args, config, data_shape)
    return 0


class _train_errors:
    """Turn the library's expected training failures into :class:`CliError` (``--resume`` advice)."""

    def __init__(self, args):
        self.args = args

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        from diffjax import train

        if e is None:
            return False
        if isinstance(e, FileExistsError):
            raise CliError(f"{self.args.out} already holds a run: add --resume to continue it, or choose "
                           "another --out") from None
        if isinstance(e, _TRAIN_ERRORS + (train.NonFiniteLossError,)):
            raise CliError(str(e).replace("resume=True", "--resume")) from None
        return False


def _finish(args, config, data_shape) -> None:
    """Print where the checkpoints are and the next step; image runs also get a PNG of a few samples."""
    out = Path(args.out).absolute()
    print(f"done: checkpoints in {out / 'checkpoints'}")
    if len(data_shape) == 3:
        from diffjax.cli import _sample

        png = out / "samples.png"
        try:
            _sample.preview_images(str(out), png, n=20 if config.get("num_classes") else 16, steps=20)
            print(f"wrote {png} (20-step samples of the EMA weights)")
        except Exception as e:  # a preview must never fail a finished run
            print(f"(no preview image: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    from diffjax.cli._build import DEFAULT_METHOD

    print(f"next: diffjax sample --ckpt {args.out} --method {DEFAULT_METHOD[config['sde']]} --steps 50 "
          f"--n 1000 --out samples.npz")


def _train_genie_head(args) -> int:
    """Distil a GENIE derivative head on a frozen teacher (thesis §3.3.3.1, Alg. 2)."""
    import jax
    import jax.numpy as jnp

    from diffjax import distill
    from diffjax.cli import _build
    from diffjax.nn.apply import init_module

    if not args.teacher or not Path(args.teacher).exists():
        raise CliError(f"--distill-genie-head needs --teacher pointing to a run directory, got {args.teacher!r}")
    if args.steps is None:
        raise CliError("--steps is required")
    config = {"kind": "genie_head", "teacher": str(Path(args.teacher).absolute()), "head_width": args.width,
              "seed": args.seed, "batch_size": args.batch_size}
    features_apply, head, tconf, tparams = _build.genie_head_model(config)
    if tconf["sde"] not in ("vp", "subvp", "ve"):
        raise CliError(f"GENIE needs an eps teacher of a scalar SDE, the teacher is {tconf['sde']!r}")
    if (tconf.get("time_scale") or 1000.0) > 100:
        print("note: the teacher embeds time with a large time_scale; its d eps/dt (the head's target) is then "
              "rough. Teachers trained with `--time-scale 10` give much better GENIE samplers.")
    config.update(sde=tconf["sde"], dataset=tconf["dataset"], data_shape=tconf["data_shape"])
    data_fn, shape = _build.data_fn_for(dict(tconf, seed=args.seed, batch_size=args.batch_size))
    x, t = jnp.zeros((2,) + shape), jnp.full((2,), 0.5)
    eps, feats = features_apply(tparams, x, t)
    head_params = init_module(head, jax.random.PRNGKey(args.seed), feats, x, t, eps)
    with _train_errors(args):
        distill.train_genie_head(_build.make_sde(tconf["sde"]), features_apply, tparams, head.apply, head_params,
                                 data_fn, steps=args.steps, out_dir=args.out, config=config, lr=args.lr,
                                 batch_size=args.batch_size, seed=args.seed, ckpt_every=args.ckpt_every,
                                 resume=args.resume, log_every=args.log_every, progress=not args.no_progress)
    print(f"done: head checkpoints in {Path(args.out).absolute() / 'checkpoints'}")
    print(f"next: diffjax sample --ckpt {args.out} --method genie_head --steps 10 --out samples.npz")
    return 0


def _train_dp(args, config, loss, apply_fn, params) -> int:
    """DP-SGD training (thesis ch. 4): sigma_DP from the (epsilon, delta) budget, Poisson batches."""
    from diffjax import privacy
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
    with _train_errors(args):
        privacy.train_dp(loss, apply_fn, params, data, budget=budget, clip=args.clip,
                         multiplicity=args.noise_multiplicity, out_dir=args.out, config=config, lr=args.lr,
                         seed=args.seed, ckpt_every=args.ckpt_every, resume=args.resume, ema_decay=args.ema_decay,
                         log_every=args.log_every, progress=not args.no_progress)
    print(f"(privacy log: {Path(args.out).absolute() / 'privacy.json'})")
    _finish(args, config, tuple(config["data_shape"]))
    return 0
