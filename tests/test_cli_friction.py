"""The ``diffjax`` command's messages: defaults, validation, one-line I/O errors, pictures, next steps."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from diffjax.cli import _build, main

SMALL = ["--dataset", "moons", "--sde", "vp", "--batch-size", "64", "--width", "16", "--depth", "1",
         "--lr", "1e-3", "--warmup", "5", "--log-every", "50", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *SMALL, "--steps", "30", "--ckpt-every", "30", "--out", str(out)]) == 0
    return out


def test_help_shows_defaults_and_required_group(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "required arguments" in text and "(default: 0.001)" in text
    assert "0.015625" in text and "2 CDL examples per batch of 128" in text
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "required arguments" in text and "edm_heun for ve and edm" in text and "sscs for cld" in text


@pytest.mark.parametrize("flags, name", [(["--time-scale", "nan"], "--time-scale"), (["--lr", "-1"], "--lr"),
                                         (["--ema-decay", "1.5"], "--ema-decay"), (["--lr", "inf"], "--lr")])
def test_numeric_flags_are_validated_up_front(tmp_path, capsys, flags, name):
    out = tmp_path / "r"
    assert main(["train", *SMALL, "--steps", "5", "--out", str(out), *flags]) == 2
    assert name in capsys.readouterr().err
    assert not out.exists()


def test_dp_refuses_steps(tmp_path, capsys):
    assert main(["train", *SMALL, "--dp", "--epsilon", "1", "--epochs", "1", "--steps", "500",
                 "--out", str(tmp_path / "dp")]) == 2
    assert "--epochs" in capsys.readouterr().err


def test_missing_privacy_extra_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)   # `import dp_accounting` now fails
    assert main(["train", *SMALL, "--dp", "--epsilon", "1", "--epochs", "1", "--out", str(tmp_path / "dp")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[privacy]'" in err


def test_train_header_next_step_and_resume_advice(run, capsys):
    assert main(["train", *SMALL, "--steps", "30", "--ckpt-every", "30", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "resume=True" not in err


def test_sample_default_method_png_and_weights(run, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(run), "--steps", "5", "--n", "64", "--out", str(out), "--no-ema"]) == 0
    text = capsys.readouterr().out
    assert "ddim" in text and "raw weights of checkpoint step 30" in text
    assert (tmp_path / "s.png").stat().st_size > 1000 and str(tmp_path / "s.png") in text
    assert np.load(out)["samples"].shape == (64, 2)


def test_unwritable_out_is_one_line_with_path(run, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    bad = blocker / "x.npz"
    assert main(["sample", "--ckpt", str(run), "--steps", "3", "--n", "8", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker) in err


def test_deleted_config_item_is_one_line_with_path(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (cfg,) = [p for p in (copy / "checkpoints").rglob("*") if p.is_file() and p.parent.name == "config"
              and p.suffix in ("", ".json")][:1] or [None]
    if cfg is None:   # orbax layout: <step>/config/metadata or a JSON file
        cfg = next(p for p in (copy / "checkpoints").rglob("*") if p.is_file() and "config" in p.parts)
    data = json.loads(cfg.read_text())
    data.pop("data_shape", None)
    cfg.write_text(json.dumps(data))
    assert main(["sample", "--ckpt", str(copy), "--steps", "3", "--n", "8", "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(copy) in err


def test_nll_explains_its_error_bar(run, capsys):
    assert main(["nll", "--ckpt", str(run), "--n", "16", "--no-ema"]) == 0
    text = capsys.readouterr().out
    assert "computing the NLL" in text and "raw weights" in text and "standard error over N=16 points" in text


def test_bench_list_describes_scripts(capsys):
    assert main(["bench", "list"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("picard"))
    assert "Picard" in line and "sequential" in line


def test_edm_runs_accept_multistep_and_ancestral_samplers():
    """D(x, sigma) = 0 (a point mass at 0): every sigma-grid sampler must return exactly x = 0 at sigma = 0."""
    import jax

    config = {"sde": "edm"}
    assert _build.DEFAULT_METHOD["edm"] == "edm_heun" and _build.DEFAULT_METHOD["cld"] == "sscs"
    for method in ("dpmpp_2m", "dpmpp_3m", "unipc", "euler_ancestral", "dpmpp_2s_ancestral"):
        x, info = _build.draw_samples(config, lambda y, s: 0.0 * y, method, key=jax.random.PRNGKey(0), n=4,
                                      steps=6, data_shape=(2,))
        np.testing.assert_allclose(np.asarray(x), 0.0, atol=1e-5, err_msg=method)


def test_flipped_bits_in_parameter_data_exit_2_naming_the_checkpoint(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "flipped"
    shutil.copytree(run, copy)
    files = sorted(f for f in (copy / "checkpoints").rglob("*") if f.is_file() and f.parent.name == "d")
    assert files                      # orbax's array data files
    for f in files:
        data = bytearray(f.read_bytes())
        for i in range(len(data) // 4, len(data), 61):
            data[i] ^= 0x01
        f.write_bytes(bytes(data))
    assert main(["sample", "--ckpt", str(copy), "--steps", "3", "--n", "8", "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(copy) in err
    assert not (tmp_path / "o.npz").exists()
