"""DSM vs DSM+CDL under parallel (Picard) DDPM sampling on thin 2-D data (CDL Table 1, in spirit).

Two ``ScoreMLP`` eps models of a VP SDE are trained from the same initialisation on the same
swiss-roll batches for the same number of steps, one with plain DSM, one with
``dsm_cdl_loss(sde, cdl_weight=W)`` (CDL eq. 7 with ``zeta ~ U[6, 15]``). Each then generates
``--samples`` points with ``--ddpm-steps``-step ancestral DDPM (``ddpm_rule``), sequentially (``lax.scan``)
and with the Picard executor over the whole trajectory (``window=None``, as in CDL §5.1).

*Picard iterations until the MMD threshold.* ``picard_sample`` reports only its final state, so the
per-iteration samples come from a plain whole-window Picard sweep written here with the same rule, grid
and pre-drawn noise (``prepare``) and the same defect-form update as ``diffjax.samplers.picard``
(``x_{i+1}^{k+1} = F_i(x_i^k) + sum_{j<i} (F_j(x_j^k) - x_{j+1}^k)``), recording the final point after
every iteration in one ``lax.scan`` (one compile, cost = the iterations themselves). It is checked
against ``picard_sample(tol=0, atol=0, max_iters=k)`` (identical map; printed ``curve_check``). The MMD
(``diffjax.metrics.mmd``, CDL App. B.1 bandwidth rule on the reference set) of every iterate is then
compared with the threshold (default ``1.2 x`` the larger of the two models' sequential-sample MMDs,
so that both can reach it; ``--threshold`` overrides).

JSON (last stdout line): ``{"dsm": {...}, "cdl": {...}, "threshold", "config", "seeds"?, "cdl_cost"}``;
per model ``mmd`` (MMD of the converged ``picard_sample`` samples), ``iters`` (Picard iterations until
MMD < threshold; ``null`` if never), ``nfe`` (``iters x ddpm_steps``: the whole window is evaluated each
iteration), ``time_s`` (wall time of those ``iters`` sweeps, compile excluded), plus ``seq_mmd``,
``seq_time_s``, ``picard_iters`` / ``picard_nfe`` / ``picard_time_s`` (``picard_sample`` with ``tol``,
to its own convergence) and ``train_time_s``. With ``--seeds k > 1`` the model entries are means over
seeds and ``"seeds"`` lists the per-seed values. ``cdl_cost`` times one CDL loss+gradient evaluation
batched (one network call on ``2 x examples x draws`` rows) vs the naive Alg. 1 form (a Python loop
over examples, two independent NLL estimates each) and reports the LLR standard error of both.

Usage: ``python benchmarks/cdl_parallel.py [--quick] [--seeds K] [--cdl-weight W] [--threshold T]``.
The paper (dino data, threshold 0.002 on its MMD^2-type score) reports DSM 0.0031 / 36 iterations vs
CDL 0.0012 / 27; compare directions, not numbers (different data, network, budget and MMD scale).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.cdl import dsm_cdl_loss
from diffjax.data.toy import swiss_roll, toy_batch
from diffjax.losses import dsm_loss
from diffjax.metrics import mmd, mmd_bandwidth_cdl
from diffjax.nn import ScoreMLP, init_params, make_apply
from diffjax.noise_classifier import eps_fn_in_log_snr, log_likelihood_ratio, log_snr_nll, noised_nll
from diffjax.samplers._rule import prepare
from diffjax.samplers.picard import picard_sample
from diffjax.samplers.sde_rules import ddpm_rule
from diffjax.samplers.sequential import sample
from diffjax.schedules import uniform_grid
from diffjax.sde._scalar import VPSDE
from diffjax.train import create_train_state, make_optimizer, make_train_step, train_key

DATA = "swiss_roll"


# ----------------------------------------------------------------------------- training


def train_model(loss, apply_fn, params0, *, seed, steps, batch, lr, ema_decay, chunk=100):
    """Adam + EMA with diffjax.train.make_train_step; batch s = toy_batch(seed, s), loss key = fold_in(train_key(seed), s).

    Returns the EMA parameters; ``ema_decay**steps`` must be negligible (the EMA starts at the
    random initialisation: 0.999 over 3000 steps still carries 5% of it).
    """
    opt = make_optimizer(lr, grad_clip=1.0)
    step = make_train_step(loss, apply_fn, opt, ema_decay=ema_decay)
    state = create_train_state(params0, opt, train_key(seed))   # loss noise independent of the data key

    @jax.jit
    def run_chunk(state):
        def body(s, _):
            x = toy_batch(DATA, seed, s.step, batch)
            s, m = step(s, x)
            return s, m["loss"]

        return jax.lax.scan(body, state, None, length=chunk)

    t = time.perf_counter()
    losses = []
    for _ in range(-(-steps // chunk)):
        state, l = run_chunk(state)
        losses.append(float(jnp.mean(l)))
    jax.block_until_ready(state.params)
    return state.ema_params, time.perf_counter() - t, losses


# ----------------------------------------------------------------------------- Picard curve


def picard_curve(rule, model_fn, key, shape, grid, n_iters):
    """Final point after each of ``n_iters`` whole-window Picard iterations (defect form); ``(n_iters, *shape)``."""
    state0, zs, n = prepare(rule, model_fn, key, shape, grid)
    t0, t1 = grid[:-1], grid[1:]
    traj = jnp.broadcast_to(state0, (n + 1,) + state0.shape)
    f = jax.vmap(lambda x, t, tn, z: rule.step(model_fn, x, t, tn, z))

    def it(traj, _):
        y = f(traj[:-1], t0, t1, zs)                               # F_i(x_i^k)
        r = y - traj[1:]                                           # residuals
        excl = jnp.concatenate([jnp.zeros_like(r[:1]), jnp.cumsum(r[:-1], axis=0)], axis=0)
        new = y + excl
        return traj.at[1:].set(new), rule.finalize(model_fn, new[-1], grid[-1])

    _, finals = jax.lax.scan(it, traj, None, length=n_iters)
    return finals


def timed(fn, *args):
    jax.block_until_ready(fn(*args))                               # compile + warm-up
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def evaluate(apply_fn, params, sde, ref, bandwidth, *, key, n_samples, ddpm_steps, tol):
    rule = ddpm_rule(sde)
    grid = uniform_grid(ddpm_steps, t_min=1e-3)
    shape = (n_samples, 2)

    def model(x, t):
        return apply_fn(params, x, t)

    seq = jax.jit(lambda k: sample(rule, model, k, shape, grid)[0])
    x_seq, t_seq = timed(seq, key)
    par = lambda k: picard_sample(rule, model, k, shape, grid, window=None, tol=tol)
    (x_par, info), t_par = timed(par, key)
    k_conv = int(info["iterations"])
    n_iters = min(ddpm_steps, k_conv + 5)
    curve_fn = jax.jit(lambda k: picard_curve(rule, model, k, shape, grid, n_iters))
    finals, t_curve = timed(curve_fn, key)
    # The sweep is picard_sample's map: compare with picard_sample(tol=0, max_iters=k) at one k.
    k_chk = min(5, n_iters)
    x_chk, _ = picard_sample(rule, model, key, shape, grid, window=None, tol=0.0, atol=0.0, max_iters=k_chk)
    chk = float(jnp.max(jnp.abs(x_chk - finals[k_chk - 1])) / jnp.max(jnp.abs(x_chk)))
    mmds = [float(mmd(ref, finals[k], bandwidth)) for k in range(n_iters)]
    return {
        "mmd": float(mmd(ref, x_par, bandwidth)),
        "seq_mmd": float(mmd(ref, x_seq, bandwidth)),
        "seq_time_s": t_seq,
        "picard_iters": k_conv,
        "picard_nfe": int(info["nfe"]),
        "picard_time_s": t_par,
        "picard_converged": bool(info["converged"]),
        "curve": mmds,
        "curve_time_per_iter_s": t_curve / n_iters,
        "curve_check": chk,
    }


def iters_to(curve, threshold):
    for k, v in enumerate(curve):
        if v < threshold:
            return k + 1
    return None


# ----------------------------------------------------------------------------- CDL cost


def cdl_cost(apply_fn, params, sde, x0, key, *, n_draws, zeta=8.0):
    """Time one loss+grad of the batched LLR vs a per-example loop with independent NLLs; LLR std errors."""
    kw = dict(loc=3.0, scale=2.0, clip=5.0)

    def eps_of(p):
        return eps_fn_in_log_snr(sde, lambda x, t: apply_fn(p, x, t))

    def batched(p):
        llr = log_likelihood_ratio(eps_of(p), x0, zeta, key, n_draws, **kw)
        return jnp.mean(jax.nn.softplus(llr))

    def one(p, x, k):
        k1, k2 = jax.random.split(k)
        llr = noised_nll(eps_of(p), x, zeta, k1, n_draws, **kw) - log_snr_nll(eps_of(p), x, k2, n_draws, **kw)
        return jnp.sum(jax.nn.softplus(llr)) / x0.shape[0]

    g_batched = jax.jit(jax.grad(batched))
    g_one = jax.jit(jax.grad(one))
    keys = jax.random.split(key, x0.shape[0])

    def naive(p):
        g = None
        for i in range(x0.shape[0]):
            gi = g_one(p, x0[i:i + 1], keys[i])
            g = gi if g is None else jax.tree_util.tree_map(jnp.add, g, gi)
        return g

    _, t_b = timed(g_batched, params)
    _, t_n = timed(naive, params)
    _, se_common = log_likelihood_ratio(eps_of(params), x0, zeta, key, n_draws, return_std_error=True, **kw)
    _, se_a = noised_nll(eps_of(params), x0, zeta, key, n_draws, return_std_error=True, **kw)
    _, se_b = log_snr_nll(eps_of(params), x0, jax.random.fold_in(key, 1), n_draws, return_std_error=True, **kw)
    return {"examples": int(x0.shape[0]), "draws": n_draws, "zeta": zeta,
            "batched_grad_s": t_b, "naive_loop_grad_s": t_n, "speedup": t_n / t_b,
            "llr_se_common_draws": float(jnp.mean(se_common)),
            "llr_se_independent": float(jnp.mean(jnp.sqrt(se_a**2 + se_b**2)))}


# ----------------------------------------------------------------------------- main


def run_seed(seed, args, sde):
    module = ScoreMLP(width=args.width, depth=args.depth)
    apply_fn = make_apply(module)
    params0 = init_params(module, jax.random.fold_in(jax.random.PRNGKey(seed), 0x1217), (2, 2))
    losses = {
        "dsm": dsm_loss(sde, parameterization="eps"),
        "cdl": dsm_cdl_loss(sde, cdl_weight=args.cdl_weight, n_samples=args.cdl_draws, n_examples=args.cdl_examples),
    }
    ref = swiss_roll(jax.random.fold_in(jax.random.PRNGKey(seed), 0xEEF), args.ref)
    bandwidth = mmd_bandwidth_cdl(ref)
    floor = float(mmd(ref, swiss_roll(jax.random.fold_in(jax.random.PRNGKey(seed), 0xF100), args.samples), bandwidth))
    out, trained = {}, {}
    for name, loss in losses.items():
        params, t_train, curve = train_model(loss, apply_fn, params0, seed=seed, steps=args.train_steps,
                                             batch=args.batch, lr=args.lr, ema_decay=args.ema)
        trained[name] = params
        res = evaluate(apply_fn, params, sde, ref, bandwidth, key=jax.random.PRNGKey(1000 + seed),
                       n_samples=args.samples, ddpm_steps=args.ddpm_steps, tol=args.tol)
        res["train_time_s"] = t_train
        res["final_train_loss"] = curve[-1]
        out[name] = res
    return out, trained, apply_fn, float(bandwidth), floor


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models/samples/steps (< 2 min on 2 cores)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--cdl-weight", type=float, default=1.0)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--tol", type=float, default=0.02, help="picard_sample tolerance")
    ap.add_argument("--train-steps", type=int, default=None, help="override the preset")
    ap.add_argument("--ddpm-steps", type=int, default=None, help="override the preset")
    ap.add_argument("--samples", type=int, default=None, help="override the preset")
    args = ap.parse_args()
    overrides = {k: getattr(args, k) for k in ("train_steps", "ddpm_steps", "samples") if getattr(args, k) is not None}
    if args.quick:
        cfg = dict(train_steps=400, batch=128, width=64, depth=3, samples=300, ref=2000, ddpm_steps=100,
                   cdl_draws=8, cdl_examples=16, lr=2e-3, ema=0.98)
    else:
        cfg = dict(train_steps=6000, batch=256, width=128, depth=3, samples=2000, ref=10000, ddpm_steps=1000,
                   cdl_draws=16, cdl_examples=32, lr=1e-3, ema=0.995)
    cfg.update(overrides)
    for k, v in cfg.items():
        setattr(args, k, v)
    sde = VPSDE()
    per_seed, floors = [], []
    t_all = time.perf_counter()
    for seed in range(args.seeds):
        res, trained, apply_fn, bw, floor = run_seed(seed, args, sde)
        per_seed.append(res)
        floors.append(floor)
    threshold = args.threshold
    if threshold is None:
        threshold = 1.2 * max(r[m]["seq_mmd"] for r in per_seed for m in ("dsm", "cdl"))
    for r in per_seed:
        for m in ("dsm", "cdl"):
            it = iters_to(r[m]["curve"], threshold)
            r[m]["iters"] = it
            r[m]["nfe"] = None if it is None else it * args.ddpm_steps
            r[m]["time_s"] = None if it is None else it * r[m]["curve_time_per_iter_s"]
    x_cost = toy_batch(DATA, 0, 0, args.cdl_examples)
    cost = cdl_cost(apply_fn, trained["cdl"], sde, x_cost, jax.random.PRNGKey(7), n_draws=args.cdl_draws)

    keys = ("mmd", "iters", "nfe", "time_s", "seq_mmd", "seq_time_s", "picard_iters", "picard_nfe",
            "picard_time_s", "train_time_s", "final_train_loss")

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    summary = {m: {k: mean([r[m][k] for r in per_seed]) for k in keys} for m in ("dsm", "cdl")}
    print(f"data={DATA} samples={args.samples} ddpm_steps={args.ddpm_steps} train_steps={args.train_steps} "
          f"cdl_weight={args.cdl_weight} seeds={args.seeds} MMD bandwidth={bw:.3g} threshold={threshold:.4g} "
          f"(data-vs-data MMD floor {np.mean(floors):.4g})")
    print(f"{'model':6s} {'mmd':>8s} {'iters':>6s} {'nfe':>7s} {'time_s':>8s} {'seq_mmd':>8s} {'pic_it':>6s} "
          f"{'pic_s':>7s} {'train_s':>8s}")
    for m in ("dsm", "cdl"):
        s = summary[m]
        fmt = lambda v, f: "-" if v is None else format(v, f)
        print(f"{m:6s} {fmt(s['mmd'], '8.4f')} {fmt(s['iters'], '6.1f')} {fmt(s['nfe'], '7.0f')} "
              f"{fmt(s['time_s'], '8.3f')} {fmt(s['seq_mmd'], '8.4f')} {fmt(s['picard_iters'], '6.1f')} "
              f"{fmt(s['picard_time_s'], '7.3f')} {fmt(s['train_time_s'], '8.1f')}")
    for i, r in enumerate(per_seed):
        for m in ("dsm", "cdl"):
            c = r[m]["curve"]
            print(f"seed {i} {m}: MMD per Picard iteration " + " ".join(f"{v:.3f}" for v in c[:40])
                  + f"  (curve_check rel diff {r[m]['curve_check']:.1e})")
    print(f"CDL loss+grad on {cost['examples']} examples x {cost['draws']} draws: batched {cost['batched_grad_s']*1e3:.1f} ms, "
          f"naive per-example loop {cost['naive_loop_grad_s']*1e3:.1f} ms ({cost['speedup']:.1f}x); LLR std error "
          f"common draws {cost['llr_se_common_draws']:.3g} vs independent {cost['llr_se_independent']:.3g}")
    print(f"total {time.perf_counter() - t_all:.1f} s")
    result = dict(summary)
    result["threshold"] = threshold
    result["mmd_floor"] = float(np.mean(floors))
    result["cdl_cost"] = cost
    result["config"] = {k: getattr(args, k) for k in ("train_steps", "batch", "width", "depth", "samples", "ref",
                                                     "ddpm_steps", "cdl_draws", "cdl_examples", "cdl_weight",
                                                     "tol", "quick")}
    result["config"]["data"] = DATA
    if args.seeds > 1:
        result["seeds"] = [{m: {k: r[m][k] for k in ("mmd", "iters", "nfe", "time_s")} for m in ("dsm", "cdl")}
                           for r in per_seed]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
