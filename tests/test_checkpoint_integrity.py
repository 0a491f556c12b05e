"""Checkpoint integrity: checksums verified on every restore, edited/damaged/missing checkpoints refused.

Every damaged checkpoint must raise ``diffjax.train.CheckpointError`` (a ``ValueError``) whose
message names the checkpoint path (and the leaf or key), never an orbax traceback and never a
silently different or older model.
"""

import hashlib
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from diffjax.nn.apply import init_params, make_apply
from diffjax.nn.mlp import ScoreMLP
from diffjax.train import (CheckpointError, create_train_state, latest_step, load_config, make_optimizer,
                           restore_checkpoint, restore_params, train, validate_config)

MODEL = ScoreMLP(width=16, depth=1, time_dim=8)
CONFIG = {"model": "mlp", "sde": "vp", "data_shape": [2], "width": 16}
KERNEL = "params/params/dense_0/kernel"  # a parameter leaf's name in the checksum manifest


def _loss(apply_fn, params, key, x0, *, reduce=True):
    t = jax.random.uniform(key, (x0.shape[0],), minval=0.1, maxval=1.0)
    per = jnp.mean((apply_fn(params, x0, t) - x0) ** 2, axis=-1)
    return (jnp.mean(per) if reduce else per), {}


def _data(step):
    return np.random.default_rng([3, int(step)]).normal(size=(8, 2)).astype(np.float32)


def _params(model=MODEL):
    return init_params(model, jax.random.PRNGKey(0), (1, 2))


def _train(out, steps=2, resume=False):
    return train(_loss, make_apply(MODEL), _params(), _data, steps=steps, out_dir=out, config=CONFIG, lr=1e-2,
                 batch_size=8, ckpt_every=1, log_every=1, progress=False, prefetch=0, resume=resume,
                 log=lambda s: None)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity") / "run"
    state = _train(out)
    return out, jax.device_get(state)


@pytest.fixture
def run(base, tmp_path):
    """A fresh copy of the 2-step run (checkpoints 1 and 2) and its final state."""
    out = tmp_path / "run"
    shutil.copytree(base[0], out)
    return out, base[1]


def _template(state):
    opt = make_optimizer(1e-2)
    return create_train_state(jax.tree_util.tree_map(jnp.zeros_like, state.params), opt, jax.random.PRNGKey(9))


def _sha(a):
    a = np.asarray(a)
    return hashlib.sha256(f"{a.dtype.name}:{tuple(a.shape)}".encode() + a.tobytes()).hexdigest()


def _edit_json(path: Path, fn):
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def test_manifest_holds_sha256_of_every_leaf_and_restores_verify(run):
    out, state = run
    manifest = json.loads((out / "checkpoints" / "2" / "checksums" / "metadata").read_text())
    kernel = state.params["params"]["dense_0"]["kernel"]
    entry = manifest["leaves"][KERNEL]
    assert entry == {"sha256": _sha(kernel), "dtype": "float32", "shape": list(kernel.shape)}  # independent digest
    assert manifest["leaves"]["step"]["sha256"] == _sha(np.int32(2)) and manifest["leaves"]["step"]["shape"] == []
    assert len(manifest["leaves"]) == len(jax.tree_util.tree_leaves(state))
    assert latest_step(out) == 2 and load_config(out)["sde"] == "vp"
    np.testing.assert_array_equal(restore_params(out, ema=False)["params"]["dense_0"]["kernel"], kernel)
    restored = restore_checkpoint(out, _template(state), None)
    assert int(restored.step) == 2
    np.testing.assert_array_equal(restored.ema_params["params"]["out"]["bias"],
                                  state.ema_params["params"]["out"]["bias"])


def test_flipped_mantissa_bits_that_still_decode_are_refused(run):
    """The issue's case: 16 floats with one mantissa bit flipped, re-encoded so orbax decodes them."""
    out, state = run
    step_dir = out / "checkpoints" / "2"
    kernel = np.array(state.params["params"]["dense_0"]["kernel"])
    bits = kernel.reshape(-1).view(np.uint32)
    bits[:16] ^= np.uint32(1 << 12)  # one mantissa bit in each of 16 floats
    params = {"params": dict(state.params["params"], dense_0={**state.params["params"]["dense_0"], "kernel": kernel})}
    edited = state._replace(params=params)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(step_dir / "state", edited, force=True)
    ckptr.wait_until_finished()
    decoded = ckptr.restore(step_dir / "state")  # the edit decodes: values differ, no orbax error
    diff = np.asarray(decoded["params"]["params"]["dense_0"]["kernel"]) != np.asarray(
        state.params["params"]["dense_0"]["kernel"])
    assert diff.sum() == 16
    for restore in (lambda: restore_params(out, ema=False), lambda: restore_params(out),
                    lambda: restore_checkpoint(out, _template(state), None)):
        with pytest.raises(CheckpointError, match=rf"{step_dir}: leaf {KERNEL} does not match its stored SHA-256"):
            restore()
    with pytest.raises(CheckpointError, match=str(step_dir)):  # resume verifies too
        _train(out, steps=3, resume=True)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_raw_bit_flips_or_truncation_of_the_data_files_are_refused(run, damage):
    """Damage the bytes of every array data file orbax wrote (``state/d/*``, ``state/ocdbt.process_0/d/*``)."""
    out, _ = run
    step_dir = out / "checkpoints" / "2"
    files = sorted(f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d")
    assert files
    for f in files:
        data = bytearray(f.read_bytes())
        if damage == "flip":
            for i in range(len(data) // 4, len(data), 61):
                data[i] ^= 0x01
        else:
            data = data[: len(data) // 2]
        f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(step_dir)):
        restore_params(out)
    assert restore_params(out, step=1)["params"]["out"]["kernel"].shape == (16, 2)  # other checkpoints intact


def test_edited_config_is_refused(run):
    out, state = run
    cfg_file = out / "checkpoints" / "2" / "config" / "metadata"
    original = cfg_file.read_text()
    _edit_json(cfg_file, lambda c: {k: v for k, v in c.items() if k != "data_shape"})  # a deleted config item
    for call in (lambda: load_config(out), lambda: restore_params(out)):
        with pytest.raises(CheckpointError, match=r"checkpoints/2: the config item does not match its stored SHA-256"):
            call()
    cfg_file.write_text(original[:-7] + "}}")  # invalid JSON
    with pytest.raises(CheckpointError, match=r"checkpoints/2 cannot be read .*JSONDecodeError"):
        load_config(out)
    cfg_file.write_text(original)
    assert load_config(out) == json.loads(original)
    assert load_config(out, step=1)["sde"] == "vp"


def test_sde_changed_vp_to_ve_with_another_model_structure_is_refused(run):
    """The config says ``ve`` (checksum fixed up too) and the model built from it has other shapes."""
    out, state = run
    step_dir = out / "checkpoints" / "2"
    cfg = dict(json.loads((step_dir / "config" / "metadata").read_text()), sde="ve", width=32)
    (step_dir / "config" / "metadata").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=rf"{step_dir}: the config item does not match"):
        load_config(out)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    _edit_json(step_dir / "checksums" / "metadata", lambda m: dict(m, config_sha256=digest))
    assert load_config(out)["sde"] == "ve"  # a consistent edit passes the config checksum...
    wide = _params(ScoreMLP(width=32, depth=1, time_dim=8))  # ...but the model it describes does not fit
    with pytest.raises(CheckpointError, match=rf"{step_dir}: leaf ema_params/params/dense_0/bias has shape"):
        restore_params(out, template=wide)
    wide_state = create_train_state(wide, make_optimizer(1e-2), jax.random.PRNGKey(0))
    with pytest.raises(CheckpointError, match=rf"{step_dir}: leaf .* has shape/dtype"):
        restore_checkpoint(out, wide_state, None)
    deeper = _params(ScoreMLP(width=16, depth=2, time_dim=8))
    with pytest.raises(CheckpointError, match=rf"{step_dir} holds a different parameter structure.*dense_1"):
        restore_params(out, template=deeper)
    assert restore_params(out, template=state.ema_params)["params"]["out"]["kernel"].shape == (16, 2)


def test_validate_config_names_key_and_value():
    assert validate_config(CONFIG, ("sde", "data_shape"), where="runs/a") == CONFIG
    with pytest.raises(CheckpointError, match=r"runs/a: the stored config lacks the key\(s\) \['model_width'\]"):
        validate_config(CONFIG, ("sde", "model_width"), where="runs/a")
    with pytest.raises(CheckpointError, match=r"runs/a: .*unknown sde 'vpp'"):
        validate_config(dict(CONFIG, sde="vpp"), where="runs/a")
    for bad in ([], [2, 0], [2.0], "2", None):
        with pytest.raises(CheckpointError, match=r"runs/a: .*invalid data_shape"):
            validate_config(dict(CONFIG, data_shape=bad), where="runs/a")
    with pytest.raises(CheckpointError, match="not a JSON object"):
        validate_config([1, 2], where="runs/a")
    assert issubclass(CheckpointError, ValueError)


def test_missing_or_incomplete_latest_never_falls_back(run):
    out, state = run
    ckpts = out / "checkpoints"
    shutil.rmtree(ckpts / "2")  # the latest checkpoint is gone; LATEST.json still records step 2
    assert latest_step(out) == 1  # newest complete one
    for call in (lambda: restore_params(out), lambda: load_config(out),
                 lambda: restore_checkpoint(out, _template(state), None), lambda: _train(out, steps=3, resume=True)):
        with pytest.raises(CheckpointError, match=r"checkpoint step 2, recorded as the latest in .*LATEST.json, is "
                                                  r"missing .*refusing to fall back to step 1"):
            call()
    assert int(restore_params(out, ema=False, step=1)["params"]["out"]["kernel"].shape[0]) == 16  # explicit: fine
    with pytest.raises(CheckpointError, match=rf"checkpoint step 2 not found in {ckpts}"):
        restore_params(out, step=2)
    with pytest.raises(FileExistsError):  # a fresh run never writes over it
        _train(out, steps=3)
    (ckpts / "2").mkdir()
    (ckpts / "2" / "state").mkdir()  # a newer but incomplete step directory
    with pytest.raises(CheckpointError, match=rf"the latest checkpoint {ckpts / '2'} is incomplete .*'config'"):
        restore_params(out)
    with pytest.raises(CheckpointError, match=rf"checkpoint {ckpts / '2'} is incomplete"):
        load_config(out, step=2)


def test_checkpoint_without_checksums_is_refused(run):
    out, _ = run
    shutil.rmtree(out / "checkpoints" / "2" / "checksums")
    with pytest.raises(CheckpointError, match=r"checkpoints/2 has no 'checksums' item.*older diffjax"):
        restore_params(out)
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        restore_params(out / "nowhere")
