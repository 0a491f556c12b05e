"""One set of argument validators for the whole library.

Two kinds of check live here:

- **build-time** checks of hyper-parameters (``concrete_float``, ``check_int``, ``check_option``,
  ``check_sde``, ``check_t_min``): they run outside ``jit`` and raise ``ValueError``/``TypeError``
  naming the argument and the value;
- **call-time** checks of arrays (``check_batch``, ``check_finite``, ``check_time``, ``as_float``):
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
    "check_batch", "check_finite", "check_time", "as_float",
]


def is_concrete(*values: Any) -> bool:
    """True when every value is a concrete number/array (not a tracer)."""
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def is_number(value: Any) -> bool:
    """A real Python/NumPy scalar (``bool`` excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def concrete_float(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                   lo_open: bool = False, allow_inf: bool = False, allow_traced: bool = False) -> Any:
    """Check a scalar hyper-parameter lies in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``).

    Traced values pass through unchecked when ``allow_traced`` (they only enter arithmetic);
    otherwise they raise, because the value decides the rule's structure.

    Raises:
      ValueError: non-real, non-finite (unless ``allow_inf``), out of range, or traced.
    """
    if isinstance(value, jax.core.Tracer):
        if allow_traced:
            return value
        raise ValueError(f"{name} must be a concrete Python number (it fixes the rule's structure), got a tracer")
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


def check_time(t: Any, T: Any, name: str = "t") -> None:
    """Raise ``ValueError`` if a concrete ``t`` lies outside ``[0, T]`` or is not finite."""
    if is_concrete(t, T):
        arr = np.asarray(t)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {t!r}")
        if np.any(arr < 0) or np.any(arr > float(T) * (1 + 1e-6)):
            raise ValueError(f"{name} must lie in [0, T={float(T)}], got min {arr.min()}, max {arr.max()}")


def as_float(name: str, value: Any) -> Any:
    """Validate a scalar hyper-parameter is finite; return it as a float, or unchanged if traced."""
    if not is_concrete(value):
        return value
    arr = np.asarray(value)
    if arr.shape != () or not np.isfinite(arr):
        raise ValueError(f"{name} must be a finite scalar, got {value!r}")
    return float(arr)
