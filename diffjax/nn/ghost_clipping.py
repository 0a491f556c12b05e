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

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["ghost_plan", "no_ghost"]


class _Plan(NamedTuple):
    dense_pass: Callable   # (params, keys, batch) -> (values (n,), sq (n,), dense_sum(scale) -> {idx: grad})
    has_rest: bool
    select_rest: Callable  # params-shaped tree -> list of the non-ghost leaves
    combine: Callable      # (dense {idx: grad}, rest list | None, params) -> params-shaped tree


def _name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _make_plan(params, ghost_idx: set, dense_pass):
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


def no_ghost(params, f=None):
    """Plan that sends every parameter through the generic ``vmap`` path."""

    def dense_pass(p, keys, batch):
        values = jax.vmap(f, in_axes=(None, 0, 0))(p, keys, batch) if f is not None else None
        return values, jnp.zeros(keys.shape[:1]), lambda scale: {}

    return _make_plan(params, set(), dense_pass)


def ghost_plan(f: Callable, params, key0, x0) -> _Plan:
    """Build the ghost-clipping plan for the per-example loss ``f(params, key, x_i)``.

    Traces ``f`` once abstractly to find the ``nn.Dense`` calls whose kernel (and bias) are
    leaves of ``params`` (Flax variable dict ``{"params": ...}``).
    """
    try:
        import flax.linen as nn  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return no_ghost(params, f)

    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    index = {tuple(_name(k) for k in path): i for i, (path, _) in enumerate(flat)}
    shapes = [leaf.shape for _, leaf in flat]
    calls: list[Any] = []

    def discover(next_fun, args, kwargs, ctx):
        out = next_fun(*args, **kwargs)
        if ctx.method_name == "__call__" and isinstance(ctx.module, nn.Dense):
            x = args[0] if args else None
            calls.append((tuple(ctx.module.scope.path), bool(ctx.module.use_bias),
                          None if x is None else tuple(x.shape), tuple(out.shape), out.dtype))
        return out

    with nn.intercept_methods(discover):
        jax.eval_shape(f, params, key0, x0)

    # which calls are usable: kernel (and bias) found with matching shapes
    layers: dict[tuple, dict] = {}
    use = []
    for j, (path, bias, xs, ys, _) in enumerate(calls):
        kp, bp = ("params",) + path + ("kernel",), ("params",) + path + ("bias",)
        ok = xs is not None and len(xs) >= 1 and kp in index and shapes[index[kp]] == (xs[-1], ys[-1])
        ok = ok and (not bias or (bp in index and shapes[index[bp]] == (ys[-1],)))
        use.append(ok)
        if ok:
            layers.setdefault(path, {"k": index[kp], "b": index[bp] if bias else None, "calls": []})
            layers[path]["calls"].append(j)
    bad_paths = {calls[j][0] for j in range(len(calls)) if not use[j]}
    for p in bad_paths:  # a layer with any unusable call goes to the vmap path entirely
        layers.pop(p, None)
    ghost_calls = sorted(j for lay in layers.values() for j in lay["calls"])
    slot = {j: s for s, j in enumerate(ghost_calls)}
    ghost_idx = {lay["k"] for lay in layers.values()} | {lay["b"] for lay in layers.values() if lay["b"] is not None}

    def example(p, key, x):
        zeros = [jnp.zeros(calls[j][3], calls[j][4]) for j in ghost_calls]

        def fwd(perts):
            records, counter = [], [0]

            def icpt(next_fun, args, kwargs, ctx):
                if ctx.method_name == "__call__" and isinstance(ctx.module, nn.Dense):
                    j = counter[0]
                    counter[0] += 1
                    out = next_fun(*args, **kwargs)
                    if j in slot:
                        records.append(args[0])
                        out = out + perts[slot[j]]
                    return out
                return next_fun(*args, **kwargs)

            with nn.intercept_methods(icpt):
                val = f(p, key, x)
            return val, records

        val, vjp_fn, records = jax.vjp(fwd, zeros, has_aux=True)
        (cots,) = vjp_fn(jnp.ones_like(val))
        return val, records, cots

    def dense_pass(p, keys, batch):
        values, records, cots = jax.vmap(example, in_axes=(None, 0, 0))(p, keys, batch)
        n = batch.shape[0]
        sq = jnp.zeros((n,), jnp.float32)
        parts = []
        for lay in layers.values():
            A = jnp.concatenate([records[slot[j]].reshape(n, -1, records[slot[j]].shape[-1])
                                 for j in lay["calls"]], axis=1)
            D = jnp.concatenate([cots[slot[j]].reshape(n, -1, cots[slot[j]].shape[-1])
                                 for j in lay["calls"]], axis=1)
            T, din, dout = A.shape[1], A.shape[2], D.shape[2]
            if T == 1:
                sq = sq + jnp.sum(A[:, 0] ** 2, -1) * jnp.sum(D[:, 0] ** 2, -1)
            elif T * T <= din * dout:
                sq = sq + jnp.sum(jnp.einsum("nti,nsi->nts", A, A) * jnp.einsum("nto,nso->nts", D, D), (1, 2))
            else:
                sq = sq + jnp.sum(jnp.einsum("nti,nto->nio", A, D) ** 2, (1, 2))
            if lay["b"] is not None:
                sq = sq + jnp.sum(jnp.sum(D, 1) ** 2, -1)
            parts.append((lay, A, D))

        def dense_sum(scale):
            out = {}
            for lay, A, D in parts:
                Ds = D * scale[:, None, None].astype(D.dtype)
                out[lay["k"]] = jnp.einsum("nti,nto->io", A, Ds)
                if lay["b"] is not None:
                    out[lay["b"]] = jnp.sum(Ds, (0, 1))
            return out

        return values, sq, dense_sum

    return _make_plan(params, ghost_idx, dense_pass)
