"""Train a score model on a 2-D toy set and sample it — the library composed by hand.

    python examples/train_2d.py [--quick] [--dataset swiss_roll] [--steps 4000]
"""

import argparse

import jax
import numpy as np

import diffjax as dj
from diffjax import losses, metrics, train
from diffjax.data import toy_batch
from diffjax.nn import ScoreMLP, init_params, make_apply

p = argparse.ArgumentParser()
p.add_argument("--dataset", default="swiss_roll")
p.add_argument("--steps", type=int, default=4000)
p.add_argument("--quick", action="store_true", help="a few hundred steps, a small batch")
args = p.parse_args()
steps, batch = (200, 128) if args.quick else (args.steps, 512)

sde = dj.VPSDE()
net = ScoreMLP(width=128, depth=3)
apply_fn = make_apply(net)                                   # apply_fn(params, x, t): a pure function
params = init_params(net, jax.random.PRNGKey(0), (batch, 2))
optimizer = train.make_optimizer(2e-3, warmup_steps=100, grad_clip=1.0)
state = train.create_train_state(params, optimizer, train.train_key(0))
step = train.make_train_step(losses.dsm_loss(sde), apply_fn, optimizer, ema_decay=0.995)

for s in range(steps):
    state, m = step(state, toy_batch(args.dataset, 0, s, batch))
    if s % max(steps // 5, 1) == 0:
        print(f"step {s:5d}  loss {float(m['loss']):.4f}")


@jax.jit
def draw(params, key):
    eps_fn = lambda x, t: apply_fn(params, x, t)             # noqa: E731
    return dj.samplers.ddim(eps_fn, sde, key=key, shape=(1000, 2), n_steps=20, grid="quadratic")


x, info = draw(state.ema_params, jax.random.PRNGKey(1))
data = np.asarray(toy_batch(args.dataset, 1, 0, 1000))
print(f"DDIM, {int(info['nfe'])} NFE: MMD to data {float(metrics.mmd(np.asarray(x), data)):.4f}")
