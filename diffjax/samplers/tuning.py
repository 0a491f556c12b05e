"""Picard window tuning: the device's throughput knee, measured only when asked.

A Picard iteration (:mod:`diffjax.samplers.picard`) evaluates a window of ``p`` steps as one batch.
It pays off while a ``p``-point batch costs about as much as one point; past the device's
throughput knee a larger window costs proportionally more time per iteration but saves few
iterations. This module finds that knee:

- :func:`knee_window` is the decision rule, a function of the measured cost ``seconds(p)`` of one
  window evaluation (testable with any cost model);
- :func:`auto_window` measures ``seconds(p)`` on this device with the real model and applies it;
- :class:`WindowCache` is an explicit memo of :func:`auto_window` results owned by the caller
  (there is no module-global cache).

Nothing here runs unless asked: :func:`~diffjax.samplers.picard.picard_sample`'s default window is
the whole trajectory; ``window="auto"`` calls :func:`auto_window`. To measure once and reuse the
answer, call ``p = auto_window(...)`` and pass ``window=p``, or pass a :class:`WindowCache`.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import Array, lax
from jax.sharding import Mesh

from diffjax._validate import check_int, check_option, concrete_float
from diffjax.samplers._rule import StepRule, prepare, resolve_model
from diffjax.samplers.picard import PRECISIONS, precision_context, window_evaluator, window_mesh

__all__ = ["auto_window", "knee_window", "WindowCache"]

_tmap = jax.tree_util.tree_map


class WindowCache:
    """An explicit memo of :func:`auto_window` results, owned by the caller.

    An entry is keyed by everything the measurement depends on: the ``rule`` and ``model_fn``
    objects themselves (held, not their ``id``: an ``id`` can be reused by a new object after
    garbage collection, an object held here cannot), the sample shape, the shapes and dtypes of the
    prior and noise draws, the grid's shape and dtype, the mesh (or the default device),
    ``precision``, ``growth`` and ``min_gain``. Holding the objects keeps them (and whatever
    ``model_fn`` closes over, e.g. network parameters) alive as long as the cache; drop the cache
    or call :meth:`clear` to release them.
    """

    def __init__(self) -> None:
        self._windows: dict[tuple, int] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, key: tuple) -> bool:
        return key in self._windows

    def __getitem__(self, key: tuple) -> int:
        return self._windows[key]

    def __setitem__(self, key: tuple, window: int) -> None:
        self._windows[key] = window

    def clear(self) -> None:
        """Forget every entry (and release the rules and models they hold)."""
        self._windows.clear()


def _candidates(n_steps: int, n_devices: int) -> list[int]:
    """``d, 2d, 4d, ... <= n_steps``, then ``n_steps`` itself when ``d`` divides it."""
    out, p = [], n_devices
    while p <= n_steps:
        out.append(p)
        p *= 2
    if n_steps % n_devices == 0 and (not out or out[-1] != n_steps):
        out.append(n_steps)
    return out


def knee_window(n_steps: int, n_devices: int, seconds: Callable[[int], float], *, growth: float = 1.15,
                min_gain: float = 3.0) -> int:
    """The window at the throughput knee, given the cost ``seconds(p)`` of one ``p``-point window.

    The throughput of a window is ``rate(p) = p / seconds(p)`` rows per second. Candidates are
    ``p = d, 2d, 4d, ... <= n_steps`` and ``n_steps`` itself when ``d`` (``n_devices``) divides it;
    the window grows to the next candidate while that raises the rate by at least the factor
    ``growth`` over the best so far (with several devices the first candidate, ``d``, is always
    taken: no smaller window can be sharded). ``seconds`` is called in increasing ``p`` and not
    past the knee. The result is ``1`` (run the sequential executor) when the batching gain at the
    knee, ``rate(p) / rate(1) = p seconds(1) / seconds(p)``, is below ``min_gain``: Picard needs
    about ``n_steps / p`` times 2-3 fewer rounds than sequential steps to win, so a small gain
    cannot pay for its extra iterations.

    Args:
      n_steps: number of steps of the grid (``>= 1``).
      n_devices: devices the window is sharded over (``>= 1``); windows are multiples of it.
      seconds: ``p -> seconds`` per evaluation of a ``p``-point window; ``seconds(1)`` is the
        unsharded single-step baseline.
      growth: minimal rate factor (``>= 1``) for taking the next, twice larger candidate.
      min_gain: minimal batching gain (``>= 0``) for choosing Picard at all.

    Returns:
      The window: a candidate (a multiple of ``n_devices``) or ``1``.

    Raises:
      ValueError: non-int ``n_steps``/``n_devices`` below 1; ``growth < 1``; ``min_gain < 0``.
    """
    n_steps, n_devices = check_int("n_steps", n_steps), check_int("n_devices", n_devices)
    growth = concrete_float("growth", growth, lo=1.0)
    min_gain = concrete_float("min_gain", min_gain, lo=0.0)
    base = seconds(1)
    best_p, best_rate = 1, 1.0 / base
    for p in _candidates(n_steps, n_devices):
        if p == 1:
            continue                                   # the baseline itself
        rate = p / seconds(p)
        if best_p == 1 and n_devices > 1 and p == n_devices:
            best_p, best_rate = p, rate                # the smallest window the devices allow
        elif rate >= growth * best_rate:
            best_p, best_rate = p, rate
        else:
            break                                      # past the knee
    return best_p if best_p > 1 and best_rate * base >= min_gain else 1


def _seconds_per_window(rule: StepRule, model_fn: Callable, state0: Any, grid: Array, zs: Any, k: int, *,
                        mesh: Mesh | None, precision: str | None, budget_s: float = 0.5) -> float:
    """Seconds per evaluation of a ``k``-point window (``k = 1`` unsharded), the best of up to
    three timings of repeats inside one ``jit`` (dispatch amortised; compilation excluded)."""
    evaluate = window_evaluator(rule, model_fn, mesh if k > 1 else None)
    xs = _tmap(lambda l: jnp.broadcast_to(l, (k,) + jnp.shape(l)), state0)
    tk, t1k, zk = grid[:k], grid[1:k + 1], _tmap(lambda l: l[:k], zs)

    @jax.jit
    def run(x, reps):
        with precision_context(precision):
            return lax.fori_loop(0, reps, lambda _, x: evaluate(x, tk, t1k, zk), x)

    jax.block_until_ready(run(xs, 1))                  # compile
    t = time.perf_counter()
    jax.block_until_ready(run(xs, 1))
    once = max(time.perf_counter() - t, 1e-7)
    reps = int(min(max(0.02 / once, 1), 50))
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(run(xs, reps))
        best = min(best, (time.perf_counter() - t) / reps)
        if best * reps > budget_s:
            break
    return best


def _cache_key(rule, model_fn, shape, grid, mesh, precision, growth, min_gain, key) -> tuple:
    """Everything an :func:`auto_window` measurement depends on (see :class:`WindowCache`)."""
    draws = jax.eval_shape(lambda k: (rule.prior(k, shape), rule.noise(k, shape)), key)
    avals = tuple((l.shape, str(l.dtype)) for l in jax.tree_util.tree_leaves(draws))
    where = mesh if mesh is not None else jax.devices()[0]
    return (rule, model_fn, shape, avals, grid.shape, str(grid.dtype), where, precision, growth, min_gain)


def auto_window(rule: StepRule, model_fn: Callable, shape: tuple[int, ...], grid: Array, *,
                mesh: Mesh | None = None, devices: Sequence[Any] | None = None, precision: str | None = None,
                growth: float = 1.15, min_gain: float = 3.0, key: Array | None = None,
                cache: WindowCache | None = None) -> int:
    """Window size at this device's throughput knee, measured with the real model.

    Times one batched window evaluation of ``rule.step`` (the model really runs; repeats inside one
    ``jit`` amortise dispatch) for the candidates of :func:`knee_window`, from ``p = 1`` up to the
    knee, and returns its choice. Takes seconds (one compilation per candidate) and must run
    outside ``jit`` (it needs concrete timings). Without ``cache`` every call measures again;
    timings are noisy, so two measurements may disagree by one candidate.

    Args:
      rule, model_fn, shape, grid: as :func:`~diffjax.samplers.picard.picard_sample`.
      mesh, devices: the devices the window will be sharded over (at most one of them).
      precision: matmul precision of the model evaluations (as in ``picard_sample``).
      growth, min_gain: the knee rule's thresholds (:func:`knee_window`).
      key: PRNG key of the probe's prior and noise draws (default ``PRNGKey(0)``; values do not
        matter, only shapes).
      cache: an optional :class:`WindowCache`: a hit returns the stored window without measuring,
        a miss measures and stores.

    Returns:
      The window size, a multiple of the device count, or ``1`` (no batching gain: use the
      sequential executor).

    Raises:
      ValueError: bad ``grid``, ``precision``, ``growth``, ``min_gain``, ``mesh``/``devices`` or
        ``cache``.
    """
    grid = jnp.asarray(grid)
    shape = tuple(int(d) for d in shape)
    check_option("precision", precision, PRECISIONS)
    growth = concrete_float("growth", growth, lo=1.0)
    min_gain = concrete_float("min_gain", min_gain, lo=0.0)
    if cache is not None and not isinstance(cache, WindowCache):
        raise ValueError(f"cache must be a WindowCache or None, got {type(cache).__name__}")
    mesh = window_mesh(mesh, devices)
    key = jax.random.PRNGKey(0) if key is None else key
    ident = None if cache is None else _cache_key(rule, model_fn, shape, grid, mesh, precision, growth,
                                                  min_gain, key)
    if ident is not None and ident in cache:
        return cache[ident]
    model_fn = resolve_model(rule, model_fn)
    state0, zs, n = prepare(rule, model_fn, key, shape, grid)
    seconds = functools.partial(_seconds_per_window, rule, model_fn, state0, grid, zs, mesh=mesh,
                                precision=precision)
    p = knee_window(n, 1 if mesh is None else mesh.size, seconds, growth=growth, min_gain=min_gain)
    if ident is not None:
        cache[ident] = p
    return p
