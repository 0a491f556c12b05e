"""One process of the 2-process multi-host checks in ``test_multihost.py`` (not collected by pytest).

Usage: ``python multihost_worker.py MODE PROCESS_ID NUM_PROCESSES PORT OUT_DIR``; ``MODE`` is
``train`` (data-parallel training, each process feeding its slice of the global batch, with
checkpoints) or ``picard`` (a Picard solve sharded over every process's devices). Process 0
writes the result to ``OUT_DIR/<mode>.npz``. With ``NUM_PROCESSES == 1`` the same code runs as the
single-process reference (whole batch in one process).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

GLOBAL_BATCH = 64
STEPS = 30


def _init(process_id: int, num_processes: int, port: int) -> None:
    jax.config.update("jax_platforms", "cpu")
    if num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=60)


def _train(out_dir: Path) -> dict:
    import diffjax as dj
    from diffjax import data, nn, train

    sde = dj.VPSDE()
    module = nn.ScoreMLP(width=32, depth=2)
    params = nn.init_params(module, jax.random.PRNGKey(0), (1, 2))
    local = GLOBAL_BATCH // jax.process_count()
    lo = jax.process_index() * local

    def data_fn(step):  # this process's slice of the global batch of step `step`
        return data.toy_batch("swiss_roll", 0, step, GLOBAL_BATCH)[lo:lo + local]

    state = train.train(dj.losses.dsm_loss(sde), nn.make_apply(module), params, data_fn, steps=STEPS,
                        batch_size=GLOBAL_BATCH, out_dir=out_dir / "run", config={"test": "multihost"},
                        ckpt_every=10, log_every=10, progress=False, lr=1e-3, log=lambda s: None)
    flat = jax.tree_util.tree_leaves(jax.device_get((state.params, state.ema_params)))
    steps = sorted(int(p.name) for p in (out_dir / "run" / "checkpoints").iterdir() if p.name.isdigit())
    return {**{f"leaf{i}": x for i, x in enumerate(flat)}, "ckpt_steps": steps}


def _picard() -> dict:
    import diffjax as dj
    from jax.experimental import multihost_utils

    sde = dj.VPSDE()
    eps_fn = dj.analytic.nine_gaussians().eps_fn(sde)
    rule = dj.samplers.ddpm_rule(sde)
    grid = dj.schedules.uniform_grid(64, t_min=1e-3)
    key, shape = jax.random.PRNGKey(3), (8, 2)
    seq, _ = dj.sample(rule, eps_fn, key, shape, grid)
    par, info = dj.picard_sample(rule, eps_fn, key, shape, grid, window=64, tol=0.0,
                                 devices=jax.devices())
    par = multihost_utils.process_allgather(par, tiled=True)
    return {"sequential": jax.device_get(seq), "picard": par,
            "iterations": int(jax.device_get(info["iterations"])), "devices": len(jax.devices())}


def main(argv: list[str]) -> None:
    import numpy as np

    mode, pid, nproc, port, out = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4])
    _init(pid, nproc, port)
    result = _train(out) if mode == "train" else _picard()
    if jax.process_index() == 0:
        np.savez(out / f"{mode}.npz", **{k: np.asarray(v) for k, v in result.items()})
    if nproc > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
