"""The argument parser of the ``diffjax`` command (defaults shown in ``--help``; required flags grouped)."""

from __future__ import annotations

import argparse

_FMT = argparse.ArgumentDefaultsHelpFormatter
CDL_WEIGHT = 2.0 / 128.0   # CDL authors: 2 CDL examples per batch of 128, each divided by 128


def _demo(sub) -> None:
    from diffjax.cli._demo import RECIPE, cmd_demo

    d = sub.add_parser("demo", formatter_class=_FMT,
                       help="train a small 2-D model, sample it with several samplers, write a PNG")
    d.add_argument("--dataset", default="swiss_roll", help="built-in 2-D set")
    d.add_argument("--steps", type=int, default=RECIPE["steps"],
                   help=f"training steps of batch {RECIPE['batch_size']}")
    d.add_argument("--width", type=int, default=128, help="MLP width")
    d.add_argument("--n", type=int, default=2000, help="samples per sampler")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--out", default="diffjax_demo.png", help="PNG path")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)


def _train(sub) -> None:
    from diffjax.cli._train import cmd_train

    t = sub.add_parser("train", formatter_class=_FMT, help="train a model; checkpoints go to OUT/checkpoints/<step>/")
    req = t.add_argument_group("required arguments")
    req.add_argument("--out", required=True, help="run directory")
    req.add_argument("--dataset", default=None, help="toy 2-D set (swiss_roll, moons, dino, ...), digits "
                     "(16x16 UCI digits, class-conditional) or mnist/fashion_mnist/cifar10/celeba (TFDS)")
    req.add_argument("--steps", type=int, default=None, help="training steps (not with --dp: use --epochs)")
    t.add_argument("--sde", default="vp", help="vp | subvp | ve | cld | edm")
    t.add_argument("--loss", default="dsm",
                   help="dsm | itd (the CDL paper's -log p bound, eq. 2) | dsm+cdl | itd+cdl (add the Contrastive "
                        "Diffusion Loss; itd+cdl is the CDL authors' model)")
    t.add_argument("--cdl-weight", type=float, default=CDL_WEIGHT,
                   help="weight of the CDL term on the batch mean; the default 1/64 is the CDL authors' ratio "
                        "(2 CDL examples per batch of 128, each divided by 128) on their ITD base loss; on the "
                        "DSM base (whose gradient is ~7x smaller) the same balance is ~0.002")
    t.add_argument("--batch-size", type=int, default=512, help="batch size")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    t.add_argument("--grad-clip", type=float, default=1.0, help="global gradient-norm clip")
    t.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the sampling weights")
    t.add_argument("--width", type=int, default=128, help="MLP width / image-network base channels")
    t.add_argument("--depth", type=int, default=3, help="MLP hidden layers")
    t.add_argument("--net", default="unet", choices=("unet", "ddpmpp"), help="image network (image sets only)")
    t.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype of the image network; bfloat16 needs --net ddpmpp")
    t.add_argument("--time-scale", type=float, default=None,
                   help="multiplier of t in the MLP's time embedding (None: 1000, 100 for edm; 10 suits GENIE "
                        "teachers)")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint interval (steps)")
    t.add_argument("--log-every", type=int, default=100, help="logging interval (steps)")
    t.add_argument("--data-dir", default=None, help="TFDS data_dir for image sets (no download at run time)")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = t.add_argument_group("GENIE head distillation (thesis §3.3.3.1)")
    g.add_argument("--distill-genie-head", action="store_true",
                   help="train a derivative head on the frozen --teacher (head width: --width)")
    g.add_argument("--teacher", default=None, help="run directory of the teacher (a vp/subvp/ve eps model)")
    dp = t.add_argument_group("differential privacy (DP-SGD, thesis ch. 4; sized by --epochs, not --steps)")
    dp.add_argument("--dp", action="store_true", help="train with DP-SGD and Poisson sampling")
    dp.add_argument("--epsilon", type=float, default=None, help="privacy budget epsilon")
    dp.add_argument("--delta", type=float, default=1e-5, help="privacy budget delta")
    dp.add_argument("--clip", type=float, default=1.0, help="per-example gradient clip norm C")
    dp.add_argument("--noise-multiplicity", type=int, default=1, help="noise draws K per example (eq. 4.7)")
    dp.add_argument("--epochs", type=float, default=None, help="epochs over the private data set")
    dp.add_argument("--dataset-size", type=int, default=20000, help="size of the private toy data set")
    t.set_defaults(func=cmd_train)


def _sample(sub) -> None:
    from diffjax.cli._sample import cmd_nll, cmd_sample

    s = sub.add_parser("sample", formatter_class=_FMT,
                       help="draw samples from a trained run into an .npz (key 'samples') and a PNG beside it")
    req = s.add_argument_group("required arguments")
    req.add_argument("--ckpt", required=True, help="run directory of `diffjax train`")
    req.add_argument("--out", required=True, help="output .npz (the PNG goes beside it)")
    s.add_argument("--method", default=None,
                   help="ddim | ddpm | em | pc | pf_euler | pf_heun | pf_adaptive | edm_heun | edm_euler | "
                        "euler_ancestral | dpm2_ancestral | dpmpp_2s_ancestral | genie | ttm3 | dpmpp_2m | dpmpp_3m "
                        "| unipc | sscs | genie_head (depends on the run). None: per run kind, ddim for vp/subvp, "
                        "edm_heun for ve and edm, sscs for cld, genie_head for a GENIE head")
    s.add_argument("--steps", type=int, default=50, help="sampling steps")
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--picard", action="store_true", help="use the parallel Picard executor (same result)")
    s.add_argument("--no-ema", action="store_true", help="use the raw instead of the EMA parameters")
    s.set_defaults(func=cmd_sample)

    n = sub.add_parser("nll", formatter_class=_FMT, help="negative log-likelihood of held-out data under a run")
    req = n.add_argument_group("required arguments")
    req.add_argument("--ckpt", required=True, help="run directory of `diffjax train`")
    n.add_argument("--n", type=int, default=500, help="held-out points")
    n.add_argument("--seed", type=int, default=0, help="random seed")
    n.add_argument("--no-ema", action="store_true", help="use the raw instead of the EMA parameters")
    n.set_defaults(func=cmd_nll)


def build_parser() -> argparse.ArgumentParser:
    from diffjax.cli._sample import cmd_bench

    p = argparse.ArgumentParser(prog="diffjax", description="diffjax: functional diffusion models in JAX")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _demo(sub)
    _train(sub)
    _sample(sub)
    b = sub.add_parser("bench", formatter_class=_FMT,
                       help="run a benchmark script from benchmarks/ ('list' to list them)")
    b.add_argument("name", nargs="?", default="list", help="script name, or 'list'")
    b.add_argument("--quick", action="store_true", help="the script's quick mode")
    b.add_argument("extra", nargs=argparse.REMAINDER, help="further arguments for the script")
    b.set_defaults(func=cmd_bench)
    return p
