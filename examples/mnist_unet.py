"""A U-Net on MNIST where the data is prepared (`tfds build mnist --file_format=array_record`).

    python examples/mnist_unet.py --data-dir ~/tensorflow_datasets [--steps 20000]
    python examples/mnist_unet.py --quick     # a few steps; random images if MNIST is not prepared
"""

import argparse
import tempfile

import jax
import jax.numpy as jnp

import diffjax as dj
from diffjax import losses, train
from diffjax.nn import UNet, init_params, make_apply

p = argparse.ArgumentParser()
p.add_argument("--data-dir", default="~/tensorflow_datasets")
p.add_argument("--steps", type=int, default=20000)
p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
p.add_argument("--quick", action="store_true")
args = p.parse_args()
steps, batch = (3, 8) if args.quick else (args.steps, 128)

try:
    from diffjax.data import tfds_data_fn

    data_fn = tfds_data_fn("mnist", data_dir=args.data_dir, batch_size=batch, seed=0)
    data_fn(0)
except (ImportError, FileNotFoundError, ValueError) as e:
    if not args.quick:
        raise SystemExit(f"MNIST is not available: {e}")
    print(f"MNIST not available ({type(e).__name__}); --quick runs on random 28x28 images")
    data_fn = lambda s: jax.random.uniform(jax.random.PRNGKey(s), (batch, 28, 28, 1), minval=-1, maxval=1)  # noqa: E731

sde = dj.VPSDE()
net = UNet(channels=8, channel_mult=(1,), attention_levels=(), mid_attention=False) if args.quick else \
    UNet(channels=64, channel_mult=(1, 2, 2), attention_levels=(1,))
apply_fn = make_apply(net)
params = init_params(net, jax.random.PRNGKey(0), (batch, 28, 28, 1))
with tempfile.TemporaryDirectory() as tmp:
    state = train.train(losses.dsm_loss(sde), apply_fn, params, data_fn, steps=steps, out_dir=args.out or tmp,
                        config={"example": "mnist_unet"}, lr=2e-4, batch_size=batch, ckpt_every=max(steps // 4, 1),
                        log_every=max(steps // 10, 1), progress=not args.quick)
x, info = dj.samplers.ddim(lambda x, t: apply_fn(state.ema_params, x, t), sde, key=jax.random.PRNGKey(1),
                           shape=(4, 28, 28, 1), n_steps=2 if args.quick else 50)
print(f"trained {steps} steps; sampled {x.shape} with {int(info['nfe'])} NFE (finite: {bool(jnp.isfinite(x).all())})")
