"""The Datasaurus "dino" as a 2-D data set, in the setting of CDL Table 1.

Source of the 142 points: the "dino" figure of the Datasaurus Dozen, Matejka & Fitzmaurice,
"Same Stats, Different Graphs: Generating Datasets with Varied Appearance and Identical Statistics
through Simulated Annealing", CHI 2017 (public data). They ship with the package as
``diffjax/data/datasaurus_dino.tsv`` (columns ``dataset x y``; package data, so a non-editable
install has them too); nothing is read from elsewhere at run time.

The recipe (CDL Sec. 5.1 / Table 1, "2D Dino dataset" [19]; steps 1-3 as in the authors' data
generator, step 4 as in their training setup):

1. draw a point ``p_i`` uniformly from the 142 raw points;
2. add jitter ``N(0, 0.15^2 I)`` in the raw units (the figure spans about 22-98 by 3-100);
3. map ``x -> (x / 54 - 1) * 4``, ``y -> (y / 48 - 1) * 4``;
4. standardise each axis (zero mean, unit std).

Step 3 is a positive per-axis affine map, so after step 4 it cancels exactly; it is kept for
fidelity. The authors train on one fixed set of 100,000 such points (:func:`dino_set`);
:func:`dino` draws a batch uniformly, with replacement, from that fixed set (key
``PRNGKey(DINO_SET_SEED)``), which is the paper's training distribution. After standardisation
every point lies within radius about 2.7 of the origin.

All functions are pure functions of a key, jitted with the sample count static, like the toy sets
of :mod:`diffjax.data.toy`; ``dino(key, n)`` has the toy-sampler signature ``(key, n) -> (n, 2)``.
"""

from __future__ import annotations

import functools
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from diffjax._validate import check_int

__all__ = [
    "DINO_NUM_POINTS", "DINO_JITTER", "DINO_SET_SIZE", "DINO_SET_SEED",
    "dino_raw_points", "dino_recipe", "dino_set", "dino",
]

DINO_JITTER: float = 0.15        # std of the Gaussian jitter, in raw Datasaurus units
DINO_SET_SIZE: int = 100_000     # size of the fixed training set of CDL Table 1
DINO_SET_SEED: int = 0           # the fixed set is dino_set(PRNGKey(DINO_SET_SEED))
_AFFINE_DIV = (54.0, 48.0)       # step 3 of the recipe: (x / 54 - 1) * 4, (y / 48 - 1) * 4


def _read_points() -> np.ndarray:
    text = resources.files("diffjax.data").joinpath("datasaurus_dino.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    pts = np.array([[float(x), float(y)] for name, x, y in rows if name == "dino"], np.float64)
    pts.setflags(write=False)
    return pts


_POINTS = _read_points()
DINO_NUM_POINTS: int = int(_POINTS.shape[0])  # 142


def dino_raw_points() -> np.ndarray:
    """The 142 points of the Datasaurus "dino" in raw units (a writable copy).

    Returns:
      ``(142, 2)`` float64 ``(x, y)``.
    """
    return _POINTS.copy()


@functools.partial(jax.jit, static_argnames=("n",))
def dino_recipe(key: Array, n: int) -> tuple[Array, Array]:
    """Steps 1-2 of the recipe: ``x = p_idx + 0.15 eps`` in raw units, ``idx ~ U{0..141}``, ``eps ~ N(0, I)``.

    Args:
      key: PRNG key.
      n: number of points (static positive int).

    Returns:
      ``(points, idx)``: ``(n, 2)`` float32 jittered raw points and the ``(n,)`` int32 index of
      the source point of each (so ``points - dino_raw_points()[idx]`` is the jitter).

    Raises:
      ValueError: if ``n`` is not a positive Python int.
    """
    check_int("n", n)
    k_idx, k_eps = jax.random.split(key)
    idx = jax.random.randint(k_idx, (n,), 0, DINO_NUM_POINTS)
    pts = jnp.asarray(_POINTS, jnp.float32)[idx]
    return pts + DINO_JITTER * jax.random.normal(k_eps, (n, 2), jnp.float32), idx


@functools.partial(jax.jit, static_argnames=("n",))
def dino_set(key: Array, n: int = DINO_SET_SIZE) -> Array:
    """A standardised dino set (all four steps): :func:`dino_recipe`, the affine map, then
    ``(x - mean) / std`` per axis with the set's own mean and (population) std.

    ``dino_set(PRNGKey(DINO_SET_SEED))`` is the fixed 100,000-point training set of CDL Table 1.

    Args:
      key: PRNG key.
      n: set size (static int ``>= 2``); default :data:`DINO_SET_SIZE`.

    Returns:
      ``(n, 2)`` float32 with per-axis mean 0 and std 1 (up to float32 round-off).

    Raises:
      ValueError: if ``n`` is not a Python int ``>= 2``.
    """
    check_int("n", n, lo=2)
    pts, _ = dino_recipe(key, n)
    pts = (pts / jnp.asarray(_AFFINE_DIV, jnp.float32) - 1.0) * 4.0
    centred = pts - jnp.mean(pts, axis=0)
    return centred / jnp.sqrt(jnp.mean(centred**2, axis=0))


@functools.partial(jax.jit, static_argnames=("n",))
def dino(key: Array, n: int) -> Array:
    """``n`` points drawn uniformly with replacement from the fixed set ``dino_set(PRNGKey(DINO_SET_SEED))``.

    The fixed set is rebuilt inside the jitted function (100,000 draws; a few ms on a CPU), so
    the sampler stays a pure function of ``key`` with no cached state.

    Args:
      key: PRNG key.
      n: number of points (static positive int).

    Returns:
      ``(n, 2)`` float32.

    Raises:
      ValueError: if ``n`` is not a positive Python int.
    """
    check_int("n", n)
    fixed = dino_set(jax.random.PRNGKey(DINO_SET_SEED), DINO_SET_SIZE)
    return fixed[jax.random.randint(key, (n,), 0, DINO_SET_SIZE)]
