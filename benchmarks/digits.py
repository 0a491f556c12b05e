"""Class-conditional diffusion models on the UCI digits, judged by DPDM's classifier protocol.

Four class-conditional models share one U-Net (``diffjax.nn.UNet(num_classes=10)``, ``--channels``,
``--channel-mult``, one residual block per level, attention in the middle block), label dropout
``p = 0.1`` (:func:`diffjax.losses.class_conditional_loss`, thesis §4.4.3.3.1) and the optimiser
(Adam, ``--lr``, global-norm clip 1, EMA ``--ema``), trained on the 1,497 real 16x16 training digits
(:func:`diffjax.data.digits.load_digits`):

- ``dsm``: VP SDE, eps-prediction, DSM "simple" weighting (thesis eqs. 1.18, 1.24); sampled with
  DPM-Solver++(2M) on a log-SNR-uniform grid (``--dpm-steps`` NFE).
- ``edm``: the EDM config (thesis Table 4.7, eq. 4.23); deterministic EDM Heun (thesis Alg. 7).
- ``cld``: CLD with hybrid score matching and the mixed score (thesis eqs. 2.12, 2.56); SSCS
  (thesis App. 2.4.4, Alg. 1) on a quadratic grid.
- ``dpdm_eps10``: DPDM (thesis ch. 4): the EDM config trained with DP-SGD, Poisson sampling at rate
  ``q = B/N`` (Alg. 5), noise multiplicity ``K = 4`` (eq. 4.7), per-example clipping at ``C = 1``
  and Gaussian noise (eqs. 4.10-4.11), ``sigma_DP`` calibrated by :func:`diffjax.privacy.calibrate_noise`
  (RDP) to ``(epsilon, delta) = (10, 1e-5)`` for ``--dp-steps`` steps; Churn sampler (Alg. 7).
  On CPU (``--dp-impl loop``, the default there) the per-example gradients of ``l~_i``
  (:func:`diffjax.privacy.per_example_loss_fn`) are computed one example per jitted call and clipped
  with ``optax.clip_by_global_norm``; the noise is :func:`diffjax.privacy.add_noise`. This is
  :func:`diffjax.privacy.private_grad`'s ``G~`` exactly, but XLA:CPU runs the grouped convolutions of
  a ``vmap``-ed per-example gradient ~5x slower (and compiles it for minutes); ``--dp-impl
  private_grad`` (the default on accelerators) uses :func:`~diffjax.privacy.private_grad` on padded
  Poisson batches (:func:`~diffjax.privacy.poisson_batch`).

All samplers use classifier-free guidance ``--guidance w`` (thesis eq. 5.5; ``w = 0``: conditional).
Evaluation (:mod:`diffjax.evaluation`): a CNN trained on the real training split gives ``real_accuracy``
(its test accuracy) and the features of ``fd`` (Frechet distance to the 300 real test digits);
``accuracy`` is the downstream accuracy (a CNN trained on the model's labelled samples, tested on the
real test split); ``label_accuracy`` is the real-data CNN's accuracy on the samples. Reference rows:
``fd_floor`` = FD(real train, real test), ``fd_gaussian`` / ``gaussian_accuracy`` = a per-class,
per-pixel Gaussian fit. ``samples_per_s`` excludes compilation. PNG grids (10 classes x 10 samples)
go to ``--out-dir`` (default ``runs/digits/``).

Prints a table, then one JSON line (last line of stdout):
``{"models": {"dsm": {"fd", "accuracy", ...}, "edm", "cld", "dpdm_eps10"}, "real_accuracy",
"fd_floor", "fd_gaussian", ...}``.

Usage: ``python benchmarks/digits.py [--quick] [--out-dir runs/digits] [--steps 1500] [--batch 64]
[--channels 16] [--dp-steps 120] [--dp-batch 256] [--dp-guidance 1,3] [--models dsm,edm,cld,dpdm_eps10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if "--quick" in sys.argv[1:]:
    # A smoke run is dominated by compilation: skip XLA's backend optimisations (before jax starts).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                               " --xla_llvm_disable_expensive_passes=true").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import diffjax as dj  # noqa: E402
from diffjax import evaluation as ev  # noqa: E402
from diffjax import param, privacy, schedules  # noqa: E402
from diffjax.conditioning import guided_model  # noqa: E402
from diffjax.data.digits import digits_data_fn, load_digits  # noqa: E402
from diffjax.losses import class_conditional_loss, dsm_loss, edm_loss, hsm_loss  # noqa: E402
from diffjax.nn import UNet, init_params, make_apply, make_cld_apply, param_count  # noqa: E402

NUM_CLASSES = 10
MODELS = ("dsm", "edm", "cld", "dpdm_eps10")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (< 2 min on 2 cores)")
    ap.add_argument("--out-dir", default="runs/digits")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--channels", type=int, default=None, help="U-Net base channels (16; quick 8)")
    ap.add_argument("--channel-mult", default=None, help="e.g. 1,2,2 (quick 1,2)")
    ap.add_argument("--steps", type=int, default=None, help="training steps of dsm/edm/cld (1500; quick 40)")
    ap.add_argument("--batch", type=int, default=None, help="batch of dsm/edm/cld (64; quick 32)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay (warmed up as (1+t)/(10+t))")
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance w")
    ap.add_argument("--dp-guidance", default="1,3",
                    help="guidance weights tried for the DP model (the thesis grid-searches w for DPDM, §4.4.6.4.3); "
                         "the row reports the best downstream accuracy, every w under 'guidance_sweep'")
    ap.add_argument("--samples-per-class", type=int, default=None, help="(100; quick 10)")
    ap.add_argument("--dpm-steps", type=int, default=None, help="DPM-Solver++(2M) steps for dsm (20; quick 6)")
    ap.add_argument("--edm-steps", type=int, default=None, help="EDM Heun levels for edm/dpdm (12; quick 4)")
    ap.add_argument("--sscs-steps", type=int, default=None, help="SSCS steps for cld (50; quick 8)")
    ap.add_argument("--clf-steps", type=int, default=None, help="classifier training steps (400; quick 100)")
    ap.add_argument("--epsilon", type=float, default=10.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--dp-steps", type=int, default=None, help="DP-SGD steps (120; quick 2)")
    ap.add_argument("--dp-batch", type=int, default=None, help="expected DP batch B = qN (256; quick 8)")
    ap.add_argument("--dp-lr", type=float, default=None, help="DP learning rate (default --lr)")
    ap.add_argument("--multiplicity", type=int, default=4, help="noise multiplicity K")
    ap.add_argument("--clip", type=float, default=1.0, help="DP clipping norm C")
    ap.add_argument("--dp-churn", type=float, default=10.0, help="S_churn of the DPDM sampler")
    ap.add_argument("--dp-impl", choices=("auto", "loop", "private_grad"), default="auto")
    args = ap.parse_args(argv)
    quick = dict(channels=8, channel_mult="1,2", steps=40, batch=32, samples_per_class=10, dpm_steps=6,
                 edm_steps=4, sscs_steps=8, clf_steps=100, dp_steps=2, dp_batch=8)
    full = dict(channels=16, channel_mult="1,2,2", steps=1500, batch=64, samples_per_class=100, dpm_steps=20,
                edm_steps=12, sscs_steps=50, clf_steps=400, dp_steps=120, dp_batch=256)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.channel_mult = tuple(int(c) for c in args.channel_mult.split(","))
    args.dp_guidance = [float(w) for w in args.dp_guidance.split(",") if w]
    args.models = [m for m in args.models.split(",") if m]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        ap.error(f"unknown models {bad}; choose from {MODELS}")
    if args.dp_impl == "auto":
        args.dp_impl = "loop" if jax.default_backend() == "cpu" else "private_grad"
    return args


# ---------------------------------------------------------------------------------------------
# models: network, loss, sampler
# ---------------------------------------------------------------------------------------------


def make_unet(args, *, cld: bool = False) -> UNet:
    return UNet(channels=args.channels, channel_mult=args.channel_mult, num_res_blocks=1, attention_levels=(),
                mid_attention=not args.quick, num_classes=NUM_CLASSES, out_channels=1 if cld else None)


def model_spec(name: str, args):
    """``(apply_fn, cld, loss, sample_fn, nfe)`` of one model; ``sample_fn(params, key, y, w)``, ``w`` traced."""
    shape = (16, 16, 1)
    if name == "cld":
        cld = dj.CLD()
        apply_fn, cld_net = make_cld_apply(make_unet(args, cld=True)), True
        loss = hsm_loss(cld)
        grid = schedules.time_grid(args.sscs_steps, "quadratic", 1e-3, cld.T)
        rule, nfe = dj.samplers.sscs_rule(cld), args.sscs_steps

        def sample_fn(params, key, y, w):
            score = param.cld_mixed_score(cld, guided_model(apply_fn, params, y, w, num_classes=NUM_CLASSES))
            return dj.sample(rule, score, key, (y.shape[0],) + shape, grid)[0]
    elif name == "dsm":
        sde = dj.VPSDE()
        apply_fn, cld_net = make_apply(make_unet(args)), False
        loss = dsm_loss(sde, parameterization="eps")
        grid = schedules.time_grid(args.dpm_steps, "log_snr", 1e-3, sde.T, sde=sde)
        rule, nfe = dj.samplers.dpmpp_2m_rule(sde), args.dpm_steps

        def sample_fn(params, key, y, w):
            x0_fn = param.x0_from_eps(sde, guided_model(apply_fn, params, y, w, num_classes=NUM_CLASSES))
            return dj.sample(rule, x0_fn, key, (y.shape[0],) + shape, grid)[0]
    else:  # edm, dpdm_eps10: EDM config; DPDM samples with churn (thesis Table 4.15)
        config = param.edm_config()
        apply_fn, cld_net = make_apply(make_unet(args)), False
        loss = edm_loss(config)
        churn = dict(s_churn=args.dp_churn, s_min=0.05, s_max=50.0) if name.startswith("dpdm") else {}
        nfe = 2 * args.edm_steps - 1

        def sample_fn(params, key, y, w):
            denoiser = param.precondition(config, guided_model(apply_fn, params, y, w, num_classes=NUM_CLASSES))
            return dj.samplers.edm_heun(denoiser, key=key, shape=(y.shape[0],) + shape, n_steps=args.edm_steps,
                                        **churn)[0]
    loss = class_conditional_loss(loss, num_classes=NUM_CLASSES, p_uncond=args.p_uncond)
    return apply_fn, cld_net, loss, sample_fn, nfe * (2 if args.guidance != 0 else 1)


# ---------------------------------------------------------------------------------------------
# training: a bare jitted optax loop with EMA; DP-SGD
# ---------------------------------------------------------------------------------------------


def _ema_decay(args, step: int) -> float:
    return min(args.ema, (1.0 + step) / (10.0 + step))


def _optimizer(lr: float):
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))


def train_plain(loss, apply_fn, params, args, key):
    """``args.steps`` Adam steps on ``(x0, y)`` batches of the digits train split; returns EMA params."""
    opt = _optimizer(args.lr)
    data_fn = digits_data_fn(batch_size=args.batch, seed=args.seed, with_labels=True)

    @jax.jit
    def step(params, ema, opt_state, key, x, y, decay):
        (value, _), grads = jax.value_and_grad(lambda p: loss(apply_fn, p, key, (x, y)), has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, optax.incremental_update(params, ema, 1.0 - decay), opt_state, value

    ema, opt_state, losses_seen = params, opt.init(params), []
    for s in range(args.steps):
        x, y = data_fn(s)
        params, ema, opt_state, value = step(params, ema, opt_state, jax.random.fold_in(key, s), x, y,
                                             _ema_decay(args, s))
        if s % max(args.steps // 5, 1) == 0 or s == args.steps - 1:
            losses_seen.append(round(float(value), 4))
    return ema, {"train_steps": args.steps, "batch": args.batch, "loss_trace": losses_seen}


def _packed(x, y):
    """Images with the label as a second channel ``(N, H, W, 2)``: one array per example for DP-SGD."""
    return np.concatenate([x, np.broadcast_to(y[:, None, None, None].astype(np.float32), x.shape)], axis=-1)


def _unpacked_loss(loss):
    def packed_loss(apply_fn, params, key, xb, *, reduce=True):
        return loss(apply_fn, params, key, (xb[..., :1], xb[:, 0, 0, 1].astype(jnp.int32)), reduce=reduce)

    return packed_loss


def _dp_gradient_fn(loss, apply_fn, args, sigma: float, n: int):
    """``grad_fn(params, key, key_batch, data) -> (G~, batch size)``: thesis Alg. 4 lines 3-8."""
    q, B = args.dp_batch / n, float(args.dp_batch)
    noise = dict(clip=args.clip, noise_multiplier=sigma, expected_batch_size=B)
    if args.dp_impl == "private_grad":
        capacity = privacy.poisson_capacity(B)

        @jax.jit
        def grad_fn(params, key, key_batch, data):
            batch, mask, count = privacy.poisson_batch(key_batch, data, q, capacity=capacity)
            g, _ = privacy.private_grad(loss, apply_fn, params, key, batch, mask, multiplicity=args.multiplicity,
                                        **noise)
            return g, count

        def checked(params, key, key_batch, data):
            g, count = grad_fn(params, key, key_batch, data)
            if int(count) > capacity:  # P <= 1e-9 per step; dropping rows would void the accounting
                raise RuntimeError(f"Poisson batch of {int(count)} exceeds the capacity {capacity}")
            return g, count
        return checked

    f = privacy.per_example_loss_fn(loss, apply_fn, args.multiplicity)   # l~_i, eq. 4.7
    clip = optax.clip_by_global_norm(args.clip)                           # clip_C, eq. 4.10

    @jax.jit
    def add_clipped(acc, params, key, x_i):
        g, _ = clip.update(jax.grad(f)(params, key, x_i), clip.init(params))
        return jax.tree_util.tree_map(jnp.add, acc, g)

    def grad_fn(params, key, key_batch, data):
        idx, _, count = privacy.poisson_indices(key_batch, q, dataset_size=n, capacity=n)  # Alg. 5, no overflow
        k_loss, k_noise = jax.random.split(key)
        acc = jax.tree_util.tree_map(jnp.zeros_like, params)
        for j, i in enumerate(np.asarray(idx)[:int(count)]):
            acc = add_clipped(acc, params, jax.random.fold_in(k_loss, j), data[i])
        return privacy.add_noise(acc, k_noise, **noise), count                # eq. 4.11
    return grad_fn


def train_dp(loss, apply_fn, params, args, key, x, y):
    """DP-SGD (thesis Alg. 4) at ``(epsilon, delta)`` for ``args.dp_steps`` steps; returns EMA params."""
    n = x.shape[0]
    q = args.dp_batch / n
    sigma = privacy.calibrate_noise(args.epsilon, q, args.dp_steps, args.delta)
    spent = privacy.epsilon(sigma, q, args.dp_steps, args.delta)
    opt = _optimizer(args.dp_lr or args.lr)
    grad_fn = _dp_gradient_fn(_unpacked_loss(loss), apply_fn, args, sigma, n)
    data = jnp.asarray(_packed(x, y))

    @jax.jit
    def update(params, ema, opt_state, grads, decay):
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, optax.incremental_update(params, ema, 1.0 - decay), opt_state

    ema, opt_state, sizes, t0 = params, opt.init(params), [], time.perf_counter()
    for s in range(args.dp_steps):
        k_loss, k_batch = jax.random.split(jax.random.fold_in(key, s))
        grads, count = grad_fn(params, k_loss, k_batch, data)
        params, ema, opt_state = update(params, ema, opt_state, grads, _ema_decay(args, s))
        sizes.append(int(count))
        if (s + 1) % max(args.dp_steps // 10, 1) == 0:
            print(f"  dp step {s + 1}/{args.dp_steps}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    info = {"train_steps": args.dp_steps, "expected_batch": args.dp_batch, "mean_batch": float(np.mean(sizes)),
            "sample_rate": round(q, 5), "noise_multiplier": round(sigma, 4), "epsilon": round(spent, 4),
            "delta": args.delta, "multiplicity": args.multiplicity, "clip": args.clip, "dp_impl": args.dp_impl}
    return ema, info


# ---------------------------------------------------------------------------------------------
# sampling, evaluation, pictures
# ---------------------------------------------------------------------------------------------


def draw(sample_fn, params, key, n_per_class: int, weights):
    """Class-balanced samples ``(10 n, 16, 16, 1)`` (clipped to ``[-1, 1]``), labels and samples/s
    (compile excluded), one triple per guidance weight in ``weights``.

    The guidance weight is a traced argument: the sampler is compiled once for all weights."""
    y = jnp.repeat(jnp.arange(NUM_CLASSES, dtype=jnp.int32), n_per_class)
    compiled = jax.jit(sample_fn).lower(params, key, y, jnp.float32(weights[0])).compile()
    out = []
    for w in weights:
        t0 = time.perf_counter()
        x = jax.block_until_ready(compiled(params, key, y, jnp.float32(w)))
        rate = y.shape[0] / (time.perf_counter() - t0)
        x = np.asarray(x, np.float32)
        if not np.all(np.isfinite(x)):
            raise FloatingPointError(f"{int(np.sum(~np.isfinite(x)))} non-finite sample values (guidance {w})")
        out.append((np.clip(x, -1.0, 1.0), np.asarray(y), rate))
    return out


def save_grid(x, y, path: Path, title: str, per_class: int = 10):
    """A ``10 x per_class`` mosaic (row = class) of the first samples of each class, as a PNG."""
    import matplotlib  # noqa: PLC0415
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    cells = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)  # 1-pixel frame per digit
    side = cells.shape[1]
    mosaic = np.concatenate([np.concatenate(list(cells[y == c][:per_class]), axis=1)
                             for c in range(NUM_CLASSES)], axis=0)
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="#c8d2e0")
    fig = Figure(figsize=(6.0, 6.3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(mosaic, cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks(np.arange(NUM_CLASSES) * side + side / 2, labels=[str(c) for c in range(NUM_CLASSES)])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def judge(x, y, real_params, test, args, key) -> dict:
    """FD to the real test split, downstream accuracy, and the real-data CNN's accuracy on the samples."""
    return {"fd": round(ev.classifier_fd(real_params, x, test[0]), 3),
            "accuracy": round(ev.downstream_accuracy(x, y, *test, key=key, steps=args.clf_steps), 4),
            "label_accuracy": round(ev.classifier_accuracy(real_params, x, y), 4)}


def initial_params(args, cld: bool, key, cache: dict):
    """The U-Net's initial parameters; dsm, edm and dpdm share one draw (same network, same start)."""
    if cld not in cache:
        cache[cld] = init_params(make_unet(args, cld=cld), key, (2, 16, 16, 1), cld=cld,
                                 y=jnp.zeros((2,), jnp.int32))
    return cache[cld]


def run_model(name, args, key, train, test, real_params, init_cache: dict) -> dict:
    k_train, k_sample, k_clf = jax.random.split(key, 3)
    apply_fn, cld_net, loss, sample_fn, nfe = model_spec(name, args)
    params = initial_params(args, cld_net, jax.random.PRNGKey(args.seed + 1), init_cache)
    t0 = time.perf_counter()
    if name.startswith("dpdm"):
        ema, info = train_dp(loss, apply_fn, params, args, k_train, *train)
    else:
        ema, info = train_plain(loss, apply_fn, params, args, k_train)
    t1 = time.perf_counter()
    sweep, eval_s = {}, 0.0
    weights = args.dp_guidance if name.startswith("dpdm") else [args.guidance]
    for w, (x_w, y, rate) in zip(weights, draw(sample_fn, ema, k_sample, args.samples_per_class, weights)):
        t_eval = time.perf_counter()
        sweep[w] = (judge(x_w, y, real_params, test, args, k_clf), x_w)
        eval_s += time.perf_counter() - t_eval
    best = max(sweep, key=lambda w: sweep[w][0]["accuracy"])
    row, x = dict(sweep[best][0]), sweep[best][1]
    if len(sweep) > 1:
        row.update(guidance=best, guidance_sweep={f"{w:g}": r for w, (r, _) in sweep.items()})
    t2 = time.perf_counter()
    row.update(samples_per_s=round(rate, 1), nfe=nfe, train_s=round(t1 - t0, 1), sample_s=round(t2 - t1 - eval_s, 1),
               eval_s=round(eval_s, 1), params=param_count(ema), **info)
    save_grid(x, y, Path(args.out_dir) / f"{name}.png",
              f"{name}: FD {row['fd']:.1f}, downstream acc {row['accuracy']:.3f}")
    return row


def references(args, key, train, test):
    """The real-data CNN, its test accuracy, FD(train, test) and the per-pixel Gaussian baseline."""
    k_clf, k_gauss, k_down = jax.random.split(key, 3)
    real_params = ev.train_classifier(*train, key=k_clf, steps=args.clf_steps)
    ref = {"real_accuracy": round(ev.classifier_accuracy(real_params, *test), 4),
           "fd_floor": round(ev.classifier_fd(real_params, train[0], test[0]), 3)}
    gx, gy = ev.per_pixel_gaussian(k_gauss, *train, args.samples_per_class)
    g = judge(np.clip(gx, -1.0, 1.0), gy, real_params, test, args, k_down)
    ref.update(fd_gaussian=g["fd"], gaussian_accuracy=g["accuracy"], gaussian_label_accuracy=g["label_accuracy"])
    save_grid(train[0], train[1], Path(args.out_dir) / "real.png", "real training digits")
    save_grid(np.clip(gx, -1.0, 1.0), gy, Path(args.out_dir) / "gaussian.png",
              f"per-pixel Gaussian: FD {g['fd']:.1f}, downstream acc {g['accuracy']:.3f}")
    return real_params, ref


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    train, test = load_digits("train"), load_digits("test")
    key = jax.random.PRNGKey(args.seed)
    real_params, result = references(args, jax.random.fold_in(key, 1000), train, test)
    result["reference_s"] = round(time.perf_counter() - t_start, 1)
    print(f"real CNN: test accuracy {result['real_accuracy']:.4f}; FD floor (train vs test) {result['fd_floor']:.2f}; "
          f"per-pixel Gaussian: FD {result['fd_gaussian']:.2f}, downstream accuracy {result['gaussian_accuracy']:.4f}",
          flush=True)
    models, init_cache = {}, {}
    print(f"{'model':<12} {'FD':>8} {'accuracy':>9} {'label acc':>9} {'samples/s':>10} {'NFE':>4} {'train s':>8}")
    for i, name in enumerate(args.models):
        row = models[name] = run_model(name, args, jax.random.fold_in(key, i), train, test, real_params, init_cache)
        print(f"{name:<12} {row['fd']:8.2f} {row['accuracy']:9.4f} {row['label_accuracy']:9.4f} "
              f"{row['samples_per_s']:10.1f} {row['nfe']:4d} {row['train_s']:8.1f}", flush=True)
    config = {k: v for k, v in vars(args).items() if k != "models"}
    config.update(backend=jax.default_backend(), total_s=round(time.perf_counter() - t_start, 1))
    print(json.dumps({"models": models, **result, "config": config}))


if __name__ == "__main__":
    main()
