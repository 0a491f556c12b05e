"""The ``diffjax`` command end to end: train, kill -9, resume, sample, errors, demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from diffjax.cli import main

def _small(width=32):
    return ["--dataset", "moons", "--sde", "vp", "--batch-size", "64", "--width", str(width), "--depth", "2",
            "--lr", "1e-3", "--warmup", "10", "--log-every", "50", "--no-progress"]


SMALL = _small()


def _train(out, steps, *extra):
    return main(["train", *SMALL, "--steps", str(steps), "--ckpt-every", "100", "--out", str(out), *extra])


def _sample(ckpt, out, method="ddim", *extra):
    assert main(["sample", "--ckpt", str(ckpt), "--method", method, "--steps", "10", "--n", "64", "--seed", "3",
                 "--out", str(out), *extra]) == 0
    return np.load(out)["samples"]


def test_kill9_after_checkpoint_then_resume_gives_identical_samples(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _train(straight, 400) == 0

    # A real process, SIGKILLed once checkpoint 100 exists (mid-run: 400 steps were asked for).
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "diffjax.cli", "train", *SMALL, "--steps", "400", "--ckpt-every", "100",
           "--out", str(killed)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "100").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_present = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert 100 in steps_present and 400 not in steps_present, steps_present

    assert _train(killed, 400, "--resume") == 0
    a = _sample(straight, tmp_path / "a.npz")
    b = _sample(killed, tmp_path / "b.npz")
    assert np.array_equal(a, b)


def test_clear_errors(tmp_path, capsys):
    assert main(["train", "--dataset", "no_such_set", "--steps", "5", "--out", str(tmp_path / "r")]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(tmp_path / "missing"), "--out", str(tmp_path / "s.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err

    run = tmp_path / "run"
    assert _train(run, 20) == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    # same directory, different run identity (width): refused, checkpoint untouched
    code = main(["train", *_small(width=48), "--steps", "40", "--ckpt-every", "100", "--out", str(run), "--resume"])
    assert code == 2 and "width" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    # a method the SDE does not support
    assert main(["sample", "--ckpt", str(run), "--method", "sscs", "--out", str(tmp_path / "s.npz")]) == 2
    assert "not available" in capsys.readouterr().err
    # --dp without a budget is refused before anything is written
    assert main(["train", *SMALL, "--dp", "--epochs", "1", "--out", str(tmp_path / "dp")]) == 2
    assert "--epsilon" in capsys.readouterr().err
    assert not (tmp_path / "dp").exists()


def test_bench_lists_scripts(capsys):
    assert main(["bench", "list"]) == 0
    out = capsys.readouterr().out
    assert "picard" in out and "sampler_speed" in out


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_demo_runs_end_to_end_and_writes_its_png(tmp_path, capsys):
    """A shortened demo (the default recipe at 200 steps, 256 points): every sampler row, the noise
    floor, the Picard note and the PNG; the chunked training (steps_per_call) reaches the end."""
    png = tmp_path / "demo.png"
    assert main(["demo", "--steps", "200", "--n", "256", "--no-progress", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "200 steps of batch 256" in out and "(fresh data)" in out and "parallel rounds" in out
    for label in ("DDIM", "DPM-Solver++ 2M", "EDM Heun", "Euler-Maruyama", "DDPM, Picard"):
        assert label in out
    assert png.stat().st_size > 10_000 and f"wrote {png}" in out
