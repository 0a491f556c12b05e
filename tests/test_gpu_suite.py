"""benchmarks/gpu_suite.py: ``--quick`` runs every section on CPU and reports consistent numbers.

The suite is the one prepared command for accelerator claims; running its ``--quick`` mode here
keeps it from rotting between GPU sessions. No timing is asserted (times on a shared CPU are not
measurements): the checks are on structure, convergence, accuracy and FLOP accounting.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.py"
SECTIONS = ("picard", "train", "sampling", "dp_sgd")


def _run(*args, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)  # one device, as on the accelerator
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_suite") / "out.json"
    r, res = _run("--quick", "--json", str(path))
    assert json.loads(path.read_text()) == res, "--json must hold the same object as the last stdout line"
    return r, res


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_every_section_ok(quick):
    r, res = quick
    for key in ("suite", "quick", "backend", "device_kind", "device_model", "device_count", "jax_version",
                "time_budget_s", "wall_s", "sections", *SECTIONS):
        assert key in res, key
    assert res["quick"] is True and res["backend"] == "cpu" and res["device_model"] is None
    assert res["sections"] == {s: "ok" for s in SECTIONS}, {s: res[s].get("error") for s in SECTIONS}
    assert "Picard vs sequential" in r.stdout and "[" in r.stdout.splitlines()[0]  # table and progress lines


def test_quick_picard_matches_sequential(quick):
    _, res = quick
    p = res["picard"]
    n, (small, large) = p["n_steps"], p["batches"]
    runs = p["runs"]
    combos = {(r["model"], r["batch"], r["precision"]) for r in runs}
    assert {("mlp", small, "float32"), ("mlp", large, "float32"), ("exact", small, "float32")} <= combos
    assert {r["precision"] for r in runs} >= {"float32", "bfloat16"}
    for r in runs:
        assert "error" not in r and "skipped" not in r, r
        assert r["converged"], r
        p_win = r["window"]
        if r["window_arg"] == "full":
            assert p_win == n
        elif r["window_arg"] != "auto":
            assert p_win == int(r["window_arg"])
        assert 1 <= p_win <= n
        # Picard iterations: at most n_steps; nfe = iterations x window (DDPM: 1 NFE/step, no final NFE)
        assert 1 <= r["iterations"] <= n
        assert r["nfe"] == r["iterations"] * p_win
        # the tolerance-stopped fixed point is the sequential trajectory of the same key (tol 0.02)
        assert 0.0 <= r["max_rel_diff"] < 1e-2, r
        if p_win == 1:  # auto fell back to the sequential executor: the very same computation
            assert r["max_rel_diff"] == 0.0 and r["iterations"] == n
        assert r["speedup"] > 0 and r["picard_s"] > 0 and r["compile_s"] >= 0
    if any(r["window"] > 1 for r in runs):
        assert min(r["iterations"] for r in runs if r["window"] == n) < n  # Picard really iterated less
    targets = p["targets"]
    assert set(targets) == {"mlp_small_batch_ge_15x", "mlp_large_batch_ge_3x", "default_window_never_slower",
                            "auto_window_never_slower"}
    assert all(isinstance(t["holds"], bool) for t in targets.values())
    assert targets["mlp_small_batch_ge_15x"]["batch"] == small
    assert targets["mlp_large_batch_ge_3x"]["batch"] == large


def test_quick_train_flops_count_the_backward_pass(quick):
    _, res = quick
    runs = res["train"]["runs"]
    assert {r["preset"] for r in runs} == {"dpdm_mnist", "ddpmpp_cifar10"}
    assert {r["dtype"] for r in runs} == {"float32", "bfloat16"}
    for r in runs:
        assert r["images_per_s"] > 0 and r["step_s"] > 0
        # forward + input/weight gradients of every conv and matmul: 3x the forward MACs, less the
        # input gradient of the first convolution (the data are not differentiated)
        assert 2.5 < r["step_flops"] / r["fwd_flops"] <= 3.0, r
        assert r["mfu"] is None  # CPU: not in the peak table


def test_quick_sampling_and_dp(quick):
    _, res = quick
    runs = res["sampling"]["runs"]
    assert {r["sampler"] for r in runs} == {"ddim_50", "dpmpp_2m_10"}
    assert {r["dtype"] for r in runs} == {"float32", "bfloat16"}
    for r in runs:
        assert r["finite"] and r["images_per_s"] > 0
        assert r["nfe"] == int(r["sampler"].rsplit("_", 1)[1])
    dp = res["dp_sgd"]
    assert [r["K"] for r in dp["runs"]][0] is None and all(r["step_s"] > 0 for r in dp["runs"])
    ks = [str(r["K"]) for r in dp["runs"] if r["dp"]]
    assert ks and set(dp["ratio_vs_nondp"]) == set(ks) and all(v > 0 for v in dp["ratio_vs_nondp"].values())


def test_zero_time_budget_skips_every_section_with_a_note():
    _, res = _run("--quick", "--time-budget", "0", timeout=300)
    for s in SECTIONS:
        assert res[s]["status"] == "skipped" and "budget" in res[s]["note"]


def test_section_error_is_recorded_not_raised(suite):
    clock = suite.Clock(60.0)
    out = suite.run_section("train", lambda clock: 1 / 0, clock)
    assert out["status"] == "error" and out["error"].startswith("ZeroDivisionError")
    rows = []
    assert suite.guarded(rows, clock, "picard", {"model": "x"}, lambda: {"v": int("nan")}) is not None
    assert rows[0]["model"] == "x" and rows[0]["error"].startswith("ValueError")
    spent = suite.Clock(0.0)
    assert suite.guarded(rows, spent, "picard", {"model": "y"}, lambda: {"v": 1}) is None
    assert "skipped" in rows[1]


@pytest.mark.parametrize("kind, model", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"), ("NVIDIA A100-SXM4-80GB", None), ("cpu", None),
])
def test_device_detection(suite, kind, model):
    assert suite.device_model(kind) == model
    peak = suite.peak_flops(kind, "bfloat16")
    assert (peak is None) == (model is None)
    if model is not None:
        # dense peaks: bf16 = 2 x TF32 on Hopper tensor cores; fp32 CUDA cores far below TF32
        assert peak == pytest.approx(2 * suite.peak_flops(kind, "tensorfloat32"), rel=1e-3)
        assert suite.peak_flops(kind, "float32") < suite.peak_flops(kind, "tensorfloat32") / 5
        assert suite.mfu(peak * 0.25, 1.0, kind, "bfloat16") == pytest.approx(0.25)
    else:
        assert suite.mfu(1e12, 1.0, kind, "bfloat16") is None


def test_clock_shares_follow_the_run_order(suite):
    clock = suite.Clock(100.0, ["dp_sgd", "picard"])     # given out of order
    shares = {s: clock.deadline[s] - clock.start for s in clock.deadline}
    total = suite.SHARES["picard"] + suite.SHARES["dp_sgd"]
    assert shares["picard"] == pytest.approx(100.0 * suite.SHARES["picard"] / total)
    assert shares["dp_sgd"] == pytest.approx(100.0)
