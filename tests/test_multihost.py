"""Multi-host on one machine: 2 local processes joined by ``jax.distributed.initialize`` (gloo CPU
collectives), each with one CPU device, against the same code in a single process.

- Training: each process feeds its slice of the global batch; 30 steps with checkpoints every 10
  must give the parameters (and EMA) of one process with the whole batch on 2 devices, to 1e-6.
- Picard: ``picard_sample`` sharded over both processes' devices equals the sequential executor.

Every subprocess is bounded in time and killed on failure (no stray processes).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("multihost_worker.py")
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(mode: str, nproc: int, out: Path, devices_per_process: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(WORKER.parent.parent),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), mode, str(i), str(nproc), str(port), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(nproc)]
    try:
        logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{mode} worker failed (exit {p.returncode}):\n{log[-4000:]}"
    with np.load(out / f"{mode}.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.slow
def test_two_process_training_equals_one_process(tmp_path):
    multi = _run("train", 2, tmp_path / "multi", devices_per_process=1)
    single = _run("train", 1, tmp_path / "single", devices_per_process=2)
    assert list(multi["ckpt_steps"]) == [10, 20, 30]
    leaves = sorted(k for k in single if k.startswith("leaf"))
    assert leaves and sorted(k for k in multi if k.startswith("leaf")) == leaves
    for k in leaves:
        np.testing.assert_allclose(multi[k], single[k], rtol=0, atol=1e-6, err_msg=k)
    # training moved the parameters (the comparison is not between two copies of the init)
    assert any(np.abs(single[k]).max() > 0 for k in leaves)


@pytest.mark.slow
def test_two_process_picard_equals_sequential(tmp_path):
    r = _run("picard", 2, tmp_path / "picard", devices_per_process=1)
    assert int(r["devices"]) == 2
    assert r["picard"].shape == r["sequential"].shape == (8, 2)
    np.testing.assert_allclose(r["picard"], r["sequential"], rtol=1e-4, atol=1e-5)
