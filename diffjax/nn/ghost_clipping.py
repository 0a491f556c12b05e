"""Per-example gradient norms and clipped sums without materialising per-example gradients.

For a Flax ``nn.Dense`` layer ``y = a W + b`` applied to ``T`` rows of one example (``T = K``
noise draws times any extra axes), the example's gradients are ``grad_W = a^T d`` and
``grad_b = 1^T d`` with ``d = dl~/dy``; hence

    ``||grad_W||^2 = sum_{t,s} (a_t . a_s)(d_t . d_s)``  (``= ||a||^2 ||d||^2`` for ``T = 1``),
    ``sum_i c_i grad_W,i = sum_i a_i^T (c_i d_i)``,

so one batched forward/backward to the layer outputs gives every per-example norm and the
clipped sum ("ghost clipping", Li et al. 2022; "book-keeping", Bu et al. 2022). Layers are
found by intercepting ``nn.Dense.__call__`` during the trace (``flax.linen.intercept_methods``);
all other parameters (and every parameter of a non-Flax ``apply_fn``) are handled by the
generic ``vmap`` path. Assumes each ``Dense``'s kernel/bias is used only through that layer's
``__call__`` (true for modules that do not read ``self.variables`` of another layer).

It lives in ``diffjax.nn`` (the only Flax package); ``diffjax.privacy`` imports it lazily.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["ghost_plan", "no_ghost"]


class _Plan(NamedTuple):
    dense_pass: Callable   # (params, keys, batch) -> (values (n,), sq (n,), dense_sum(scale) -> {idx: grad})
    has_rest: bool
    select_rest: Callable  # params-shaped tree -> list of the non-ghost leaves
    combine: Callable      # (dense {idx: grad}, rest list | None, params) -> params-shaped tree


class _Call(NamedTuple):
    """One ``nn.Dense`` call seen while tracing the loss (in call order)."""
    path: tuple            # the module's scope path
    bias: bool
    in_shape: tuple | None
    out_shape: tuple
    dtype: Any


class _Layer(NamedTuple):
    """A ``Dense`` layer all of whose calls take the ghost path."""
    kernel: int            # leaf index of the kernel in ``params``
    bias: int | None       # leaf index of the bias (None without one)
    calls: list            # indices into the list of ``_Call``


def _name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _is_dense_call(ctx) -> bool:
    return ctx.method_name == "__call__" and isinstance(ctx.module, nn.Dense)


def _make_plan(params, ghost_idx: set, dense_pass) -> _Plan:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rest_idx = [i for i in range(len(leaves)) if i not in ghost_idx]

    def select_rest(tree):
        lv = jax.tree_util.tree_leaves(tree)
        return [lv[i] for i in rest_idx]

    def combine(dense, rest, params_):
        out = list(jax.tree_util.tree_leaves(params_))
        for i, g in dense.items():
            out[i] = g.astype(out[i].dtype)
        for i, g in zip(rest_idx, rest or []):
            out[i] = g
        return jax.tree_util.tree_unflatten(treedef, out)

    return _Plan(dense_pass, bool(rest_idx), select_rest, combine)


def no_ghost(params, f: Callable) -> _Plan:
    """Plan that sends every parameter of the per-example loss ``f(params, key, x_i)`` through the
    generic ``vmap`` path (its dense pass only evaluates the losses)."""

    def dense_pass(p, keys, batch):
        values = jax.vmap(f, in_axes=(None, 0, 0))(p, keys, batch)
        return values, jnp.zeros(keys.shape[:1]), lambda scale: {}

    return _make_plan(params, set(), dense_pass)


# -- finding the Dense layers -------------------------------------------------------------------------

def _discover_calls(f: Callable, params, key0, x0) -> list[_Call]:
    """Every ``nn.Dense`` call of ``f(params, key0, x0)``, in order (abstract trace, no FLOPs)."""
    calls: list[_Call] = []

    def record(next_fun, args, kwargs, ctx):
        out = next_fun(*args, **kwargs)
        if _is_dense_call(ctx):
            x = args[0] if args else None
            calls.append(_Call(tuple(ctx.module.scope.path), bool(ctx.module.use_bias),
                               None if x is None else tuple(x.shape), tuple(out.shape), out.dtype))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(f, params, key0, x0)
    return calls


def _usable(call: _Call, index: dict, shapes: list) -> bool:
    """The call's kernel (and bias) are leaves of ``params`` with the shapes the call implies."""
    kp, bp = ("params",) + call.path + ("kernel",), ("params",) + call.path + ("bias",)
    xs, ys = call.in_shape, call.out_shape
    ok = xs is not None and len(xs) >= 1 and kp in index and shapes[index[kp]] == (xs[-1], ys[-1])
    return ok and (not call.bias or (bp in index and shapes[index[bp]] == (ys[-1],)))


def _ghost_layers(calls: list[_Call], params) -> dict[tuple, _Layer]:
    """The layers whose every call is usable, by scope path; any unusable call sends its whole
    layer to the ``vmap`` path."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    index = {tuple(_name(k) for k in path): i for i, (path, _) in enumerate(flat)}
    shapes = [leaf.shape for _, leaf in flat]
    layers: dict[tuple, _Layer] = {}
    bad = set()
    for j, call in enumerate(calls):
        if not _usable(call, index, shapes):
            bad.add(call.path)
            continue
        if call.path not in layers:
            bias = index[("params",) + call.path + ("bias",)] if call.bias else None
            layers[call.path] = _Layer(index[("params",) + call.path + ("kernel",)], bias, [])
        layers[call.path].calls.append(j)
    return {path: lay for path, lay in layers.items() if path not in bad}


# -- one example: layer inputs and output cotangents --------------------------------------------------

def _perturbed_loss(f: Callable, slot: dict, perts: list, p, key, x):
    """``f(p, key, x)`` with ``perts[slot[j]]`` added to the output of ``Dense`` call ``j`` (for each
    ghost call ``j``); also returns those calls' inputs, in ``slot`` order."""
    records, counter = [], itertools.count()

    def perturb(next_fun, args, kwargs, ctx):
        if not _is_dense_call(ctx):
            return next_fun(*args, **kwargs)
        j = next(counter)
        out = next_fun(*args, **kwargs)
        if j in slot:
            records.append(args[0])
            out = out + perts[slot[j]]
        return out

    with nn.intercept_methods(perturb):
        val = f(p, key, x)
    return val, records


def _example_pass(f: Callable, calls: list[_Call], ghost_calls: list[int], slot: dict, p, key, x):
    """One example's loss, the inputs ``a`` of its ghost calls and the cotangents ``d = dl/dy`` of
    their outputs (a VJP with respect to zero perturbations of the outputs)."""
    zeros = [jnp.zeros(calls[j].out_shape, calls[j].dtype) for j in ghost_calls]
    val, vjp_fn, records = jax.vjp(lambda perts: _perturbed_loss(f, slot, perts, p, key, x), zeros, has_aux=True)
    (cots,) = vjp_fn(jnp.ones_like(val))
    return val, records, cots


# -- batch: norms and the clipped sum -----------------------------------------------------------------

def _stack_calls(per_call: list, lay: _Layer, slot: dict, n: int) -> Array:
    """``(n, T, width)``: the rows of all of a layer's calls, ``T`` summed over its calls."""
    parts = [per_call[slot[j]] for j in lay.calls]
    return jnp.concatenate([a.reshape(n, -1, a.shape[-1]) for a in parts], axis=1)


def _add_layer_sq_norm(sq: Array, A: Array, D: Array, has_bias: bool) -> Array:
    """``sq + ||grad_W||^2 (+ ||grad_b||^2)`` per example from ``A (n, T, d_in)``, ``D (n, T, d_out)``,
    by the cheaper of the Gram form (``T^2 <= d_in d_out``) and the explicit ``a^T d``."""
    T, din, dout = A.shape[1], A.shape[2], D.shape[2]
    if T == 1:
        sq = sq + jnp.sum(A[:, 0] ** 2, -1) * jnp.sum(D[:, 0] ** 2, -1)
    elif T * T <= din * dout:
        sq = sq + jnp.sum(jnp.einsum("nti,nsi->nts", A, A) * jnp.einsum("nto,nso->nts", D, D), (1, 2))
    else:
        sq = sq + jnp.sum(jnp.einsum("nti,nto->nio", A, D) ** 2, (1, 2))
    if has_bias:
        sq = sq + jnp.sum(jnp.sum(D, 1) ** 2, -1)
    return sq


def _dense_sum(parts: list, scale: Array) -> dict:
    """``{leaf index: sum_i scale_i grad_i}`` for every ghost kernel and bias."""
    out = {}
    for lay, A, D in parts:
        Ds = D * scale[:, None, None].astype(D.dtype)
        out[lay.kernel] = jnp.einsum("nti,nto->io", A, Ds)
        if lay.bias is not None:
            out[lay.bias] = jnp.sum(Ds, (0, 1))
    return out


def _dense_pass(example: Callable, layers: dict, slot: dict, p, keys, batch):
    """Losses ``(n,)``, ghost squared norms ``(n,)`` and ``dense_sum(scale)`` for a batch."""
    values, records, cots = jax.vmap(example, in_axes=(None, 0, 0))(p, keys, batch)
    n = batch.shape[0]
    sq = jnp.zeros((n,), jnp.float32)
    parts = []
    for lay in layers.values():
        A, D = _stack_calls(records, lay, slot, n), _stack_calls(cots, lay, slot, n)
        sq = _add_layer_sq_norm(sq, A, D, lay.bias is not None)
        parts.append((lay, A, D))
    return values, sq, functools.partial(_dense_sum, parts)


def ghost_plan(f: Callable, params, key0, x0) -> _Plan:
    """Build the ghost-clipping plan for the per-example loss ``f(params, key, x_i)``.

    Traces ``f`` once abstractly to find the ``nn.Dense`` calls whose kernel (and bias) are
    leaves of ``params`` (Flax variable dict ``{"params": ...}``); their norms and clipped sums
    come from the layer inputs and output cotangents (module docstring), every other leaf from
    the generic ``vmap`` path.

    Args:
      f: per-example loss ``(params, key, x_i) -> scalar``.
      params: the parameter pytree.
      key0, x0: one example's key and input (shapes only).

    Returns:
      The plan: ``dense_pass(params, keys (n, 2), batch (n, ...)) -> (losses (n,), sq (n,),
      dense_sum)``, ``has_rest``, ``select_rest`` and ``combine``.
    """
    calls = _discover_calls(f, params, key0, x0)
    layers = _ghost_layers(calls, params)
    ghost_calls = sorted(j for lay in layers.values() for j in lay.calls)
    slot = {j: s for s, j in enumerate(ghost_calls)}
    ghost_idx = {lay.kernel for lay in layers.values()} | {lay.bias for lay in layers.values() if lay.bias is not None}
    example = functools.partial(_example_pass, f, calls, ghost_calls, slot)
    return _make_plan(params, ghost_idx, functools.partial(_dense_pass, example, layers, slot))
