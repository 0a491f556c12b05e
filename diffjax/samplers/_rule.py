"""A sampler = a step rule (data: pure functions) + an executor (sequential or Picard).

Every rule advances a state pytree from ``t`` to ``t_next`` given one pre-drawn noise pytree
``z``. All noise of a run is drawn up front from one key by :func:`prepare`, which both
executors call, so the sequential trajectory and the Picard fixed point are the same path.

**No silent wrong answers.** A rule states what it needs and :func:`prepare` checks a run against
it before anything is computed:

- the grid (:func:`check_grid`): 1-D, at least 2 points, finite, monotone in the rule's
  ``grid_direction``, inside its ``grid_domain`` (``[0, sde.T]`` for time rules, ``sigma >= 0`` for
  EDM sigma rules; only the last entry may be ``0``), and of the length the rule was built for
  (``n_levels``). A concrete grid (also one closed over inside ``jit``) raises ``ValueError``; a
  *traced* grid (a ``jit`` argument, a ``vmap``-ed grid) cannot be checked at trace time, so an
  invalid one makes the initial state NaN and with it every sample (loud, never silently wrong);
- shapes, at trace time (``jax.eval_shape``, no model evaluation): ``shape``, ``x_init`` against
  the prior draw, the model's output against the state it is called on, and one ``rule.step``
  must return a state of unchanged structure, shapes and dtypes (a ``(B, 1)`` model for a
  ``(B, 2)`` state, or a denoiser collapsing the batch to ``(1, 2)``, raises ``ValueError``);
- the model kind (:func:`resolve_model`): a model declared with :func:`diffjax.param.model`
  (``param.model(eps_fn, "eps")``) is converted to the rule's ``model_kind`` with the rule's SDE;
  a bare callable is used as is and must already be what the rule expects.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from diffjax._validate import check_grid as check_grid_values
from diffjax._validate import is_concrete, nan_unless
from diffjax.param import Model, adapter, as_kind

__all__ = ["StepRule", "prepare", "no_noise", "gaussian_noise", "check_grid", "resolve_model", "time_domain",
           "score_kind", "SIGMA_DOMAIN", "sequential_nfe", "final_nfe"]

PyTree = Any
_tmap = jax.tree_util.tree_map
_leaves = jax.tree_util.tree_leaves

#: ``grid_domain`` of rules on EDM noise levels: ``sigma >= 0`` (only the last may be ``0``).
SIGMA_DOMAIN = (0.0, None)


def no_noise(key: Array, shape: tuple[int, ...]) -> None:
    """Noise of a deterministic rule: nothing."""
    return None


def gaussian_noise(key: Array, shape: tuple[int, ...]) -> Array:
    """One step's standard normal noise of the data shape."""
    return jax.random.normal(key, shape)


def _identity_init(model_fn, x, t):
    return x


def _identity_finalize(model_fn, state, t):
    return state


def time_domain(sde: Any) -> Callable[[], tuple[Any, Any]]:
    """``grid_domain`` of a rule on the time of ``sde``: ``[0, sde.T]`` (``T`` read when a run starts,
    so an SDE with a traced ``T`` keeps the rule hashable)."""
    return lambda: (0.0, sde.T)


def score_kind(sde: Any) -> str:
    """The kind of score model a rule on ``sde`` calls: ``"score"`` (scalar SDE) or
    ``"cld_velocity_score"`` (CLD, state ``(x, v)``)."""
    return "score" if hasattr(sde, "marginal_coeffs") else "cld_velocity_score"


class StepRule(NamedTuple):
    """A sampling method as data (all fields are pure functions or static values).

    Attributes:
      step: ``(model_fn, state, t, t_next, z) -> state_next``; ``t``, ``t_next`` scalars.
      prior: ``(key, shape) -> x_T`` (a pytree for augmented states such as CLD's ``(x, v)``).
      noise: ``(key, shape) -> z`` for ONE step (``None`` for deterministic rules).
      init: ``(model_fn, x_T, t_0) -> state`` (e.g. adds a multistep history); identity by default.
      finalize: ``(model_fn, state, t_N) -> samples`` (e.g. a final denoising step); identity by default.
      nfe_per_step: model evaluations per step (static int).
      nfe_final: model evaluations spent by ``finalize`` (static int).
      model_kind: what ``model_fn`` must predict: ``"score"``, ``"eps"``, ``"x0"``, ``"denoiser"``,
        ``"cld_velocity_score"`` or ``"eps_and_derivative"`` (:data:`diffjax.param.MODEL_KINDS`);
        ``None`` (default): unstated (a declared model is then passed as is, its output shape unchecked).
      adapt: ``(declared model) -> model_fn`` converting a :func:`diffjax.param.model` of another kind
        to ``model_kind`` with the SDE the rule was built with (:func:`diffjax.param.adapter`);
        ``None``: conversions that need no SDE only.
      grid_direction: ``-1`` (default) if the rule integrates towards decreasing grid values (all
        samplers), ``+1`` if increasing (DDIM inversion).
      grid_domain: ``(lo, hi)`` bounds of the grid values (``None``: unbounded), or a zero-argument
        callable returning them (:func:`time_domain`: ``[0, sde.T]``; :data:`SIGMA_DOMAIN` for EDM
        sigma grids); ``None`` (default): unbounded.
      n_levels: the number of grid points at a positive noise level the rule was built for (its
        coefficients depend on it, e.g. EDM churn ``s_churn / N``, lower-order final steps);
        :func:`prepare` requires ``len(grid) == n_levels``, or ``n_levels + 1`` with
        ``grid[-1] == 0`` (a trailing step to zero). ``None`` (default): any length.
      nfe_fn: ``grid -> (per_step, final)``, for a rule whose model calls depend on the grid's
        values (a step to ``sigma = 0`` that skips an evaluation with ``lax.cond``): the calls of
        each step ``(n_steps,)`` and of ``finalize`` (int arrays, traced for a traced grid).
        ``None`` (default): ``nfe_per_step`` each and ``nfe_final``. ``nfe_per_step`` stays the
        most a step calls, which is what a batched (``vmap``-ed) step costs, both branches of a
        ``lax.cond`` being evaluated (:func:`sequential_nfe`, :func:`final_nfe`).
      on_grid: ``(state_0, grid) -> state_0``, applied by :func:`prepare` after ``init``: records
        in the initial state what the rule needs of the whole grid (e.g. its number of steps, for
        a multistep solver's lower-order final steps). ``None`` (default): nothing.
    """

    step: Callable[..., PyTree]
    prior: Callable[[Array, tuple[int, ...]], PyTree]
    noise: Callable[[Array, tuple[int, ...]], PyTree] = no_noise
    init: Callable[..., PyTree] = _identity_init
    finalize: Callable[..., Array] = _identity_finalize
    nfe_per_step: int = 1
    nfe_final: int = 0
    model_kind: str | None = None
    adapt: Callable[[Any], Callable] | None = None
    grid_direction: int = -1
    grid_domain: Any = None
    n_levels: int | None = None
    nfe_fn: Callable[[Array], tuple[Array, Array]] | None = None
    on_grid: Callable[[PyTree, Array], PyTree] | None = None

    @staticmethod
    def declare(model_kind: str, sde: Any = None) -> dict:
        """The model and grid fields of a rule that calls a model of ``model_kind`` on the time of
        ``sde`` (``sde=None``: on EDM noise levels ``sigma``), for ``StepRule(..., **StepRule.declare(...))``:
        ``model_kind``, ``adapt = param.adapter(model_kind, sde)`` and ``grid_domain``
        (:func:`time_domain` of ``sde``, or :data:`SIGMA_DOMAIN`).

        Raises:
          ValueError: unknown ``model_kind``.
        """
        return {"model_kind": model_kind, "adapt": adapter(model_kind, sde),
                "grid_domain": SIGMA_DOMAIN if sde is None else time_domain(sde)}


def sequential_nfe(rule: StepRule, grid: Array) -> Any:
    """Model evaluations of a sequential run of ``rule`` on ``grid`` (``info["nfe"]``).

    ``n_steps * nfe_per_step + nfe_final`` (a Python int), or from ``rule.nfe_fn(grid)`` (an int array).
    """
    if rule.nfe_fn is None:
        return (jnp.shape(grid)[0] - 1) * rule.nfe_per_step + rule.nfe_final
    per_step, final = rule.nfe_fn(jnp.asarray(grid))
    return jnp.sum(per_step) + final


def final_nfe(rule: StepRule, grid: Array) -> Any:
    """Model evaluations of ``rule.finalize`` on ``grid``: ``nfe_final``, or ``rule.nfe_fn(grid)[1]``."""
    return rule.nfe_final if rule.nfe_fn is None else rule.nfe_fn(jnp.asarray(grid))[1]


def check_grid(rule: StepRule, grid: Any) -> tuple[int, Any]:
    """Check ``grid`` against ``rule`` (module docstring): returns ``(n_steps, ok)``.

    ``ok`` is ``True`` for a concrete grid (an invalid one raises) and a traced bool for a traced
    grid (or traced domain bounds, e.g. an SDE built inside ``jit``).

    Raises:
      ValueError: naming ``grid`` and the offending entry: not 1-D or fewer than 2 points; a
        concrete grid that is not finite, not monotone in ``rule.grid_direction``, constant, outside
        ``rule.grid_domain`` (only the last entry may equal the lower bound) or of a length other
        than ``rule.n_levels`` allows.
    """
    domain = rule.grid_domain() if callable(rule.grid_domain) else rule.grid_domain
    lo, hi = (None, None) if domain is None else domain
    ok = check_grid_values(grid, direction=rule.grid_direction, lo=lo, hi=hi, name="grid")
    n = jnp.shape(grid)[0] - 1
    if rule.n_levels is None or n + 1 == rule.n_levels:
        return n, ok
    if n != rule.n_levels:
        raise ValueError(f"grid has {n + 1} points but the rule was built for n_levels={rule.n_levels} positive "
                         f"noise levels (a grid of {rule.n_levels} points, or {rule.n_levels + 1} ending in 0)")
    if is_concrete(grid):
        last = float(np.asarray(grid)[-1])
        if last != 0.0:
            raise ValueError(f"grid has {n + 1} points but the rule was built for n_levels={rule.n_levels}: one "
                             f"more point is allowed only as a trailing 0, got grid[-1]={last}")
        return n, ok
    return n, ok & (jnp.asarray(grid)[-1] == 0)


def resolve_model(rule: StepRule, model_fn: Callable) -> Callable:
    """The function ``rule.step`` is called with.

    A bare callable is returned as is: it must already predict ``rule.model_kind`` (no conversion,
    no check of what it predicts). A model declared with :func:`diffjax.param.model` is converted to
    ``rule.model_kind`` by ``rule.adapt`` (with the rule's SDE) or :func:`diffjax.param.as_kind`;
    for a rule of unstated kind it is passed as is.

    Raises:
      TypeError: ``model_fn`` not callable, or a declared kind that cannot be converted to the
        rule's (the message names both kinds).
      ValueError: a conversion that needs an SDE neither the rule nor the declaration provides.
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}")
    if not isinstance(model_fn, Model) or rule.model_kind is None:
        return model_fn
    if rule.adapt is not None:
        return rule.adapt(model_fn)
    return as_kind(model_fn, rule.model_kind)


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        out = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a tuple of ints (batch, *data), got {shape!r}") from None
    if not out or any(d < 0 for d in out) or any(isinstance(d, bool) or int(d) != d for d in shape):
        raise ValueError(f"shape must be a non-empty tuple of ints >= 0 (batch, *data), got {shape!r}")
    return out


def _avals(tree: PyTree) -> list[tuple[tuple[int, ...], Any]]:
    """``(shape, dtype)`` of each leaf, dtypes canonicalised as JAX would store them (weak types ignored)."""
    return [(tuple(s.shape), s.dtype) for s in _leaves(jax.eval_shape(lambda t: t, tree))]


def _check_x_init(rule: StepRule, model_fn: Callable, x_init: PyTree, prior: PyTree, shape: tuple, t0: Any) -> None:
    """``x_init`` has the prior draw's structure and shapes (floating where the prior is), so that the
    initial state it gives is the one the prior would give up to values."""
    want, got = _avals(prior), _avals(x_init)
    same_tree = jax.tree_util.tree_structure(x_init) == jax.tree_util.tree_structure(prior)
    shapes_ok = [s for s, _ in got] == [s for s, _ in want] if same_tree else \
        not (all(s == shape for s, _ in want) and any(s != shape for s, _ in got))
    if shapes_ok:
        a = jax.eval_shape(lambda x: rule.init(model_fn, x, t0), prior)
        b = jax.eval_shape(lambda x: rule.init(model_fn, x, t0), x_init)
        shapes_ok = jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and \
            [s for s, _ in _avals(a)] == [s for s, _ in _avals(b)]
    if not shapes_ok:
        raise ValueError(f"x_init must match the prior draw for shape={shape}: leaf shapes {[s for s, _ in want]}, "
                         f"got {[s for s, _ in got]}")
    for (s, dw), (_, dg) in zip(want, got):
        if jnp.issubdtype(dw, jnp.inexact) and not jnp.issubdtype(dg, jnp.inexact):
            raise ValueError(f"x_init must be floating like the prior draw ({dw}), got dtype {dg}")


def _output_checked(model_fn: Callable) -> Callable:
    """``model_fn`` that raises (at trace time) unless every output leaf has the shape of its input ``x``
    (the first leaf of its first argument: the data, or ``x`` of CLD's ``(x, v)``)."""

    def checked(*args, **kwargs):
        out = model_fn(*args, **kwargs)
        want = tuple(jnp.shape(_leaves(args[0])[0]))
        got = [tuple(jnp.shape(l)) for l in _leaves(out)]
        if any(s != want for s in got):
            raise ValueError(f"model_fn must return an array of the shape of its input x {want}, got "
                             f"{got[0] if len(got) == 1 else got} (a broadcasting or batch-collapsing model "
                             "gives silently wrong samples)")
        return out

    return checked


def _check_step(rule: StepRule, model_fn: Callable, state: PyTree, grid: Array, zs: PyTree) -> None:
    """One ``rule.step`` under ``jax.eval_shape`` (no evaluation) keeps the state's structure, shapes, dtypes."""
    model = model_fn if rule.model_kind is None else _output_checked(model_fn)
    z0 = _tmap(lambda l: l[0], zs)
    out = jax.eval_shape(lambda s, t, u, z: rule.step(model, s, t, u, z), state, grid[0], grid[1], z0)
    same = jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(state) and \
        _avals(out) == _avals(state)
    if not same:
        raise ValueError(f"one step of the rule turned the state {_avals(state)} into {_avals(out)}: model_fn must "
                         "return the shape and dtype the rule expects")


def prepare(rule: StepRule, model_fn: Callable, key: Array, shape: tuple[int, ...], grid: Array,
            x_init: PyTree | None = None) -> tuple[PyTree, PyTree, int]:
    """Initial state and all per-step noise of a run, drawn from one key, after checking the run.

    The checks (module docstring) run at trace time and evaluate nothing: the grid against the
    rule (:func:`check_grid`), ``shape``, ``x_init`` against the prior draw, the model's output
    shape and one step's state (``jax.eval_shape``). A traced grid is checked by value only in the
    result: if it is invalid, every floating leaf of the returned state is NaN, so the samples are
    NaN (documented policy; never a silently wrong answer).

    Args:
      rule: a :class:`StepRule`. model_fn: the model (a bare callable of the rule's kind, or a
        declared :func:`diffjax.param.model`; it is passed through :func:`resolve_model`).
      key: PRNG key. shape: sample shape ``(batch, *data)``. grid: ``(n_steps + 1,)``.
      x_init: optional initial state replacing the prior draw (same structure and shapes).

    Returns:
      ``(state_0, zs, n_steps)`` where ``zs`` is the pytree of noises stacked on a leading
      ``(n_steps,)`` axis (``None`` for deterministic rules).

    Raises:
      ValueError: bad ``grid`` (:func:`check_grid`), ``shape`` or ``x_init``; a ``model_fn`` whose
        output shape differs from its input's, or a step that changes the state's shapes/dtypes.
      TypeError: a declared model kind the rule cannot use (:func:`resolve_model`).
    """
    n, ok = check_grid(rule, grid)
    shape = _check_shape(shape)
    model_fn = resolve_model(rule, model_fn)
    k_prior, k_noise = jax.random.split(key)
    if x_init is None:
        x_T = rule.prior(k_prior, shape)
    else:
        prior = jax.eval_shape(lambda k: rule.prior(k, shape), k_prior)
        _check_x_init(rule, model_fn, x_init, prior, shape, grid[0])
        x_T = x_init
    zs = jax.vmap(lambda k: rule.noise(k, shape))(jax.random.split(k_noise, n))
    state = rule.init(model_fn, x_T, grid[0])
    if rule.on_grid is not None:
        state = rule.on_grid(state, jnp.asarray(grid))
    _check_step(rule, model_fn, state, grid, zs)
    if ok is not True:
        state = _tmap(lambda l: nan_unless(ok, l).astype(l.dtype) if jnp.issubdtype(l.dtype, jnp.inexact) else l,
                      state)
    return state, zs, n
