"""One prepared command for every accelerator claim: Picard, training, sampling and DP-SGD cost.

Accelerator time is scarce (a session may get ~15 minutes of one H100/H200, start-up included), so
every accelerator measurement of diffjax is this ONE command (<= 8 minutes on one H100/H200)::

    PYTHONPATH=. python3 benchmarks/gpu_suite.py --json $OUT/gpu_suite.json

``--quick`` runs the same code paths on CPU at tiny sizes in under two minutes (it is part of the
test suite, ``tests/test_gpu_suite.py``, so the suite cannot rot): 100 Picard steps, batches 4 and
32, one fixed window, a subset of the (model, precision) and (preset, dtype) rows that still covers
every model, precision, preset, sampler and dtype code path, DDPM++ networks shrunk to one level of
8 channels, ``K = 4`` only, and XLA's cheap-compile flags (its times are not measurements; its
JSON has the same keys). Every time excludes compilation,
which is reported apart (``compile_s``; exact ``lower().compile()`` where the suite owns the jitted
function, first call minus the best call for ``picard_sample``). Times are the best of a few calls
ended by ``block_until_ready``.

Sections (each runs in ``try/except``: an error is recorded as a string and the run goes on):

- ``picard``: 1000-step ancestral DDPM (VP SDE, uniform grid) on the 2-D nine-Gaussian mixture
  (thesis eq. 2.100) with the exact eps and with a random-init ``ScoreMLP(width=256, depth=3)``
  eps, batch 16 and 2000; ``picard_sample`` with ``window`` ``"full"`` (``None``, the default: the
  whole trajectory), ``"auto"`` (:func:`diffjax.samplers.auto_window`; its measurement is
  reported as ``tune_s``, excluded like compilation, and kept in a ``WindowCache``: the timed
  calls include only the cache look-up) and two fixed sizes (100, 250); matmul
  ``precision`` ``"float32"`` (true fp32), ``"tensorfloat32"`` and ``"bfloat16"`` for the MLP
  (the exact eps has no matrix products: float32 only). Per run: wall time vs the sequential
  executor (``lax.scan``, same key, same precision), the speed-up, Picard iterations, NFE and
  ``max_rel_diff`` = ``max |x_picard - x_seq| / max |x_seq|`` (same precision; also
  ``max_rel_diff_vs_fp32`` against the float32 sequential samples). ``targets``: >= 15x at batch 16
  and >= 3x at batch 2000 with the MLP (best converged run over windows and precisions), and
  "never slower than sequential" (>= 0.95x: 5 % timing noise allowed) for the default window
  (``None``) and for ``"auto"``; each with ``holds``.
- ``train``: images/s of one jitted train step (:func:`diffjax.train.make_train_step`, Adam, EMA,
  EDM loss of :func:`diffjax.param.edm_config`, noise-level dropout off) of the DDPM++ presets
  ``dpdm_mnist`` (batch 256) and ``ddpmpp_cifar10`` (batch 128) in float32 and bfloat16
  (``unet_preset(name, dtype=...)``, float32 parameters), class embedding off (``num_classes=None``:
  DP steps take array batches; the embedding is 11 x 128 parameters). ``step_flops`` is
  :func:`diffjax.nn.matmul_flops` of the whole step (forward and backward: about 3x
  ``fwd_flops``); ``mfu = step_flops / step_s / peak``, the peak from :data:`PEAK_TFLOPS` for
  ``jax.devices()[0].device_kind`` (float32 rows against the TF32 peak: JAX's default matmul
  precision lets cuBLAS/cuDNN use TF32 for float32 on Hopper); unknown device: ``null``.
- ``sampling``: images/s of DDIM-50 (uniform grid) and DPM-Solver++ 2M-10 (log-SNR grid) with a
  random-init ``ddpmpp_cifar10_s64`` eps network, batch 256, float32 and bfloat16; parameters are
  ``jit`` arguments (not baked-in constants).
- ``dp_sgd``: one jitted DP-SGD step (:func:`diffjax.privacy.make_dp_train_step`: per-example
  clipping, Gaussian noise, noise multiplicity ``K`` = 1 and 4, same optimiser and EMA) on
  ``dpdm_mnist``, float32, vs the non-DP step (the ``train`` row when it ran at the same batch);
  a fixed batch of 256 on an accelerator rather than the largest that fits (``--quick``: 2).

A ``--time-budget`` (default 420 s) bounds the run: sections get cumulative shares of it (picard
40 %, train 25 %, sampling 15 %, dp_sgd 20 %; time a section leaves unused carries over), a
measurement starts only while its section's share lasts (a DDPM++ one only with >= 15 s of it
left), and skipped ones are listed with a note. One compilation can overrun its share (the budget
is checked between measurements); the ``--json`` file is rewritten after every section, so a run
killed from outside still leaves the finished sections.

Prints progress lines, a table per section and, as its last stdout line, one JSON object with the
keys ``suite``, ``quick``, ``backend``, ``device_kind``, ``device_model``, ``device_count``,
``jax_version``, ``time_budget_s``, ``wall_s``, ``sections`` (status per section: ``ok``,
``partial``, ``error``, ``skipped``), ``picard``, ``train``, ``sampling`` and ``dp_sgd``; written
also to ``--json PATH``. Imports only jax, flax, optax, orbax and diffjax (no tqdm, matplotlib,
dp-accounting or scikit-learn on this path).

Usage: ``python benchmarks/gpu_suite.py [--quick] [--json PATH] [--time-budget S] [--sections a,b]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import traceback

import jax
import jax.numpy as jnp

from diffjax import train
from diffjax.analytic import nine_gaussians
from diffjax.losses import edm_loss
from diffjax.nn import PRESETS, ScoreMLP, init_params, make_apply, matmul_flops, unet_preset
from diffjax.param import edm_config, x0_from_eps
from diffjax.privacy import make_dp_train_step
from diffjax.samplers import WindowCache, auto_window, picard_sample, sample
from diffjax.samplers.dpm_solver import dpmpp_2m_rule
from diffjax.samplers.ode_rules import ddim_rule
from diffjax.samplers.picard import precision_context
from diffjax.samplers.sde_rules import ddpm_rule
from diffjax.schedules import time_grid, uniform_grid
from diffjax.sde import VPSDE

SECTIONS = ("picard", "train", "sampling", "dp_sgd")
SHARES = {"picard": 0.40, "train": 0.25, "sampling": 0.15, "dp_sgd": 0.20}

#: Dense (no structured sparsity) peak TFLOP/s from NVIDIA's data sheets: CUDA-core float32, and
#: tensor-core TF32 and BF16 (the sheets' "with sparsity" figures halved).
PEAK_TFLOPS = {
    "H100 SXM": {"float32": 67.0, "tensorfloat32": 494.5, "bfloat16": 989.5},
    "H100 PCIe": {"float32": 51.0, "tensorfloat32": 378.0, "bfloat16": 756.5},
    "H100 NVL": {"float32": 60.0, "tensorfloat32": 417.5, "bfloat16": 835.5},
    "H200 SXM": {"float32": 67.0, "tensorfloat32": 494.5, "bfloat16": 989.5},
    "H200 NVL": {"float32": 60.0, "tensorfloat32": 417.5, "bfloat16": 835.5},
}

FULL = dict(steps=1000, batches=(16, 2000), windows=(100, 250), reps=3, train_steps=5,
            train_batch={"dpdm_mnist": 256, "ddpmpp_cifar10": 128}, sample_batch=256, dp_batch=256,
            overrides={}, plan=None, train_rows=4, sample_rows=(0, 1, 2, 3), dp_ks=(1, 4), need_s=15.0)
QUICK = dict(steps=100, batches=(4, 32), windows=(25,), reps=1, train_steps=2,
             train_batch={"dpdm_mnist": 2, "ddpmpp_cifar10": 2}, sample_batch=2, dp_batch=2,
             overrides=dict(channels=8, num_res_blocks=1, channel_mult=(1,), attn_resolutions=()),
             train_rows=2, sample_rows=(0, 3), dp_ks=(4,), need_s=0.0,
             plan=(("mlp", 4, "float32"), ("mlp", 32, "float32"), ("exact", 4, "float32"), ("mlp", 4, "bfloat16")))
#: XLA's cheap-compile options, set for --quick (its times are not measurements; compiling dominates).
CHEAP_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
T0 = time.perf_counter()


def log(msg: str) -> None:
    """A progress line with the elapsed wall time, flushed at once."""
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


# -- device peak and MFU ---------------------------------------------------------------------------


def device_model(kind: str) -> str | None:
    """The :data:`PEAK_TFLOPS` row of a ``device_kind`` string (``None``: not in the table)."""
    k = kind.upper()
    for chip in ("H200", "H100"):
        if chip in k:
            form = "NVL" if "NVL" in k else "PCIe" if "PCIE" in k else "SXM"
            name = f"{chip} {form}"
            return name if name in PEAK_TFLOPS else None
    return None


def peak_flops(kind: str, dtype: str) -> float | None:
    """Peak dense FLOP/s of device ``kind`` for ``dtype`` (``float32``, ``tensorfloat32``, ``bfloat16``)."""
    model = device_model(kind)
    return None if model is None else PEAK_TFLOPS[model][dtype] * 1e12


def mfu(flops: float, seconds: float, kind: str, dtype: str) -> float | None:
    """Model FLOP utilisation ``flops / seconds / peak``; ``None`` for an unknown device."""
    peak = peak_flops(kind, dtype)
    return None if peak is None or not seconds > 0 else flops / seconds / peak


# -- time budget, sections, timing -----------------------------------------------------------------


class Clock:
    """Cumulative deadlines: section ``i`` may start measurements until ``sum(shares[:i+1]) x total``."""

    def __init__(self, total_s: float, sections=SECTIONS):
        self.total_s, self.start = float(total_s), time.perf_counter()
        sections = [s for s in SECTIONS if s in sections]          # run order, whatever the given order
        weight = sum(SHARES[s] for s in sections) or 1.0
        acc, self.deadline = 0.0, {}
        for s in sections:
            acc += SHARES[s] / weight
            self.deadline[s] = self.start + acc * self.total_s

    def left(self, section: str) -> float:
        return self.deadline[section] - time.perf_counter()

    def exhausted(self) -> bool:
        return time.perf_counter() >= self.start + self.total_s


def run_section(name: str, fn, clock: Clock, *args) -> dict:
    """``fn(clock, *args) -> dict`` guarded: errors become a string, an exhausted budget a note."""
    if clock.exhausted() or clock.left(name) <= 0:
        log(f"{name}: skipped (time budget exhausted)")
        return {"status": "skipped", "note": f"time budget of {clock.total_s:g} s exhausted before this section"}
    log(f"{name}: start ({clock.left(name):.0f} s of its share left)")
    t = time.perf_counter()
    try:
        out = fn(clock, *args)
        rows = out.get("runs", [])
        bad = [r for r in rows if "error" in r or "skipped" in r]
        out["status"] = "partial" if bad else "ok"
    except Exception as e:  # noqa: BLE001 -- the suite must survive any failure
        out = {"status": "error", "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()[-2000:]}
        log(f"{name}: ERROR {type(e).__name__}: {e}")
    out["section_s"] = time.perf_counter() - t
    return out


def guarded(rows: list, clock: Clock, section: str, label: dict, fn, need_s: float = 0.0) -> dict | None:
    """Append ``{**label, **fn()}`` to ``rows``; an error, or a share with ``<= need_s`` seconds left, is
    recorded instead."""
    if clock.left(section) <= need_s:
        rows.append({**label, "skipped": f"section's share of the time budget exhausted ({need_s:g} s needed)"})
        return None
    try:
        row = {**label, **fn()}
    except Exception as e:  # noqa: BLE001
        row = {**label, "error": f"{type(e).__name__}: {e}"}
        log(f"{section}: {label} ERROR {row['error']}")
    rows.append(row)
    return row


def best_time(fn, reps: int, max_s: float = 3.0) -> float:
    """Best wall time of ``reps`` calls of ``fn`` (already compiled and warm); stops after ``max_s``."""
    best, spent = math.inf, 0.0
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent > max_s:
            break
    return best


def compiled(jitted, *args):
    """``(executable, seconds)`` of lowering and compiling a jitted function for ``args``."""
    t = time.perf_counter()
    exe = jitted.lower(*args).compile()
    return exe, time.perf_counter() - t


# -- Picard ----------------------------------------------------------------------------------------


def picard_models(sde):
    """``name -> eps(x, t)``: the exact mixture eps and a random-init ScoreMLP(256, 3) eps."""
    module = ScoreMLP(width=256, depth=3)
    params = init_params(module, jax.random.PRNGKey(1), (1, 2))
    apply_fn = make_apply(module)
    return {"exact": nine_gaussians().eps_fn(sde), "mlp": lambda x, t: apply_fn(params, x, t)}


def picard_plan(batches) -> list[tuple[str, int, str]]:
    """``(model, batch, precision)`` in priority order: the MLP claims first."""
    small, large = batches
    plan = [("mlp", small, "float32"), ("mlp", large, "float32"), ("exact", small, "float32"),
            ("exact", large, "float32")]
    return plan + [("mlp", b, p) for p in ("tensorfloat32", "bfloat16") for b in (small, large)]


def sequential_run(rule, model, shape, grid, precision, key, reps):
    """The sequential baseline: samples, best seconds, compile seconds."""
    def run(k):
        with precision_context(precision):
            return sample(rule, model, k, shape, grid)[0]

    exe, c_s = compiled(jax.jit(run), key)
    x = jax.block_until_ready(exe(key))
    return x, best_time(lambda: exe(key), reps), c_s


def picard_run(rule, model, shape, grid, precision, key, window, tol, reps, x_seq, x_fp32):
    """One ``picard_sample`` configuration against the sequential samples."""
    cache, tune_s = WindowCache(), 0.0
    if window == "auto":
        t = time.perf_counter()
        auto_window(rule, model, shape, grid, precision=precision, cache=cache)
        tune_s = time.perf_counter() - t

    def call():
        return picard_sample(rule, model, key, shape, grid, window=window, tol=tol, precision=precision,
                             window_cache=cache)

    t = time.perf_counter()
    x, info = jax.block_until_ready(call())
    first = time.perf_counter() - t
    best = best_time(lambda: call()[0], reps)

    def rel(ref):
        return None if ref is None else float(jnp.max(jnp.abs(x - ref)) / jnp.max(jnp.abs(ref)))

    return {"window": int(info["window"]), "iterations": int(info["iterations"]), "nfe": int(info["nfe"]),
            "converged": bool(info["converged"]), "picard_s": best, "compile_s": max(first - best, 0.0),
            "tune_s": tune_s, "max_rel_diff": rel(x_seq), "max_rel_diff_vs_fp32": rel(x_fp32)}


def _target(rows, pred, goal, label):
    """Whether the best converged speed-up of ``rows`` matching ``pred`` reaches ``goal``."""
    rs = [r for r in rows if pred(r) and r.get("converged") and "speedup" in r]
    if not rs:
        return {"target": goal, "holds": None, "note": f"no converged run ({label})"}
    r = max(rs, key=lambda r: r["speedup"])
    return {"target": goal, "holds": r["speedup"] >= goal, "best_speedup": r["speedup"], "batch": r["batch"],
            "window": r["window_arg"], "precision": r["precision"]}


def _never_slower(rows, window_arg):
    rs = [r for r in rows if r["window_arg"] == window_arg and "speedup" in r]
    if not rs:
        return {"holds": None, "note": f"no run with window {window_arg}"}
    worst = min(rs, key=lambda r: r["speedup"])
    return {"holds": worst["speedup"] >= 0.95, "min_speedup": worst["speedup"],
            "at": {k: worst[k] for k in ("model", "batch", "precision")}}


def picard_targets(rows, batches) -> dict:
    small, large = batches
    return {
        "mlp_small_batch_ge_15x": _target(rows, lambda r: r["model"] == "mlp" and r["batch"] == small, 15.0,
                                          f"mlp batch {small}"),
        "mlp_large_batch_ge_3x": _target(rows, lambda r: r["model"] == "mlp" and r["batch"] == large, 3.0,
                                         f"mlp batch {large}"),
        "default_window_never_slower": _never_slower(rows, "full"),
        "auto_window_never_slower": _never_slower(rows, "auto"),
    }


def picard_section(clock: Clock, cfg: dict) -> dict:
    sde, n, tol = VPSDE(), cfg["steps"], 0.02
    rule, grid, key = ddpm_rule(sde), uniform_grid(n), jax.random.PRNGKey(0)
    models = picard_models(sde)
    windows = [("full", None), ("auto", "auto")] + [(str(w), w) for w in cfg["windows"]]
    rows, seq_rows, fp32 = [], [], {}
    for model, batch, precision in cfg["plan"] or picard_plan(cfg["batches"]):
        shape, label = (batch, 2), {"model": model, "batch": batch, "precision": precision}
        seq = guarded(seq_rows, clock, "picard", label, lambda: dict(zip(
            ("x", "sequential_s", "compile_s"),
            sequential_run(rule, models[model], shape, grid, precision, key, cfg["reps"]))))
        if seq is None or "x" not in seq:
            last = seq_rows[-1]
            reason = f"sequential baseline: {last.get('skipped') or 'failed: ' + last.get('error', '?')}"
            rows += [{**label, "window_arg": name, "skipped": reason} for name, _ in windows]
            continue
        x_seq = seq.pop("x")
        if precision == "float32":
            fp32[(model, batch)] = x_seq
        log(f"picard: {model} batch {batch} {precision}: sequential {seq['sequential_s'] * 1e3:.2f} ms")
        for name, w in windows:
            row = guarded(rows, clock, "picard", {**label, "window_arg": name}, lambda w=w: picard_run(
                rule, models[model], shape, grid, precision, key, w, tol, cfg["reps"], x_seq,
                fp32.get((model, batch))))
            if row and "picard_s" in row:
                row.update(sequential_s=seq["sequential_s"], speedup=seq["sequential_s"] / row["picard_s"])
                log(f"picard:   window {name} (p={row['window']}): {row['iterations']} it, "
                    f"{row['picard_s'] * 1e3:.2f} ms, {row['speedup']:.2f}x, rel diff {row['max_rel_diff']:.1e}, "
                    f"compile {row['compile_s']:.1f} s, tune {row['tune_s']:.1f} s")
    return {"n_steps": n, "tol": tol, "sampler": "ddpm", "batches": list(cfg["batches"]),
            "runs": rows, "sequential": seq_rows, "targets": picard_targets(rows, cfg["batches"])}


# -- DDPM++ networks: training, sampling, DP-SGD ---------------------------------------------------


def preset_net(name: str, dtype: str, overrides: dict):
    """``(module, apply_fn, image_shape)`` of a preset, unconditional, in compute ``dtype``.

    ``overrides`` (``--quick``) shrink the network (the middle block keeps its attention).
    """
    image_shape = PRESETS[name].image_shape
    module = unet_preset(name, dtype=DTYPES[dtype], num_classes=None, **overrides)
    return module, make_apply(module), image_shape


def images(key, batch: int, image_shape) -> jax.Array:
    """A stand-in data batch ``(batch, H, W, C)`` (timing does not depend on the values)."""
    return jax.random.normal(key, (batch, *image_shape)) * 0.5


def timed_steps(exe, state, *args, steps: int, reps: int) -> float:
    """Best seconds per step over ``reps`` runs of ``steps`` chained steps (state threaded through)."""
    def run():
        s = state
        for _ in range(steps):
            s, metrics = exe(s, *args)
        return s, metrics

    jax.block_until_ready(run())
    return best_time(run, reps, max_s=10.0) / steps


def train_one(name: str, dtype: str, cfg: dict, kind: str, cache: dict) -> dict:
    params = preset_params(name, cfg["overrides"], cache)
    _, apply_fn, image_shape = preset_net(name, dtype, cfg["overrides"])
    batch = cfg["train_batch"][name]
    x = images(jax.random.PRNGKey(2), batch, image_shape)
    opt = train.make_optimizer(2e-4)
    state = train.create_train_state(params, opt, jax.random.PRNGKey(3))
    step = train.make_train_step(edm_loss(edm_config()), apply_fn, opt)
    exe, c_s = compiled(step, state, x)
    step_s = timed_steps(exe, state, x, steps=cfg["train_steps"], reps=cfg["reps"])
    flops = cache.get(("step_flops", name))
    if flops is None:
        t = jnp.ones((batch,))
        flops = cache[("step_flops", name)] = matmul_flops(step, state, x)
        cache[("fwd_flops", name)] = matmul_flops(apply_fn, params, x, t)
    cache[("nondp_step", name, dtype, batch)] = step_s
    peak_dtype = "tensorfloat32" if dtype == "float32" else dtype
    return {"batch": batch, "images_per_s": batch / step_s, "step_s": step_s, "compile_s": c_s,
            "step_flops": flops, "fwd_flops": cache[("fwd_flops", name)],
            "mfu": mfu(flops, step_s, kind, peak_dtype), "mfu_peak": peak_dtype}


def preset_params(name: str, overrides: dict, cache: dict):
    """Random-init parameters of a preset (float32; the same tree for every compute dtype), memoised."""
    if ("params", name) not in cache:
        module, _, image_shape = preset_net(name, "float32", overrides)
        cache[("params", name)] = init_params(module, jax.random.PRNGKey(0), (1, *image_shape))
    return cache[("params", name)]


def train_section(clock: Clock, cfg: dict, kind: str, cache: dict) -> dict:
    rows = []
    order = (("dpdm_mnist", "float32"), ("ddpmpp_cifar10", "bfloat16"), ("ddpmpp_cifar10", "float32"),
             ("dpdm_mnist", "bfloat16"))  # priority: dp_sgd reuses the first; the second is the MFU headline
    for name, dtype in order[:cfg["train_rows"]]:
        row = guarded(rows, clock, "train", {"preset": name, "dtype": dtype},
                      lambda: train_one(name, dtype, cfg, kind, cache), cfg["need_s"])
        if row and "images_per_s" in row:
            log(f"train: {name} {dtype}: {row['images_per_s']:.1f} img/s (batch {row['batch']}), "
                f"compile {row['compile_s']:.1f} s, MFU {_fmt(row['mfu'])}")
    return {"loss": "edm", "runs": rows}


def sampler_fns(sde, steps: dict):
    """``name -> (rule, grid, eps -> model_fn)``."""
    return {
        f"ddim_{steps['ddim']}": (ddim_rule(sde), time_grid(steps["ddim"], "uniform", 1e-3, sde.T, sde=sde),
                                  lambda eps: eps),
        f"dpmpp_2m_{steps['dpmpp_2m']}": (dpmpp_2m_rule(sde),
                                          time_grid(steps["dpmpp_2m"], "log_snr", 1e-3, sde.T, sde=sde),
                                          lambda eps: x0_from_eps(sde, eps)),
    }


def sample_one(rule, grid, to_model, apply_fn, params, shape, reps) -> dict:
    def run(p, k):
        x, info = sample(rule, to_model(lambda x, t: apply_fn(p, x, t)), k, shape, grid)
        return x, info["nfe"]

    key = jax.random.PRNGKey(4)
    exe, c_s = compiled(jax.jit(run), params, key)
    x, nfe = jax.block_until_ready(exe(params, key))
    s = best_time(lambda: exe(params, key)[0], reps, max_s=10.0)
    return {"batch": shape[0], "nfe": int(nfe), "images_per_s": shape[0] / s, "sample_s": s, "compile_s": c_s,
            "finite": bool(jnp.all(jnp.isfinite(x)))}


def sampling_section(clock: Clock, cfg: dict, cache: dict) -> dict:
    name, sde, rows = "ddpmpp_cifar10_s64", VPSDE(), []
    params = preset_params(name, cfg["overrides"], cache)
    samplers = sampler_fns(sde, {"ddim": 50, "dpmpp_2m": 10})
    plan = [(d, s) for d in ("float32", "bfloat16") for s in samplers]
    for i in cfg["sample_rows"]:
        dtype, sampler = plan[i]
        rule, grid, to_model = samplers[sampler]
        _, apply_fn, image_shape = preset_net(name, dtype, cfg["overrides"])
        shape = (cfg["sample_batch"], *image_shape)
        row = guarded(rows, clock, "sampling", {"sampler": sampler, "dtype": dtype},
                      lambda: sample_one(rule, grid, to_model, apply_fn, params, shape, cfg["reps"]), cfg["need_s"])
        if row and "images_per_s" in row:
            log(f"sampling: {sampler} {dtype}: {row['images_per_s']:.1f} img/s, compile {row['compile_s']:.1f} s")
    return {"preset": name, "runs": rows}


def dp_one(k: int | None, params, cfg: dict, cache: dict) -> dict:
    name, batch = "dpdm_mnist", cfg["dp_batch"]
    _, apply_fn, image_shape = preset_net(name, "float32", cfg["overrides"])
    x = images(jax.random.PRNGKey(5), batch, image_shape)
    opt = train.make_optimizer(2e-4)
    state = train.create_train_state(params, opt, jax.random.PRNGKey(6))
    loss = edm_loss(edm_config())
    if k is None:
        cached = cache.get(("nondp_step", name, "float32", batch))
        if cached is not None:
            return {"batch": batch, "step_s": cached, "compile_s": None, "reused_from": "train"}
        exe, c_s = compiled(train.make_train_step(loss, apply_fn, opt), state, x)
        return {"batch": batch, "step_s": timed_steps(exe, state, x, steps=cfg["train_steps"], reps=cfg["reps"]),
                "compile_s": c_s}
    step = make_dp_train_step(loss, apply_fn, opt, clip=1.0, noise_multiplier=1.0, expected_batch_size=float(batch),
                              multiplicity=k)
    mask = jnp.ones((batch,), bool)
    exe, c_s = compiled(step, state, x, mask)
    return {"batch": batch, "step_s": timed_steps(exe, state, x, mask, steps=cfg["train_steps"], reps=cfg["reps"]),
            "compile_s": c_s}


def dp_section(clock: Clock, cfg: dict, cache: dict) -> dict:
    params = preset_params("dpdm_mnist", cfg["overrides"], cache)
    rows = []
    for k in (None, *cfg["dp_ks"]):
        row = guarded(rows, clock, "dp_sgd", {"K": k, "dp": k is not None}, lambda k=k: dp_one(k, params, cfg, cache),
                      cfg["need_s"])
        if row and "step_s" in row:
            log(f"dp_sgd: {'non-DP' if k is None else f'K={k}'}: {row['step_s'] * 1e3:.2f} ms/step")
    base = next((r["step_s"] for r in rows if r["K"] is None and "step_s" in r), None)
    ratio = {str(r["K"]): r["step_s"] / base for r in rows if r["K"] is not None and "step_s" in r and base}
    return {"preset": "dpdm_mnist", "dtype": "float32", "batch": cfg["dp_batch"], "clip": 1.0,
            "noise_multiplier": 1.0, "runs": rows, "ratio_vs_nondp": ratio}


# -- report ----------------------------------------------------------------------------------------


def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def print_tables(res: dict) -> None:
    p = res.get("picard", {})
    print(f"\nPicard vs sequential ({p.get('n_steps')}-step DDPM, nine Gaussians, tol {p.get('tol')}): "
          f"{p.get('status')}")
    print(f"{'model':<6}{'batch':>6}{'precision':>14}{'window':>7}{'p':>6}{'iters':>6}{'seq ms':>9}"
          f"{'picard ms':>11}{'speedup':>9}{'rel diff':>10}{'compile s':>10}")
    for r in p.get("runs", []):
        if "picard_s" not in r:
            print(f"{r['model']:<6}{r['batch']:>6}{r['precision']:>14}{r['window_arg']:>7}  "
                  f"{r.get('error') or r.get('skipped')}")
            continue
        print(f"{r['model']:<6}{r['batch']:>6}{r['precision']:>14}{r['window_arg']:>7}{r['window']:>6}"
              f"{r['iterations']:>6}{r['sequential_s'] * 1e3:>9.2f}{r['picard_s'] * 1e3:>11.2f}"
              f"{r['speedup']:>9.2f}{r['max_rel_diff']:>10.1e}{r['compile_s']:>10.2f}")
    for name, t in p.get("targets", {}).items():
        print(f"  target {name}: holds={t.get('holds')} "
              f"({_fmt(t.get('best_speedup', t.get('min_speedup')))}x; {t.get('note', '')})")
    for sec, cols in (("train", ("preset", "dtype", "batch", "images_per_s", "compile_s", "mfu")),
                      ("sampling", ("sampler", "dtype", "batch", "nfe", "images_per_s", "compile_s")),
                      ("dp_sgd", ("K", "batch", "step_s", "compile_s"))):
        s = res.get(sec, {})
        print(f"\n{sec}: {s.get('status')} {s.get('error') or s.get('note') or ''}")
        print("".join(f"{c:>16}" for c in cols))
        for r in s.get("runs", []):
            extra = r.get("error") or r.get("skipped") or ""
            print("".join(f"{_fmt(r.get(c)):>16}" for c in cols) + f"  {extra}")
        if sec == "dp_sgd" and s.get("ratio_vs_nondp"):
            print("  DP step / non-DP step: " + ", ".join(f"K={k}: {v:.2f}" for k, v in s["ratio_vs_nondp"].items()))


def _clean(v):
    """JSON-safe: non-finite floats become ``None``."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code paths (CPU, < 2 min)")
    ap.add_argument("--json", default=None, help="also write the JSON object to this file")
    ap.add_argument("--time-budget", type=float, default=420.0, help="seconds for all sections (default 420)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = ap.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    cfg = QUICK if args.quick else FULL
    if args.quick:  # before the first jax.devices(): XLA reads its flags when the backend starts
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CHEAP_COMPILE}".strip()
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", str(dev))
    log(f"gpu_suite: backend {jax.default_backend()}, {jax.device_count()} x {kind}, budget {args.time_budget:g} s, "
        f"{'quick' if args.quick else 'full'} sizes")
    clock, cache = Clock(args.time_budget, sections), {}
    runners = {"picard": (picard_section, cfg), "train": (train_section, cfg, kind, cache),
               "sampling": (sampling_section, cfg, cache), "dp_sgd": (dp_section, cfg, cache)}
    res = {"suite": "gpu_suite", "quick": args.quick, "backend": jax.default_backend(), "device_kind": kind,
           "device_model": device_model(kind), "device_count": jax.device_count(), "jax_version": jax.__version__,
           "time_budget_s": args.time_budget}
    for name in SECTIONS:
        if name in sections:
            fn, *rest = runners[name]
            res[name] = run_section(name, fn, clock, *rest)
        else:
            res[name] = {"status": "skipped", "note": "not selected (--sections)"}
        res["sections"] = {s: res[s]["status"] for s in SECTIONS if s in res}
        res["wall_s"] = time.perf_counter() - T0
        write_json(args.json, res)      # after every section: a killed run still leaves its results
    res = _clean(res)
    print_tables(res)
    print(json.dumps(res), flush=True)
    return res


def write_json(path: str | None, res: dict) -> None:
    """Write ``res`` (JSON-safe) to ``path`` atomically (``None``: nothing)."""
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(_clean(res)) + "\n")
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
