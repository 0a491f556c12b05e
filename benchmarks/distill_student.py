"""Knowledge distillation (thesis eq. 5.6) vs DSM training (eq. 5.4) of small students on a 2-D mixture.

One teacher (``ScoreMLP(width=128, depth=3)``, eps-prediction, VPSDE, DSM) is trained on the 9-Gaussian
layout of thesis eq. (2.100) with component std 0.1. Students ``ScoreMLP(width=w, depth=2)`` for several
widths are then trained twice with the SAME initialisation, steps (quick: 1500), batch size (64),
optimiser (Adam, cosine decay, EMA 0.99) and PRNG stream:

* ``kd``: :func:`diffjax.distill.kd_loss`, regressing ``eps_theta(x_t, t)`` on the frozen teacher's
  ``eps_phi(x_t, t)`` (eq. 5.6 with ``lambda_sigma = 1/sigma^2``; the teacher runs inside the jitted step);
* ``dsm``: :func:`diffjax.losses.dsm_loss` on the data (the noise ``eps`` as target).

Each student samples with 100-step DDIM (uniform grid to ``t_min = 1e-3``); the score is the MMD
(Gaussian kernel, bandwidth 0.1 = the component std) to exact samples of the mixture.

Prints a table, then ONE JSON line: {"students": {"<width>": {"kd": mmd, "dsm": mmd}, ...}, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from genie_distill import fit  # noqa: E402  (shared training loop)

from diffjax.analytic._mixture import nine_gaussians  # noqa: E402
from diffjax.distill import kd_loss  # noqa: E402
from diffjax.losses import dsm_loss  # noqa: E402
from diffjax.metrics import mmd  # noqa: E402
from diffjax.nn.apply import init_params, make_apply  # noqa: E402
from diffjax.nn.mlp import ScoreMLP  # noqa: E402
from diffjax.samplers.ode_rules import ddim_rule  # noqa: E402
from diffjax.samplers.sequential import sample  # noqa: E402
from diffjax.schedules import uniform_grid  # noqa: E402
from diffjax.sde._scalar import VPSDE  # noqa: E402

T_MIN = 1e-3
BANDWIDTH = 0.1
STUDENT_BATCH = 64


def run(*, quick: bool, seed: int = 0) -> dict:
    sde, mix = VPSDE(), nine_gaussians(std=0.1)
    sampler = lambda k, n: mix.sample(k, n).astype(jnp.float32)
    widths = [16, 32, 64]
    teacher_steps, student_steps = (4000, 1500) if quick else (12000, 4000)
    n_eval = 4000
    key = jax.random.PRNGKey(seed)
    k_init, k_teacher, k_student, k_ref, k_sample = jax.random.split(key, 5)

    tnet = ScoreMLP(width=128, depth=3, time_scale=10.0)
    t_apply = make_apply(tnet)
    t0 = time.time()
    teacher, tl = fit(dsm_loss(sde, t_min=T_MIN), t_apply, init_params(tnet, k_init, (8, 2)), sampler,
                      steps=teacher_steps, batch=512, lr=3e-3, key=k_teacher)
    t_teacher = time.time() - t0
    teacher_eps = lambda x, t: t_apply(teacher, x, t)

    ref = sampler(k_ref, n_eval)
    shape = (n_eval, 2)

    def evaluate(apply_fn, params):
        x, _ = jax.jit(lambda p: sample(ddim_rule(sde), lambda y, t: apply_fn(p, y, t), k_sample, shape,
                                        uniform_grid(100, T_MIN)))(params)
        return float(mmd(ref, x, BANDWIDTH))

    res = {"students": {}, "teacher": evaluate(t_apply, teacher)}
    losses = {"kd": kd_loss(sde, teacher_eps, t_min=T_MIN), "dsm": dsm_loss(sde, t_min=T_MIN)}
    seconds = {}
    for w in widths:
        net = ScoreMLP(width=w, depth=2, time_scale=10.0)
        apply_fn = make_apply(net)
        p0 = init_params(net, jax.random.fold_in(k_student, w), (8, 2))
        res["students"][str(w)] = {}
        for name, loss in losses.items():
            t0 = time.time()
            params, _ = fit(loss, apply_fn, p0, sampler, steps=student_steps, batch=STUDENT_BATCH, lr=3e-3,
                            key=jax.random.fold_in(k_student, 1000 + w))
            seconds[f"{w}/{name}"] = time.time() - t0
            res["students"][str(w)][name] = evaluate(apply_fn, params)
    res.update(bandwidth=BANDWIDTH, teacher_loss=tl[-1], train_seconds={"teacher": t_teacher, **seconds},
               setting={"data": "nine_gaussians(std=0.1)", "teacher": "ScoreMLP(128, depth 3)",
                        "students": "ScoreMLP(width, depth 2)", "teacher_steps": teacher_steps,
                        "student_steps": student_steps, "batch": STUDENT_BATCH, "sampler": "DDIM 100 steps",
                        "n_eval": n_eval})
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter training, fewer samples (< 2 min on 2 CPU cores)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.time()
    res = run(quick=args.quick, seed=args.seed)
    print(f"KD vs DSM students, MMD (bandwidth {res['bandwidth']}) of 100-step DDIM samples to the mixture "
          f"({time.time() - t0:.1f}s); teacher (width 128): {res['teacher']:.4f}")
    print(f"{'width':>6} {'KD':>9} {'DSM':>9} {'DSM/KD':>7}")
    for w, r in res["students"].items():
        print(f"{w:>6} {r['kd']:9.4f} {r['dsm']:9.4f} {r['dsm'] / max(r['kd'], 1e-12):7.2f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
