"""One set of argument validators for the whole library.

Two kinds of check live here:

- **build-time** checks of hyper-parameters (``concrete_float``, ``check_int``, ``check_option``,
  ``check_sde``, ``check_t_min``, ``check_prob``, ``check_less``): they run outside ``jit`` and raise
  ``ValueError``/``TypeError`` naming the argument and the value;
- **call-time** checks of arrays (``check_batch``, ``check_finite``, ``check_time``, ``as_float``,
  ``check_nonneg``, ``check_labels``, ``batch_size``):
  they check shapes always (shapes are static under tracing) and values only when the value is
  concrete. Under ``jit`` a value check is skipped, never silently re-interpreted; callers that
  need a value guarantee under tracing report it in ``info`` instead.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = [
    "is_concrete", "is_number", "concrete_float", "check_int", "check_option", "check_sde", "check_t_min",
    "check_less", "check_nonneg", "nan_unless", "check_grid",
    "check_batch", "check_finite", "check_time", "as_float", "check_prob", "check_labels", "batch_size",
]


def is_concrete(*values: Any) -> bool:
    """True when every value is a concrete number/array (not a tracer)."""
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def is_number(value: Any) -> bool:
    """A real Python/NumPy scalar (``bool`` excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def concrete_float(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                   lo_open: bool = False, allow_inf: bool = False, allow_traced: bool = False,
                   poison_traced: bool = False) -> Any:
    """Check a scalar hyper-parameter lies in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``).

    Traced values pass through unchecked when ``allow_traced`` (they only enter arithmetic);
    otherwise they raise, because the value decides the rule's structure. With ``poison_traced``
    a traced value is returned as ``where(valid, value, nan)`` (see :func:`nan_unless`): a value
    that is out of range or not finite under ``jit``/``vmap`` makes everything computed from it
    NaN (loud) instead of silently different; a valid one is returned unchanged.

    Raises:
      ValueError: non-real, non-finite (unless ``allow_inf``), out of range, or traced.
    """
    if isinstance(value, jax.core.Tracer):
        if not allow_traced:
            raise ValueError(f"{name} must be a concrete Python number (it fixes the rule's structure), "
                             "got a tracer")
        if not poison_traced:
            return value
        ok = ~jnp.isnan(value) if allow_inf else jnp.isfinite(value)
        if lo is not None:
            ok = ok & ((value > lo) if lo_open else (value >= lo))
        if hi is not None:
            ok = ok & (value <= hi)
        return nan_unless(ok, value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real scalar, got {value!r}") from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value!r}")
    return v


def check_int(name: str, value: Any, lo: int = 1) -> int:
    """``value`` is a Python ``int`` (not ``bool``) ``>= lo``; returns it."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be a Python int >= {lo}, got {value!r}")
    return int(value)


def check_option(name: str, value: Any, options: tuple[str, ...]) -> None:
    """``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, options))}")


def check_sde(sde: Any, *, scalar: bool) -> None:
    """The generic SDE interface (``reverse_drift``, ``diffusion_apply``, ``prior_sample``, ``T``);
    ``scalar`` rules additionally need ``marginal_coeffs``, ``log_snr`` and ``diffusion_sq``.

    Raises:
      TypeError: naming the missing attributes.
    """
    needed = ["reverse_drift", "diffusion_apply", "prior_sample", "T"]
    if scalar:
        needed += ["marginal_coeffs", "log_snr", "diffusion_sq"]
    missing = [n for n in needed if not hasattr(sde, n)]
    if missing:
        kind = "a scalar SDE (VPSDE, SubVPSDE, VESDE)" if scalar else "an SDE"
        raise TypeError(f"sde must be {kind}; {type(sde).__name__} lacks {', '.join(missing)}")


def check_t_min(t_min: Any, T: Any, name: str = "t_min") -> float:
    """``t_min`` is a real number in ``(0, T)`` (``T`` checked only when concrete); returns a float."""
    if not is_number(t_min):
        raise ValueError(f"{name} must be a real number in (0, T), got {t_min!r}")
    if is_concrete(T) and not 0.0 < float(t_min) < float(T):
        raise ValueError(f"{name} must lie in (0, T={float(T)}), got {t_min}")
    return float(t_min)


def check_less(lo_name: str, lo: Any, hi_name: str, hi: Any) -> None:
    """Raise ``ValueError`` naming both arguments unless ``lo < hi`` (checked only when both are concrete
    scalars; validate each with :func:`concrete_float` first)."""
    if is_concrete(lo, hi) and not float(lo) < float(hi):
        raise ValueError(f"need {lo_name} < {hi_name}, got {lo_name}={lo!r}, {hi_name}={hi!r}")


def check_batch(name: str, x: Any) -> Array:
    """``x`` has shape ``(batch, *data)`` with at least one data axis; concrete values are finite.

    Returns ``x`` as a floating array (integer data is promoted to the default float dtype).
    """
    if not hasattr(x, "ndim") or x.ndim < 2:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{name} must have shape (batch, *data) with at least one data axis, got {shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example, got shape {x.shape}")
    check_finite(name, x)
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def check_finite(name: str, value: Any) -> None:
    """Raise ``ValueError`` if a concrete array holds NaN/inf (no-op under tracing)."""
    if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_nonneg(name: str, value: Any) -> None:
    """Raise ``ValueError`` if a concrete scalar or array holds NaN/inf or a negative value (no-op under tracing)."""
    check_finite(name, value)
    if is_concrete(value) and np.any(np.asarray(value) < 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_time(t: Any, T: Any, name: str = "t") -> Any:
    """``t`` in ``[0, T]`` (``T`` with relative slack ``1e-6``) and finite; returns ``t``.

    A concrete ``t`` (and ``T``) is checked and returned unchanged. A traced one cannot be checked
    at trace time: it is returned as ``where(0 <= t <= T, t, nan)`` (:func:`nan_unless`), so a time
    outside the SDE's range under ``jit``/``vmap`` gives NaN results (loud), never silently
    extrapolated coefficients. Callers use the returned value.

    Raises:
      ValueError: a concrete ``t`` outside ``[0, T]`` or not finite.
    """
    if is_concrete(t, T):
        arr = np.asarray(t)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {t!r}")
        if np.any(arr < 0) or np.any(arr > float(T) * (1 + 1e-6)):
            raise ValueError(f"{name} must lie in [0, T={float(T)}], got min {arr.min()}, max {arr.max()}")
        return t
    return nan_unless((t >= 0) & (t <= T * (1 + 1e-6)), t)


def nan_unless(ok: Any, value: Any) -> Array:
    """``value`` where the (traced) bool ``ok`` holds, NaN elsewhere (in a floating dtype).

    The policy for value checks that cannot run at trace time: an invalid traced value is made
    NaN, so every result computed from it is NaN (loud), while a valid one is unchanged (values
    and gradients). ``ok`` broadcasts against ``value``.
    """
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.inexact):
        value = value.astype(jnp.result_type(float))
    return jnp.where(ok, value, jnp.nan)


def as_float(name: str, value: Any) -> Any:
    """Validate a scalar hyper-parameter is finite; return it as a float, or unchanged if traced."""
    if not is_concrete(value):
        return value
    arr = np.asarray(value)
    if arr.shape != () or not np.isfinite(arr):
        raise ValueError(f"{name} must be a finite scalar, got {value!r}")
    return float(arr)


def check_prob(name: str, p: Any) -> Any:
    """A concrete ``p`` is a real scalar (not ``bool``) in ``[0, 1]``, returned as a float; a traced one passes."""
    if isinstance(p, (bool, np.bool_)):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return concrete_float(name, p, lo=0.0, hi=1.0, allow_traced=True)


def check_labels(name: str, y: Any, num_classes: int) -> Array:
    """Integer class labels; concrete values lie in ``[0, num_classes]`` (``num_classes`` = the null token).

    Returns ``y`` as an array (dtype unchanged). The dtype is checked always, the range only when concrete.
    """
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if is_concrete(y) and y.size:
        values = np.asarray(y)  # numpy, not jnp: y may be a constant inside a jit trace
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(f"{name} must lie in [0, num_classes={num_classes}] (num_classes is the null token), "
                             f"got values in [{lo}, {hi}]")
    return y


def batch_size(name: str, x: Any) -> int:
    """Leading (batch) size of an array, or of the first leaf of a pytree state such as CLD's ``(x, v)``."""
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves or jnp.ndim(leaves[0]) < 1:
        raise ValueError(f"{name} must have a leading batch axis, got {type(x).__name__}")
    return int(jnp.shape(leaves[0])[0])


def _grid_problem(g: np.ndarray, direction: int, lo: Any, hi: Any, name: str) -> str | None:
    """What is wrong with the concrete grid ``g`` (``None``: nothing), naming the offending entry."""
    def at(i):
        return f"{name}[{i}]={g[i]:.7g}"

    bad = np.flatnonzero(~np.isfinite(g))
    if bad.size:
        return f"{name} must be finite, got {at(bad[0])}"
    word = "non-increasing (the rule integrates from grid[0] down to grid[-1])" if direction < 0 else \
        "non-decreasing (the rule integrates from grid[0] up to grid[-1])"
    bad = np.flatnonzero(direction * np.diff(g) < 0)
    if bad.size:
        return f"{name} must be {word}, got {at(bad[0])} then {at(bad[0] + 1)}"
    if g[-1] == g[0]:
        return f"{name} must move: {name}[0] = {name}[-1] = {g[0]:.7g}"
    domain = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if lo is not None:
        bad = np.flatnonzero(g[:-1] <= lo)
        if bad.size or g[-1] < lo:
            return (f"{name} must lie in {domain} with only the last entry allowed to equal {lo} (the model is "
                    f"evaluated at every other entry), got {at(bad[0] if bad.size else g.shape[0] - 1)}")
    if hi is not None:
        bad = np.flatnonzero(g > hi + 1e-6 * abs(hi))
        if bad.size:
            return f"{name} must lie in {domain}, got {at(bad[0])}"
    return None


def check_grid(grid: Any, *, direction: int = -1, lo: Any = None, hi: Any = None, name: str = "grid") -> Any:
    """Validate a grid of times or noise levels given in integration order.

    A valid grid is 1-D with at least 2 points, finite, monotone in ``direction`` (``-1``:
    non-increasing, ``+1``: non-decreasing; a repeated entry is a zero-length step, allowed so grids
    of different lengths can be padded to one shape), not constant (``grid[-1] != grid[0]``), inside
    ``[lo, hi]`` (``None``: unbounded; ``hi`` with relative slack ``1e-6``), and above ``lo``
    everywhere but at its last entry (a rule evaluates its model at every other entry, and at the
    bound, e.g. ``sigma = 0``, the model is undefined).

    The shape is static and always checked. The values are checked when ``grid``, ``lo`` and ``hi``
    are concrete (also inside ``jit`` for a grid closed over as a constant). A traced grid (a ``jit``
    argument, a ``vmap``-ed grid) cannot be checked at trace time: the check is then returned as a
    traced bool for the caller to act on (the executors NaN-poison the run, see
    :func:`diffjax.samplers.prepare`).

    Args:
      grid: ``(n + 1,)`` array.
      direction: ``-1`` (decreasing: sampling) or ``+1`` (increasing: e.g. DDIM inversion).
      lo, hi: the domain (``None``: unbounded; may be traced).
      name: the argument's name in error messages.

    Returns:
      ``True`` for a concrete valid grid, otherwise a traced bool (``True`` iff valid).

    Raises:
      ValueError: a grid that is not 1-D with at least 2 points, or a concrete grid that violates
        any requirement (the message names ``name`` and the offending entry).
    """
    shape = jnp.shape(grid)
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 points, got shape {shape}")
    if direction not in (-1, 1):
        raise ValueError(f"direction must be -1 or +1, got {direction!r}")
    if is_concrete(grid, lo, hi):
        problem = _grid_problem(np.asarray(grid, np.float64), direction, lo, hi, name)
        if problem:
            raise ValueError(problem)
        return True
    g = jnp.asarray(grid)
    ok = jnp.all(jnp.isfinite(g)) & jnp.all(direction * jnp.diff(g) >= 0) & (g[-1] != g[0])
    if lo is not None:
        ok = ok & jnp.all(g[:-1] > lo) & (g[-1] >= lo)
    if hi is not None:
        ok = ok & jnp.all(g <= hi + 1e-6 * jnp.abs(hi))
    return ok
