"""Package surface: fast import (no heavy dependency at import), public names resolve."""

import subprocess
import sys

import diffjax


def test_import_pulls_in_no_heavy_dependency():
    # `import diffjax` must stay fast (< 3 s on a fresh install): only jax itself is loaded;
    # Flax, orbax, diffrax, TFDS, dp-accounting, matplotlib and scipy come on first use.
    code = ("import sys, diffjax; heavy = ['flax', 'orbax', 'diffrax', 'tensorflow_datasets', 'dp_accounting', "
            "'matplotlib', 'scipy', 'torch']; print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_public_names_resolve():
    for name in diffjax.__all__:
        assert getattr(diffjax, name) is not None, name
    for module in (diffjax.samplers, diffjax.analytic, diffjax.sde, diffjax.nn, diffjax.privacy, diffjax.data):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
